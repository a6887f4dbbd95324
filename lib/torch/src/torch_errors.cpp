#include "torch_errors.h"

#include <c10/util/Exception.h>

#include <regex>

#include "reprocheck/error.h"

namespace reprocheck::detail {

std::string torch_message(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string torch_error_summary(const std::string& message) {
  static const std::regex re(R"((?:^|\n)\s*(?:RuntimeError|ValueError|TypeError|IndexError): ([^\n]*))");
  std::string best;
  for (auto it = std::sregex_iterator(message.begin(), message.end(), re); it != std::sregex_iterator(); ++it)
    best = (*it)[1];
  return best.empty() ? first_line(message) : first_line(best);
}

}  // namespace reprocheck::detail
