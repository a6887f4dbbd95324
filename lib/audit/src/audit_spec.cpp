// Reading an audit file (TOML, toml++) and expanding it into cells. Every problem is reported with
// the file, line and column of the value at fault.
#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"

namespace reprocheck::audit {

const char* to_string(Expect e) {
  switch (e) {
    case Expect::reproducible: return "reproducible";
    case Expect::divergent: return "divergent";
    case Expect::info: return "info";
  }
  return "?";
}

namespace {

constexpr size_t kMaxFileBytes = 4 << 20;
constexpr size_t kMaxCells = 10000;

// One setting: its flag, and what values it takes.
struct SettingDef {
  const char* name;
  enum Type { integer, boolean, text, seed, number } type;
  int64_t min = 0;
  std::vector<std::string> choices;  // for text: the accepted values (empty: any)
  bool torchscript_only = false;
  const char* help = "";
};

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

// Where a node is: "nightly.toml:12:5".
struct Locator {
  std::string file;
  std::string at(const toml::source_region& r) const {
    return r.begin.line ? fmt::format("{}:{}:{}", file, r.begin.line, r.begin.column) : file;
  }
  std::string at(const toml::node& n) const { return at(n.source()); }
  [[noreturn]] void fail(const toml::source_region& r, const std::string& what) const {
    throw InputError(fmt::format("{}: {}", at(r), what));
  }
  [[noreturn]] void fail(const toml::node& n, const std::string& what) const { fail(n.source(), what); }
};

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
        bool ok = d == "cpu" || d == "cuda" || d == "auto" ||
                  (d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.find_first_not_of("0123456789", 5) == std::string::npos);
        if (!ok) bad("cpu, cuda, cuda:N or auto");
      }
      if (s->empty() || s->find('\n') != std::string::npos) bad("a non-empty line of text");
      return *s;
    }
  }
  return "";
}

struct Located {
  std::string value;
  toml::source_region where;
};

struct Tolerance {
  std::string label = "bitwise";
  std::vector<std::string> flags;
};

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
    if (key != "atol" && key != "rtol") loc.fail(k.source(), fmt::format("unknown tolerance key '{}': expected atol and rtol", key));
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
  loc.fail(n, "bad expect: expected \"reproducible\", \"divergent\" (a known source, kept as a negative control) or \"info\"");
}

// A table of settings (plus expect and tolerance where `cell_keys`) into `out`.
struct Level {
  std::map<std::string, Located> settings;
  std::optional<std::pair<Expect, toml::source_region>> expect;
  std::optional<std::pair<Tolerance, toml::source_region>> tolerance;
};

void read_settings(const Locator& loc, const toml::table& t, Level& out, const std::set<std::string>& skip = {}) {
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
      loc.fail(k.source(), fmt::format("unknown setting '{}'; expected one of {}, expect, tolerance", key, setting_names()));
    if (v.is_array())
      loc.fail(v, fmt::format("setting '{}' takes one value here; a list of values belongs in a [matrix] table", key));
    out.settings[key] = {setting_value(loc, *def, v), v.source()};
  }
}

struct Axis {
  std::string name;
  std::vector<Located> values;
  toml::source_region where;
};

std::vector<Axis> read_matrix(const Locator& loc, const toml::table& t) {
  std::vector<Axis> axes;
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    const SettingDef* def = find_def(key);
    if (!def) loc.fail(k.source(), fmt::format("unknown matrix axis '{}'; expected one of {}", key, setting_names()));
    const toml::array* arr = v.as_array();
    if (!arr || arr->empty()) loc.fail(v, fmt::format("matrix axis '{}' needs a non-empty list of values, e.g. {} = [1, 2]", key, key));
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
  if (key == "benchmark" || key == "ops") return value == "true" ? std::vector<std::string>{"--" + key} : std::vector<std::string>{};
  if (key == "capture") {
    if (value == "full") return {"--full"};
    if (value == "hashes") return {"--hashes-only"};
    return {};
  }
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return {flag, value};
}

}  // namespace

AuditSpec load_spec(const std::string& path) {
  if (!files::exists(path)) throw InputError(fmt::format("audit file '{}': no such file; pass the path of an audit TOML file", path));
  if (!files::is_regular(path))
    throw InputError(fmt::format("audit file '{}': not a regular file; pass the path of an audit TOML file", path));
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError(fmt::format("audit file '{}': cannot be read; check its permissions", path));
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  if (text.size() > kMaxFileBytes)
    throw InputError(fmt::format("audit file '{}': {} bytes, more than an audit file has (limit {}); is it the right file?",
                                 path, text.size(), kMaxFileBytes));
  Locator loc{path};
  toml::table doc;
  try {
    doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    loc.fail(e.source(), fmt::format("not valid TOML: {}", first_line(std::string(e.description()))));
  }
  char resolved[PATH_MAX];
  const std::string dir = realpath(files::parent_dir(path).c_str(), resolved) ? std::string(resolved) : files::parent_dir(path);

  AuditSpec spec;
  spec.path = path;
  spec.name = files::base_name(path);
  if (auto dot = spec.name.rfind('.'); dot != std::string::npos && dot > 0) spec.name.resize(dot);

  for (const auto& [k, v] : doc) {
    std::string key(k.str());
    if (key != "audit" && key != "defaults" && key != "matrix" && key != "model")
      loc.fail(k.source(), fmt::format("unknown table '{}'; an audit file has [audit], [defaults], [matrix] and [[model]]", key));
    if (key == "model" ? !v.is_array_of_tables() : !v.is_table())
      loc.fail(v, key == "model" ? "'model' must be an array of tables: write [[model]]" : fmt::format("'{}' must be a table: write [{}]", key, key));
  }
  if (const toml::table* a = doc["audit"].as_table()) {
    for (const auto& [k, v] : *a) {
      std::string key(k.str());
      const toml::node& node = v;
      auto number = [&](double lo) {
        auto x = node.value<double>();
        if (!x || !std::isfinite(*x) || *x < lo) loc.fail(node, fmt::format("bad {}: expected a number of {} or more", key, lo));
        return *x;
      };
      if (key == "name") {
        auto s = v.value_exact<std::string>();
        if (!s || s->empty()) loc.fail(v, "bad name: expected a non-empty string");
        spec.name = *s;
      } else if (key == "db") {
        auto s = v.value_exact<std::string>();
        if (!s || s->empty()) loc.fail(v, "bad db: expected the path of the history database");
        spec.db = absolute(dir, *s);
      } else if (key == "jobs") {
        auto x = v.value_exact<int64_t>();
        if (!x || *x < 1 || *x > 1024) loc.fail(v, "bad jobs: expected an integer from 1 to 1024");
        spec.jobs = static_cast<int>(*x);
      } else if (key == "magnitude_regression") {
        spec.thresholds.magnitude_factor = number(1);
      } else if (key == "time_regression") {
        spec.thresholds.time_growth = number(0);
      } else if (key == "time_regression_min_s") {
        spec.thresholds.time_min_s = number(0);
      } else {
        loc.fail(k.source(), fmt::format("unknown key '{}' in [audit]; expected name, db, jobs, magnitude_regression, "
                                         "time_regression, time_regression_min_s",
                                         key));
      }
    }
  }
  Level defaults;
  if (const toml::table* d = doc["defaults"].as_table()) read_settings(loc, *d, defaults);
  std::vector<Axis> matrix;
  if (const toml::table* m = doc["matrix"].as_table()) matrix = read_matrix(loc, *m);
  for (const auto& axis : matrix)
    if (defaults.settings.count(axis.name))
      loc.fail(defaults.settings[axis.name].where,
               fmt::format("'{}' is a matrix axis ({}) and a default: keep one", axis.name, loc.at(axis.where)));

  const toml::array* models = doc["model"].as_array();
  if (!models || models->empty())
    throw InputError(fmt::format("{}: no models; add at least one [[model]] table with a name and a path (or run)", path));
  std::set<std::string> names;
  std::set<std::string> keys;
  for (const auto& node : *models) {
    const toml::table& m = *node.as_table();
    const toml::source_region where = m.source();
    std::string name;
    std::string model_path;
    std::vector<std::string> command;
    std::string cwd = dir;
    std::vector<std::string> extra;
    Level level;
    std::optional<std::vector<Axis>> own_matrix;
    const toml::array* overrides = nullptr;
    for (const auto& [k, v] : m) {
      std::string key(k.str());
      if (key == "name") {
        auto s = v.value_exact<std::string>();
        if (!s || s->empty() || s->find_first_of("[]\n") != std::string::npos)
          loc.fail(v, "bad name: expected a non-empty string without [ ] or line breaks");
        name = *s;
      } else if (key == "path") {
        auto s = v.value_exact<std::string>();
        if (!s || s->empty()) loc.fail(v, "bad path: expected the path of a TorchScript model (.pt)");
        model_path = *s;
        const std::string full = absolute(dir, *s);
        if (!files::exists(full))
          loc.fail(v, fmt::format("model '{}' not found (looked for {}); paths are relative to the audit file", *s, full));
        if (!files::is_regular(full)) loc.fail(v, fmt::format("model '{}' is not a regular file", *s));
      } else if (key == "run") {
        if (auto s = v.value_exact<std::string>()) {
          std::istringstream words(*s);
          for (std::string w; words >> w;) command.push_back(w);
        } else if (const toml::array* arr = v.as_array()) {
          for (const auto& x : *arr) {
            auto s2 = x.value_exact<std::string>();
            if (!s2) loc.fail(x, "bad run: expected the command as a list of strings");
            command.push_back(*s2);
          }
        }
        if (command.empty()) loc.fail(v, "bad run: expected a command, e.g. run = [\"python\", \"train.py\"]");
      } else if (key == "cwd") {
        auto s = v.value_exact<std::string>();
        if (!s || s->empty()) loc.fail(v, "bad cwd: expected a folder");
        cwd = absolute(dir, *s);
        if (!files::is_directory(cwd)) loc.fail(v, fmt::format("cwd '{}' is not a folder", *s));
      } else if (key == "args") {
        const toml::array* arr = v.as_array();
        if (!arr) loc.fail(v, "bad args: expected a list of strings (extra flags of the check)");
        for (const auto& x : *arr) {
          auto s2 = x.value_exact<std::string>();
          if (!s2) loc.fail(x, "bad args: expected a list of strings");
          extra.push_back(*s2);
        }
      } else if (key == "settings") {
        if (!v.is_table()) loc.fail(v, "'settings' must be a table: write [model.settings]");
        read_settings(loc, *v.as_table(), level);
      } else if (key == "matrix") {
        if (!v.is_table()) loc.fail(v, "'matrix' must be a table: write [model.matrix]");
        own_matrix = read_matrix(loc, *v.as_table());
      } else if (key == "override") {
        overrides = v.as_array();
        if (!overrides || !v.is_array_of_tables()) loc.fail(v, "'override' must be an array of tables: write [[model.override]]");
      } else if (key == "expect") {
        level.expect = std::make_pair(read_expect(loc, v), v.source());
      } else if (key == "tolerance") {
        level.tolerance = std::make_pair(read_tolerance(loc, v), v.source());
      } else {
        loc.fail(k.source(), fmt::format("unknown key '{}' in [[model]]; expected name, path or run, cwd, args, settings, "
                                         "matrix, override, expect, tolerance",
                                         key));
      }
    }
    if (name.empty()) loc.fail(where, "a [[model]] needs a name");
    if (!names.insert(name).second) loc.fail(where, fmt::format("two models are named '{}': names must be unique", name));
    if (model_path.empty() == command.empty())
      loc.fail(where, fmt::format("model '{}' needs exactly one of path (a TorchScript model) and run (a training script)", name));
    const bool script = !command.empty();
    const std::vector<Axis>& axes = own_matrix ? *own_matrix : matrix;
    for (const auto& axis : axes) {
      if (level.settings.count(axis.name))
        loc.fail(level.settings[axis.name].where,
                 fmt::format("'{}' is a matrix axis ({}) and a setting of model '{}': keep one, or give the model its own "
                             "[model.matrix]",
                             axis.name, loc.at(axis.where), name));
      if (script && find_def(axis.name)->torchscript_only)
        loc.fail(axis.where, fmt::format("matrix axis '{}' does not apply to '{}', a training script (reprocheck run); give "
                                         "the model its own [model.matrix]",
                                         axis.name, name));
    }
    for (const auto& [key, value] : level.settings)
      if (script && find_def(key)->torchscript_only)
        loc.fail(value.where, fmt::format("setting '{}' does not apply to '{}', a training script (reprocheck run)", key, name));
    // Expand the matrix: the first axis varies slowest.
    size_t combos = 1;
    for (const auto& axis : axes) {
      combos *= axis.values.size();
      if (combos > kMaxCells) loc.fail(axis.where, fmt::format("the matrix makes more than {} cells; split the audit", kMaxCells));
    }
    spec.models.push_back(name);
    for (size_t c = 0; c < combos; ++c) {
      std::vector<std::pair<std::string, std::string>> chosen;
      size_t rest = c;
      for (size_t a = axes.size(); a-- > 0;) {
        chosen.insert(chosen.begin(), {axes[a].name, axes[a].values[rest % axes[a].values.size()].value});
        rest /= axes[a].values.size();
      }
      Cell cell;
      cell.model = name;
      cell.script = script;
      cell.cwd = cwd;
      for (const auto& [k, v] : defaults.settings)
        if (!(script && find_def(k)->torchscript_only)) cell.settings[k] = v.value;
      for (const auto& [k, v] : level.settings) cell.settings[k] = v.value;
      for (const auto& [k, v] : chosen) cell.settings[k] = v;
      Tolerance tol;
      if (defaults.expect) cell.expect = defaults.expect->first;
      if (defaults.tolerance) tol = defaults.tolerance->first;
      if (level.expect) cell.expect = level.expect->first;
      if (level.tolerance) tol = level.tolerance->first;
      bool skip = false;
      if (overrides) {
        for (const auto& o : *overrides) {
          const toml::table& ot = *o.as_table();
          const toml::table* when = nullptr;
          for (const auto& [k, v] : ot) {
            std::string key(k.str());
            if (key == "when") {
              when = v.as_table();
              if (!when) loc.fail(v, "bad when: expected a table of settings, e.g. when = { threads = 2 }");
            } else if (key != "expect" && key != "tolerance" && key != "skip") {
              loc.fail(k.source(), fmt::format("unknown key '{}' in [[model.override]]; expected when, expect, tolerance, skip", key));
            }
          }
          if (!when) loc.fail(ot.source(), "a [[model.override]] needs when = { setting = value, ... }");
          bool match = true;
          for (const auto& [k, v] : *when) {
            std::string key(k.str());
            const SettingDef* def = find_def(key);
            if (!def) loc.fail(k.source(), fmt::format("unknown setting '{}' in when; expected one of {}", key, setting_names()));
            auto it = cell.settings.find(key);
            if (it == cell.settings.end() || it->second != setting_value(loc, *def, v)) match = false;
          }
          if (!match) continue;
          if (auto e = ot["expect"]; e) cell.expect = read_expect(loc, *e.node());
          if (auto t = ot["tolerance"]; t) tol = read_tolerance(loc, *t.node());
          if (auto s = ot["skip"]; s) {
            auto b = s.value_exact<bool>();
            if (!b) loc.fail(*s.node(), "bad skip: expected true or false");
            skip = *b;
          }
        }
      }
      if (skip) continue;
      cell.tolerance = tol.label;
      std::vector<std::string> parts;
      for (const auto& [k, v] : chosen) parts.push_back(k + "=" + v);
      cell.column = parts.empty() ? "default" : fmt::format("{}", fmt::join(parts, " "));
      std::vector<std::string> all;
      for (const auto& [k, v] : cell.settings) all.push_back(k + "=" + v);
      if (tol.label != "bitwise") all.push_back("tolerance=" + tol.label);
      cell.key = fmt::format("{}[{}]", name, fmt::join(all, ","));
      if (!keys.insert(cell.key).second) continue;  // two overrides can make the same cell
      if (script) cell.args.push_back("run");
      else cell.args.push_back(model_path);
      for (const auto& [k, v] : cell.settings)
        for (auto& f : flags_for(k, v)) cell.args.push_back(f);
      for (const auto& f : tol.flags) cell.args.push_back(f);
      for (const auto& f : extra) cell.args.push_back(f);
      if (script) {
        cell.args.push_back("--");
        cell.args.insert(cell.args.end(), command.begin(), command.end());
      }
      spec.cells.push_back(std::move(cell));
      if (spec.cells.size() > kMaxCells)
        loc.fail(where, fmt::format("the audit makes more than {} cells; split it", kMaxCells));
    }
  }
  if (spec.cells.empty()) throw InputError(fmt::format("{}: every cell is skipped; nothing to audit", path));
  return spec;
}

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
