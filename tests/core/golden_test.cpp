// A check against a golden: the hints speak of what changed since it was recorded (the model's
// structure, the initial weights, a run option, the environment, else the code), never of
// nondeterminism; they name both values and a next command in the front end's own terms; and the
// comparison finds the environment's differences in the dumps' attributes.
#include <gtest/gtest.h>

#include <set>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/hints.h"
#include "reprocheck/report.h"
#include "test_util.h"

namespace rc = reprocheck;

namespace {

const std::set<std::string> kChangeCauses = {"model_changed", "init_changed", "option_changed", "environment_changed",
                                             "code_changed"};

rc::TensorMeta meta(const std::string& phase, const std::string& layer, int step = 0) {
  rc::TensorMeta m;
  m.step = step;
  m.phase = *rc::parse_phase(phase);
  m.layer = layer;
  m.layer_type = "torch.nn.modules.conv.Conv2d";
  m.kind = phase == "init" || phase == "after_step" ? rc::Kind::param : rc::Kind::param_grad;
  m.name = "weight";
  m.dtype = "float32";
  m.shape = {8, 3, 3, 3};
  return m;
}

// A fresh run of `model` (or of `command`, a training script) against the golden g.h5.
rc::Comparison golden_check(rc::TensorMeta first, const std::string& command = "") {
  rc::Comparison c;
  c.runs = {"goldens/g.h5", "run-1.h5"};
  c.capture.baseline = "goldens/g.h5";
  c.ref_attributes = {{"model", "old/m.pt"}, {"device", "cpu"}};
  rc::PairComparison p;
  rc::TensorDiff d;
  d.ref = first;
  d.other = first;
  d.status = rc::Status::values_differ;
  d.hash_only = true;
  d.inputs_identical = true;
  p.diffs.push_back(d);
  p.first = 0;
  p.other_attributes = {{"model", command.empty() ? "m.pt" : "train.py"},
                        {"device", "cpu"},
                        {"blas", "mkl, AVX512 kernels"},
                        {"libtorch_version", "2.11.0"},
                        {"torch_threads", "2"},
                        {"run_options", command.empty() ? "{}" : R"({"command": ["python", "train.py"]})"}};
  c.pairs.push_back(p);
  return c;
}

void expect_only_changes(const std::vector<rc::Hint>& hints) {
  ASSERT_FALSE(hints.empty());
  for (const auto& h : hints) EXPECT_TRUE(kChangeCauses.count(h.cause)) << h.cause << ": " << h.title;
}

}  // namespace

TEST(GoldenHints, ARunOptionChangeNamesBothValuesAndTheCommandWithTheGoldensValue) {
  auto c = golden_check(meta("after_step", "conv1"));
  c.pairs[0].knob_diffs = {{"lr", "0.01 vs 0.05"}};
  c.pairs[0].knob_values = {{"lr", "0.01", "0.05"}};
  auto h = rc::explain(c);
  expect_only_changes(h);
  EXPECT_EQ(h[0].cause, "option_changed");
  EXPECT_NE(h[0].evidence.find("lr (0.01 in the golden, 0.05 now)"), std::string::npos) << h[0].evidence;
  EXPECT_EQ(h[0].evidence.find("no run option differs"), std::string::npos);
  EXPECT_EQ(h[0].test_it, "reprocheck m.pt --lr 0.01 --baseline goldens/g.h5");
  // The check's own flags stay; its value of the option becomes the golden's; report flags go.
  c.command_line = {"m.pt", "--steps", "2", "--lr", "0.05", "--baseline", "goldens/g.h5", "--json", "r.json"};
  EXPECT_EQ(rc::explain(c)[0].test_it, "reprocheck m.pt --steps 2 --lr 0.01 --baseline goldens/g.h5");
}

TEST(GoldenHints, ATrainingScriptsAdviceIsReprocheckRun) {
  auto c = golden_check(meta("after_step", "conv1"), "python train.py");
  auto h = rc::explain(c);
  expect_only_changes(h);
  EXPECT_EQ(h[0].cause, "code_changed");
  EXPECT_EQ(h[0].test_it, "reprocheck run -- python train.py");
  for (const auto& x : h) {
    EXPECT_EQ(x.test_it.find("MODEL.pt"), std::string::npos) << x.test_it;
    EXPECT_EQ(x.fix_python.find("reprocheck record"), std::string::npos) << x.fix_python;
  }
  // Its "after it" advice and the golden's capture sentence are the run front end's, too.
  c.capture.baseline_hashes_only = true;
  c.ref_options.command = {"python", "train.py"};
  const std::string text = rc::render_text(rc::make_report(c));
  EXPECT_EQ(text.find("reprocheck record MODEL.pt"), std::string::npos) << text;
  EXPECT_NE(text.find("reprocheck run --save-baseline base.h5 --full -- python train.py"), std::string::npos) << text;
}

TEST(GoldenHints, OnlyTheEnvironmentDifferingIsSaidFirstWithAGoldenPerRunnerKind) {
  auto c = golden_check(meta("param_grad", "conv1"));
  c.pairs[0].environment_diffs = {{"LibTorch/torch", "2.10.0", "2.11.0"}, {"BLAS", "openblas", "mkl, AVX512 kernels"}};
  auto h = rc::explain(c);
  expect_only_changes(h);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].cause, "environment_changed");
  EXPECT_NE(h[0].title.find("likely cause"), std::string::npos);
  EXPECT_NE(h[0].evidence.find("LibTorch/torch 2.10.0 -> 2.11.0"), std::string::npos) << h[0].evidence;
  EXPECT_NE(h[0].fix_python.find("goldens/g.${RUNNER_KIND}.h5"), std::string::npos) << h[0].fix_python;
  EXPECT_EQ(h[0].test_it, "reprocheck m.pt --save-baseline goldens/g.cpu-avx512-threads2-torch2.11.0.h5 --force");
  // With a run option changed too, the option comes first and the environment is not "the likely cause".
  c.pairs[0].knob_values = {{"threads", "4", "2"}};
  h = rc::explain(c);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].cause, "option_changed");
  EXPECT_EQ(h[1].cause, "environment_changed");
  EXPECT_EQ(h[1].title.find("likely cause"), std::string::npos);
}

TEST(GoldenHints, AShapeOrSignatureChangeIsTheModelsStructure) {
  auto first = meta("init", "conv1", -1);
  auto c = golden_check(first);
  c.pairs[0].diffs[0].status = rc::Status::shape_mismatch;
  c.pairs[0].diffs[0].detail = "[8, 3, 3, 3] vs [8, 3, 5, 5]";
  c.pairs[0].model_change = {"signature", "a1", "b2"};
  auto h = rc::explain(c);
  expect_only_changes(h);
  ASSERT_EQ(h.size(), 1u);  // the initial weight differs by its shape: not a second cause
  EXPECT_EQ(h[0].cause, "model_changed");
  EXPECT_NE(h[0].evidence.find("(a1 in the golden, b2 now)"), std::string::npos) << h[0].evidence;
  EXPECT_NE(h[0].evidence.find("conv1.weight has shape [8, 3, 5, 5] now and [8, 3, 3, 3] in the golden"),
            std::string::npos)
      << h[0].evidence;
}

TEST(GoldenHints, AnotherInitSeedIsTheInitialWeights) {
  auto c = golden_check(meta("init", "conv1", -1));
  c.pairs[0].knob_values = {{"seed", "0", "1"}};
  auto h = rc::explain(c);
  expect_only_changes(h);
  EXPECT_EQ(h[0].cause, "init_changed");
  EXPECT_NE(h[0].evidence.find("seed is 0 in the golden, 1 now"), std::string::npos) << h[0].evidence;
  EXPECT_EQ(h[1].cause, "option_changed");
  // Another init function in the model file: the file changed, the initial weights differ.
  auto f = golden_check(meta("init", "conv1", -1));
  f.pairs[0].model_change = {"file", "1", "2"};
  h = rc::explain(f);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].cause, "init_changed");
  EXPECT_NE(h[0].evidence.find("its hash is 1 in the golden"), std::string::npos) << h[0].evidence;
}

TEST(GoldenHints, TheEnvironmentComesFromTheDumpsAttributes) {
  testutil::TempDir dir;
  auto write = [&](const std::string& name, const std::string& torch, int64_t threads, const std::string& opts,
                   const std::string& cpu = "Xeon") {
    rc::DumpWriter w(dir.file(name), true, false);
    w.set_attribute("model", std::string("m.pt"));
    w.set_attribute("model_signature", std::string("sig"));
    w.set_attribute("steps", int64_t{1});
    w.set_attribute("libtorch_version", torch);
    w.set_attribute("cpu", cpu);
    w.set_attribute("device_name", cpu);  // a CPU run's device is its CPU
    w.set_attribute("torch_threads", threads);
    w.set_attribute("run_options", opts);
    auto m = meta("forward", "conv1");
    m.kind = rc::Kind::activation;
    m.shape = {2};
    float x[2] = {1, 2};
    w.write(m, x, sizeof x);
    w.commit();
  };
  write("a.h5", "2.10.0", 4, R"({"threads": 4})");
  write("b.h5", "2.11.0", 2, R"({"threads": 4})");
  write("c.h5", "2.10.0", 2, R"({"threads": 2})");
  write("d.h5", "2.10.0", 4, R"({"threads": 4})", "EPYC");
  auto c = rc::compare_dumps({dir.file("a.h5"), dir.file("b.h5"), dir.file("c.h5"), dir.file("d.h5")});
  ASSERT_EQ(c.pairs.size(), 3u);
  // Another CPU: said once, as the CPU (not again as the device's name).
  ASSERT_EQ(c.pairs[2].environment_diffs.size(), 1u);
  EXPECT_EQ(c.pairs[2].environment_diffs[0].what, "CPU");
  EXPECT_EQ(c.pairs[2].environment_diffs[0].other, "EPYC");
  const auto& env = c.pairs[0].environment_diffs;
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env[0].what, "LibTorch/torch");
  EXPECT_EQ(env[0].reference, "2.10.0");
  EXPECT_EQ(env[0].other, "2.11.0");
  EXPECT_EQ(env[1].what, "threads");  // the same --threads, another thread count
  // When the run option differs, the thread count is that option's difference, not the environment's.
  EXPECT_TRUE(c.pairs[1].environment_diffs.empty());
  ASSERT_EQ(c.pairs[1].knob_values.size(), 1u);
  EXPECT_EQ(std::get<0>(c.pairs[1].knob_values[0]), "threads");
}

TEST(GoldenReports, TheHeaderNamesWhatWasCheckedAndTheGoldenAndTheEnvironmentSideBySide) {
  auto c = golden_check(meta("param_grad", "conv1"));
  c.tensors = 406;
  c.ref_attributes["time"] = "2026-11-01T00:00:00Z";
  c.pairs[0].other_attributes["tensor_count"] = "410";
  c.pairs[0].environment_diffs = {{"LibTorch/torch", "2.10.0", "2.11.0"}};
  // After the first: one tensor differs by hash, one changed shape; none has statistics.
  auto later = c.pairs[0].diffs[0];
  later.ref.step = 1;
  auto shape = later;
  shape.ref.layer = "fc";
  shape.hash_only = false;
  shape.status = rc::Status::shape_mismatch;
  shape.detail = "[4] vs [5]";
  c.pairs[0].diffs.push_back(later);
  c.pairs[0].diffs.push_back(shape);
  const std::string text = rc::render_text(rc::make_report(c));
  EXPECT_NE(text.find("m.pt: 1 fresh run(s) of ? step(s) against the golden 'goldens/g.h5' (old/m.pt, 406 tensors, "
                      "recorded 2026-11-01T00:00:00Z), 410 tensors each"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("run 1 ran elsewhere than the golden was recorded:"), std::string::npos) << text;
  EXPECT_NE(text.find("LibTorch/torch             2.10.0"), std::string::npos) << text;
  EXPECT_NE(text.find("1 by hash, 1 changed shape, dtype or presence"), std::string::npos) << text;
  EXPECT_EQ(text.find("0 (+"), std::string::npos) << text;
  const auto json = rc::render_json(rc::make_report(c));
  EXPECT_NE(json.find("\"environment_diffs\""), std::string::npos);
  EXPECT_NE(json.find("\"recorded_at\": \"2026-11-01T00:00:00Z\""), std::string::npos) << json;
  EXPECT_NE(rc::render_markdown(rc::make_report(c)).find("| LibTorch/torch | 2.10.0 | 2.11.0 |"), std::string::npos);
  EXPECT_NE(rc::render_html(rc::make_report(c)).find("id=\"environment\""), std::string::npos);
}

TEST(GoldenReports, AThreadCountTheCheckDidNotAskForIsTheEnvironment) {
  auto c = golden_check(meta("param_grad", "conv1"));
  c.pairs[0].knob_diffs = {{"threads", "2 vs 1"}};
  c.pairs[0].knob_values = {{"threads", "2", "1"}};
  c.command_line = {"m.pt", "--baseline", "goldens/g.h5"};
  auto r = rc::make_report(c);
  ASSERT_EQ(r.hints.size(), 1u);
  EXPECT_EQ(r.hints[0].cause, "environment_changed");
  EXPECT_NE(r.hints[0].evidence.find("threads 2 -> 1"), std::string::npos) << r.hints[0].evidence;
  EXPECT_TRUE(r.comparison.pairs[0].knob_diffs.empty());
  // So is a device nobody chose (a GPU runner against a CPU golden).
  c.pairs[0].knob_diffs = {{"device", "cpu vs cuda:0"}};
  c.pairs[0].knob_values = {{"device", "cpu", "cuda:0"}};
  r = rc::make_report(c);
  EXPECT_EQ(r.hints[0].cause, "environment_changed");
  EXPECT_NE(r.hints[0].evidence.find("device cpu -> cuda:0"), std::string::npos) << r.hints[0].evidence;
  c.pairs[0].knob_diffs = {{"threads", "2 vs 1"}};
  c.pairs[0].knob_values = {{"threads", "2", "1"}};
  // Asked for with --threads, it is the check's option.
  c.command_line = {"m.pt", "--threads", "1", "--baseline", "goldens/g.h5"};
  r = rc::make_report(c);
  EXPECT_EQ(r.hints[0].cause, "option_changed");
  EXPECT_EQ(r.hints[0].test_it, "reprocheck m.pt --threads 2 --baseline goldens/g.h5");
}
