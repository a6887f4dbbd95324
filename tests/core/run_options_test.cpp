#include "reprocheck/run_options.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "reprocheck/error.h"

namespace rc = reprocheck;

TEST(RunOptions, ValidatesEachValueAgainstItsRow) {
  rc::RunOptions o;
  o.model = "m.pt";
  o.threads = 2;
  o.input_shape = {1, 3};
  o.ops = true;
  EXPECT_NO_THROW(rc::validate(o));
  o.input_shape = {0, 3};  // read from JSON: checked as the flag would be
  EXPECT_THROW(rc::validate(o), rc::UsageError);
  o.input_shape = {1, 3};
  o.steps = 0;
  EXPECT_THROW(rc::validate(o), rc::UsageError);
  o.steps = 2;
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
  // The training recipe's keys (autocast ... weight_decay), interop_threads, capture_plan and
  // model_hash came later; a dump without them reads with their defaults.
  EXPECT_EQ(
      keys,
      (std::vector<std::string>{
          "autocast",      "benchmark",   "beta1",       "beta2",           "capture_plan",    "command",  "data_seed",
          "deterministic", "device",      "drill_scope", "drill_step",      "dtype",           "env",      "eps",
          "hashes_only",   "input_shape", "inputs",      "interop_threads", "label_smoothing", "layers",   "libraries",
          "loss",          "lr",          "mode",        "model",           "model_hash",      "momentum", "nesterov",
          "ops",           "optimizer",   "output",      "output_weights",  "reinit",          "seed",     "steps",
          "targets",       "threads",     "weight_decay"}));
  EXPECT_EQ(s["threads"], "0");
  EXPECT_EQ(s["benchmark"], "false");
  EXPECT_EQ(s["seed"], "0");
  EXPECT_EQ(rc::from_json(R"({"threads": 2})").interop_threads, 0);
}

TEST(RunOptions, FromJsonKeepsDefaultsForMissingKeysAndRefusesWrongTypes) {
  auto o = rc::from_json(R"({"threads": 4, "unknown": [1]})");
  EXPECT_EQ(o.threads, 4);
  EXPECT_EQ(o.steps, 2);
  EXPECT_THROW(rc::from_json(R"({"threads": "four"})"), rc::InputError);
  EXPECT_THROW(rc::from_json("[1, 2]"), rc::InputError);
  EXPECT_THROW(rc::from_json("{"), rc::InputError);
}

TEST(RunOptions, FromJsonRefusesNumbersAnIntegerFieldCannotHold) {
  // A float or an out-of-range integer in an integer field is refused, not converted.
  EXPECT_THROW(rc::from_json(R"({"steps": 1.11111e+114})"), rc::InputError);
  EXPECT_THROW(rc::from_json(R"({"steps": 2.5})"), rc::InputError);
  EXPECT_THROW(rc::from_json(R"({"steps": 4294967296})"), rc::InputError);
  EXPECT_THROW(rc::from_json(R"({"steps": -4294967296})"), rc::InputError);
  EXPECT_THROW(rc::from_json(R"({"threads": 1e300})"), rc::InputError);
  EXPECT_THROW(rc::from_json(R"({"input_shape": [4, 1e300]})"), rc::InputError);
  EXPECT_THROW(rc::from_json(R"({"input_shape": [18446744073709551615]})"), rc::InputError);
  EXPECT_EQ(rc::from_json(R"({"lr": 1})").lr, 1.0);
  EXPECT_EQ(rc::from_json(R"({"steps": 3})").steps, 3);
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
  EXPECT_THROW(rc::with_knob(base, "threads", "-1"), rc::UsageError);
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

TEST(TensorSpec, ParsesShapesDtypesAndRanges) {
  auto s = rc::parse_tensor_spec("4,20:int64:0..30522", "--input 1");
  EXPECT_EQ(s.shape, (std::vector<int64_t>{4, 20}));
  EXPECT_EQ(s.dtype, "int64");
  EXPECT_TRUE(s.is_integer());
  EXPECT_DOUBLE_EQ(*s.low, 0);
  EXPECT_DOUBLE_EQ(*s.high, 30522);
  EXPECT_EQ(rc::to_string(s), "4,20:int64:0..30522");
  auto f = rc::parse_tensor_spec("[4x3x32x32]", "--input 1");
  EXPECT_EQ(f.shape, (std::vector<int64_t>{4, 3, 32, 32}));
  EXPECT_EQ(f.dtype, "");
  EXPECT_FALSE(f.low);
  EXPECT_EQ(rc::to_string(rc::parse_tensor_spec("2,2:float32:-1..1", "x")), "2,2:float32:-1..1");
  EXPECT_FALSE(rc::parse_tensor_spec("8:bool", "x").is_integer());
  auto fails = [](const std::string& text, const std::string& why) {
    try {
      rc::parse_tensor_spec(text, "--input 2");
      ADD_FAILURE() << text;
    } catch (const rc::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("--input 2"), std::string::npos) << e.what();
    }
  };
  fails("4,20:int64", "has no value range");
  fails("4,20:int64:5..5", "is empty");
  fails("4,20:int64:0.5..9", "integer ends");
  fails("4,20:complex64", "unknown dtype");
  fails("4,0", "a dimension below 1");
  fails("4,a", "expected dimensions such as");
  fails("4:int64:0-9", "LOW..HIGH");
  fails("4:bool:0..2", "takes no range");
  fails(":int64", "expected SHAPE");
  fails("4:int64:0..9:x", "expected SHAPE");
}

TEST(RunOptions, RecipeOptionsAreValidated) {
  rc::RunOptions o;
  o.model = "m.pt";
  o.inputs = {"4,20:int64:0..100", "4,5"};
  o.targets = {"4:int64:0..3"};
  o.output_weights = "1,0.3,0.3";
  o.optimizer = "adamw";
  o.autocast = "bf16";
  EXPECT_NO_THROW(rc::validate(o));
  auto back = rc::from_json(rc::to_json(o));
  EXPECT_EQ(back.inputs, o.inputs);
  EXPECT_EQ(back.output_weights, o.output_weights);
  auto bad = [&](auto change, const std::string& why) {
    rc::RunOptions x = o;
    change(x);
    try {
      rc::validate(x);
      ADD_FAILURE() << why;
    } catch (const rc::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  bad([](rc::RunOptions& x) { x.inputs = {"4,20:int64"}; }, "no value range");
  bad([](rc::RunOptions& x) { x.output = "logits"; }, "exclude each other");
  bad([](rc::RunOptions& x) { x.optimizer = "lbfgs"; }, "--optimizer");
  bad(
      [](rc::RunOptions& x) {
        x.autocast = "fp16";
        x.device = "cpu";
      },
      "needs a CUDA device");
  bad(
      [](rc::RunOptions& x) {
        x.autocast = "bf16";
        x.dtype = "bfloat16";
      },
      "exclude each other");
  bad([](rc::RunOptions& x) { x.input_shape = {4, 3}; }, "exclude each other");
  bad([](rc::RunOptions& x) { x.loss = "hinge"; }, "--loss");
  bad([](rc::RunOptions& x) { x.label_smoothing = 1.5; }, "--label-smoothing");
  bad([](rc::RunOptions& x) { x.beta2 = 1; }, "--beta2");
  bad([](rc::RunOptions& x) { x.weight_decay = -0.5; }, "--weight-decay");
}

TEST(RunOptions, OutputWeightsByIndexOrKey) {
  EXPECT_EQ(rc::parse_output_weights("1,0.3,0.3"),
            (std::vector<std::pair<std::string, double>>{{"0", 1}, {"1", 0.3}, {"2", 0.3}}));
  EXPECT_EQ(rc::parse_output_weights("logits=1,aux=0.5"),
            (std::vector<std::pair<std::string, double>>{{"logits", 1}, {"aux", 0.5}}));
  for (const char* bad : {"", "1,,2", "a=1,0.3", "x=1,x=2", "1,b"})
    EXPECT_THROW(rc::parse_output_weights(bad), rc::UsageError) << bad;
}
