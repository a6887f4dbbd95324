#include "reprocheck/run_options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <tuple>
#include <type_traits>
#include <variant>

#include "reprocheck/dtype.h"
#include "reprocheck/error.h"
#include "reprocheck/options.h"

namespace reprocheck {

namespace {

// Calls f(def, member) for every row of the option table that sets a run option, in the table's
// order (the JSON keys and the worker's flags).
template <typename Options, typename F>
void for_each_field(Options& o, F&& f) {
  for (const auto& def : option_table())
    std::visit(
        [&](auto m) {
          using M = decltype(m);
          if constexpr (std::is_same_v<M, int RunOptions::*> || std::is_same_v<M, double RunOptions::*> ||
                        std::is_same_v<M, bool RunOptions::*> || std::is_same_v<M, std::string RunOptions::*> ||
                        std::is_same_v<M, std::vector<int64_t> RunOptions::*> ||
                        std::is_same_v<M, std::vector<std::string> RunOptions::*>)
            f(def, o.*m);
        },
        def.field);
}

double parse_number(const std::string& text, const std::string& what, const std::string& whole) {
  if (auto v = to_number(text)) return *v;
  throw UsageError(fmt::format("bad {} '{}': '{}' is not a number", what, whole, text));
}

}  // namespace

std::optional<double> to_number(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<bool> to_switch(const std::string& text) {
  if (text == "on" || text == "true" || text == "1") return true;
  if (text == "off" || text == "false" || text == "0") return false;
  return std::nullopt;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& what) {
  std::vector<int64_t> dims;
  std::string current;
  for (char c : text + ",") {
    if (c == ',' || c == 'x' || c == ' ') {
      if (current.empty()) continue;
      size_t used = 0;
      int64_t d = -1;
      try {
        d = std::stoll(current, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != current.size())
        throw UsageError(fmt::format("bad {} '{}': expected dimensions such as 4,3,32,32", what, text));
      dims.push_back(d);
      current.clear();
    } else if (c != '[' && c != ']') {
      current += c;
    }
  }
  return dims;
}

bool TensorSpec::is_integer() const {
  auto d = parse_dtype(dtype);
  return d && !dtype_info(*d).floating && *d != DType::bool_;
}

TensorSpec parse_tensor_spec(const std::string& text, const std::string& what) {
  TensorSpec s;
  std::vector<std::string> parts;
  for (size_t start = 0; start <= text.size();) {
    size_t end = std::min(text.find(':', start), text.size());
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (parts.size() > 3 || parts[0].empty())
    throw UsageError(
        fmt::format("bad {} '{}': expected SHAPE[:DTYPE[:LOW..HIGH]], e.g. 4,20:int64:0..30522", what, text));
  s.shape = parse_shape(parts[0], what);
  if (parts.size() > 1) s.dtype = parts[1];
  if (parts.size() > 2) {
    auto dots = parts[2].find("..");
    if (dots == std::string::npos)
      throw UsageError(fmt::format("bad {} '{}': the range is LOW..HIGH (HIGH excluded), e.g. 0..30522", what, text));
    s.low = parse_number(parts[2].substr(0, dots), what, text);
    s.high = parse_number(parts[2].substr(dots + 2), what, text);
  }
  check_tensor_spec(s, what);
  return s;
}

std::string to_string(const TensorSpec& s) {
  std::string out = fmt::format("{}", fmt::join(s.shape, ","));
  if (!s.dtype.empty() || s.low) out += ":" + s.dtype;
  if (s.low && s.high) out += fmt::format(":{}..{}", *s.low, *s.high);
  return out;
}

void check_tensor_spec(const TensorSpec& s, const std::string& what) {
  const std::string text = to_string(s);
  if (s.shape.empty()) throw UsageError(fmt::format("bad {} '{}': no shape; give dimensions such as 4,20", what, text));
  for (auto d : s.shape)
    if (d < 1 || d > (int64_t{1} << 40))
      throw UsageError(fmt::format("bad {} '{}': has a dimension below 1 (an empty batch trains nothing)", what, text));
  if (!s.dtype.empty() && !parse_dtype(s.dtype))
    throw UsageError(
        fmt::format("bad {} '{}': unknown dtype '{}'; expected one of {}", what, text, s.dtype, dtype_list()));
  if (s.low.has_value() != s.high.has_value())
    throw UsageError(fmt::format("bad {} '{}': give both ends of the range", what, text));
  if (s.low && !(*s.low < *s.high))
    throw UsageError(fmt::format("bad {} '{}': the range {}..{} is empty (LOW must be below HIGH, which is excluded)",
                                 what, text, *s.low, *s.high));
  if (s.is_integer() && !s.low)
    throw UsageError(
        fmt::format("{} '{}' is {} and has no value range: give one, e.g. {}:{}:0..VOCAB for token ids "
                    "below the vocabulary size",
                    what, text, s.dtype, fmt::join(s.shape, ","), s.dtype));
  if (s.is_integer() && (*s.low != std::floor(*s.low) || *s.high != std::floor(*s.high)))
    throw UsageError(fmt::format("bad {} '{}': an integer range needs integer ends", what, text));
  if (s.dtype == "bool" && s.low)
    throw UsageError(
        fmt::format("bad {} '{}': a bool tensor takes no range (it is drawn as true or false)", what, text));
  check_input_size(s.shape, s.dtype.empty() || s.dtype == "bool" ? "float32" : s.dtype, what);
}

RunOptions with_recipe_defaults(RunOptions o) {
  if (o.optimizer.empty()) o.optimizer = "sgd";
  if (o.label_smoothing == -1) o.label_smoothing = 0;
  if (o.weight_decay == -1) o.weight_decay = o.optimizer == "adamw" ? 0.01 : 0.0;
  return o;
}

std::vector<std::pair<std::string, double>> parse_output_weights(const std::string& text) {
  std::vector<std::pair<std::string, double>> out;
  size_t index = 0;
  for (size_t start = 0; start <= text.size(); ++index) {
    size_t end = std::min(text.find(',', start), text.size());
    std::string item = text.substr(start, end - start);
    start = end + 1;
    auto eq = item.find('=');
    std::string key = eq == std::string::npos ? std::to_string(index) : item.substr(0, eq);
    std::string value = eq == std::string::npos ? item : item.substr(eq + 1);
    if (key.empty() || value.empty())
      throw UsageError(
          fmt::format("bad --output-weights '{}': expected weights per tuple output (1,0.3,0.3) or per dict "
                      "key (logits=1,aux=0.3)",
                      text));
    double w = parse_number(value, "--output-weights", text);
    for (const auto& [k, v] : out)
      if (k == key) throw UsageError(fmt::format("bad --output-weights '{}': '{}' is given twice", text, key));
    out.emplace_back(key, w);
  }
  const bool keyed = text.find('=') != std::string::npos;
  for (size_t i = 0; i < out.size(); ++i)
    if (keyed != (text.find(out[i].first + "=") != std::string::npos))
      throw UsageError(
          fmt::format("bad --output-weights '{}': use weights for every output (1,0.3,0.3) or KEY=WEIGHT for "
                      "every one, not both",
                      text));
  return out;
}

void check_input_size(const std::vector<int64_t>& shape, const std::string& dtype, const std::string& where) {
  if (shape.empty()) return;
  long double bytes = static_cast<long double>(parse_dtype(dtype) ? dtype_info(*parse_dtype(dtype)).size : 4);
  for (auto d : shape) bytes *= static_cast<long double>(std::max<int64_t>(d, 0));
  const long double pages = static_cast<long double>(sysconf(_SC_PHYS_PAGES));
  const long double memory = pages * static_cast<long double>(sysconf(_SC_PAGE_SIZE));
  if (memory > 0 && bytes > memory / 2)
    throw UsageError(fmt::format(
        "{} [{}] needs {:.1f} GB for one input batch alone, and this machine has {:.1f} GB of "
        "memory; use a smaller batch or shape",
        where, fmt::join(shape, ", "), static_cast<double>(bytes / 1e9), static_cast<double>(memory / 1e9)));
}

void validate(const RunOptions& o) {
  // Each value against its row of the option table (kind, choices, range).
  check_option_values(o);
  // What depends on several options.
  if (o.autocast == "fp16" && o.device == "cpu")
    throw UsageError("--autocast fp16 needs a CUDA device; on the CPU use --autocast bf16");
  if (!o.autocast.empty() && !o.dtype.empty() && o.dtype != "float32")
    throw UsageError(
        fmt::format("--autocast {} and --dtype {} exclude each other: autocast trains float32 parameters "
                    "with {} compute; drop --dtype",
                    o.autocast, o.dtype, o.autocast));
  for (size_t i = 0; i < o.inputs.size(); ++i) parse_tensor_spec(o.inputs[i], fmt::format("--input {}", i + 1));
  for (size_t i = 0; i < o.targets.size(); ++i) parse_tensor_spec(o.targets[i], fmt::format("--target {}", i + 1));
  if (!o.inputs.empty() && !o.input_shape.empty())
    throw UsageError("--input and --input-shape exclude each other: --input SHAPE:DTYPE gives every input");
  if (!o.output_weights.empty()) {
    parse_output_weights(o.output_weights);
    if (!o.output.empty())
      throw UsageError("--output and --output-weights exclude each other: train one output, or a weighted sum");
  }
  check_input_size(o.input_shape, o.dtype.empty() ? "float32" : o.dtype, "--input-shape");
  for (const auto& kv : o.env)
    if (kv.find('=') == std::string::npos || kv.front() == '=')
      throw UsageError(fmt::format("bad environment setting '{}': expected NAME=VALUE", kv));
}

std::string to_json(const RunOptions& o) {
  nlohmann::json j = nlohmann::json::object();
  for_each_field(o, [&](const OptionDef& f, const auto& v) { j[f.key] = v; });
  return j.dump();
}

bool json_depth_within(const std::string& text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

namespace {

// A JSON number read into an int only when it is an integer that fits: a float such as 1e114
// converted by nlohmann's get<int>() is undefined behaviour.
bool fits_int64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max());
  return v.is_number_integer();
}

void read_field(const nlohmann::json& v, int& out) {
  if (!fits_int64(v)) throw nlohmann::json::type_error::create(302, "not an integer", &v);
  auto n = v.get<int64_t>();
  if (n < std::numeric_limits<int>::min() || n > std::numeric_limits<int>::max())
    throw nlohmann::json::type_error::create(302, "integer out of range", &v);
  out = int(n);
}

void read_field(const nlohmann::json& v, std::vector<int64_t>& out) {
  if (!v.is_array()) throw nlohmann::json::type_error::create(302, "not an array", &v);
  std::vector<int64_t> got;
  for (const auto& e : v) {
    if (!fits_int64(e)) throw nlohmann::json::type_error::create(302, "not an integer", &e);
    got.push_back(e.get<int64_t>());
  }
  out = std::move(got);
}

void read_field(const nlohmann::json& v, double& out) {
  if (!v.is_number()) throw nlohmann::json::type_error::create(302, "not a number", &v);
  out = v.get<double>();
}

template <typename T>
void read_field(const nlohmann::json& v, T& out) {
  v.get_to(out);
}

}  // namespace

RunOptions from_json(const std::string& text) {
  RunOptions o;
  nlohmann::json j;
  if (!json_depth_within(text, kMaxJsonDepth))
    throw InputError(fmt::format("run options are nested deeper than {} levels", kMaxJsonDepth));
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("run options are not valid JSON ({})", first_line(e.what())));
  }
  if (!j.is_object()) throw InputError("run options are not a JSON object");
  for_each_field(o, [&](const OptionDef& f, auto& v) {
    auto it = j.find(f.key);
    if (it == j.end() || it->is_null()) return;
    try {
      read_field(*it, v);
    } catch (const nlohmann::json::exception&) {
      throw InputError(fmt::format("run option '{}' has a value of the wrong type ({})", f.key, it->dump()));
    }
  });
  return o;
}

std::map<std::string, std::string> to_strings(const RunOptions& o) {
  std::map<std::string, std::string> out;
  for_each_field(o, [&](const OptionDef& f, const auto& v) {
    nlohmann::json j = v;
    out[f.key] = j.is_string() ? j.get<std::string>() : j.dump();
  });
  return out;
}

std::string normalize_deterministic(const std::string& v) {
  if (v == "warn") return "warn";
  auto on = to_switch(v);
  if (!on) throw UsageError(fmt::format("bad value '{}' for --deterministic: expected on, off or warn", v));
  return *on ? "on" : "off";
}

const std::vector<std::string>& knob_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& def : option_table())
      if (def.takes(kVaryKnob)) out.push_back(std::string(def.flag).substr(2));
    out.push_back("env:NAME");
    return out;
  }();
  return names;
}

std::string knob_list() { return fmt::format("{}", fmt::join(knob_names(), ", ")); }

RunOptions with_knob(const RunOptions& base, const std::string& knob, const std::string& v) {
  RunOptions o = base;
  if (knob.rfind("env:", 0) == 0 && knob.size() > 4 && knob.find('=') == std::string::npos) {
    const std::string name = knob.substr(4);
    o.env.erase(
        std::remove_if(o.env.begin(), o.env.end(), [&](const std::string& kv) { return kv.rfind(name + "=", 0) == 0; }),
        o.env.end());
    o.env.push_back(name + "=" + v);
    validate(o);
    return o;
  }
  const OptionDef* def = nullptr;
  for (const auto& d : option_table())
    if (d.takes(kVaryKnob) && (knob == d.flag + 2 || knob == d.key)) def = &d;
  if (!def) throw UsageError(fmt::format("unknown knob '{}' for --vary: expected one of {}", knob, knob_list()));
  Settings s;
  s.run = base;
  try {
    set_option(s, *def, v);
  } catch (const UsageError&) {
    throw UsageError(fmt::format("bad value '{}' for --vary {}: expected {}", v, knob, expectation(*def)));
  }
  validate(s.run);
  return s.run;
}

Vary parse_vary(const std::string& spec, const RunOptions& base) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    throw UsageError(fmt::format("bad --vary '{}': expected KNOB=V1,V2,... (knobs: {})", spec, knob_list()));
  Vary vary;
  vary.knob = spec.substr(0, eq);
  std::string rest = spec.substr(eq + 1);
  for (size_t start = 0; start <= rest.size();) {
    size_t end = std::min(rest.find(',', start), rest.size());
    vary.values.push_back(rest.substr(start, end - start));
    start = end + 1;
  }
  if (vary.values.size() < 2)
    throw UsageError(fmt::format("bad --vary '{}': give at least two values, e.g. {}=1,2", spec, vary.knob));
  for (const auto& v : vary.values) with_knob(base, vary.knob, v);  // validates each value
  return vary;
}

}  // namespace reprocheck
