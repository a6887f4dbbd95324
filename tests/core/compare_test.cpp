#include "reprocheck/compare.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/report.h"
#include "test_util.h"

namespace rc = reprocheck;

namespace {

struct T {
  std::string layer, phase = "forward", kind = "activation", dtype = "float32";
  std::vector<int64_t> shape;
  std::vector<float> data;
  uint64_t input_hash = 0;
  bool has_input_hash = false;
};

// `words`: a hash-only dump whose rows carry hash_words, as a CUDA run's would.
void write_dump(const std::string& path, const std::vector<T>& ts, const std::string& signature = "sig",
                bool hashes_only = false, bool words = false) {
  rc::DumpWriter w(path, true, hashes_only);
  w.set_attribute("model", std::string("m.pt"));
  w.set_attribute("model_signature", signature);
  w.set_attribute("steps", int64_t{1});
  for (const auto& t : ts) {
    rc::TensorMeta m;
    m.step = 0;
    m.phase = *rc::parse_phase(t.phase);
    m.layer = t.layer;
    m.layer_type = "torch.nn.modules.conv.Conv2d";
    m.kind = *rc::parse_kind(t.kind);
    m.name = "out";
    m.dtype = t.dtype;
    m.shape = t.shape.empty() ? std::vector<int64_t>{static_cast<int64_t>(t.data.size())} : t.shape;
    m.input_hash = t.input_hash;
    m.has_input_hash = t.has_input_hash;
    if (words)
      w.write_hash(m, rc::hash_words(t.data.data(), t.data.size() * 4), true);
    else
      w.write(m, t.data.data(), t.data.size() * 4);
  }
  w.commit();
}

rc::Comparison cmp(const testutil::TempDir& d, const rc::Tolerance& tol = {}) {
  rc::CompareOptions o;
  o.tolerance = tol;
  return rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}, o);
}

}  // namespace

TEST(Compare, IdenticalDumpsAreReproducible) {
  testutil::TempDir d;
  std::vector<T> ts = {{"conv1", "forward", "activation", "float32", {}, {1, 2, 3}},
                       {"conv2", "forward", "activation", "float32", {}, {4, 5}}};
  write_dump(d.file("a.h5"), ts);
  write_dump(d.file("b.h5"), ts);
  auto c = cmp(d);
  EXPECT_FALSE(c.divergent());
  ASSERT_EQ(c.pairs.size(), 1u);
  EXPECT_EQ(c.pairs[0].identical, 2);
  EXPECT_EQ(c.pairs[0].bytes_read, 0u);  // the hash short-cut read no data
  EXPECT_EQ(c.headline(), nullptr);
  rc::CompareOptions full;
  full.hash_shortcut = false;
  auto c2 = rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}, full);
  EXPECT_FALSE(c2.divergent());
  EXPECT_EQ(c2.pairs[0].bytes_read, 2u * 20);
}

TEST(Compare, FirstDivergenceWithStatistics) {
  testutil::TempDir d;
  float a1 = 1.0f, b1 = std::nextafter(1.0f, 2.0f);  // one ulp apart
  write_dump(d.file("a.h5"), {{"conv1", "forward", "activation", "float32", {}, {0, 0}},
                              {"conv2", "forward", "activation", "float32", {2, 2}, {5, a1, 3, -2}},
                              {"conv3", "forward", "activation", "float32", {}, {7}}});
  write_dump(d.file("b.h5"), {{"conv1", "forward", "activation", "float32", {}, {0, 0}},
                              {"conv2", "forward", "activation", "float32", {2, 2}, {5, b1, 3, -2.5}},
                              {"conv3", "forward", "activation", "float32", {}, {8}}});
  auto c = cmp(d);
  ASSERT_TRUE(c.divergent());
  const auto* h = c.headline();
  ASSERT_NE(h, nullptr);
  const auto& first = h->diffs[*h->first];
  EXPECT_EQ(first.ref.layer, "conv2");
  EXPECT_EQ(first.status, rc::Status::values_differ);
  const auto& s = first.stats;
  EXPECT_EQ(s.numel, 4);
  EXPECT_EQ(s.mismatched, 2);
  EXPECT_DOUBLE_EQ(s.max_abs, 0.5);
  EXPECT_EQ(s.max_abs_index, 3);
  EXPECT_EQ(rc::unravel_index(s.max_abs_index, {2, 2}), "[1, 1]");
  EXPECT_DOUBLE_EQ(s.a_at_max, -2);
  EXPECT_DOUBLE_EQ(s.b_at_max, -2.5);
  EXPECT_EQ(s.a_bits, 0xc0000000u);
  EXPECT_EQ(s.b_bits, 0xc0200000u);
  EXPECT_EQ(s.first_index, 1);
  EXPECT_DOUBLE_EQ(s.max_rel, 0.5 / 2.5);
  EXPECT_GE(s.max_ulp, 1u);
  EXPECT_LT(s.cosine, 1.0);
  EXPECT_GT(s.cosine, 0.99);
  EXPECT_DOUBLE_EQ(s.mean_abs, (0.5 + (b1 - a1)) / 4);
  // conv3 diverges after it: a cascade, not the headline.
  EXPECT_EQ(h->divergent, 2);
  // No input hashes: a source by elimination (everything before it matched) ...
  ASSERT_TRUE(first.inputs_identical.has_value());
  EXPECT_TRUE(*first.inputs_identical);
  EXPECT_EQ(first.inputs_basis, "earlier_tensors");
  // ... and conv3 inherited.
  EXPECT_FALSE(*h->diffs.back().inputs_identical);
}

TEST(Compare, InputHashesTellSourceFromInherited) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"), {{"conv1", "forward", "activation", "float32", {}, {1}, 11, true}});
  write_dump(d.file("b.h5"), {{"conv1", "forward", "activation", "float32", {}, {2}, 12, true}});
  auto first = cmp(d).headline()->diffs[0];
  EXPECT_EQ(first.inputs_basis, "input_hash");
  EXPECT_FALSE(*first.inputs_identical);
  write_dump(d.file("b.h5"), {{"conv1", "forward", "activation", "float32", {}, {2}, 11, true}});
  EXPECT_TRUE(*cmp(d).headline()->diffs[0].inputs_identical);
}

TEST(Compare, ToleranceTurnsSmallDifferencesIntoClose) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"), {{"x", "forward", "activation", "float32", {}, {1.0f, 100.0f}}});
  write_dump(d.file("b.h5"), {{"x", "forward", "activation", "float32", {}, {1.0f + 1e-6f, 100.001f}}});
  EXPECT_TRUE(cmp(d).divergent());
  auto close = cmp(d, rc::Tolerance::fixed(1e-5, 1e-4));
  EXPECT_FALSE(close.divergent());
  EXPECT_EQ(close.pairs[0].close, 1);
  auto tight = cmp(d, rc::Tolerance::fixed(1e-5, 0));
  EXPECT_TRUE(tight.divergent());
  EXPECT_EQ(tight.headline()->diffs[0].stats.mismatched, 1);
  EXPECT_EQ(tight.headline()->diffs[0].stats.first_index, 1);
  // torch presets for float32 (atol 1e-5, rtol 1.3e-6): 1e-6 passes, 1e-3 at 100 does not.
  auto torch = cmp(d, rc::Tolerance::torch_presets());
  ASSERT_TRUE(torch.divergent());
  EXPECT_EQ(torch.headline()->diffs[0].stats.mismatched, 1);
}

TEST(Compare, TorchPresetsPerDtype) {
  auto t = rc::Tolerance::torch_presets();
  EXPECT_EQ(t.for_dtype("float32"), std::make_pair(1e-5, 1.3e-6));
  EXPECT_EQ(t.for_dtype("float16"), std::make_pair(1e-5, 1e-3));
  EXPECT_EQ(t.for_dtype("bfloat16"), std::make_pair(1e-5, 1.6e-2));
  EXPECT_EQ(t.for_dtype("float64"), std::make_pair(1e-7, 1e-7));
  EXPECT_EQ(t.for_dtype("int64"), std::make_pair(0.0, 0.0));
}

TEST(DiffStats, NanInfAndSignedZeros) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  float a[] = {nan, nan, 1, inf, 0.0f, 2};
  float b[] = {nan, 3, 1, -inf, -0.0f, 2};
  auto s = rc::diff_stats("float32", a, b, 6, {});
  EXPECT_EQ(s.nan_mismatch, 1);
  EXPECT_EQ(s.inf_mismatch, 1);
  EXPECT_EQ(s.signed_zeros, 1);
  EXPECT_EQ(s.mismatched, 3);  // NaN vs 3, inf vs -inf, +0 vs -0 (bitwise)
  EXPECT_EQ(s.first_index, 1);
  EXPECT_FALSE(std::isnan(s.max_rel));
  EXPECT_FALSE(std::isnan(s.cosine));
  // Under a numeric tolerance, +0 and -0 are equal.
  auto t = rc::diff_stats("float32", a, b, 6, rc::Tolerance::fixed(0, 0));
  EXPECT_EQ(t.mismatched, 2);
}

TEST(DiffStats, RelativeDiffIsDefinedAtZero) {
  float a[] = {0, 4};
  float b[] = {1, 4};
  auto s = rc::diff_stats("float32", a, b, 2, {});
  EXPECT_DOUBLE_EQ(s.max_rel, 1.0);
}

TEST(DiffStats, HalfBfloatDoubleAndIntegers) {
  uint16_t h1[] = {0x3c00}, h2[] = {0x3c01};  // 1.0 and the next half
  auto s = rc::diff_stats("float16", h1, h2, 1, {});
  EXPECT_EQ(s.max_ulp, 1u);
  EXPECT_NEAR(s.max_abs, 0.0009765625, 1e-12);
  uint16_t b1[] = {0x3f80}, b2[] = {0x3f82};  // bfloat16 1.0 and two ulps up
  EXPECT_EQ(rc::diff_stats("bfloat16", b1, b2, 1, {}).max_ulp, 2u);
  double d1[] = {-1.0}, d2[] = {1.0};
  auto sd = rc::diff_stats("float64", d1, d2, 1, {});
  EXPECT_DOUBLE_EQ(sd.max_abs, 2.0);
  EXPECT_DOUBLE_EQ(sd.cosine, -1.0);
  int64_t i1[] = {5, 7}, i2[] = {5, 10};
  auto si = rc::diff_stats("int64", i1, i2, 2, {});
  EXPECT_EQ(si.max_ulp, 3u);
  EXPECT_EQ(si.mismatched, 1);
  // Ulps across zero count the representable values between.
  float n[] = {-std::numeric_limits<float>::denorm_min()}, p[] = {std::numeric_limits<float>::denorm_min()};
  EXPECT_EQ(rc::diff_stats("float32", n, p, 1, {}).max_ulp, 2u);
}

TEST(Compare, StructuralDifferences) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"), {{"a", "forward", "activation", "float32", {}, {1, 2}},
                              {"b", "forward", "activation", "float32", {}, {1, 2}},
                              {"c", "forward", "activation", "float32", {}, {1}}});
  write_dump(d.file("b.h5"), {{"a", "forward", "activation", "float32", {}, {1, 2}},
                              {"b", "forward", "activation", "float32", {2, 1}, {1, 2}},
                              {"z", "forward", "activation", "float32", {}, {1}}});
  auto c = cmp(d);
  auto& p = c.pairs[0];
  ASSERT_EQ(p.diffs.size(), 3u);
  EXPECT_EQ(p.diffs[0].status, rc::Status::shape_mismatch);
  EXPECT_EQ(p.diffs[0].detail, "[2] vs [2, 1]");
  EXPECT_EQ(p.diffs[1].status, rc::Status::missing);
  EXPECT_EQ(p.diffs[2].status, rc::Status::extra);
  EXPECT_EQ(p.diffs[*p.first].ref.layer, "b");
}

TEST(Compare, RefusesDumpsOfDifferentModels) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"), {{"a", "forward", "activation", "float32", {}, {1}}}, "sig1");
  write_dump(d.file("b.h5"), {{"a", "forward", "activation", "float32", {}, {1}}}, "sig2");
  try {
    cmp(d);
    FAIL();
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("different models"), std::string::npos);
  }
}

TEST(Report, FormatsAgreeOnTheVerdict) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"), {{"conv1", "forward", "activation", "float32", {}, {1, 2}}});
  write_dump(d.file("b.h5"), {{"conv1", "forward", "activation", "float32", {}, {1, 3}}});
  auto c = cmp(d);
  EXPECT_NE(rc::render_text(rc::make_report(c)).find("verdict: DIVERGENT"), std::string::npos);
  EXPECT_NE(rc::render_text(rc::make_report(c)).find("step 0 · forward · conv1 (Conv2d) output"), std::string::npos);
  EXPECT_EQ(rc::render_text(rc::make_report(c)).find("\033["), std::string::npos);
  rc::ReportOptions color;
  color.color = true;
  EXPECT_NE(rc::render_text(rc::make_report(c), color).find("\033[1;31m"), std::string::npos);
  EXPECT_NE(rc::render_json(rc::make_report(c)).find("\"verdict\": \"divergent\""), std::string::npos);
  EXPECT_NE(rc::render_markdown(rc::make_report(c)).find("**divergent**"), std::string::npos);
  EXPECT_NE(rc::render_junit(rc::make_report(c)).find("<failure"), std::string::npos);
  write_dump(d.file("b.h5"), {{"conv1", "forward", "activation", "float32", {}, {1, 2}}});
  auto same = cmp(d);
  EXPECT_NE(rc::render_text(rc::make_report(same)).find("verdict: REPRODUCIBLE"), std::string::npos);
  EXPECT_NE(rc::render_json(rc::make_report(same)).find("\"verdict\": \"reproducible\""), std::string::npos);
  EXPECT_EQ(rc::render_junit(rc::make_report(same)).find("<failure"), std::string::npos);
}

TEST(Compare, DifferentDevicesGetPerDtypeToleranceUnlessChosen) {
  testutil::TempDir d;
  auto write = [&](const std::string& path, const std::string& device, float v) {
    rc::DumpWriter w(path, true);
    w.set_attribute("model_signature", std::string("sig"));
    w.set_attribute("device", device);
    rc::TensorMeta m;
    m.step = 0;
    m.phase = rc::Phase::forward;
    m.layer = "conv";
    m.kind = rc::Kind::activation;
    m.name = "out";
    m.dtype = "float32";
    m.shape = {1};
    w.write(m, &v, 4);
    w.commit();
  };
  write(d.file("a.h5"), "cpu", 1.0f);
  write(d.file("b.h5"), "cuda:0", 1.0f + 1e-6f);
  auto c = cmp(d);
  EXPECT_EQ(c.tolerance.mode, rc::Tolerance::Mode::torch);
  EXPECT_FALSE(c.divergent());
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_NE(rc::render_text(rc::make_report(c)).find("note: runs on different devices (cpu vs cuda:0)"),
            std::string::npos);
  rc::CompareOptions o;
  o.tolerance_explicit = true;  // --tolerance bitwise
  auto strict = rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}, o);
  EXPECT_TRUE(strict.divergent());
  EXPECT_EQ(strict.notes.size(), 1u);
  write(d.file("b.h5"), "cpu", 1.0f + 1e-6f);
  EXPECT_TRUE(cmp(d).notes.empty());
}

TEST(Compare, AnyMixOfHashOnlyAndFullDumpsComparesWhatItCan) {
  testutil::TempDir d;
  std::vector<T> ts = {{"conv1", "forward", "activation", "float32", {}, {1, 2, 3}},
                       {"conv2", "forward", "activation", "float32", {}, {4, 5}}};
  auto changed = ts;
  changed[1].data[1] = 6;
  write_dump(d.file("full.h5"), ts);
  write_dump(d.file("hashes.h5"), ts, "sig", true);
  write_dump(d.file("words.h5"), ts, "sig", true, true);
  write_dump(d.file("changed-hashes.h5"), changed, "sig", true);
  write_dump(d.file("changed-words.h5"), changed, "sig", true, true);
  write_dump(d.file("changed-full.h5"), changed);
  auto run = [&](const char* a, const char* b) { return rc::compare_dumps({d.file(a), d.file(b)}); };
  // Equal tensors match whichever way they were recorded; a device hash is computed from the data.
  for (auto [a, b] : {std::pair{"full.h5", "hashes.h5"},
                      {"hashes.h5", "full.h5"},
                      {"full.h5", "words.h5"},
                      {"words.h5", "full.h5"},
                      {"hashes.h5", "hashes.h5"},
                      {"words.h5", "words.h5"}}) {
    auto c = run(a, b);
    EXPECT_FALSE(c.divergent()) << a << " vs " << b;
    EXPECT_EQ(c.pairs[0].identical, 2) << a << " vs " << b;
  }
  // A change shows as the same first divergent tensor; only full pairs have statistics.
  for (auto [a, b] : {std::pair{"full.h5", "changed-hashes.h5"},
                      {"hashes.h5", "changed-full.h5"},
                      {"words.h5", "changed-full.h5"},
                      {"full.h5", "changed-words.h5"}}) {
    auto c = run(a, b);
    ASSERT_TRUE(c.divergent()) << a << " vs " << b;
    const auto& p = c.pairs[0];
    EXPECT_EQ(p.diffs[*p.first].ref.layer, "conv2") << a << " vs " << b;
    EXPECT_TRUE(p.diffs[*p.first].hash_only) << a << " vs " << b;
    EXPECT_EQ(p.identical, 1);
    EXPECT_EQ(c.capture.mode, rc::CaptureMode::hashes);
    auto json = rc::render_json(rc::make_report(c));
    EXPECT_NE(json.find("\"hash_only\": true"), std::string::npos);
    EXPECT_NE(json.find("\"stats\": null"), std::string::npos) << json;
  }
  auto full = run("full.h5", "changed-full.h5");
  EXPECT_FALSE(full.pairs[0].diffs[*full.pairs[0].first].hash_only);
  EXPECT_DOUBLE_EQ(full.pairs[0].diffs[*full.pairs[0].first].stats.max_abs, 1.0);
  // Hashes of different functions and no data on either side cannot be matched.
  auto cross = run("hashes.h5", "words.h5");
  ASSERT_TRUE(cross.divergent());
  EXPECT_NE(cross.pairs[0].diffs[*cross.pairs[0].first].detail.find("different devices"), std::string::npos);
  auto text = rc::render_text(rc::make_report(run("full.h5", "changed-hashes.h5")));
  EXPECT_NE(text.find("a run recorded only hashes, so there are no statistics"), std::string::npos) << text;
}

TEST(Compare, MaxStepLimitsThePairing) {
  testutil::TempDir d;
  std::vector<T> ts = {{"conv1", "forward", "activation", "float32", {}, {1, 2, 3}}};
  write_dump(d.file("a.h5"), ts);
  write_dump(d.file("b.h5"), {{"conv1", "forward", "activation", "float32", {}, {1, 2, 4}}});
  rc::CompareOptions o;
  o.max_step = -1;  // every tensor here is of step 0
  auto c = rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}, o);
  EXPECT_FALSE(c.divergent());
  EXPECT_EQ(c.tensors, 0);
  o.max_step = 0;
  EXPECT_TRUE(rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}, o).divergent());
}

TEST(Compare, AnotherModelIsANoteOnlyWhenAsked) {
  testutil::TempDir d;
  std::vector<T> ts = {{"conv1", "forward", "activation", "float32", {}, {1, 2, 3}}};
  write_dump(d.file("a.h5"), ts, "one");
  write_dump(d.file("b.h5"), ts, "two");
  EXPECT_THROW(rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}), rc::InputError);
  rc::CompareOptions o;
  o.allow_other_model = true;
  auto c = rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}, o);
  EXPECT_FALSE(c.divergent());
  ASSERT_FALSE(c.notes.empty());
  EXPECT_NE(c.notes.back().find("the model changed since"), std::string::npos);
}
