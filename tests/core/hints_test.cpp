#include "reprocheck/hints.h"

#include <gtest/gtest.h>

namespace rc = reprocheck;

namespace {

// A comparison whose first divergence is `first`, with the given run-option differences.
rc::Comparison divergence(rc::TensorMeta first, bool inputs_identical, const std::string& basis,
                          std::vector<std::pair<std::string, std::string>> knobs, const std::string& device = "cpu",
                          std::vector<rc::TensorDiff> later = {}) {
  rc::Comparison c;
  c.runs = {"a.h5", "b.h5"};
  c.ref_attributes = {{"device", device}, {"layers", "default"}, {"deterministic", "off"}, {"benchmark", "0"}};
  rc::PairComparison p;
  rc::TensorDiff d;
  d.ref = std::move(first);
  d.other = d.ref;
  d.status = rc::Status::values_differ;
  d.inputs_identical = inputs_identical;
  d.inputs_basis = basis;
  p.diffs.push_back(d);
  for (auto& l : later) p.diffs.push_back(l);
  p.first = 0;
  p.knob_diffs = std::move(knobs);
  c.pairs.push_back(p);
  return c;
}

rc::TensorMeta meta(int step, const std::string& phase, const std::string& layer, const std::string& type,
                    const std::string& kind, const std::string& name = "out") {
  rc::TensorMeta m;
  m.step = step;
  m.phase = *rc::parse_phase(phase);
  m.layer = layer;
  m.layer_type = type;
  m.kind = *rc::parse_kind(kind);
  m.name = name;
  return m;
}

std::string first_cause(const rc::Comparison& c) {
  auto h = rc::explain(c);
  return h.empty() ? "" : h.front().cause;
}

}  // namespace

TEST(Hints, NoneWhenReproducible) {
  rc::Comparison c;
  c.pairs.push_back({});
  EXPECT_TRUE(rc::explain(c).empty());
}

TEST(Hints, NoEvidenceIsSaidPlainly) {
  // A convolution's forward output differs from identical inputs on the CPU, with the same settings:
  // nothing known explains it.
  auto c = divergence(meta(0, "forward", "conv", "torch.nn.modules.conv.Conv2d", "activation"), true, "input_hash", {});
  auto h = rc::explain(c);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].cause, "no_evidence");
  EXPECT_NE(h[0].evidence.find("no run option differs"), std::string::npos);
}

TEST(Hints, ChosenFromEvidenceNotNames) {
  const std::string dropout = "torch.nn.modules.dropout.Dropout", conv = "torch.nn.modules.conv.Conv2d";
  // The same dropout layer: a source with different seeds is the RNG ...
  EXPECT_EQ(first_cause(divergence(meta(0, "forward", "d", dropout, "activation"), true, "input_hash",
                                   {{"seed_value", "1 vs 2"}})),
            "rng_not_seeded");
  // ... but inherited, it is not.
  EXPECT_EQ(first_cause(divergence(meta(0, "forward", "d", dropout, "activation"), false, "input_hash", {})),
            "untapped_source");
  EXPECT_EQ(first_cause(divergence(meta(0, "param_grad", "c", conv, "param_grad", "weight"), true, "earlier_tensors",
                                   {{"threads", "1 vs 2"}})),
            "thread_reduction");
  // The same conv backward on CUDA with deterministic off: cuDNN.
  EXPECT_EQ(first_cause(divergence(meta(0, "backward", "c", conv, "grad"), true, "earlier_tensors", {}, "cuda:0")),
            "cudnn_nondeterministic");
  EXPECT_EQ(
      first_cause(divergence(meta(0, "input", "", "", "input"), true, "earlier_tensors", {{"data_seed", "0 vs 1"}})),
      "data_pipeline");
  EXPECT_EQ(first_cause(divergence(meta(-1, "init", "c", conv, "param", "weight"), true, "earlier_tensors",
                                   {{"seed_value", "1 vs 2"}})),
            "unseeded_init");
  EXPECT_EQ(first_cause(divergence(meta(0, "forward", "mix", "RacyMix", "activation"), true, "input_hash", {})),
            "custom_or_atomic_op");
  EXPECT_EQ(
      first_cause(divergence(meta(0, "forward", "mix", "RacyMix", "activation"), true, "input_hash", {}, "cuda:0")),
      "deterministic_algorithms");
}

TEST(Hints, TrainEvalNamesTheRunningStatistics) {
  rc::TensorDiff stats;
  stats.ref = meta(0, "after_step", "bn", "torch.nn.modules.batchnorm.BatchNorm2d", "buffer", "running_mean");
  stats.status = rc::Status::values_differ;
  auto c = divergence(meta(0, "forward", "bn", "torch.nn.modules.batchnorm.BatchNorm2d", "activation"), true,
                      "input_hash", {{"mode", "train vs eval"}}, "cpu", {stats});
  auto h = rc::explain(c);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h[0].cause, "train_eval_mode");
  EXPECT_NE(h[0].evidence.find("bn.running_mean"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("model.train()"), std::string::npos);
}

TEST(Hints, AUserModuleNamedLikeAConvIsNotOne) {
  // Capture's --layers conv does not tap a user's ConvBlock; the hints do not call it a conv
  // either: on CUDA its backward is not blamed on cuDNN.
  auto user = divergence(meta(0, "backward", "block", "__main__.ConvBlock", "grad"), true, "earlier_tensors", {},
                         "cuda:0");
  EXPECT_NE(first_cause(user), "cudnn_nondeterministic");
  auto conv = divergence(meta(0, "backward", "block", "torch.nn.modules.conv.Conv2d", "grad"), true,
                         "earlier_tensors", {}, "cuda:0");
  EXPECT_EQ(first_cause(conv), "cudnn_nondeterministic");
}

TEST(Hints, TestItNeverRepeatsWhatTheCheckHad) {
  // An inherited divergence: the hint suggests the next finer capture the check did not have.
  auto c = divergence(meta(0, "forward", "c", "torch.nn.modules.conv.Conv2d", "activation"), false, "input_hash", {});
  c.ref_attributes["model"] = "m.pt";
  auto h = rc::explain(c);
  ASSERT_EQ(h[0].cause, "untapped_source");
  EXPECT_EQ(h[0].test_it, "reprocheck m.pt --layers all");
  c.ref_options.layers = "all";
  h = rc::explain(c);
  EXPECT_EQ(h[0].test_it, "reprocheck m.pt --ops");
  EXPECT_EQ(h[0].evidence.find("layer selection"), std::string::npos);
  c.ref_options.ops = true;
  h = rc::explain(c);
  EXPECT_EQ(h[0].test_it, "");
  EXPECT_NE(h[0].evidence.find("every layer and op was tapped"), std::string::npos);
}
