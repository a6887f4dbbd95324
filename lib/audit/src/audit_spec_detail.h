// The audit file's internals shared by its reader (audit_spec.cpp: the settings and their values)
// and its expansion into cells (audit_load.cpp). Not a public header.
#pragma once

#include <fmt/format.h>
#include <toml++/toml.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/options.h"

namespace reprocheck::audit::spec_detail {

inline constexpr size_t kMaxFileBytes = 4 << 20;
inline constexpr size_t kMaxCells = 10000;

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

struct Located {
  std::string value;
  toml::source_region where;
};

struct Tolerance {
  std::string label = "bitwise";
  std::vector<std::string> flags;
};

// A table of settings (plus expect and tolerance where `cell_keys`) into `out`.
struct Level {
  std::map<std::string, Located> settings;
  std::optional<std::pair<Expect, toml::source_region>> expect;
  std::optional<std::pair<Tolerance, toml::source_region>> tolerance;
};

struct Axis {
  std::string name;
  std::vector<Located> values;
  toml::source_region where;
};

// The option table's row of an audit setting (a row that takes kAuditSetting), or nullptr.
const OptionDef* find_def(const std::string& name);
// The audit settings' names, in the option table's order.
std::string setting_names();
// A setting's value as its flag takes it, checked against the option's row; fails at the value's
// location when it is not one.
std::string setting_value(const Locator& loc, const OptionDef& def, const toml::node& n);
Tolerance read_tolerance(const Locator& loc, const toml::node& n);
Expect read_expect(const Locator& loc, const toml::node& n);
void read_settings(const Locator& loc, const toml::table& t, Level& out, const std::set<std::string>& skip = {});
std::vector<Axis> read_matrix(const Locator& loc, const toml::table& t);
std::string absolute(const std::string& base_dir, const std::string& path);
// The check's flags for a setting's value ("--threads", "2"; "--full" for capture = "full").
std::vector<std::string> flags_for(const std::string& key, const std::string& value);

}  // namespace reprocheck::audit::spec_detail
