#include "reprocheck/error.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "reprocheck/interrupt.h"

namespace reprocheck {

std::string first_line(const std::string& message) {
  std::string line = message.substr(0, message.find('\n'));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '.')) line.pop_back();
  return line;
}

std::string error_line(const std::string& message) { return std::string(kErrorPrefix) + message; }

void report_error_to_runner(const std::string& message) noexcept {
  const char* path = std::getenv(kErrorFileEnv);
  if (!path || !*path) return;
  if (std::FILE* f = std::fopen(path, "w")) {
    std::fputs(message.c_str(), f);
    std::fclose(f);
  }
}

namespace {
std::atomic<bool> g_interrupt{false};
}

void request_interrupt() noexcept { g_interrupt.store(true, std::memory_order_relaxed); }
bool interrupt_requested() noexcept { return g_interrupt.load(std::memory_order_relaxed); }
void reset_interrupt() noexcept { g_interrupt.store(false, std::memory_order_relaxed); }
void check_interrupt() {
  if (interrupt_requested()) throw Interrupted();
}

}  // namespace reprocheck
