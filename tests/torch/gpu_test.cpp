// CUDA tests (ctest label "gpu"). Each skips when no CUDA device is present.
#include <gtest/gtest.h>

#include "reprocheck/build_info.h"
#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/record.h"
#include "test_util.h"

namespace rc = reprocheck;
using testutil::fixture;

namespace {

bool have_cuda() { return rc::build_info().cuda_available; }

rc::RunOptions cuda_options(const std::string& model) {
  rc::RunOptions o;
  o.model = fixture(model + ".pt");
  o.device = "cuda";
  o.deterministic = "on";
  return o;
}

const rc::TensorMeta* find(const rc::DumpReader& r, int step, const std::string& phase) {
  for (const auto& m : r.index())
    if (m.step == step && rc::to_string(m.phase) == phase) return &m;
  return nullptr;
}

}  // namespace

#define REQUIRE_CUDA() \
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device"

TEST(Cuda, CaptureChangesNoNumbers) {
  REQUIRE_CUDA();
  testutil::TempDir dir;
  for (const char* model : {"seed_convnet", "bn_net", "resnet_mini", "traced_convnet", "dropout_mlp"}) {
    auto o = cuda_options(model);
    o.steps = 3;
    auto plain = rc::record_run(o, {"", false, false, "", {}, true});
    ASSERT_FALSE(plain.fingerprint.empty());
    for (const char* layers : {"default", "all"}) {
      o.layers = layers;
      auto cap = rc::record_run(o, {dir.file("run.h5"), true, true, "", {}, true});
      EXPECT_EQ(cap.fingerprint, plain.fingerprint) << model << " " << layers;
      EXPECT_EQ(cap.device, "cuda:0");
    }
  }
}

TEST(Cuda, PinnedAsynchronousCopiesHoldTheLiveValues) {
  REQUIRE_CUDA();
  testutil::TempDir dir;
  auto o = cuda_options("resnet_mini");
  auto res = rc::record_run(o, {dir.file("run.h5"), true, true, "", {}, true});
  rc::DumpReader r(dir.file("run.h5"));
  // The fingerprint hashes synchronous copies of the live output and loss of step 0.
  EXPECT_EQ(find(r, 0, "output")->hash, res.fingerprint[0]);
  EXPECT_EQ(find(r, 0, "loss")->hash, res.fingerprint[1]);
  EXPECT_FALSE(r.attribute("cuda_driver_version").empty());
  EXPECT_NE(r.attribute("device_name"), "cuda");
  EXPECT_FALSE(r.attribute("tf32_cudnn").empty());
}

TEST(Cuda, DeterministicRunsAreBitwiseEqual) {
  REQUIRE_CUDA();
  testutil::TempDir dir;
  auto o = cuda_options("seed_convnet");
  rc::record_run(o, {dir.file("a.h5"), true, true});
  rc::record_run(o, {dir.file("b.h5"), true, true});
  EXPECT_FALSE(rc::compare_dumps({dir.file("a.h5"), dir.file("b.h5")}).divergent());
}

TEST(Cuda, CpuAgainstCudaUsesPerDtypeTolerance) {
  REQUIRE_CUDA();
  testutil::TempDir dir;
  auto o = cuda_options("seed_convnet");
  rc::record_run(o, {dir.file("cuda.h5"), true, true});
  o.device = "cpu";
  rc::record_run(o, {dir.file("cpu.h5"), true, true});
  auto c = rc::compare_dumps({dir.file("cpu.h5"), dir.file("cuda.h5")});
  EXPECT_EQ(c.tolerance.mode, rc::Tolerance::Mode::torch);
  ASSERT_FALSE(c.notes.empty());
  EXPECT_NE(c.notes[0].find("different devices"), std::string::npos);
}

TEST(Cuda, DeviceHashesAreHashWordsOfTheData) {
  // A hash-only CUDA run hashes on the device (hash:words); a full run of the same seeds keeps the
  // data, from which the comparison computes hash_words: every tensor must match.
  REQUIRE_CUDA();
  testutil::TempDir dir;
  auto o = cuda_options("resnet_mini");
  rc::record_run(o, {dir.file("full.h5"), true, true});
  o.hashes_only = true;
  rc::record_run(o, {dir.file("hashes.h5"), true, true});
  rc::DumpReader h(dir.file("hashes.h5"));
  int64_t words = 0;
  for (const auto& m : h.index()) words += m.dataset == rc::kHashOnlyWords;
  EXPECT_GT(words, 100);
  auto c = rc::compare_dumps({dir.file("full.h5"), dir.file("hashes.h5")});
  EXPECT_FALSE(c.divergent());
  EXPECT_EQ(c.pairs[0].identical, static_cast<int64_t>(h.index().size()));
}

TEST(Cuda, AutocastFp16WithTheGradScalerAndBf16ChangeNoNumbersWhenInstrumented) {
  REQUIRE_CUDA();
  testutil::TempDir dir;
  for (const char* mode : {"fp16", "bf16"})
    for (const char* model : {"resnet_mini", "aux_heads_net", "text_classifier"}) {
      auto o = cuda_options(model);
      o.autocast = mode;
      o.steps = 3;
      auto plain = rc::record_run(o, {"", false, false, "", {}, true});
      auto cap = rc::record_run(o, {dir.file("run.h5"), true, true, "", {}, true});
      EXPECT_EQ(cap.fingerprint, plain.fingerprint) << model << " " << mode;
      rc::DumpReader r(dir.file("run.h5"));
      const auto* out = find(r, 0, "output");
      ASSERT_NE(out, nullptr);
      EXPECT_EQ(out->dtype, std::string(mode) == "fp16" ? "float16" : "bfloat16") << model;
    }
}
