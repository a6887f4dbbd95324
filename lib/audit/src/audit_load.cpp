// Reading an audit file and expanding it into cells: the file, its tables, each [[model]], its
// matrix combinations, the overrides that apply to each cell. Every problem is reported with the
// file, line and column of the value at fault.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <limits.h>
#include <stdlib.h>

#include <cmath>
#include <sstream>

#include "audit_spec_detail.h"
#include "reprocheck/files.h"

namespace reprocheck::audit {

using namespace spec_detail;

namespace {

toml::table parse_file(const std::string& path, const Locator& loc) {
  const std::string text = files::read_text(path, "audit file");
  if (text.size() > kMaxFileBytes)
    throw InputError(
        fmt::format("audit file '{}': {} bytes, more than an audit file has (limit {}); is it the right file?", path,
                    text.size(), kMaxFileBytes));
  try {
    return toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    loc.fail(e.source(), fmt::format("not valid TOML: {}", first_line(std::string(e.description()))));
  }
}

void check_tables(const Locator& loc, const toml::table& doc) {
  for (const auto& [k, v] : doc) {
    std::string key(k.str());
    if (key != "audit" && key != "defaults" && key != "matrix" && key != "model")
      loc.fail(k.source(),
               fmt::format("unknown table '{}'; an audit file has [audit], [defaults], [matrix] and [[model]]", key));
    if (key == "model" ? !v.is_array_of_tables() : !v.is_table())
      loc.fail(v, key == "model" ? "'model' must be an array of tables: write [[model]]"
                                 : fmt::format("'{}' must be a table: write [{}]", key, key));
  }
}

void read_audit_table(const Locator& loc, const toml::table& a, const std::string& dir, AuditSpec& spec) {
  for (const auto& [k, v] : a) {
    std::string key(k.str());
    const toml::node& node = v;
    auto number = [&](double lo) {
      auto x = node.value<double>();
      if (!x || !std::isfinite(*x) || *x < lo)
        loc.fail(node, fmt::format("bad {}: expected a number of {} or more", key, lo));
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
    } else if (key == "timing") {
      auto s = v.value_exact<std::string>();
      if (!s || (*s != "blocking" && *s != "info"))
        loc.fail(v, "bad timing: expected \"blocking\" (timing regressions fail the audit) or \"info\" (listed only)");
      spec.thresholds.timing_blocking = *s == "blocking";
    } else if (key == "timing_window") {
      auto x = v.value_exact<int64_t>();
      if (!x || *x < 1 || *x > 100) loc.fail(v, "bad timing_window: expected an integer from 1 to 100 (audits)");
      spec.thresholds.timing_window = static_cast<int>(*x);
    } else {
      loc.fail(k.source(), fmt::format("unknown key '{}' in [audit]; expected name, db, jobs, magnitude_regression, "
                                       "time_regression, time_regression_min_s, timing, timing_window",
                                       key));
    }
  }
}

// One [[model]] table as read.
struct ModelEntry {
  toml::source_region where;
  std::string name, model_path, cwd;
  std::vector<std::string> command, extra;
  Level level;
  std::optional<std::vector<Axis>> own_matrix;
  const toml::array* overrides = nullptr;
  bool script() const { return !command.empty(); }
};

std::vector<std::string> string_list(const Locator& loc, const toml::node& v, const char* what) {
  std::vector<std::string> out;
  const toml::array* arr = v.as_array();
  if (!arr) loc.fail(v, fmt::format("bad {}: expected a list of strings", what));
  for (const auto& x : *arr) {
    auto s = x.value_exact<std::string>();
    if (!s) loc.fail(x, fmt::format("bad {}: expected a list of strings", what));
    out.push_back(*s);
  }
  return out;
}

void read_model_source(const Locator& loc, const std::string& key, const toml::node& v, const std::string& dir,
                       ModelEntry& m) {
  if (key == "path") {
    auto s = v.value_exact<std::string>();
    if (!s || s->empty()) loc.fail(v, "bad path: expected the path of a TorchScript model (.pt)");
    m.model_path = *s;
    const std::string full = absolute(dir, *s);
    if (!files::exists(full))
      loc.fail(v, fmt::format("model '{}' not found (looked for {}); paths are relative to the audit file", *s, full));
    if (!files::is_regular(full)) loc.fail(v, fmt::format("model '{}' is not a regular file", *s));
  } else if (key == "run") {
    if (auto s = v.value_exact<std::string>()) {
      std::istringstream words(*s);
      for (std::string w; words >> w;) m.command.push_back(w);
    } else if (v.is_array()) {
      m.command = string_list(loc, v, "run");
    }
    if (m.command.empty()) loc.fail(v, "bad run: expected a command, e.g. run = [\"python\", \"train.py\"]");
  } else {  // cwd
    auto s = v.value_exact<std::string>();
    if (!s || s->empty()) loc.fail(v, "bad cwd: expected a folder");
    m.cwd = absolute(dir, *s);
    if (!files::is_directory(m.cwd)) loc.fail(v, fmt::format("cwd '{}' is not a folder", *s));
  }
}

ModelEntry read_model(const Locator& loc, const toml::table& t, const std::string& dir) {
  ModelEntry m;
  m.where = t.source();
  m.cwd = dir;
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    if (key == "name") {
      auto s = v.value_exact<std::string>();
      if (!s || s->empty() || s->find_first_of("[]\n") != std::string::npos)
        loc.fail(v, "bad name: expected a non-empty string without [ ] or line breaks");
      m.name = *s;
    } else if (key == "path" || key == "run" || key == "cwd") {
      read_model_source(loc, key, v, dir, m);
    } else if (key == "args") {
      m.extra = string_list(loc, v, "args");
    } else if (key == "settings") {
      if (!v.is_table()) loc.fail(v, "'settings' must be a table: write [model.settings]");
      read_settings(loc, *v.as_table(), m.level);
    } else if (key == "matrix") {
      if (!v.is_table()) loc.fail(v, "'matrix' must be a table: write [model.matrix]");
      m.own_matrix = read_matrix(loc, *v.as_table());
    } else if (key == "override") {
      m.overrides = v.as_array();
      if (!m.overrides || !v.is_array_of_tables())
        loc.fail(v, "'override' must be an array of tables: write [[model.override]]");
    } else if (key == "expect") {
      m.level.expect = std::make_pair(read_expect(loc, v), v.source());
    } else if (key == "tolerance") {
      m.level.tolerance = std::make_pair(read_tolerance(loc, v), v.source());
    } else {
      loc.fail(k.source(),
               fmt::format("unknown key '{}' in [[model]]; expected name, path or run, cwd, args, settings, "
                           "matrix, override, expect, tolerance",
                           key));
    }
  }
  return m;
}

// A model's axes and settings agree with each other and with its kind (a training script takes
// no TorchScript-only setting).
void check_model(const Locator& loc, const ModelEntry& m, const std::vector<Axis>& axes) {
  if (m.name.empty()) loc.fail(m.where, "a [[model]] needs a name");
  if (m.model_path.empty() == m.command.empty())
    loc.fail(m.where, fmt::format("model '{}' needs exactly one of path (a TorchScript model) and run (a training "
                                  "script)",
                                  m.name));
  for (const auto& axis : axes) {
    if (auto it = m.level.settings.find(axis.name); it != m.level.settings.end())
      loc.fail(
          it->second.where,
          fmt::format("'{}' is a matrix axis ({}) and a setting of model '{}': keep one, or give the model its own "
                      "[model.matrix]",
                      axis.name, loc.at(axis.where), m.name));
    if (m.script() && find_def(axis.name)->torchscript_only)
      loc.fail(axis.where, fmt::format("matrix axis '{}' does not apply to '{}', a training script (reprocheck run); "
                                       "give the model its own [model.matrix]",
                                       axis.name, m.name));
  }
  for (const auto& [key, value] : m.level.settings)
    if (m.script() && find_def(key)->torchscript_only)
      loc.fail(value.where,
               fmt::format("setting '{}' does not apply to '{}', a training script (reprocheck run)", key, m.name));
}

// The overrides whose `when` matches the cell change its expectation, tolerance or skip it.
// Returns whether the cell is skipped.
bool apply_overrides(const Locator& loc, const toml::array* overrides, Cell& cell, Tolerance& tol) {
  bool skip = false;
  if (!overrides) return skip;
  for (const auto& o : *overrides) {
    const toml::table& ot = *o.as_table();
    const toml::table* when = nullptr;
    for (const auto& [k, v] : ot) {
      std::string key(k.str());
      if (key == "when") {
        when = v.as_table();
        if (!when) loc.fail(v, "bad when: expected a table of settings, e.g. when = { threads = 2 }");
      } else if (key != "expect" && key != "tolerance" && key != "skip") {
        loc.fail(k.source(),
                 fmt::format("unknown key '{}' in [[model.override]]; expected when, expect, tolerance, skip", key));
      }
    }
    if (!when) loc.fail(ot.source(), "a [[model.override]] needs when = { setting = value, ... }");
    bool match = true;
    for (const auto& [k, v] : *when) {
      std::string key(k.str());
      const OptionDef* def = find_def(key);
      if (!def)
        loc.fail(k.source(), fmt::format("unknown setting '{}' in when; expected one of {}", key, setting_names()));
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
  return skip;
}

// The cell's column, key and the check's arguments, from its settings.
void finish_cell(const ModelEntry& m, const std::vector<std::pair<std::string, std::string>>& chosen,
                 const Tolerance& tol, Cell& cell) {
  cell.tolerance = tol.label;
  std::vector<std::string> parts;
  for (const auto& [k, v] : chosen) parts.push_back(k + "=" + v);
  cell.column = parts.empty() ? "default" : fmt::format("{}", fmt::join(parts, " "));
  std::vector<std::string> all;
  for (const auto& [k, v] : cell.settings) all.push_back(k + "=" + v);
  if (tol.label != "bitwise") all.push_back("tolerance=" + tol.label);
  cell.key = fmt::format("{}[{}]", m.name, fmt::join(all, ","));
  cell.args.push_back(m.script() ? "run" : m.model_path);
  for (const auto& [k, v] : cell.settings)
    for (auto& f : flags_for(k, v)) cell.args.push_back(f);
  for (const auto& f : tol.flags) cell.args.push_back(f);
  for (const auto& f : m.extra) cell.args.push_back(f);
  if (m.script()) {
    cell.args.push_back("--");
    cell.args.insert(cell.args.end(), m.command.begin(), m.command.end());
  }
}

// Every combination of the model's axes (the first varies slowest) is a cell, unless skipped.
void expand_model(const Locator& loc, const ModelEntry& m, const Level& defaults, const std::vector<Axis>& axes,
                  std::set<std::string>& keys, AuditSpec& spec) {
  size_t combos = 1;
  for (const auto& axis : axes) {
    combos *= axis.values.size();
    if (combos > kMaxCells)
      loc.fail(axis.where, fmt::format("the matrix makes more than {} cells; split the audit", kMaxCells));
  }
  for (size_t c = 0; c < combos; ++c) {
    std::vector<std::pair<std::string, std::string>> chosen;
    size_t rest = c;
    for (size_t a = axes.size(); a-- > 0;) {
      chosen.insert(chosen.begin(), {axes[a].name, axes[a].values[rest % axes[a].values.size()].value});
      rest /= axes[a].values.size();
    }
    Cell cell;
    cell.model = m.name;
    cell.script = m.script();
    cell.cwd = m.cwd;
    for (const auto& [k, v] : defaults.settings)
      if (!(m.script() && find_def(k)->torchscript_only)) cell.settings[k] = v.value;
    for (const auto& [k, v] : m.level.settings) cell.settings[k] = v.value;
    for (const auto& [k, v] : chosen) cell.settings[k] = v;
    Tolerance tol;
    if (defaults.expect) cell.expect = defaults.expect->first;
    if (defaults.tolerance) tol = defaults.tolerance->first;
    if (m.level.expect) cell.expect = m.level.expect->first;
    if (m.level.tolerance) tol = m.level.tolerance->first;
    if (apply_overrides(loc, m.overrides, cell, tol)) continue;
    finish_cell(m, chosen, tol, cell);
    if (!keys.insert(cell.key).second) continue;  // two overrides can make the same cell
    spec.cells.push_back(std::move(cell));
    if (spec.cells.size() > kMaxCells)
      loc.fail(m.where, fmt::format("the audit makes more than {} cells; split it", kMaxCells));
  }
}

}  // namespace

AuditSpec load_spec(const std::string& path) {
  const Locator loc{path};
  const toml::table doc = parse_file(path, loc);
  char resolved[PATH_MAX];
  const std::string dir =
      realpath(files::parent_dir(path).c_str(), resolved) ? std::string(resolved) : files::parent_dir(path);
  AuditSpec spec;
  spec.path = path;
  spec.name = files::base_name(path);
  if (auto dot = spec.name.rfind('.'); dot != std::string::npos && dot > 0) spec.name.resize(dot);
  check_tables(loc, doc);
  if (const toml::table* a = doc["audit"].as_table()) read_audit_table(loc, *a, dir, spec);
  Level defaults;
  if (const toml::table* d = doc["defaults"].as_table()) read_settings(loc, *d, defaults);
  std::vector<Axis> matrix;
  if (const toml::table* m = doc["matrix"].as_table()) matrix = read_matrix(loc, *m);
  for (const auto& axis : matrix)
    if (auto it = defaults.settings.find(axis.name); it != defaults.settings.end())
      loc.fail(it->second.where,
               fmt::format("'{}' is a matrix axis ({}) and a default: keep one", axis.name, loc.at(axis.where)));
  const toml::array* models = doc["model"].as_array();
  if (!models || models->empty())
    throw InputError(
        fmt::format("{}: no models; add at least one [[model]] table with a name and a path (or run)", path));
  std::set<std::string> names, keys;
  for (const auto& node : *models) {
    const ModelEntry m = read_model(loc, *node.as_table(), dir);
    if (!m.name.empty() && !names.insert(m.name).second)
      loc.fail(m.where, fmt::format("two models are named '{}': names must be unique", m.name));
    const std::vector<Axis>& axes = m.own_matrix ? *m.own_matrix : matrix;
    check_model(loc, m, axes);
    spec.models.push_back(m.name);
    expand_model(loc, m, defaults, axes, keys, spec);
  }
  if (spec.cells.empty()) throw InputError(fmt::format("{}: every cell is skipped; nothing to audit", path));
  return spec;
}

}  // namespace reprocheck::audit
