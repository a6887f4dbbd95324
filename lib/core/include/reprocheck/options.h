// Every option of reprocheck, defined once: a row of the option table (its key, flag, kind of
// value, choices and range, help, the commands that take it, whether the audit takes it as a
// setting) bound to the field it sets. The command-line flags of every command, the audit's
// settings, the checks of each value and the JSON handed to the workers are all made from the
// table, so a new option is one row (and its field).
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "reprocheck/run_options.h"

namespace reprocheck {

// What a check does beyond its runs' options: how many runs, the capture, the comparison, the
// reports.
struct CheckSettings {
  int runs = 2;
  int jobs = 1;
  double timeout = 0;  // seconds per run; 0: none
  std::string keep;    // folder for the dumps
  bool force = false;  // overwrite what --keep or --save-baseline would replace
  bool isolate = false;
  std::string drill = "auto";      // pass 3: none, auto (scoped to where it started), full (every op of the step)
  std::string capture = "ladder";  // ladder (hashes first), full, hashes
  std::string baseline, save_baseline;
  std::string vary;  // KNOB=V1,V2,...
  std::string tolerance = "bitwise";
  std::optional<double> atol, rtol;
  std::string json, junit, markdown, html;  // report files
};

// Every option's value.
struct Settings {
  RunOptions run;
  CheckSettings check;
};

// The commands that take an option.
enum OptionCommand : unsigned {
  kCheckCommand = 1,   // reprocheck MODEL.pt
  kRecordCommand = 2,  // reprocheck record MODEL.pt (and each run of a check)
  kRunCommand = 4,     // reprocheck run -- COMMAND
  kAuditSetting = 8,   // a setting of an audit file
  kDiffCommand = 16,   // reprocheck diff (the comparison and the reports)
  kVaryKnob = 32,      // a knob of --vary (named by its flag without the dashes)
  kInfoCommand = 64,   // reprocheck info MODEL.pt
};

using OptionField = std::variant<int RunOptions::*, double RunOptions::*, bool RunOptions::*, std::string RunOptions::*,
                                 std::vector<int64_t> RunOptions::*, std::vector<std::string> RunOptions::*,
                                 int CheckSettings::*, double CheckSettings::*, bool CheckSettings::*,
                                 std::string CheckSettings::*, std::optional<double> CheckSettings::*>;

enum class ValueCheck {
  none,
  seed,    // a non-negative integer up to 2^63-1, or "random"
  device,  // cpu, cuda, cuda:N, auto
  shape,   // dimensions: 4,3,32,32
  not_empty,
  positive,   // a number above 0 (not 0 itself)
  unit_open,  // 0 <= x < 1
};

// One row of the table: OptionDef("steps", "--steps", "training steps", commands, &RunOptions::steps)
// .range(1, kMaxSteps), with the other columns set by name where they differ from the default.
struct OptionDef {
  const char* key;   // the JSON key of a run option, and the audit setting's name
  const char* flag;  // "--data-seed"; "" for what no flag sets (the model, the command)
  const char* help;
  unsigned commands;  // OptionCommand bits
  OptionField field;
  std::vector<std::string> choices;  // allowed values of a text option ("" allowed when listed)
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  ValueCheck check = ValueCheck::none;
  const char* implicit = "";      // a flag that takes an optional value: the value when none is given;
                                  // a flag without value that sets a text field: the text it sets
  bool torchscript_only = false;  // an audit setting that does not apply to training scripts
  const char* unset = "";         // a number field's "not given" value in the dump ("-1"), or ""
  const char* run_help = "";      // the help of `reprocheck run`'s flag, where it differs

  OptionDef(const char* key_, const char* flag_, const char* help_, unsigned commands_, OptionField field_)
      : key(key_), flag(flag_), help(help_), commands(commands_), field(field_) {}
  OptionDef& one_of(std::vector<std::string> values) { return choices = std::move(values), *this; }
  OptionDef& range(double lo, double hi = std::numeric_limits<double>::infinity()) { return min = lo, max = hi, *this; }
  OptionDef& checked(ValueCheck c) { return check = c, *this; }
  OptionDef& implies(const char* value) { return implicit = value, *this; }
  OptionDef& model_only() { return torchscript_only = true, *this; }
  OptionDef& unset_as(const char* value) { return unset = value, *this; }
  OptionDef& in_run(const char* help_) { return run_help = help_, *this; }

  bool is_flag() const;  // takes no value (a bool, or a text field set to `implicit`)
  bool repeats() const;  // each use adds a value (a list field)
  bool takes(OptionCommand c) const { return (commands & c) != 0; }
};

const std::vector<OptionDef>& option_table();
// The row of an audit setting or JSON key ("data_seed"), or nullptr.
const OptionDef* find_option(std::string_view key);
// The row a command takes the flag for ("--hashes-only" sets another field in record than in a
// check), or nullptr.
const OptionDef* find_flag(std::string_view flag, OptionCommand command);

// Sets the option from its text (the command line's, or an audit file's), checking it: the kind of
// value, the choices, the range. Throws UsageError: "bad value 'x' for --steps: expected ...".
void set_option(Settings& s, const OptionDef& def, const std::string& text);
// Adds one value of a repeating option.
void add_option_value(Settings& s, const OptionDef& def, const std::string& text);
// The option's value as its flag takes it ("2", "true", "4,3,32,32").
std::string option_text(const Settings& s, const OptionDef& def);
// The flags that give a setting's value to a command: {"--threads", "2"}, {"--ops"}, {} (false).
std::vector<std::string> option_args(const OptionDef& def, const std::string& value);
// Checks every run option's value against its row (what set_option checks, for options read from
// JSON). Throws UsageError.
void check_option_values(const RunOptions& o);

// The help of the option's flag: the row's help, with what is listed elsewhere (the layer
// selectors, the knobs of --vary).
std::string option_help(const OptionDef& def, OptionCommand command);
// The kind of value a flag takes, for its help: INT, FLOAT, TEXT; "" for a flag without value.
std::string option_type_name(const OptionDef& def);

// The text of a value check's expectation, for messages ("a non-negative integer or 'random'").
std::string expectation(const OptionDef& def);

}  // namespace reprocheck
