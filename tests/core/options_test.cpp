#include "reprocheck/options.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "reprocheck/error.h"
#include "reprocheck/run_options.h"

namespace rc = reprocheck;

namespace {

const rc::OptionDef& row(const char* key) {
  const rc::OptionDef* def = rc::find_option(key);
  if (!def) throw std::runtime_error(std::string("no row ") + key);
  return *def;
}

// The message set_option throws, or "" when it accepts the text.
std::string refusal(const char* key, const std::string& text) {
  rc::Settings s;
  try {
    rc::set_option(s, row(key), text);
  } catch (const rc::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(OptionTable, KeysAreUniqueAndEachCommandHasEachFlagOnce) {
  std::set<std::string> keys;
  for (const auto& def : rc::option_table()) EXPECT_TRUE(keys.insert(def.key).second) << def.key;
  for (auto command : {rc::kCheckCommand, rc::kRecordCommand, rc::kRunCommand, rc::kDiffCommand}) {
    std::set<std::string> flags;
    for (const auto& def : rc::option_table())
      if (*def.flag && def.takes(command)) EXPECT_TRUE(flags.insert(def.flag).second) << def.flag;
    EXPECT_FALSE(flags.empty());
  }
  // "--hashes-only" is a different option in a check (the capture) than in record (the golden).
  EXPECT_EQ(std::string(rc::find_flag("--hashes-only", rc::kCheckCommand)->key), "hashes");
  EXPECT_EQ(std::string(rc::find_flag("--hashes-only", rc::kRecordCommand)->key), "hashes_only");
  EXPECT_EQ(rc::find_flag("--keep", rc::kRecordCommand), nullptr);
}

TEST(OptionTable, SetOptionChecksKindChoicesAndRange) {
  EXPECT_EQ(refusal("steps", "3"), "");
  EXPECT_EQ(refusal("steps", "0"), "bad value '0' for --steps: expected an integer from 1 to 100000");
  EXPECT_NE(refusal("steps", "2.5"), "");
  EXPECT_NE(refusal("steps", "9223372036854775807"), "");
  EXPECT_EQ(refusal("mode", "training"), "bad value 'training' for --mode: expected one of train, eval");
  EXPECT_EQ(refusal("seed", "random"), "");
  EXPECT_EQ(refusal("seed", "9223372036854775807"), "");
  EXPECT_NE(refusal("seed", "9223372036854775808"), "");
  EXPECT_NE(refusal("seed", "-1"), "");
  EXPECT_EQ(refusal("device", "cuda:3"), "");
  EXPECT_EQ(refusal("device", "tpu"), "bad value 'tpu' for --device: expected cpu, cuda, cuda:N or auto");
  EXPECT_EQ(refusal("input_shape", "4x3x8x8"), "");
  EXPECT_NE(refusal("input_shape", "4,0").find("dimensions of 1 or more"), std::string::npos);
  EXPECT_NE(refusal("lr", "0").find("a number above 0"), std::string::npos);
  EXPECT_NE(refusal("lr", "nan"), "");
  EXPECT_NE(refusal("beta1", "1"), "");
  EXPECT_EQ(refusal("beta1", "0.9"), "");
  EXPECT_NE(refusal("benchmark", "maybe"), "");
  EXPECT_NE(refusal("atol", "-1").find("a number of 0 or more"), std::string::npos);
  EXPECT_NE(refusal("layers", ""), "");
}

TEST(OptionTable, SetOptionWritesTheFieldAndOptionTextReadsItBack) {
  rc::Settings s;
  rc::set_option(s, row("deterministic"), "");  // the flag alone
  EXPECT_EQ(s.run.deterministic, "on");
  rc::set_option(s, row("deterministic"), "false");
  EXPECT_EQ(s.run.deterministic, "off");
  rc::set_option(s, row("full"), "");
  EXPECT_EQ(s.check.capture, "full");
  rc::set_option(s, row("timeout"), "2.5");
  EXPECT_EQ(s.check.timeout, 2.5);
  rc::set_option(s, row("atol"), "0.001");
  ASSERT_TRUE(s.check.atol.has_value());
  rc::add_option_value(s, row("env"), "A=1");
  rc::add_option_value(s, row("env"), "B=2");
  EXPECT_EQ(s.run.env, (std::vector<std::string>{"A=1", "B=2"}));
  rc::set_option(s, row("input_shape"), "[2, 3]");
  EXPECT_EQ(rc::option_text(s, row("input_shape")), "2,3");
  EXPECT_EQ(rc::option_text(s, row("timeout")), "2.5");
  EXPECT_EQ(rc::option_text(s, row("benchmark")), "false");
  EXPECT_EQ(rc::option_text(s, row("env")), "A=1,B=2");
}

TEST(OptionTable, OptionArgsGiveACommandTheValue) {
  EXPECT_EQ(rc::option_args(row("threads"), "2"), (std::vector<std::string>{"--threads", "2"}));
  EXPECT_EQ(rc::option_args(row("data_seed"), "7"), (std::vector<std::string>{"--data-seed", "7"}));
  EXPECT_EQ(rc::option_args(row("ops"), "true"), (std::vector<std::string>{"--ops"}));
  EXPECT_TRUE(rc::option_args(row("ops"), "false").empty());
  EXPECT_TRUE(rc::option_args(row("capture"), "ladder").empty());
  EXPECT_EQ(rc::option_args(row("capture"), "hashes"), (std::vector<std::string>{"--capture", "hashes"}));
  // Every audit setting's default value, given back through its flag, sets the same value.
  const rc::Settings defaults;
  for (const auto& def : rc::option_table()) {
    if (!def.takes(rc::kAuditSetting)) continue;
    const std::string text = rc::option_text(defaults, def);
    auto args = rc::option_args(def, text);
    rc::Settings back;
    if (args.size() == 2) rc::set_option(back, *rc::find_flag(args[0], rc::kCheckCommand), args[1]);
    if (args.size() == 1) rc::set_option(back, *rc::find_flag(args[0], rc::kCheckCommand), "");
    EXPECT_EQ(rc::option_text(back, def), text) << def.key;
  }
}

TEST(OptionTable, EveryRunOptionRowIsAJsonKeyAndAKnobIsARow) {
  auto keys = nlohmann::json::parse(rc::to_json(rc::RunOptions{}));
  size_t run_rows = 0;
  for (const auto& def : rc::option_table()) {
    const bool run_field = std::visit(
        [](auto m) {
          using M = decltype(m);
          return std::is_same_v<M, int rc::RunOptions::*> || std::is_same_v<M, double rc::RunOptions::*> ||
                 std::is_same_v<M, bool rc::RunOptions::*> || std::is_same_v<M, std::string rc::RunOptions::*> ||
                 std::is_same_v<M, std::vector<int64_t> rc::RunOptions::*> ||
                 std::is_same_v<M, std::vector<std::string> rc::RunOptions::*>;
        },
        def.field);
    if (!run_field) continue;
    ++run_rows;
    EXPECT_TRUE(keys.contains(def.key)) << def.key;
  }
  EXPECT_EQ(keys.size(), run_rows);
  for (const auto& knob : rc::knob_names()) {
    if (knob == "env:NAME") continue;
    const rc::OptionDef* def = rc::find_flag("--" + knob, rc::kCheckCommand);
    ASSERT_NE(def, nullptr) << knob;
    EXPECT_TRUE(def->takes(rc::kVaryKnob));
  }
  EXPECT_EQ(rc::with_knob(rc::RunOptions{}, "data-seed", "9").data_seed, "9");
  EXPECT_EQ(rc::with_knob(rc::RunOptions{}, "data_seed", "9").data_seed, "9");
  EXPECT_THROW(rc::with_knob(rc::RunOptions{}, "lr", "0.1"), rc::UsageError);  // a row, not a knob
}

TEST(OptionTable, HelpAndTypeNamesComeFromTheRow) {
  EXPECT_EQ(rc::option_type_name(row("steps")), "INT");
  EXPECT_EQ(rc::option_type_name(row("lr")), "FLOAT");
  EXPECT_EQ(rc::option_type_name(row("atol")), "FLOAT");
  EXPECT_EQ(rc::option_type_name(row("device")), "TEXT");
  EXPECT_EQ(rc::option_type_name(row("ops")), "");
  EXPECT_EQ(rc::option_type_name(row("full")), "");
  EXPECT_NE(rc::option_help(row("vary"), rc::kCheckCommand).find("env:NAME"), std::string::npos);
  EXPECT_NE(rc::option_help(row("steps"), rc::kRunCommand), rc::option_help(row("steps"), rc::kCheckCommand));
  for (const auto& def : rc::option_table())
    if (*def.flag) EXPECT_FALSE(rc::option_help(def, rc::kCheckCommand).empty()) << def.key;
}
