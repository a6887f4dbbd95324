#include "reprocheck/run_options.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "reprocheck/error.h"

namespace rc = reprocheck;

TEST(RunOptions, ValidatesAndRoundTripsToArguments) {
  rc::RunOptions o;
  o.model = "m.pt";
  o.threads = 2;
  o.input_shape = {1, 3};
  o.ops = true;
  auto args = rc::to_args(o);
  EXPECT_EQ(args.front(), "m.pt");
  auto has = [&](const std::string& a, const std::string& b) {
    auto it = std::find(args.begin(), args.end(), a);
    return it != args.end() && it + 1 != args.end() && *(it + 1) == b;
  };
  EXPECT_TRUE(has("--threads", "2"));
  EXPECT_TRUE(has("--input-shape", "1,3"));
  EXPECT_NE(std::find(args.begin(), args.end(), "--ops"), args.end());
  o.seed = "abc";
  EXPECT_THROW(rc::validate(o), rc::UsageError);
  o.seed = "9223372036854775807";  // the largest seed "random" draws
  EXPECT_NO_THROW(rc::validate(o));
  o.seed = "9223372036854775808";
  EXPECT_THROW(rc::validate(o), rc::UsageError);
  o.seed = "random";
  o.mode = "training";
  EXPECT_THROW(rc::validate(o), rc::UsageError);
}

TEST(RunOptions, JsonRoundTripsEveryOption) {
  rc::RunOptions o;
  o.model = "m.pt";
  o.steps = 7;
  o.seed = "random";
  o.data_seed = "5";
  o.deterministic = "warn";
  o.benchmark = true;
  o.threads = 3;
  o.device = "cuda:1";
  o.mode = "eval";
  o.reinit = "xavier_normal";
  o.input_shape = {2, 3, 4};
  o.dtype = "float64";
  o.loss = "sum";
  o.lr = 0.25;
  o.momentum = 0.5;
  o.libraries = {"a.so", "b.so"};
  o.layers = "path:^x";
  o.ops = true;
  auto back = rc::from_json(rc::to_json(o));
  EXPECT_EQ(rc::to_strings(back), rc::to_strings(o));
  EXPECT_EQ(back.libraries, o.libraries);
  EXPECT_EQ(back.input_shape, o.input_shape);
  EXPECT_DOUBLE_EQ(back.lr, 0.25);
}

TEST(RunOptions, JsonKeysAreTheDumpFormats) {
  // The keys dumps have always carried (docs/dump-format.md): older dumps must keep reading.
  auto s = rc::to_strings(rc::RunOptions{});
  std::vector<std::string> keys;
  for (const auto& [k, v] : s) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"benchmark", "command", "data_seed", "deterministic", "device", "dtype", "env",
                                            "hashes_only", "input_shape", "layers", "libraries", "loss", "lr", "mode", "model",
                                            "momentum", "ops", "reinit", "seed", "steps", "threads"}));
  EXPECT_EQ(s["threads"], "0");
  EXPECT_EQ(s["benchmark"], "false");
  EXPECT_EQ(s["seed"], "0");
}

TEST(RunOptions, FromJsonKeepsDefaultsForMissingKeysAndRefusesWrongTypes) {
  auto o = rc::from_json(R"({"threads": 4, "unknown": [1]})");
  EXPECT_EQ(o.threads, 4);
  EXPECT_EQ(o.steps, 2);
  EXPECT_THROW(rc::from_json(R"({"threads": "four"})"), rc::InputError);
  EXPECT_THROW(rc::from_json("[1, 2]"), rc::InputError);
  EXPECT_THROW(rc::from_json("{"), rc::InputError);
}

TEST(RunOptions, ArgumentsParseBackThroughTheKnobs) {
  rc::RunOptions base;
  base.model = "m.pt";
  EXPECT_EQ(rc::with_knob(base, "threads", "2").threads, 2);
  EXPECT_EQ(rc::with_knob(base, "deterministic", "true").deterministic, "on");
  EXPECT_EQ(rc::with_knob(base, "deterministic", "warn").deterministic, "warn");
  EXPECT_TRUE(rc::with_knob(base, "benchmark", "on").benchmark);
  EXPECT_EQ(rc::with_knob(base, "data-seed", "9").data_seed, "9");
  EXPECT_EQ(rc::with_knob(base, "mode", "eval").mode, "eval");
  EXPECT_THROW(rc::with_knob(base, "threads", "0"), rc::UsageError);
  EXPECT_THROW(rc::with_knob(base, "threads", "2x"), rc::UsageError);
  EXPECT_THROW(rc::with_knob(base, "mode", "training"), rc::UsageError);
  EXPECT_THROW(rc::with_knob(base, "colour", "red"), rc::UsageError);
  auto hashed = rc::with_knob(rc::with_knob(base, "env:PYTHONHASHSEED", "0"), "env:PYTHONHASHSEED", "1");
  EXPECT_EQ(hashed.env, std::vector<std::string>{"PYTHONHASHSEED=1"});  // the knob replaces its variable
  EXPECT_THROW(rc::with_knob(base, "env:", "1"), rc::UsageError);
  for (const auto& knob : rc::knob_names()) EXPECT_NE(rc::knob_list().find(knob), std::string::npos);
}

TEST(RunOptions, VaryNeedsTwoValidValues) {
  rc::RunOptions base;
  auto v = rc::parse_vary("threads=1,2,4", base);
  EXPECT_EQ(v.knob, "threads");
  EXPECT_EQ(v.values, (std::vector<std::string>{"1", "2", "4"}));
  EXPECT_THROW(rc::parse_vary("threads=1", base), rc::UsageError);
  EXPECT_THROW(rc::parse_vary("threads", base), rc::UsageError);
  EXPECT_THROW(rc::parse_vary("threads=1,x", base), rc::UsageError);
  EXPECT_THROW(rc::parse_vary("=1,2", base), rc::UsageError);
}

TEST(RunOptions, DeterministicValues) {
  EXPECT_EQ(rc::normalize_deterministic("1"), "on");
  EXPECT_EQ(rc::normalize_deterministic("off"), "off");
  EXPECT_THROW(rc::normalize_deterministic("maybe"), rc::UsageError);
}
