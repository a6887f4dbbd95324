#include "reprocheck/options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <regex>
#include <type_traits>

#include "reprocheck/error.h"
#include "reprocheck/layers.h"

namespace reprocheck {

namespace {

template <typename T>
T& member(Settings& s, T RunOptions::*m) {
  return s.run.*m;
}
template <typename T>
T& member(Settings& s, T CheckSettings::*m) {
  return s.check.*m;
}
template <typename T>
const T& member(const Settings& s, T RunOptions::*m) {
  return s.run.*m;
}
template <typename T>
const T& member(const Settings& s, T CheckSettings::*m) {
  return s.check.*m;
}

[[noreturn]] void bad(const OptionDef& def, const std::string& text) {
  throw UsageError(
      fmt::format("bad value '{}' for {}: expected {}", text, *def.flag ? def.flag : def.key, expectation(def)));
}

double parse_number(const OptionDef& def, const std::string& text) {
  auto v = to_number(text);
  if (!v) bad(def, text);
  return *v;
}

void check_number(const OptionDef& def, double v, const std::string& text) {
  if (def.unset[0] && text == def.unset) return;
  if (v < def.min || v > def.max) bad(def, text);
  if (def.check == ValueCheck::positive && !(v > 0)) bad(def, text);
  if (def.check == ValueCheck::unit_open && !(v < 1)) bad(def, text);
}

void check_text(const OptionDef& def, const std::string& v) {
  if (!def.choices.empty() && std::find(def.choices.begin(), def.choices.end(), v) == def.choices.end()) bad(def, v);
  switch (def.check) {
    case ValueCheck::seed:
      // Up to 2^63 - 1: a seed drawn by "random" (and recorded in the dump) can be given back.
      if (v != "random" && (!std::regex_match(v, std::regex("[0-9]{1,19}")) ||
                            (v.size() == 19 && v > std::string("9223372036854775807"))))
        bad(def, v);
      break;
    case ValueCheck::device:
      if (v != "auto" && v != "cpu" && !std::regex_match(v, std::regex("cuda(:[0-9]+)?"))) bad(def, v);
      break;
    case ValueCheck::not_empty:
      if (v.empty()) bad(def, v);
      break;
    default:
      break;
  }
}

// Sets one value of the field from its text, checked.
struct Setter {
  Settings& s;
  const OptionDef& def;
  const std::string& text;
  template <typename M>
  void operator()(M m) const {
    auto& field = member(s, m);
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_same_v<T, bool>) {
      auto on = text.empty() ? std::optional<bool>(true) : to_switch(text);  // the flag alone: on
      if (!on) bad(def, text);
      field = *on;
    } else if constexpr (std::is_same_v<T, int>) {
      double v = parse_number(def, text);
      if (v != std::floor(v) || std::fabs(v) > 1e15) bad(def, text);
      check_number(def, v, text);
      field = static_cast<int>(v);
    } else if constexpr (std::is_same_v<T, double>) {
      double v = parse_number(def, text);
      check_number(def, v, text);
      field = v;
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      double v = parse_number(def, text);
      check_number(def, v, text);
      field = v;
    } else if constexpr (std::is_same_v<T, std::string>) {
      std::string v = text;
      if (std::string(def.key) == "deterministic") v = normalize_deterministic(text);
      check_text(def, v);
      field = v;
    } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      auto dims = parse_shape(text, def.flag);
      if (dims.empty()) bad(def, text);
      for (auto d : dims)
        if (d < def.min) bad(def, text);
      field = dims;
    } else {
      field.push_back(text);
    }
  }
};

}  // namespace

bool OptionDef::is_flag() const {
  return std::visit(
      [&](auto m) {
        using M = decltype(m);
        if constexpr (std::is_same_v<M, bool RunOptions::*> || std::is_same_v<M, bool CheckSettings::*>)
          return true;
        else if constexpr (std::is_same_v<M, std::string CheckSettings::*>)
          return implicit[0] != '\0';
        else
          return false;
      },
      field);
}

bool OptionDef::repeats() const { return std::holds_alternative<std::vector<std::string> RunOptions::*>(field); }

const OptionDef* find_option(std::string_view key) {
  for (const auto& def : option_table())
    if (key == def.key) return &def;
  return nullptr;
}

const OptionDef* find_flag(std::string_view flag, OptionCommand command) {
  for (const auto& def : option_table())
    if (flag == def.flag && def.takes(command)) return &def;
  return nullptr;
}

void set_option(Settings& s, const OptionDef& def, const std::string& text) {
  // A flag given alone takes its implicit value (--deterministic: on; --full: capture full).
  const std::string value = def.implicit[0] && text.empty() ? def.implicit : text;
  std::visit(Setter{s, def, value}, def.field);
}

void add_option_value(Settings& s, const OptionDef& def, const std::string& text) {
  std::visit(Setter{s, def, text}, def.field);
}

std::string option_text(const Settings& s, const OptionDef& def) {
  return std::visit(
      [&](auto m) -> std::string {
        const auto& v = member(s, m);
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>)
          return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, int>)
          return std::to_string(v);
        else if constexpr (std::is_same_v<T, double>)
          return fmt::format("{}", v);
        else if constexpr (std::is_same_v<T, std::optional<double>>)
          return v ? fmt::format("{}", *v) : "";
        else if constexpr (std::is_same_v<T, std::string>)
          return v;
        else
          return fmt::format("{}", fmt::join(v, ","));
      },
      def.field);
}

std::vector<std::string> option_args(const OptionDef& def, const std::string& value) {
  if (std::string(def.key) == "capture") {
    if (value == "ladder") return {};
    return {"--capture", value};
  }
  const bool boolean =
      std::holds_alternative<bool RunOptions::*>(def.field) || std::holds_alternative<bool CheckSettings::*>(def.field);
  if (boolean) return value == "true" ? std::vector<std::string>{def.flag} : std::vector<std::string>{};
  return {def.flag, value};
}

void check_option_values(const RunOptions& o) {
  for (const auto& def : option_table())
    std::visit(
        [&](auto m) {
          using M = decltype(m);
          if constexpr (std::is_same_v<M, int RunOptions::*> || std::is_same_v<M, double RunOptions::*>) {
            const double v = static_cast<double>(o.*m);
            check_number(def, v, fmt::format("{}", v));
          } else if constexpr (std::is_same_v<M, std::string RunOptions::*>) {
            check_text(def, o.*m);
          } else if constexpr (std::is_same_v<M, std::vector<int64_t> RunOptions::*>) {
            for (auto d : o.*m)
              if (d < def.min) bad(def, fmt::format("{}", fmt::join(o.*m, ",")));
          }
        },
        def.field);
}

std::string expectation(const OptionDef& def) {
  if (!def.choices.empty()) {
    std::vector<std::string> shown;
    for (const auto& c : def.choices)
      if (!c.empty()) shown.push_back(c);
    return fmt::format("one of {}", fmt::join(shown, ", "));
  }
  switch (def.check) {
    case ValueCheck::seed:
      return "a non-negative integer or 'random'";
    case ValueCheck::device:
      return "cpu, cuda, cuda:N or auto";
    case ValueCheck::shape:
      return "dimensions of 1 or more, such as 4,3,32,32 (an empty batch trains nothing)";
    case ValueCheck::not_empty:
      return "a value";
    case ValueCheck::positive:
      return "a number above 0";
    case ValueCheck::unit_open:
      return "0 to below 1";
    case ValueCheck::none:
      break;
  }
  const bool integer =
      std::holds_alternative<int RunOptions::*>(def.field) || std::holds_alternative<int CheckSettings::*>(def.field);
  const bool boolean =
      std::holds_alternative<bool RunOptions::*>(def.field) || std::holds_alternative<bool CheckSettings::*>(def.field);
  if (boolean) return "true or false";
  if (std::isfinite(def.min) && std::isfinite(def.max))
    return fmt::format("{} from {} to {}", integer ? "an integer" : "a number", def.min, def.max);
  if (std::isfinite(def.min)) return fmt::format("{} of {} or more", integer ? "an integer" : "a number", def.min);
  return integer ? "an integer" : "a value";
}

std::string option_help(const OptionDef& def, OptionCommand command) {
  const std::string key = def.key;
  if (command == kRunCommand && *def.run_help) return def.run_help;
  if (key == "layers") return layer_selection_help();
  if (key == "vary") return fmt::format("{} ({})", def.help, knob_list());
  return def.help;
}

std::string option_type_name(const OptionDef& def) {
  if (def.is_flag()) return "";
  return std::visit(
      [](auto m) -> std::string {
        using M = decltype(m);
        if constexpr (std::is_same_v<M, int RunOptions::*> || std::is_same_v<M, int CheckSettings::*>)
          return "INT";
        else if constexpr (std::is_same_v<M, double RunOptions::*> || std::is_same_v<M, double CheckSettings::*> ||
                           std::is_same_v<M, std::optional<double> CheckSettings::*>)
          return "FLOAT";
        else
          return "TEXT";
      },
      def.field);
}

}  // namespace reprocheck
