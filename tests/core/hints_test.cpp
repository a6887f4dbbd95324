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
  auto user =
      divergence(meta(0, "backward", "block", "__main__.ConvBlock", "grad"), true, "earlier_tensors", {}, "cuda:0");
  EXPECT_NE(first_cause(user), "cudnn_nondeterministic");
  auto conv = divergence(meta(0, "backward", "block", "torch.nn.modules.conv.Conv2d", "grad"), true, "earlier_tensors",
                         {}, "cuda:0");
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

namespace {

// A training script's comparison whose first divergence is `first`, with the RNG records that
// differed (name, rank) after it, the DataLoader description of the record's layer, and the seeds.
struct Script {
  rc::TensorMeta first;
  std::vector<std::pair<std::string, int>> rngs;  // generator name, rank
  std::string loader_json;                        // {"": {...}}
  std::vector<std::pair<std::string, std::string>> knobs;
  bool source = true;
  std::map<std::string, std::string> attrs;
};

rc::Comparison script(const Script& s) {
  rc::Comparison c = divergence(s.first, s.source, "earlier_tensors", s.knobs);
  c.ref_options.command = {"python", "train.py"};
  if (!s.loader_json.empty()) c.ref_attributes["data_loaders"] = s.loader_json;
  for (const auto& [k, v] : s.attrs) c.ref_attributes[k] = v;
  for (const auto& [name, rank] : s.rngs) {
    rc::TensorDiff r;
    r.ref = meta(0, "rng", rank >= 0 ? "rank" + std::to_string(rank) : "", "torch.Generator", "rng_state", name);
    r.ref.rank = rank;
    r.status = rc::Status::values_differ;
    c.pairs[0].diffs.push_back(r);
  }
  return c;
}

rc::TensorMeta indices(int rank = -1) {
  auto m = meta(0, "input", rank >= 0 ? "rank" + std::to_string(rank) : "", "torch.utils.data.DataLoader", "indices",
                "indices");
  m.rank = rank;
  return m;
}

std::string loader(const std::string& sampler, const std::string& extra = "") {
  return R"({"": {"name": "loader", "workers": 0, "in_order": true, "sampler": ")" + sampler + "\"" + extra + "}}";
}

}  // namespace

TEST(HintRules, TheDataOrderFixFollowsWhoDrawsTheOrderAndWhichRngDiffered) {
  const std::string random_sampler = "torch.utils.data.sampler.RandomSampler";
  // The DataLoader's own shuffle, torch's state differed: seed torch and give the loader a generator.
  auto h = rc::explain(script({indices(), {{"torch", -1}}, loader(random_sampler)}));
  EXPECT_EQ(h[0].cause, "unseeded_shuffle");
  EXPECT_NE(h[0].fix_python.find("generator=torch.Generator().manual_seed(0)"), std::string::npos);
  // A sampler of the script's own drawing from numpy: the fix is about numpy, never the loader's generator.
  h = rc::explain(script({indices(), {{"numpy", -1}}, loader("__main__.PermutationSampler")}));
  EXPECT_EQ(h[0].cause, "user_sampler");
  EXPECT_NE(h[0].evidence.find("numpy global RNG state differed"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("np.random.seed(0)"), std::string::npos);
  EXPECT_EQ(h[0].fix_python.find("DataLoader"), std::string::npos);
  // ... from Python's random (a bucket batch sampler): random.
  h = rc::explain(script(
      {indices(),
       {{"random", -1}},
       loader("torch.utils.data.sampler.SequentialSampler", R"(, "batch_sampler": "__main__.BucketBatchSampler")")}));
  EXPECT_EQ(h[0].cause, "user_sampler");
  EXPECT_NE(h[0].title.find("BucketBatchSampler"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("random.seed(0)"), std::string::npos);
  // ... with no RNG state differing: a source reprocheck does not record, no made-up fix.
  h = rc::explain(script({indices(), {}, loader("__main__.PermutationSampler")}));
  EXPECT_EQ(h[0].cause, "user_sampler");
  EXPECT_NE(h[0].evidence.find("does not record"), std::string::npos);
  // A WeightedRandomSampler draws with replacement: different samples, not another order.
  h = rc::explain(script({indices(),
                          {{"torch", -1}},
                          loader("torch.utils.data.sampler.WeightedRandomSampler", R"(, "replacement": true)")}));
  EXPECT_EQ(h[0].cause, "weighted_sampler");
  EXPECT_EQ(h[0].title.find("same samples"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("WeightedRandomSampler(..., generator="), std::string::npos);
  // A DistributedSampler: its seed and set_epoch.
  h = rc::explain(script({indices(1), {{"random", 1}}, loader("torch.utils.data.distributed.DistributedSampler")}));
  EXPECT_EQ(h[0].cause, "distributed_sampler");
  EXPECT_NE(h[0].fix_python.find("set_epoch"), std::string::npos);
  EXPECT_NE(h[0].evidence.find("on rank 1"), std::string::npos);
  // Workers with in_order=False and no RNG difference: arrival order; with one, not.
  const std::string arrival =
      R"({"": {"workers": 2, "in_order": false, "sampler": "torch.utils.data.sampler.RandomSampler"}})";
  EXPECT_EQ(first_cause(script({indices(), {}, arrival})), "worker_arrival_order");
  EXPECT_NE(first_cause(script({indices(), {{"torch", -1}}, arrival})), "worker_arrival_order");
}

TEST(HintRules, ASplitThatDiffersIsRandomSplit) {
  auto split = meta(0, "input", "", "torch.utils.data.Subset", "indices", "split");
  auto h = rc::explain(script({split, {}, loader("torch.utils.data.sampler.RandomSampler", R"(, "subset": true)")}));
  EXPECT_EQ(h[0].cause, "random_split");
  EXPECT_NE(h[0].fix_python.find("random_split(dataset, lengths, generator="), std::string::npos);
}

TEST(HintRules, SameMultisetSaysAnotherOrderOnly) {
  Script s{indices(), {{"torch", -1}}, loader("torch.utils.data.sampler.RandomSampler")};
  auto c = script(s);
  c.pairs[0].diffs[0].same_multiset = true;
  EXPECT_NE(rc::explain(c)[0].title.find("same samples, different order"), std::string::npos);
  c.pairs[0].diffs[0].same_multiset = false;
  EXPECT_NE(rc::explain(c)[0].title.find("different samples"), std::string::npos);
  EXPECT_EQ(rc::explain(c)[0].title.find("same samples"), std::string::npos);
}

TEST(HintRules, RngEvidenceComesFromTheFirstDivergencesRank) {
  // Rank 1's RNG first; rank 0's numpy state also differed, later: the evidence is rank 1's torch.
  auto first = meta(0, "rng", "rank1", "torch.Generator", "rng_state", "torch");
  first.rank = 1;
  auto c = script({first, {{"numpy", 0}}, ""});
  c.ref_attributes["ranks"] = "2";
  rc::TensorMeta init = meta(-1, "init", "rank1/fc", "", "param", "weight");
  init.rank = 1;
  c.ref_index.push_back(init);
  auto h = rc::explain(c);
  EXPECT_EQ(h[0].cause, "rng_not_seeded");  // not "reseeded": DDP broadcast the initial weights
  EXPECT_NE(h[0].evidence.find("on rank 1"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("on every rank"), std::string::npos);
  EXPECT_EQ(h[0].evidence.find("numpy"), std::string::npos);
  // One process whose initial parameters matched: the torch RNG was reseeded.
  auto single = meta(0, "rng", "", "torch.Generator", "rng_state", "torch");
  c = script({single, {}, ""});
  c.ref_index.push_back(meta(-1, "init", "fc", "", "param", "weight"));
  EXPECT_EQ(rc::explain(c)[0].cause, "rng_reseeded");
}

TEST(HintRules, ARandomOpOnAPrivateGeneratorIsNamedAsSuch) {
  auto op = meta(0, "forward", "rand#0", "rand", "activation");
  auto h = rc::explain(script({op, {}, "", {}, true, {{"op_generators", R"({"rand#0": "private"})"}}}));
  EXPECT_EQ(h[0].cause, "private_generator");
  EXPECT_NE(h[0].evidence.find("generator= a torch.Generator of the script's own"), std::string::npos);
  for (const auto& x : h) EXPECT_NE(x.fix_flag, "--deterministic") << x.cause;
  // With the global seed differing, the random op is the seed's, not a private generator's.
  h = rc::explain(script({op, {}, "", {{"seed_value", "1 vs 2"}}}));
  EXPECT_EQ(h[0].cause, "rng_not_seeded");
  // A non-random op from identical inputs is still an atomic op.
  EXPECT_EQ(first_cause(script({meta(0, "forward", "index_add_#0", "index_add_", "activation"), {}, ""})),
            "custom_or_atomic_op");
}

TEST(HintRules, TheSeedIsListedWheneverItDiffered) {
  // An inherited divergence with --layers all: the untapped source, and the seed that differed.
  auto c = divergence(meta(0, "forward", "fc", "torch.nn.modules.linear.Linear", "activation"), false, "input_hash",
                      {{"seed_value", "1 vs 2"}});
  c.ref_options.layers = "all";
  auto h = rc::explain(c);
  std::vector<std::string> causes;
  for (const auto& x : h) causes.push_back(x.cause);
  EXPECT_EQ(causes.front(), "rng_not_seeded");
  EXPECT_NE(std::find(causes.begin(), causes.end(), "untapped_source"), causes.end());
  for (const auto& x : h) EXPECT_EQ(x.test_it.find("--layers all"), std::string::npos) << x.test_it;
  // With the same seeds, no seed hint.
  c.pairs[0].knob_diffs.clear();
  for (const auto& x : rc::explain(c)) EXPECT_NE(x.cause, "rng_not_seeded");
}

TEST(HintRules, CategoriesComeFromTheDumpNotTheClassName) {
  // timm's ScaledStdConv2d is a conv by ancestry: on CUDA its backward is cuDNN's.
  auto c = divergence(meta(0, "backward", "stem", "timm.layers.std_conv.ScaledStdConv2d", "grad"), true,
                      "earlier_tensors", {}, "cuda:0");
  EXPECT_NE(first_cause(c), "cudnn_nondeterministic");
  c.ref_attributes["layer_categories"] = R"({"timm.layers.std_conv.ScaledStdConv2d": "conv"})";
  EXPECT_EQ(first_cause(c), "cudnn_nondeterministic");
}

TEST(HintRules, EachRuleHoldsToItsEvidenceConditions) {
  // Worker arrival order needs workers, in_order=False and no RNG difference: each condition alone.
  auto arrival = [](int workers, bool in_order, bool rng) {
    std::string l = R"({"": {"workers": )" + std::to_string(workers) + R"(, "in_order": )" +
                    (in_order ? "true" : "false") + R"(, "sampler": "torch.utils.data.sampler.RandomSampler"}})";
    return first_cause(script(
        {indices(),
         rng ? std::vector<std::pair<std::string, int>>{{"torch", -1}} : std::vector<std::pair<std::string, int>>{},
         l}));
  };
  EXPECT_EQ(arrival(2, false, false), "worker_arrival_order");
  EXPECT_NE(arrival(0, false, false), "worker_arrival_order");
  EXPECT_NE(arrival(2, true, false), "worker_arrival_order");
  EXPECT_NE(arrival(2, false, true), "worker_arrival_order");
  // Token ids from a hash-ordered vocabulary: a relabeling that is not a permutation.
  auto batch = [](bool relabeling, bool same_multiset) {
    auto c = script({meta(0, "input", "", "torch.utils.data.DataLoader", "batch", "batch[0]"), {}, ""});
    c.pairs[0].diffs[0].relabeling = relabeling;
    c.pairs[0].diffs[0].same_multiset = same_multiset;
    return first_cause(c);
  };
  EXPECT_EQ(batch(true, false), "hash_seed_order");
  EXPECT_NE(batch(true, true), "hash_seed_order");  // a permutation: another order, not other ids
  EXPECT_NE(batch(false, false), "hash_seed_order");
  // Reseeded: the torch state differs after everything before it matched, initial weights included.
  auto rng = [](int step, bool init) {
    auto c = script({meta(step, "rng", "", "torch.Generator", "rng_state", "torch"), {}, ""});
    if (init) c.ref_index.push_back(meta(-1, "init", "fc", "", "param", "weight"));
    return first_cause(c);
  };
  EXPECT_EQ(rng(1, false), "rng_reseeded");
  EXPECT_EQ(rng(0, true), "rng_reseeded");
  EXPECT_EQ(rng(0, false), "rng_not_seeded");
  // Every run ended with the same seed: a constant seed, called only after the model's first call.
  auto ended_with = [](const std::vector<std::pair<std::string, std::string>>& knobs) {
    auto c =
        script({meta(0, "rng", "", "torch.Generator", "rng_state", "torch"), {}, "", knobs, true, {{"seed", "0"}}});
    c.ref_index.push_back(meta(-1, "init", "fc", "", "param", "weight"));
    return rc::explain(c);
  };
  auto late = ended_with({});
  ASSERT_FALSE(late.empty());
  EXPECT_EQ(late[0].cause, "rng_not_seeded");
  EXPECT_EQ(late[0].title, "the torch RNG is seeded only after training has begun");
  EXPECT_NE(late[0].evidence.find("every run ended with the same seed (0)"), std::string::npos) << late[0].evidence;
  EXPECT_NE(late[0].fix_python.find("before the data, the model and its first call"), std::string::npos)
      << late[0].fix_python;
  EXPECT_EQ(ended_with({{"seed_value", "0 vs 7"}})[0].cause, "rng_reseeded");  // a seed that varies
  // Thread counts explain a CPU divergence only when they differ.
  auto threads = [](bool differ, const std::string& device) {
    return first_cause(divergence(meta(0, "param_grad", "c", "torch.nn.modules.conv.Conv2d", "param_grad", "weight"),
                                  true, "earlier_tensors",
                                  differ ? std::vector<std::pair<std::string, std::string>>{{"threads", "1 vs 2"}}
                                         : std::vector<std::pair<std::string, std::string>>{},
                                  device));
  };
  EXPECT_EQ(threads(true, "cpu"), "thread_reduction");
  EXPECT_NE(threads(false, "cpu"), "thread_reduction");
  EXPECT_NE(threads(true, "cuda:0"), "thread_reduction");
}

TEST(HintRules, AParameterThatDiffersAfterIdenticalGradientsIsTheStepsOwn) {
  const std::string linear = "torch.nn.modules.linear.Linear";
  // A training script: the code between backward and the step's end, or the update; no layer
  // selection localizes it, so the test is a rerun, never --layers all.
  auto c = script({meta(0, "after_step", "fc", linear, "param", "weight"), {}, ""});
  auto h = rc::explain(c);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h[0].cause, "step_update");
  EXPECT_NE(h[0].evidence.find("between loss.backward() and the step's end"), std::string::npos) << h[0].evidence;
  EXPECT_NE(h[0].fix_python.find("np.random.default_rng(0)"), std::string::npos);
  EXPECT_EQ(h[0].fix_python.find("set_num_threads"), std::string::npos);  // the thread count did not differ
  EXPECT_EQ(h[0].test_it, "reprocheck run -- python train.py");
  // Optimizer state is the step's too; with the thread count differing, the fix names it.
  h = rc::explain(
      script({meta(0, "after_step", "fc", linear, "optim_state", "weight.exp_avg"), {}, "", {{"threads", "1 vs 2"}}}));
  EXPECT_EQ(h[0].cause, "step_update");
  EXPECT_NE(h[0].evidence.find("threads (1 vs 2)"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("set_num_threads"), std::string::npos);
  // Inherited (an earlier record differed), a buffer, or another seed: not the step's own.
  EXPECT_NE(first_cause(script({meta(0, "after_step", "fc", linear, "param", "weight"), {}, "", {}, false})),
            "step_update");
  EXPECT_NE(
      first_cause(script(
          {meta(0, "after_step", "bn", "torch.nn.modules.batchnorm.BatchNorm2d", "buffer", "running_mean"), {}, ""})),
      "step_update");
  EXPECT_NE(first_cause(script({meta(0, "after_step", "fc", linear, "param", "weight"), {}, "", {{"seed", "0 vs 1"}}})),
            "step_update");
  // A TorchScript check: the update is the optimizer's own; at two CPU threads the test is one.
  auto ts = divergence(meta(0, "after_step", "embed", "torch.nn.modules.sparse.Embedding", "param", "weight"), true,
                       "earlier_tensors", {});
  ts.ref_attributes["model"] = "m.pt";
  ts.ref_options.optimizer = "adamw";
  ts.ref_options.threads = 2;
  h = rc::explain(ts);
  EXPECT_EQ(h[0].cause, "step_update");
  EXPECT_NE(h[0].evidence.find("the adamw update gave different values"), std::string::npos) << h[0].evidence;
  EXPECT_EQ(h[0].test_it, "reprocheck m.pt --threads 1");
  ts.ref_options.threads = 1;  // never the flag the check already had
  h = rc::explain(ts);
  EXPECT_EQ(h[0].test_it, "");
  EXPECT_NE(h[0].evidence.find("at one intra-op thread"), std::string::npos);
  ts.ref_attributes["device"] = "cuda:0";
  h = rc::explain(ts);
  EXPECT_EQ(h[0].test_it, "reprocheck m.pt --deterministic");
}

TEST(HintRules, AScriptsOwnBatchThatDiffersFirstIsNamedWhereItIsMade) {
  // model(**batch) with input ids drawn from an unseeded numpy Generator, no DataLoader: the first
  // divergence is the model's input, every record before it matched. No layer selection can
  // localize it, so never "no known cause" with --layers all.
  auto input = meta(0, "input", "", "", "input", "input['input_ids']");
  auto c = script({input, {}, ""});
  auto h = rc::explain(c);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h[0].cause, "script_batch");
  EXPECT_NE(h[0].evidence.find("the model's input['input_ids'] at step 0 is the first record that differs, no "
                               "DataLoader made a batch at that step"),
            std::string::npos)
      << h[0].evidence;
  EXPECT_NE(h[0].fix_python.find("np.random.default_rng(0)"), std::string::npos);
  EXPECT_EQ(h[0].test_it, "reprocheck run -- python train.py");
  for (const auto& x : h) EXPECT_EQ(x.test_it.find("--layers"), std::string::npos) << x.cause;
  // A loss target is the script's batch too.
  EXPECT_EQ(first_cause(script({meta(0, "input", "", "", "target", "target"), {}, ""})), "script_batch");
  // A DataLoader made a batch at that step and it matched: code between it and the model.
  c.ref_index.push_back(meta(0, "input", "", "torch.utils.data.DataLoader", "batch", "batch[0]"));
  EXPECT_EQ(first_cause(c), "random_in_loop");
  // A TorchScript check's input is reprocheck's own data pipeline; another seed is the seed's.
  EXPECT_EQ(first_cause(divergence(input, true, "earlier_tensors", {})), "data_pipeline");
  EXPECT_NE(first_cause(script({input, {}, "", {{"seed", "0 vs 1"}}})), "script_batch");
}

TEST(HintRules, AnOpThatReadAValueMadeOutsideTheOpsNamesIt) {
  // Pass 3's first divergent op had inputs that differed while every op before it matched: neither
  // a racing op nor an untapped layer, a value from outside torch's ops (numpy's Generator API).
  auto c = script({meta(0, "forward", "conv", "torch.nn.modules.conv.Conv2d", "activation"), {}, "", {}, false});
  rc::DrillDown dd;
  dd.found = true;
  dd.op = "aten::add";
  dd.output = "out";
  dd.file = "train.py";
  dd.line = 18;
  dd.diff.ref = meta(0, "forward", "aten::add#0", "aten::add", "activation");
  dd.diff.status = rc::Status::values_differ;
  dd.diff.inputs_identical = false;
  dd.diff.inputs_basis = "input_hash";
  c.drill = dd;
  auto h = rc::explain(c);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h[0].cause, "outside_input");
  EXPECT_NE(h[0].evidence.find("the first divergence is conv (Conv2d) at step 0 (forward)"), std::string::npos)
      << h[0].evidence;
  EXPECT_NE(h[0].evidence.find("called at train.py:18, whose inputs already differed"), std::string::npos);
  EXPECT_NE(h[0].fix_python.find("np.random.default_rng(0)"), std::string::npos);
  for (const auto& x : h) {
    EXPECT_NE(x.cause, "custom_or_atomic_op");
    EXPECT_NE(x.cause, "untapped_source");
  }
  // The same op with identical inputs: an op that differs by itself.
  c.drill->diff.inputs_identical = true;
  c.drill->diff.inputs_basis = "earlier_ops";
  EXPECT_EQ(first_cause(c), "custom_or_atomic_op");
}
