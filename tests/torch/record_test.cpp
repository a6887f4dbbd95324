#include "reprocheck/record.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "test_util.h"

namespace rc = reprocheck;
using testutil::fixture;

namespace {

rc::RunOptions options(const std::string& model) {
  rc::RunOptions o;
  o.model = fixture(model + ".pt");
  o.device = "cpu";
  o.threads = 1;
  return o;
}

rc::RecordResult record(const rc::RunOptions& o, const std::string& path) {
  return rc::record_run(o, rc::RecordTarget{path, true, true, "", {}, true});
}

rc::RecordResult plain(const rc::RunOptions& o) {
  return rc::record_run(o, rc::RecordTarget{"", false, false, "", {}, true});
}

std::vector<const rc::TensorMeta*> select(const rc::DumpReader& r, int step, const std::string& phase,
                                          const std::string& kind = "") {
  std::vector<const rc::TensorMeta*> out;
  for (const auto& m : r.index())
    if (m.step == step && rc::to_string(m.phase) == phase && (kind.empty() || rc::to_string(m.kind) == kind))
      out.push_back(&m);
  return out;
}

std::vector<std::string> layers(const std::vector<const rc::TensorMeta*>& ms) {
  std::vector<std::string> out;
  for (const auto* m : ms) out.push_back(m->layer);
  return out;
}

int64_t order_of(const rc::DumpReader& r, int step, const std::string& phase, const std::string& layer,
                 const std::string& name = "") {
  for (const auto& m : r.index())
    if (m.step == step && rc::to_string(m.phase) == phase && m.layer == layer && (name.empty() || m.name == name))
      return m.order;
  return -1;
}

const char* kFixtures[] = {"seed_convnet", "dropout_mlp", "bn_net", "resnet_mini", "traced_convnet"};

}  // namespace

// The instrumented run computes the same numbers as the plain run: outputs, losses, parameter
// gradients and the parameters and buffers after every step are bitwise equal (compared through
// XXH3 fingerprints of the live tensors), for the default selection, `all`, and op-level taps.
class CaptureChangesNoNumbers : public ::testing::TestWithParam<const char*> {};

TEST_P(CaptureChangesNoNumbers, DefaultAllAndOps) {
  testutil::TempDir dir;
  auto o = options(GetParam());
  o.steps = 3;
  auto base = plain(o);
  ASSERT_EQ(base.fingerprint.size() % 3, 0u);
  ASSERT_FALSE(base.fingerprint.empty());
  for (const char* layers : {"default", "all"}) {
    o.layers = layers;
    for (bool ops : {false, true}) {
      o.ops = ops;
      auto cap = record(o, dir.file("run.h5"));
      EXPECT_GT(cap.tensors, 0);
      EXPECT_EQ(cap.fingerprint, base.fingerprint) << GetParam() << " layers=" << layers << " ops=" << ops;
    }
  }
  // Hash-only capture (the ladder's first pass) as well; its hashes are those of a full dump.
  o.layers = "default";
  o.ops = false;
  auto full = record(o, dir.file("full.h5"));
  o.hashes_only = true;
  auto hashed = record(o, dir.file("hashes.h5"));
  EXPECT_EQ(hashed.fingerprint, base.fingerprint) << GetParam() << " hashes only";
  rc::DumpReader f(dir.file("full.h5")), h(dir.file("hashes.h5"));
  ASSERT_EQ(f.index().size(), h.index().size());
  for (size_t i = 0; i < f.index().size(); ++i) {
    EXPECT_EQ(f.index()[i].key(), h.index()[i].key());
    EXPECT_EQ(f.index()[i].hash, h.index()[i].hash) << f.index()[i].tensor_name();
    EXPECT_EQ(f.index()[i].input_hash, h.index()[i].input_hash);
    EXPECT_FALSE(h.index()[i].has_data());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CaptureChangesNoNumbers, ::testing::ValuesIn(kFixtures));

TEST(Record, FingerprintSeesADifferentSeed) {
  // The check above could not pass by accident: a different dropout mask changes the fingerprint.
  auto o = options("dropout_mlp");
  auto a = plain(o);
  o.seed = "1";
  EXPECT_NE(plain(o).fingerprint, a.fingerprint);
}

class EveryFixtureRecord : public ::testing::TestWithParam<const char*> {};

// Two records with the same seed and thread count give identical tensors, in the same order.
TEST_P(EveryFixtureRecord, TwiceGivesIdenticalHashes) {
  testutil::TempDir dir;
  for (const char* sel : {"default", "all"}) {
    auto o = options(GetParam());
    o.layers = sel;
    record(o, dir.file("a.h5"));
    record(o, dir.file("b.h5"));
    rc::DumpReader a(dir.file("a.h5")), b(dir.file("b.h5"));
    ASSERT_EQ(a.index().size(), b.index().size());
    size_t forward = 0;
    for (size_t i = 0; i < a.index().size(); ++i) {
      EXPECT_EQ(a.index()[i].key(), b.index()[i].key());
      EXPECT_EQ(a.index()[i].hash, b.index()[i].hash) << a.index()[i].key();
      forward += a.index()[i].phase == rc::Phase::forward;
    }
    EXPECT_GT(forward, 0u) << GetParam() << " " << sel;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EveryFixtureRecord, ::testing::ValuesIn(kFixtures));

TEST(Record, SeedConvnetHoldsEveryTensorInExecutionOrder) {
  testutil::TempDir dir;
  auto o = options("seed_convnet");
  auto res = record(o, dir.file("run.h5"));
  rc::DumpReader r(dir.file("run.h5"));
  EXPECT_EQ(static_cast<int64_t>(r.index().size()), res.tensors);
  // Initial parameters, before step 0.
  auto init = select(r, -1, "init", "param");
  EXPECT_EQ(init.size(), 8u);  // 2 convs + 2 linears, weight and bias each
  EXPECT_EQ(init.front()->order, 0);
  for (int step = 0; step < 2; ++step) {
    EXPECT_EQ(select(r, step, "input", "input").size(), 1u);
    EXPECT_EQ(select(r, step, "input", "target").size(), 1u);
    EXPECT_EQ(select(r, step, "loss").size(), 1u);
    EXPECT_EQ(layers(select(r, step, "forward")), (std::vector<std::string>{"features.0", "features.3"}));
    EXPECT_EQ(layers(select(r, step, "backward")), (std::vector<std::string>{"features.3", "features.0"}));
    EXPECT_EQ(select(r, step, "param_grad").size(), 8u);
    EXPECT_EQ(select(r, step, "after_step", "param").size(), 8u);
    // input < forward < output < loss < backward (reverse) < after_step.
    int64_t in = order_of(r, step, "input", "");
    int64_t f0 = order_of(r, step, "forward", "features.0"), f3 = order_of(r, step, "forward", "features.3");
    int64_t loss = order_of(r, step, "loss", "");
    int64_t b3 = order_of(r, step, "backward", "features.3"), b0 = order_of(r, step, "backward", "features.0");
    int64_t g3 = order_of(r, step, "param_grad", "features.3", "weight");
    int64_t g0 = order_of(r, step, "param_grad", "features.0", "weight");
    int64_t after = order_of(r, step, "after_step", "features.0", "weight");
    EXPECT_LT(in, f0);
    EXPECT_LT(f0, f3);
    EXPECT_LT(f3, loss);
    EXPECT_LT(loss, b3);
    EXPECT_LT(b3, b0);
    EXPECT_LT(g3, g0);
    EXPECT_LT(b3, g3);
    EXPECT_LT(b0, after);
    EXPECT_LT(g0, after);
  }
  // The activations' input hashes: features.0 sees the input batch, features.3 does not.
  auto f = select(r, 0, "forward");
  ASSERT_TRUE(f[0]->has_input_hash && f[1]->has_input_hash);
  EXPECT_EQ(f[0]->layer_type, "torch.nn.modules.conv.Conv2d");
  EXPECT_NE(f[0]->input_hash, f[1]->input_hash);
}

TEST(Record, BatchNormStateAfterEachStepAndDropoutForward) {
  testutil::TempDir dir;
  record(options("bn_net"), dir.file("bn.h5"));
  rc::DumpReader r(dir.file("bn.h5"));
  auto buffers = select(r, 0, "after_step", "buffer");
  std::vector<std::string> names;
  for (const auto* m : buffers) names.push_back(m->layer + "." + m->name);
  EXPECT_EQ(names, (std::vector<std::string>{"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}));
  EXPECT_EQ(buffers[2]->dtype, "int64");
  // Running stats move in train mode: step 0's differ from the initial ones.
  auto init = select(r, -1, "init", "buffer");
  EXPECT_NE(init[0]->hash, buffers[0]->hash);
  EXPECT_EQ(layers(select(r, 0, "forward")), (std::vector<std::string>{"conv1", "bn", "conv2"}));

  record(options("dropout_mlp"), dir.file("do.h5"));
  rc::DumpReader d(dir.file("do.h5"));
  EXPECT_EQ(layers(select(d, 0, "forward")), (std::vector<std::string>{"drop"}));
  // Dropout acts on the input batch, which does not require grad: it has no gradient to record.
  EXPECT_TRUE(select(d, 0, "backward").empty());
  EXPECT_EQ(select(d, 0, "param_grad").size(), 2u);
}

TEST(Record, SharedTypesKeepInstancePathsAndInPlaceReluKeepsGradients) {
  testutil::TempDir dir;
  auto o = options("resnet_mini");
  o.layers = "all";
  record(o, dir.file("run.h5"));
  rc::DumpReader r(dir.file("run.h5"));
  auto fwd = layers(select(r, 0, "forward"));
  for (const char* p : {"layer1.0", "layer1.1", "layer1.0.conv1", "layer1.1.conv1", "layer1.0.relu", "head.1", "pool"})
    EXPECT_EQ(std::count(fwd.begin(), fwd.end(), p), p == std::string("layer1.0.relu") ? 2 : 1) << p;
  // The block's ReLU is called twice per forward: two calls, told apart.
  std::vector<int> calls;
  for (const auto* m : select(r, 0, "forward"))
    if (m->layer == "layer1.0.relu") calls.push_back(m->call);
  EXPECT_EQ(calls, (std::vector<int>{0, 1}));
  // Every tapped activation that requires grad has its gradient.
  auto bwd = layers(select(r, 0, "backward"));
  for (const char* p : {"layer1.0.bn1", "layer1.1.bn2", "conv1", "layer2.0.downsample.0"})
    EXPECT_EQ(std::count(bwd.begin(), bwd.end(), p), 1) << p;
}

TEST(Record, LayerSelectionByKindAndPath) {
  testutil::TempDir dir;
  auto o = options("resnet_mini");
  o.layers = "linear,ReLU";
  record(o, dir.file("a.h5"));
  rc::DumpReader a(dir.file("a.h5"));
  for (const auto* m : select(a, 0, "forward"))
    EXPECT_TRUE(m->layer == "head.2" || m->layer_type == "torch.nn.modules.activation.ReLU") << m->layer;
  o.layers = "path:^layer2\\.1\\.";
  record(o, dir.file("b.h5"));
  rc::DumpReader b(dir.file("b.h5"));
  EXPECT_EQ(layers(select(b, 0, "forward")),
            (std::vector<std::string>{"layer2.1.conv1", "layer2.1.bn1", "layer2.1.relu", "layer2.1.conv2",
                                      "layer2.1.bn2", "layer2.1.downsample", "layer2.1.relu"}));
}

TEST(Record, OpLevelTapsNameTheOps) {
  testutil::TempDir dir;
  auto o = options("resnet_mini");
  o.layers = "none";
  o.ops = true;
  record(o, dir.file("run.h5"));
  rc::DumpReader r(dir.file("run.h5"));
  auto fwd = layers(select(r, 0, "forward"));
  auto has = [&](const std::string& prefix) {
    return std::any_of(fwd.begin(), fwd.end(), [&](const std::string& l) { return l.rfind(prefix, 0) == 0; });
  };
  EXPECT_TRUE(has("layer1.0.conv1:aten::conv2d#"));
  EXPECT_TRUE(has("layer1.0:aten::add_#"));
  EXPECT_TRUE(has("layer2.0.bn1:aten::batch_norm#"));
}

TEST(Record, FrozenModelNeedsOps) {
  testutil::TempDir dir;
  auto o = options("frozen_convnet");
  try {
    record(o, dir.file("run.h5"));
    FAIL() << "frozen model recorded with the default selection";
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--ops"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dir.entries(), 0u);
  o.ops = true;
  auto res = record(o, dir.file("run.h5"));
  EXPECT_TRUE(res.forward_only);  // freezing folded the parameters into constants
  rc::DumpReader r(dir.file("run.h5"));
  auto fwd = layers(select(r, 0, "forward"));
  EXPECT_TRUE(
      std::any_of(fwd.begin(), fwd.end(), [](const std::string& l) { return l.rfind("aten::conv2d#", 0) == 0; }));
  EXPECT_TRUE(select(r, 0, "backward").empty());
}

TEST(Record, AnUnknownSelectorNamesTheModelsLayerTypes) {
  auto o = options("seed_convnet");
  o.layers = "BatchNorm2d";
  try {
    plain(o);  // a plain run never selects
    record(o, "/tmp/reprocheck-never-written.h5");
    FAIL();
  } catch (const rc::UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("unknown --layers selector 'BatchNorm2d'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential"), std::string::npos) << msg;
  }
  EXPECT_FALSE(rc::files::exists("/tmp/reprocheck-never-written.h5"));
}

TEST(Record, WrongInputShapeNamesTheExpectedShapeAndLeavesNoFile) {
  testutil::TempDir dir;
  auto o = options("seed_convnet");
  o.input_shape = {4, 5, 32, 32};
  try {
    record(o, dir.file("run.h5"));
    FAIL();
  } catch (const rc::InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("[4, 5, 32, 32]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[4, 3, 32, 32]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("channels"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_EQ(dir.entries(), 0u);
}

TEST(Record, ExistingOutputIsKeptWithoutForce) {
  testutil::TempDir dir;
  std::ofstream(dir.file("run.h5")) << "keep me";
  EXPECT_THROW(rc::record_run(options("dropout_mlp"), rc::RecordTarget{dir.file("run.h5"), false, true}),
               rc::InputError);
  std::ifstream in(dir.file("run.h5"));
  std::string s;
  std::getline(in, s);
  EXPECT_EQ(s, "keep me");
}

TEST(Record, SeedAndDataSeedAreIndependent) {
  testutil::TempDir dir;
  auto o = options("dropout_mlp");
  record(o, dir.file("a.h5"));
  o.seed = "7";
  record(o, dir.file("b.h5"));
  o.seed = "0";
  o.data_seed = "7";
  record(o, dir.file("c.h5"));
  rc::DumpReader a(dir.file("a.h5")), b(dir.file("b.h5")), c(dir.file("c.h5"));
  auto in = [](const rc::DumpReader& r) { return select(r, 0, "input", "input")[0]->hash; };
  auto drop = [](const rc::DumpReader& r) { return select(r, 0, "forward")[0]->hash; };
  EXPECT_EQ(in(a), in(b));      // model seed does not move the data
  EXPECT_NE(drop(a), drop(b));  // ... but moves the dropout mask
  EXPECT_NE(in(a), in(c));      // data seed moves the data
  EXPECT_EQ(b.attribute("seed"), "7");
}

TEST(Record, ReinitXavierFollowsTheSeed) {
  testutil::TempDir dir;
  auto o = options("seed_convnet");
  o.reinit = "xavier_normal";
  record(o, dir.file("a.h5"));
  record(o, dir.file("b.h5"));
  o.seed = "3";
  record(o, dir.file("c.h5"));
  rc::DumpReader a(dir.file("a.h5")), b(dir.file("b.h5")), c(dir.file("c.h5"));
  auto w = [](const rc::DumpReader& r) { return select(r, -1, "init", "param")[0]->hash; };  // features.0.weight
  EXPECT_EQ(w(a), w(b));
  EXPECT_NE(w(a), w(c));
  rc::DumpReader base = (record(options("seed_convnet"), dir.file("d.h5")), rc::DumpReader(dir.file("d.h5")));
  EXPECT_NE(w(a), w(base));
}

TEST(Record, Float64RunsAndIsStoredAsFloat64) {
  testutil::TempDir dir;
  auto o = options("bn_net");
  o.dtype = "float64";
  o.steps = 1;
  record(o, dir.file("run.h5"));
  rc::DumpReader r(dir.file("run.h5"));
  EXPECT_EQ(select(r, 0, "forward")[0]->dtype, "float64");
}

TEST(Record, ProvenanceIsRecorded) {
  testutil::TempDir dir;
  auto o = options("dropout_mlp");
  o.seed = "random";
  auto res = record(o, dir.file("run.h5"));
  rc::DumpReader r(dir.file("run.h5"));
  EXPECT_EQ(r.attribute("seed"), std::to_string(res.seed));
  EXPECT_EQ(r.attribute("seed_mode"), "random");
  EXPECT_EQ(r.attribute("threads"), "1");
  EXPECT_EQ(r.attribute("device"), "cpu");
  EXPECT_EQ(r.attribute("libtorch_version"), "2.11.0");
  for (const char* k :
       {"cuda_version", "cudnn_version", "host", "time", "model_signature", "run_options", "deterministic"})
    EXPECT_FALSE(r.attribute(k).empty()) << k;
}

TEST(Record, ReplaySubstitutesTheReferenceValue) {
  testutil::TempDir dir;
  auto o = options("dropout_mlp");
  record(o, dir.file("ref.h5"));
  rc::DumpReader ref(dir.file("ref.h5"));
  const rc::TensorMeta* drop = select(ref, 0, "forward")[0];
  o.seed = "1";  // another dropout mask
  rc::RecordTarget t{dir.file("replayed.h5"), true, true};
  t.replay_dump = dir.file("ref.h5");
  t.replay_keys = {drop->key()};
  rc::record_run(o, t);
  rc::record_run(o, {dir.file("plain.h5"), true, true});
  rc::DumpReader replayed(dir.file("replayed.h5")), other(dir.file("plain.h5"));
  // The replayed mask is the reference's, and so is everything computed from it in step 0 ...
  EXPECT_EQ(select(replayed, 0, "forward")[0]->hash, drop->hash);
  EXPECT_EQ(select(replayed, 0, "output")[0]->hash, select(ref, 0, "output")[0]->hash);
  EXPECT_EQ(select(replayed, 0, "param_grad")[0]->hash, select(ref, 0, "param_grad")[0]->hash);
  // ... while without replay seed 1 differs, and step 1 draws its own mask again.
  EXPECT_NE(select(other, 0, "forward")[0]->hash, drop->hash);
  EXPECT_NE(select(replayed, 1, "forward")[0]->hash, select(ref, 1, "forward")[0]->hash);
  t.replay_keys = {"9|forward|nope|activation|out|0"};
  EXPECT_THROW(rc::record_run(o, t), rc::InputError);
}

TEST(Record, DumpedCopiesHoldTheLiveValues) {
  // The dump's copies (taken at tap time, written by the background thread) hash like the live
  // output and loss that the fingerprint hashes synchronously.
  testutil::TempDir dir;
  auto res = record(options("resnet_mini"), dir.file("run.h5"));
  rc::DumpReader r(dir.file("run.h5"));
  EXPECT_EQ(select(r, 0, "output")[0]->hash, res.fingerprint[0]);
  EXPECT_EQ(select(r, 0, "loss")[0]->hash, res.fingerprint[1]);
  EXPECT_EQ(r.attribute("tf32_cublas").empty(), false);
}

// The training recipe (docs/recipe.md): several and integer inputs, dict and tuple outputs, the
// model's own loss, Adam and AdamW, autocast.
namespace {

const char* kRecipeFixtures[] = {"text_classifier", "two_input_net",     "dict_output_net",
                                 "loss_method_net", "training_step_net", "aux_heads_net"};

std::string error_of(const rc::RunOptions& o) {
  try {
    plain(o);
  } catch (const rc::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

class RecipeCaptureChangesNoNumbers : public ::testing::TestWithParam<const char*> {};

TEST_P(RecipeCaptureChangesNoNumbers, PlainEqualsInstrumented) {
  testutil::TempDir dir;
  auto o = options(GetParam());
  o.steps = 2;
  auto base = plain(o);
  ASSERT_FALSE(base.fingerprint.empty());
  o.layers = "all";
  EXPECT_EQ(record(o, dir.file("run.h5")).fingerprint, base.fingerprint) << GetParam();
  // Twice is the same; another seed is not (each has a dropout).
  EXPECT_EQ(plain(options(GetParam())).fingerprint, base.fingerprint);
  auto other = options(GetParam());
  other.seed = "7";
  EXPECT_NE(plain(other).fingerprint, base.fingerprint);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RecipeCaptureChangesNoNumbers, ::testing::ValuesIn(kRecipeFixtures));

TEST(Recipe, InputsAndTargetsFollowTheirSpecs) {
  testutil::TempDir dir;
  record(options("text_classifier"), dir.file("t.h5"));
  rc::DumpReader r(dir.file("t.h5"));
  auto in = select(r, 0, "input", "input");
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0]->dtype, "int64");
  EXPECT_EQ(in[0]->shape, (std::vector<int64_t>{4, 20}));
  auto ids = r.read(*in[0]);
  const auto* v = reinterpret_cast<const int64_t*>(ids.data());
  for (int i = 0; i < 80; ++i) {
    EXPECT_GE(v[i], 0);
    EXPECT_LT(v[i], 1000);
  }
  // Two inputs, named by position.
  record(options("two_input_net"), dir.file("two.h5"));
  rc::DumpReader two(dir.file("two.h5"));
  auto inputs = select(two, 0, "input", "input");
  ASSERT_EQ(inputs.size(), 2u);
  EXPECT_EQ(inputs[0]->name, "input.0");
  EXPECT_EQ(inputs[1]->shape, (std::vector<int64_t>{4, 5}));
  // A dict output: every tensor is recorded, the loss trains on "logits".
  record(options("dict_output_net"), dir.file("dict.h5"));
  rc::DumpReader dict(dir.file("dict.h5"));
  std::vector<std::string> names;
  for (const auto* m : select(dict, 0, "output")) names.push_back(m->name);
  EXPECT_EQ(names, (std::vector<std::string>{"output.logits", "output.embedding"}));
  EXPECT_EQ(select(dict, 0, "input", "target")[0]->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(dict.attribute("loss_recipe"), "loss = cross_entropy(output logits) (inputs [4, 6] float32)");
  // The weighted heads, said in the dump for the report.
  record(options("aux_heads_net"), dir.file("aux.h5"));
  rc::DumpReader aux(dir.file("aux.h5"));
  EXPECT_EQ(
      aux.attribute("loss_recipe"),
      "loss = 1*cross_entropy(output 0) + 0.3*cross_entropy(output 1) + 0.3*cross_entropy(output 2) (inputs [2, 3, "
      "8, 8] float32)");
  EXPECT_EQ(aux.attribute("loss_recipe_note"), "1");
  EXPECT_EQ(aux.attribute("ignored_outputs"), "");
  // The model's own methods.
  record(options("training_step_net"), dir.file("ts.h5"));
  EXPECT_NE(rc::DumpReader(dir.file("ts.h5")).attribute("loss_recipe").find("training_step"), std::string::npos);
}

TEST(Recipe, AdamAndAdamWStateIsRecordedAfterEachStep) {
  testutil::TempDir dir;
  for (const char* optimizer : {"adam", "adamw", "sgd"}) {
    auto o = options("dropout_mlp");
    o.optimizer = optimizer;
    o.steps = 2;
    record(o, dir.file("run.h5"));
    rc::DumpReader r(dir.file("run.h5"));
    for (int step = 0; step < 2; ++step) {
      std::vector<std::string> names;
      for (const auto* m : select(r, step, "after_step", "optim_state"))
        if (m->layer == "fc") names.push_back(m->name);
      if (std::string(optimizer) == "sgd") {
        EXPECT_EQ(names, (std::vector<std::string>{"weight.momentum_buffer", "bias.momentum_buffer"}));
        continue;
      }
      EXPECT_EQ(names, (std::vector<std::string>{"weight.step", "weight.exp_avg", "weight.exp_avg_sq", "bias.step",
                                                 "bias.exp_avg", "bias.exp_avg_sq"}))
          << optimizer;
      for (const auto* m : select(r, step, "after_step", "optim_state"))
        if (m->name == "weight.step") {
          auto bytes = r.read(*m);
          EXPECT_EQ(*reinterpret_cast<const int64_t*>(bytes.data()), step + 1);
        }
    }
  }
  // AdamW's decoupled weight decay is not Adam's: the parameters differ after a step.
  auto a = options("dropout_mlp"), w = options("dropout_mlp");
  a.optimizer = "adam";
  w.optimizer = "adamw";
  EXPECT_NE(plain(a).fingerprint, plain(w).fingerprint);
}

TEST(Recipe, AutocastBf16OnTheCpuChangesNoNumbersWhenInstrumented) {
  testutil::TempDir dir;
  for (const char* model : {"resnet_mini", "text_classifier"}) {
    auto o = options(model);
    o.autocast = "bf16";
    auto base = plain(o);
    EXPECT_EQ(record(o, dir.file("run.h5")).fingerprint, base.fingerprint) << model;
    // Autocast is on: the last linear layer's output is bf16 (and resnet_mini's convolutions'), the
    // parameters float32.
    rc::DumpReader r(dir.file("run.h5"));
    EXPECT_EQ(select(r, 0, "output")[0]->dtype, "bfloat16") << model;
    if (std::string(model) == "resnet_mini")
      for (const auto* m : select(r, 0, "forward")) EXPECT_EQ(m->dtype, "bfloat16") << m->layer;
    for (const auto* m : select(r, 0, "after_step", "param")) EXPECT_EQ(m->dtype, "float32");
    auto off = options(model);
    EXPECT_NE(plain(off).fingerprint, base.fingerprint);
  }
}

TEST(Recipe, DtypeCastsFloatingTensorsOnly) {
  testutil::TempDir dir;
  auto o = options("bn_net");
  o.dtype = "bfloat16";
  record(o, dir.file("bn.h5"));
  rc::DumpReader r(dir.file("bn.h5"));
  int buffers = 0;
  for (const auto* m : select(r, 0, "after_step", "buffer")) {
    ++buffers;
    EXPECT_EQ(m->dtype, m->name == "num_batches_tracked" ? "int64" : "bfloat16") << m->name;
  }
  EXPECT_GT(buffers, 0);
}

TEST(Recipe, ProblemsAreFoundBeforeTheFirstStepWithOneLine) {
  testutil::TempDir dir;
  auto with = [](const char* model, auto change) {
    auto o = options(model);
    change(o);
    return error_of(o);
  };
  std::string e = with("two_input_net", [](rc::RunOptions& o) { o.inputs = {"4,3,8,8"}; });
  EXPECT_NE(e.find("forward(image: Tensor, features: Tensor) takes 2 argument(s) and the recipe gives 1"),
            std::string::npos)
      << e;
  e = with("text_classifier", [](rc::RunOptions& o) { o.inputs = {"4,20:float32"}; });
  EXPECT_NE(e.find("forward of model"), std::string::npos) << e;
  EXPECT_NE(e.find("[4, 20] float32"), std::string::npos) << e;
  e = with("dict_output_net", [](rc::RunOptions& o) { o.output = "logit"; });
  EXPECT_NE(e.find("without output 'logit'; its tensor outputs are logits, embedding"), std::string::npos) << e;
  e = with("aux_heads_net", [](rc::RunOptions& o) { o.output_weights = "1,0.3,0.3,0.3"; });
  EXPECT_NE(e.find("without output '3'"), std::string::npos) << e;
  e = with("training_step_net", [](rc::RunOptions& o) {
    o.targets = {};
    o.loss = "model";
    o.inputs = {"4,6", "4,6", "4,6"};
  });
  EXPECT_NE(e.find("training_step(x: Tensor, labels: Tensor) takes 2"), std::string::npos) << e;
  e = with("dropout_mlp", [](rc::RunOptions& o) { o.loss = "model"; });
  EXPECT_NE(e.find("has no training_step or loss method"), std::string::npos) << e;
  e = with("dropout_mlp", [](rc::RunOptions& o) { o.output = "0"; });
  EXPECT_NE(e.find("returns one tensor"), std::string::npos) << e;
  // None of them wrote a dump.
  auto o = options("two_input_net");
  o.inputs = {"4,3,8,8"};
  EXPECT_THROW(record(o, dir.file("x.h5")), rc::InputError);
  EXPECT_FALSE(rc::files::exists(dir.file("x.h5")));
}

TEST(Record, PassTwoKeepsThePlansDataAndStopsAfterIt) {
  // The capture ladder's pass 2: a hash-only run that keeps the data of the records its plan lists,
  // and ends at the next phase boundary once it has written them all.
  testutil::TempDir dir;
  auto o = options("resnet_mini");
  o.steps = 2;
  o.hashes_only = true;
  record(o, dir.file("pass1.h5"));
  rc::DumpReader pass1(dir.file("pass1.h5"));
  const auto* conv = select(pass1, 0, "forward")[0];
  {
    std::ofstream plan(dir.file("plan"));
    plan << select(pass1, 0, "input", "input")[0]->key() << "\n" << conv->key() << "\n";
  }
  o.capture_plan = dir.file("plan");
  record(o, dir.file("pass2.h5"));
  rc::DumpReader pass2(dir.file("pass2.h5"));
  std::vector<std::string> with_data;
  for (const auto& m : pass2.index())
    if (m.has_data()) with_data.push_back(m.key());
  EXPECT_EQ(with_data, (std::vector<std::string>{select(pass1, 0, "input", "input")[0]->key(), conv->key()}));
  // It stopped after step 0's forward pass: no gradient, no update, no step 1.
  EXPECT_FALSE(select(pass2, 0, "forward").empty());
  EXPECT_TRUE(select(pass2, 0, "backward").empty());
  EXPECT_TRUE(select(pass2, 0, "after_step").empty());
  EXPECT_TRUE(select(pass2, 1, "input").empty());
  // Every record it wrote is pass 1's, with pass 1's hash.
  std::map<std::string, uint64_t> hashes;
  for (const auto& m : pass1.index()) hashes[m.key()] = m.hash;
  for (const auto& m : pass2.index()) EXPECT_EQ(m.hash, hashes.at(m.key())) << m.key();
  // A plan that also drills (pass 3's ops in the same run) runs the whole step, and keeps the ops'
  // data.
  o.drill_step = 0;
  o.steps = 1;
  record(o, dir.file("drill.h5"));
  rc::DumpReader drill(dir.file("drill.h5"));
  EXPECT_FALSE(select(drill, 0, "after_step").empty());
  int ops_with_data = 0;
  for (const auto& m : drill.index()) ops_with_data += m.layer.find(":aten::") != std::string::npos && m.has_data();
  EXPECT_GT(ops_with_data, 10);
}
