#include "reprocheck/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace reprocheck {

std::pair<double, double> Tolerance::for_dtype(DType dtype) const {
  if (mode == Mode::fixed) return {atol, rtol};
  if (mode == Mode::bitwise) return {0, 0};
  // torch.testing.assert_close defaults (atol, rtol).
  if (dtype == DType::float16) return {1e-5, 1e-3};
  if (dtype == DType::bfloat16) return {1e-5, 1.6e-2};
  if (dtype == DType::float32) return {1e-5, 1.3e-6};
  if (dtype == DType::float64) return {1e-7, 1e-7};
  return {0, 0};
}

std::string Tolerance::describe() const {
  switch (mode) {
    case Mode::bitwise:
      return "bitwise";
    case Mode::fixed:
      return fmt::format("atol={:g} rtol={:g}", atol, rtol);
    case Mode::torch:
      return "torch presets (float32: atol=1e-05 rtol=1.3e-06)";
  }
  return "";
}

namespace {

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Element access for each stored dtype: the value as a double, the raw bits, and an integer
// order in which adjacent representable values differ by 1 (for ULP distances).
template <typename Raw>
struct FloatBits {
  // Sign-magnitude bits to a signed order; unsigned arithmetic throughout (64-bit values would
  // overflow a signed shift or subtraction).
  static int64_t ordered(Raw bits, int width) {
    const uint64_t v = static_cast<uint64_t>(bits);
    const uint64_t sign = uint64_t{1} << (width - 1);
    const auto magnitude = static_cast<int64_t>(v & (sign - 1));
    return (v & sign) ? -magnitude : magnitude;
  }
};

struct F32 {
  using Raw = uint32_t;
  static constexpr int kWidth = 32;
  static constexpr bool kFloat = true;
  static double value(Raw r) {
    float f;
    std::memcpy(&f, &r, 4);
    return f;
  }
  static double min_normal() { return std::numeric_limits<float>::min(); }
};
struct F64 {
  using Raw = uint64_t;
  static constexpr int kWidth = 64;
  static constexpr bool kFloat = true;
  static double value(Raw r) {
    double d;
    std::memcpy(&d, &r, 8);
    return d;
  }
  static double min_normal() { return std::numeric_limits<double>::min(); }
};
struct F16 {
  using Raw = uint16_t;
  static constexpr int kWidth = 16;
  static constexpr bool kFloat = true;
  static double value(Raw r) { return half_to_float(r); }
  static double min_normal() { return 6.103515625e-05; }
};
struct BF16 {
  using Raw = uint16_t;
  static constexpr int kWidth = 16;
  static constexpr bool kFloat = true;
  static double value(Raw r) { return F32::value(static_cast<uint32_t>(r) << 16); }
  static double min_normal() { return std::numeric_limits<float>::min(); }
};
template <typename T>
struct Int {
  using Raw = T;
  static constexpr int kWidth = sizeof(T) * 8;
  static constexpr bool kFloat = false;
  static double value(Raw r) { return static_cast<double>(r); }
  static double min_normal() { return 1; }
};

// Partial statistics of one chunk of elements; merged in chunk order, so that the result does not
// depend on how many threads computed it.
struct Partial {
  DiffStats s;
  double sum_abs = 0, sum_sq = 0, dot = 0, na = 0, nb = 0;
  int64_t finite = 0;
};

template <typename E>
void stats_chunk(const typename E::Raw* a, const typename E::Raw* b, int64_t begin, int64_t end, double atol,
                 double rtol, bool bitwise, Partial& p) {
  using Raw = typename E::Raw;
  DiffStats& s = p.s;
  const double eps = E::min_normal();
  auto mismatch = [&](int64_t i) {
    ++s.mismatched;
    if (s.first_index < 0) s.first_index = i;
  };
  for (int64_t i = begin; i < end; ++i) {
    const Raw ra = a[i], rb = b[i];
    const double x = E::value(ra), y = E::value(rb);
    if constexpr (E::kFloat) {
      if (!(std::isfinite(x) && std::isfinite(y))) {
        const bool xn = std::isnan(x), yn = std::isnan(y);
        if (xn || yn) {
          if (xn != yn) {
            ++s.nan_mismatch;
            mismatch(i);
          }
        } else if (x != y) {
          ++s.inf_mismatch;
          mismatch(i);
        }
        continue;
      }
    }
    const double d = std::fabs(x - y);
    ++p.finite;
    p.sum_abs += d;
    p.sum_sq += d * d;
    p.dot += x * y;
    p.na += x * x;
    p.nb += y * y;
    if (ra == rb) continue;
    if constexpr (E::kFloat) {
      if (x == 0 && y == 0) ++s.signed_zeros;
    }
    if (d > s.max_abs || s.max_abs_index < 0) {
      s.max_abs = d;
      s.max_abs_index = i;
      s.a_at_max = x;
      s.b_at_max = y;
      s.a_bits = static_cast<uint64_t>(ra);
      s.b_bits = static_cast<uint64_t>(rb);
    }
    const double denom = std::max(std::max(std::fabs(x), std::fabs(y)), eps);
    if (d > s.max_rel * denom) s.max_rel = d / denom;
    uint64_t ulp;
    if constexpr (E::kFloat) {
      int64_t oa = FloatBits<Raw>::ordered(ra, E::kWidth), ob = FloatBits<Raw>::ordered(rb, E::kWidth);
      ulp = oa > ob ? static_cast<uint64_t>(oa) - static_cast<uint64_t>(ob)
                    : static_cast<uint64_t>(ob) - static_cast<uint64_t>(oa);
    } else {
      ulp = static_cast<uint64_t>(d);
    }
    if (ulp > s.max_ulp) s.max_ulp = ulp;
    if (bitwise || d > atol + rtol * std::fabs(x)) mismatch(i);
  }
}

template <typename E>
DiffStats stats_for(const void* pa, const void* pb, int64_t n, double atol, double rtol, bool bitwise) {
  const auto* a = static_cast<const typename E::Raw*>(pa);
  const auto* b = static_cast<const typename E::Raw*>(pb);
  const int64_t chunks = std::max<int64_t>(1, (n + kStatsChunk - 1) / kStatsChunk);
  std::vector<Partial> parts(static_cast<size_t>(chunks));
  auto work = [&](int64_t first, int64_t step) {
    for (int64_t c = first; c < chunks; c += step)
      stats_chunk<E>(a, b, c * kStatsChunk, std::min(n, (c + 1) * kStatsChunk), atol, rtol, bitwise, parts[c]);
  };
  const int64_t threads = std::min<int64_t>(chunks, std::max(1u, std::thread::hardware_concurrency()));
  if (threads > 1) {
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work, t, threads);
    work(0, threads);
    for (auto& t : pool) t.join();
  } else {
    work(0, 1);
  }
  DiffStats s;
  s.numel = n;
  Partial total;
  for (const auto& p : parts) {
    const DiffStats& c = p.s;
    s.mismatched += c.mismatched;
    s.nan_mismatch += c.nan_mismatch;
    s.inf_mismatch += c.inf_mismatch;
    s.signed_zeros += c.signed_zeros;
    if (s.first_index < 0) s.first_index = c.first_index;
    if (c.max_abs_index >= 0 && (s.max_abs_index < 0 || c.max_abs > s.max_abs)) {
      s.max_abs = c.max_abs;
      s.max_abs_index = c.max_abs_index;
      s.a_at_max = c.a_at_max;
      s.b_at_max = c.b_at_max;
      s.a_bits = c.a_bits;
      s.b_bits = c.b_bits;
    }
    s.max_rel = std::max(s.max_rel, c.max_rel);
    s.max_ulp = std::max(s.max_ulp, c.max_ulp);
    total.sum_abs += p.sum_abs;
    total.sum_sq += p.sum_sq;
    total.dot += p.dot;
    total.na += p.na;
    total.nb += p.nb;
    total.finite += p.finite;
  }
  if (total.finite > 0) {
    s.mean_abs = total.sum_abs / static_cast<double>(total.finite);
    s.rms = std::sqrt(total.sum_sq / static_cast<double>(total.finite));
  }
  if (total.finite == 0)
    s.cosine = std::numeric_limits<double>::quiet_NaN();  // no finite pair: undefined, reported as such
  else if (total.na == 0 && total.nb == 0)
    s.cosine = 1;
  else if (total.na == 0 || total.nb == 0)
    s.cosine = 0;
  else
    s.cosine = total.dot / std::sqrt(total.na * total.nb);
  return s;
}

}  // namespace

DiffStats diff_stats(DType dtype, const void* a, const void* b, int64_t n, const Tolerance& tol) {
  auto [atol, rtol] = tol.for_dtype(dtype);
  bool bitwise = tol.mode == Tolerance::Mode::bitwise;
  switch (dtype) {
    case DType::float32:
      return stats_for<F32>(a, b, n, atol, rtol, bitwise);
    case DType::float64:
      return stats_for<F64>(a, b, n, atol, rtol, bitwise);
    case DType::float16:
      return stats_for<F16>(a, b, n, atol, rtol, bitwise);
    case DType::bfloat16:
      return stats_for<BF16>(a, b, n, atol, rtol, bitwise);
    case DType::int64:
      return stats_for<Int<int64_t>>(a, b, n, atol, rtol, bitwise);
    case DType::int32:
      return stats_for<Int<int32_t>>(a, b, n, atol, rtol, bitwise);
    case DType::int16:
      return stats_for<Int<int16_t>>(a, b, n, atol, rtol, bitwise);
    case DType::int8:
      return stats_for<Int<int8_t>>(a, b, n, atol, rtol, bitwise);
    case DType::uint8:
    case DType::bool_:
      return stats_for<Int<uint8_t>>(a, b, n, atol, rtol, bitwise);
  }
  return {};
}

std::vector<int64_t> integer_values(DType dtype, const void* data, int64_t n) {
  std::vector<int64_t> out;
  auto take = [&](auto* p) { out.assign(p, p + n); };
  switch (dtype) {
    case DType::int64:
      take(static_cast<const int64_t*>(data));
      break;
    case DType::int32:
      take(static_cast<const int32_t*>(data));
      break;
    case DType::int16:
      take(static_cast<const int16_t*>(data));
      break;
    case DType::int8:
      take(static_cast<const int8_t*>(data));
      break;
    case DType::uint8:
      take(static_cast<const uint8_t*>(data));
      break;
    default:
      break;
  }
  return out;
}

DiffStats diff_stats(const std::string& dtype, const void* a, const void* b, int64_t n, const Tolerance& tol) {
  return diff_stats(dtype_from_name(dtype), a, b, n, tol);
}

}  // namespace reprocheck
