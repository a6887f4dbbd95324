// Statistics of one pair of equally shaped tensors (a = reference run, b = other run), and the
// tolerance under which two elements count as equal.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "reprocheck/dtype.h"

namespace reprocheck {

// When two elements count as equal. Bitwise (the default): equal bit patterns, any NaN equal to
// any NaN. Otherwise |a - b| <= atol + rtol * |a| (a = reference), NaN equal to NaN at the same
// position, infinities equal only to themselves.
struct Tolerance {
  enum class Mode { bitwise, fixed, torch };
  Mode mode = Mode::bitwise;
  double atol = 0, rtol = 0;

  static Tolerance fixed(double atol, double rtol) { return {Mode::fixed, atol, rtol}; }
  static Tolerance torch_presets() { return {Mode::torch, 0, 0}; }
  // (atol, rtol) for a dtype; torch presets follow torch.testing.assert_close.
  std::pair<double, double> for_dtype(DType dtype) const;
  std::pair<double, double> for_dtype(const std::string& dtype) const { return for_dtype(dtype_from_name(dtype)); }
  std::string describe() const;  // "bitwise", "atol=1e-05 rtol=1.3e-06", "torch presets"
};

struct DiffStats {
  int64_t numel = 0;
  int64_t mismatched = 0;      // elements not within the tolerance
  double max_abs = 0;          // over finite pairs
  int64_t max_abs_index = -1;  // flat, row-major
  double a_at_max = 0, b_at_max = 0;
  uint64_t a_bits = 0, b_bits = 0;  // raw bits of the two values at max_abs_index
  double max_rel = 0;               // |a-b| / max(|a|, |b|): 1 where the reference is 0 and the other is not
  double mean_abs = 0, rms = 0;     // of a - b over finite pairs
  uint64_t max_ulp = 0;             // units in the last place (floats), |a - b| (integers)
  double cosine = 1;                // of a and b over finite pairs; 1 when both are zero; NaN when
                                    // no pair is finite (all NaN or Inf)
  int64_t nan_mismatch = 0;         // positions where exactly one is NaN
  int64_t inf_mismatch = 0;         // positions where the infinities differ
  int64_t signed_zeros = 0;         // positions holding +0 in one and -0 in the other
  int64_t first_index = -1;         // first element not within the tolerance
};

// Elements per chunk: statistics are computed in chunks (in parallel) and merged in chunk order,
// so that they do not depend on the thread count.
inline constexpr int64_t kStatsChunk = int64_t{1} << 20;

// The values of an integer tensor as int64 (empty for a float dtype).
std::vector<int64_t> integer_values(DType dtype, const void* data, int64_t numel);

// Statistics of `numel` elements of `dtype` (raw bytes, as stored).
DiffStats diff_stats(DType dtype, const void* a, const void* b, int64_t numel, const Tolerance& tol);
// The same for a dtype named in a dump; throws InputError for an unknown name.
DiffStats diff_stats(const std::string& dtype, const void* a, const void* b, int64_t numel, const Tolerance& tol);

}  // namespace reprocheck
