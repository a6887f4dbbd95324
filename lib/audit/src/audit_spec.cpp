// Reading an audit file (TOML, toml++) and expanding it into cells. Every problem is reported with
// the file, line and column of the value at fault.
#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "audit_spec_detail.h"
#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"

namespace reprocheck::audit {

const char* to_string(Expect e) {
  switch (e) {
    case Expect::reproducible:
      return "reproducible";
    case Expect::divergent:
      return "divergent";
    case Expect::info:
      return "info";
  }
  return "?";
}

namespace spec_detail {

const std::vector<SettingDef>& setting_defs() {
  static const std::vector<SettingDef> defs = {
      {"steps", SettingDef::integer, 1, {}, false, "training steps"},
      {"runs", SettingDef::integer, 2, {}, false, "runs compared"},
      {"threads", SettingDef::integer, 1, {}, false, "intra-op threads"},
      {"deterministic", SettingDef::text, 0, {"on", "off", "warn"}, false, "deterministic algorithms"},
      {"benchmark", SettingDef::boolean, 0, {}, false, "the cuDNN autotuner"},
      {"device", SettingDef::text, 0, {}, true, "cpu, cuda, cuda:N or auto"},
      {"mode", SettingDef::text, 0, {"train", "eval"}, true, "module mode"},
      {"dtype", SettingDef::text, 0, {"float32", "float64", "float16", "bfloat16"}, true, "the model's dtype"},
      {"seed", SettingDef::seed, 0, {}, true, "the model's seed"},
      {"data_seed", SettingDef::seed, 0, {}, true, "the data's seed"},
      {"layers", SettingDef::text, 0, {}, false, "captured layers"},
      {"ops", SettingDef::boolean, 0, {}, false, "tap every op"},
      {"vary", SettingDef::text, 0, {}, false, "KNOB=V1,V2: one run per value"},
      {"timeout", SettingDef::number, 0, {}, false, "seconds a run may take"},
      {"jobs", SettingDef::integer, 1, {}, false, "runs at a time within the check"},
      {"capture", SettingDef::text, 0, {"ladder", "full", "hashes"}, false, "the capture ladder, or one pass"},
      {"optimizer", SettingDef::text, 0, {"sgd", "adam", "adamw"}, true, "the optimizer"},
      {"autocast", SettingDef::text, 0, {"bf16", "fp16"}, true, "forward and loss under autocast"},
  };
  return defs;
}

const SettingDef* find_def(const std::string& name) {
  for (const auto& d : setting_defs())
    if (name == d.name) return &d;
  return nullptr;
}

std::string setting_names() {
  std::string out;
  for (const auto& d : setting_defs()) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

// A setting's value as its flag takes it; fails at the value's location when it is not one.
std::string setting_value(const Locator& loc, const SettingDef& def, const toml::node& n) {
  auto bad = [&](const std::string& expected) {
    loc.fail(n, fmt::format("bad value for setting '{}': expected {}", def.name, expected));
  };
  switch (def.type) {
    case SettingDef::integer: {
      auto v = n.value_exact<int64_t>();
      if (!v || *v < def.min || *v > 1000000) bad(fmt::format("an integer from {} to 1000000", def.min));
      return std::to_string(*v);
    }
    case SettingDef::number: {
      auto v = n.value<double>();
      if (!v || !std::isfinite(*v) || *v < 0) bad("a number of seconds, 0 or more");
      return fmt::format("{}", *v);
    }
    case SettingDef::boolean: {
      auto v = n.value_exact<bool>();
      if (!v) bad("true or false");
      return *v ? "true" : "false";
    }
    case SettingDef::seed: {
      if (auto v = n.value_exact<int64_t>(); v && *v >= 0) return std::to_string(*v);
      if (auto s = n.value_exact<std::string>(); s && *s == "random") return *s;
      bad("an integer of 0 or more, or \"random\"");
      return "";
    }
    case SettingDef::text: {
      if (std::string(def.name) == "deterministic")
        if (auto b = n.value_exact<bool>()) return *b ? "on" : "off";
      auto s = n.value_exact<std::string>();
      if (!s) bad(def.choices.empty() ? "a string" : "one of " + fmt::format("{}", fmt::join(def.choices, ", ")));
      if (!def.choices.empty() && std::find(def.choices.begin(), def.choices.end(), *s) == def.choices.end())
        bad("one of " + fmt::format("{}", fmt::join(def.choices, ", ")));
      if (std::string(def.name) == "device") {
        const std::string& d = *s;
        bool ok =
            d == "cpu" || d == "cuda" || d == "auto" ||
            (d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.find_first_not_of("0123456789", 5) == std::string::npos);
        if (!ok) bad("cpu, cuda, cuda:N or auto");
      }
      if (s->empty() || s->find('\n') != std::string::npos) bad("a non-empty line of text");
      return *s;
    }
  }
  return "";
}

Tolerance read_tolerance(const Locator& loc, const toml::node& n) {
  Tolerance t;
  if (auto s = n.value_exact<std::string>()) {
    if (*s == "bitwise") return t;
    if (*s == "torch") return {"torch", {"--tolerance", "torch"}};
    loc.fail(n, fmt::format("bad tolerance \"{}\": expected \"bitwise\", \"torch\" or {{ atol = A, rtol = R }}", *s));
  }
  const toml::table* tab = n.as_table();
  if (!tab) loc.fail(n, "bad tolerance: expected \"bitwise\", \"torch\" or { atol = A, rtol = R }");
  double atol = 0, rtol = 0;
  for (const auto& [k, v] : *tab) {
    std::string key(k.str());
    if (key != "atol" && key != "rtol")
      loc.fail(k.source(), fmt::format("unknown tolerance key '{}': expected atol and rtol", key));
    auto x = v.value<double>();
    if (!x || !std::isfinite(*x) || *x < 0) loc.fail(v, fmt::format("bad {}: expected a number of 0 or more", key));
    (key == "atol" ? atol : rtol) = *x;
  }
  t.label = fmt::format("atol={} rtol={}", atol, rtol);
  t.flags = {"--atol", fmt::format("{}", atol), "--rtol", fmt::format("{}", rtol)};
  return t;
}

Expect read_expect(const Locator& loc, const toml::node& n) {
  auto s = n.value_exact<std::string>();
  if (s && *s == "reproducible") return Expect::reproducible;
  if (s && *s == "divergent") return Expect::divergent;
  if (s && *s == "info") return Expect::info;
  loc.fail(
      n,
      "bad expect: expected \"reproducible\", \"divergent\" (a known source, kept as a negative control) or \"info\"");
}

void read_settings(const Locator& loc, const toml::table& t, Level& out, const std::set<std::string>& skip) {
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    if (skip.count(key)) continue;
    if (key == "expect") {
      out.expect = std::make_pair(read_expect(loc, v), v.source());
      continue;
    }
    if (key == "tolerance") {
      out.tolerance = std::make_pair(read_tolerance(loc, v), v.source());
      continue;
    }
    const SettingDef* def = find_def(key);
    if (!def)
      loc.fail(k.source(),
               fmt::format("unknown setting '{}'; expected one of {}, expect, tolerance", key, setting_names()));
    if (v.is_array())
      loc.fail(v, fmt::format("setting '{}' takes one value here; a list of values belongs in a [matrix] table", key));
    out.settings[key] = {setting_value(loc, *def, v), v.source()};
  }
}

std::vector<Axis> read_matrix(const Locator& loc, const toml::table& t) {
  std::vector<Axis> axes;
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    const SettingDef* def = find_def(key);
    if (!def) loc.fail(k.source(), fmt::format("unknown matrix axis '{}'; expected one of {}", key, setting_names()));
    const toml::array* arr = v.as_array();
    if (!arr || arr->empty())
      loc.fail(v, fmt::format("matrix axis '{}' needs a non-empty list of values, e.g. {} = [1, 2]", key, key));
    Axis axis{key, {}, k.source()};
    std::set<std::string> seen;
    for (const auto& x : *arr) {
      std::string value = setting_value(loc, *def, x);
      if (!seen.insert(value).second) loc.fail(x, fmt::format("matrix axis '{}' lists {} twice", key, value));
      axis.values.push_back({value, x.source()});
    }
    axes.push_back(std::move(axis));
  }
  return axes;
}

std::string absolute(const std::string& base_dir, const std::string& path) {
  return !path.empty() && path[0] == '/' ? path : base_dir + "/" + path;
}

std::vector<std::string> flags_for(const std::string& key, const std::string& value) {
  if (key == "benchmark" || key == "ops")
    return value == "true" ? std::vector<std::string>{"--" + key} : std::vector<std::string>{};
  if (key == "capture") {
    if (value == "full") return {"--full"};
    if (value == "hashes") return {"--hashes-only"};
    return {};
  }
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return {flag, value};
}

}  // namespace spec_detail

std::pair<int, int> parse_shard(const std::string& text) {
  auto slash = text.find('/');
  int i = 0, n = 0;
  try {
    size_t used = 0;
    if (slash == std::string::npos) throw std::invalid_argument("");
    i = std::stoi(text.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("");
    n = std::stoi(text.substr(slash + 1), &used);
    if (used != text.size() - slash - 1) throw std::invalid_argument("");
  } catch (const std::exception&) {
    throw UsageError(fmt::format("bad --shard '{}': expected I/N, e.g. 2/4 (shard 2 of 4)", text));
  }
  if (n < 1 || i < 1 || i > n)
    throw UsageError(fmt::format("bad --shard '{}': I must be from 1 to N (shards are numbered from 1)", text));
  return {i, n};
}

std::vector<Cell> shard_cells(const std::vector<Cell>& cells, int index, int count) {
  std::vector<Cell> out;
  for (size_t c = 0; c < cells.size(); ++c)
    if (static_cast<int>(c % static_cast<size_t>(count)) == index - 1) out.push_back(cells[c]);
  return out;
}

}  // namespace reprocheck::audit
