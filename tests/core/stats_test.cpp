// Statistics pinned to values: across chunks, on the tolerance boundary, and undefined cases.
#include "reprocheck/stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace rc = reprocheck;

TEST(Stats, FirstMismatchAndMaximumAcrossChunks) {
  const int64_t n = 3 * rc::kStatsChunk + 17;
  std::vector<float> a(static_cast<size_t>(n), 1.0f), b = a;
  const int64_t first = rc::kStatsChunk + rc::kStatsChunk / 2;  // in the second chunk
  const int64_t largest = 3 * rc::kStatsChunk + 3;              // in the last, short chunk
  b[first] = 1.5f;
  b[first + 1] = 0.75f;
  b[largest] = 4.0f;
  auto s = rc::diff_stats(rc::DType::float32, a.data(), b.data(), n, {});
  EXPECT_EQ(s.numel, n);
  EXPECT_EQ(s.mismatched, 3);
  EXPECT_EQ(s.first_index, first);
  EXPECT_EQ(s.max_abs_index, largest);
  EXPECT_DOUBLE_EQ(s.max_abs, 3.0);
  EXPECT_DOUBLE_EQ(s.a_at_max, 1.0);
  EXPECT_DOUBLE_EQ(s.b_at_max, 4.0);
  EXPECT_DOUBLE_EQ(s.max_rel, 0.75);  // 3 / max(1, 4)
  EXPECT_NEAR(s.mean_abs, (0.5 + 0.25 + 3.0) / static_cast<double>(n), 1e-15);
}

TEST(Stats, TheToleranceBoundaryIsInclusiveAndScaledByTheReference) {
  // |a - b| == atol + rtol * |a| is within the tolerance.
  std::vector<double> a = {1.0, 100.0}, b = {1.25, 100.0};
  auto s = rc::diff_stats(rc::DType::float64, a.data(), b.data(), 2, rc::Tolerance::fixed(0.25, 0));
  EXPECT_EQ(s.mismatched, 0);
  s = rc::diff_stats(rc::DType::float64, a.data(), b.data(), 2, rc::Tolerance::fixed(0.2499, 0));
  EXPECT_EQ(s.mismatched, 1);
  EXPECT_EQ(s.first_index, 0);
  // rtol scales |a|, the reference: 2 > 0.0199 * 100, although 2 <= 0.0199 * 102.
  std::vector<double> r = {100.0}, o = {102.0};
  EXPECT_EQ(rc::diff_stats(rc::DType::float64, r.data(), o.data(), 1, rc::Tolerance::fixed(0, 0.0199)).mismatched, 1);
  EXPECT_EQ(rc::diff_stats(rc::DType::float64, r.data(), o.data(), 1, rc::Tolerance::fixed(0, 0.02)).mismatched, 0);
  // Bitwise: any different bit pattern is a mismatch, however small.
  std::vector<float> x = {1.0f}, y = {std::nextafter(1.0f, 2.0f)};
  auto bitwise = rc::diff_stats(rc::DType::float32, x.data(), y.data(), 1, {});
  EXPECT_EQ(bitwise.mismatched, 1);
  EXPECT_EQ(bitwise.max_ulp, 1u);
}

TEST(Stats, AllNanTensorsHaveNoCosine) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> a = {nan, nan}, b = {nan, 1.0f};
  auto s = rc::diff_stats(rc::DType::float32, a.data(), b.data(), 2, {});
  EXPECT_TRUE(std::isnan(s.cosine));
  EXPECT_EQ(s.nan_mismatch, 1);
  EXPECT_EQ(s.mismatched, 1);
}

TEST(Stats, IntegerValuesForRelabelingChecks) {
  std::vector<int32_t> v = {3, -1, 7};
  EXPECT_EQ(rc::integer_values(rc::DType::int32, v.data(), 3), (std::vector<int64_t>{3, -1, 7}));
  std::vector<float> f = {1.0f};
  EXPECT_TRUE(rc::integer_values(rc::DType::float32, f.data(), 1).empty());
}
