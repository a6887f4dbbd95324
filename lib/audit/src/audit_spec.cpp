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
#include "reprocheck/options.h"

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

const OptionDef* find_def(const std::string& name) {
  const OptionDef* def = find_option(name);
  return def && def->takes(kAuditSetting) ? def : nullptr;
}

std::string setting_names() {
  std::string out;
  for (const auto& d : option_table())
    if (d.takes(kAuditSetting)) out += (out.empty() ? "" : ", ") + std::string(d.key);
  return out;
}

namespace {

// The TOML value as the option's text, when it is of the option's kind: a number for a number, a
// boolean for a flag, a string for text (a seed may be an integer; deterministic a boolean).
std::optional<std::string> toml_text(const OptionDef& def, const toml::node& n) {
  const std::string type = option_type_name(def);
  const std::string key = def.key;
  if (auto v = n.value_exact<int64_t>(); v && (type == "INT" || type == "FLOAT" || def.check == ValueCheck::seed))
    return std::to_string(*v);
  if (auto v = n.value_exact<double>(); v && type == "FLOAT") return fmt::format("{}", *v);
  if (auto v = n.value_exact<bool>()) {
    if (key == "deterministic") return *v ? "on" : "off";
    if (type.empty()) return *v ? "true" : "false";
  }
  if (auto v = n.value_exact<std::string>(); v && type == "TEXT") {
    if (v->empty() || v->find('\n') != std::string::npos) return std::nullopt;
    return *v;
  }
  return std::nullopt;
}

}  // namespace

// A setting's value as its flag takes it, checked against the option's row; fails at the value's
// location when it is not one.
std::string setting_value(const Locator& loc, const OptionDef& def, const toml::node& n) {
  const std::string key = def.key;
  auto bad = [&](const std::string& expected) {
    loc.fail(n, fmt::format("bad value for setting '{}': expected {}", key, expected));
  };
  // An audit compares each cell's runs with each other (no golden): 2 runs or more.
  const bool runs = key == "runs";
  const std::string expected =
      runs ? fmt::format("an integer from 2 to {:.0f} (an audit compares a cell's runs with each other)", def.max)
           : expectation(def);
  std::optional<std::string> text = toml_text(def, n);
  if (!text) bad(option_type_name(def) == "TEXT" ? expected + " (a non-empty line of text)" : expected);
  Settings scratch;
  try {
    set_option(scratch, def, *text);
  } catch (const UsageError&) {
    bad(expected);
  }
  if (runs && scratch.check.runs < 2) bad(expected);
  return option_text(scratch, def);
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
    const OptionDef* def = find_def(key);
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
    const OptionDef* def = find_def(key);
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
  return option_args(*find_def(key), value);
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
