#include "reprocheck/compare.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <future>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_map>

#include "reprocheck/error.h"

namespace reprocheck {

const char* to_string(Status s) {
  switch (s) {
    case Status::match:
      return "match";
    case Status::close:
      return "close";
    case Status::values_differ:
      return "values_differ";
    case Status::shape_mismatch:
      return "shape_mismatch";
    case Status::dtype_mismatch:
      return "dtype_mismatch";
    case Status::missing:
      return "missing";
    case Status::extra:
      return "extra";
  }
  return "?";
}

std::pair<double, double> Tolerance::for_dtype(const std::string& dtype) const {
  if (mode == Mode::fixed) return {atol, rtol};
  if (mode == Mode::bitwise) return {0, 0};
  // torch.testing.assert_close defaults (atol, rtol).
  if (dtype == "float16") return {1e-5, 1e-3};
  if (dtype == "bfloat16") return {1e-5, 1.6e-2};
  if (dtype == "float32") return {1e-5, 1.3e-6};
  if (dtype == "float64") return {1e-7, 1e-7};
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

std::string short_type_name(const std::string& type) {
  auto dot = type.rfind('.');
  return dot == std::string::npos ? type : type.substr(dot + 1);
}

std::string unravel_index(int64_t flat, const std::vector<int64_t>& shape) {
  if (flat < 0) return "-";
  std::vector<int64_t> idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    int64_t d = shape[i] > 0 ? shape[i] : 1;
    idx[i] = flat % d;
    flat /= d;
  }
  return fmt::format("[{}]", fmt::join(idx, ", "));
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
  static int64_t ordered(Raw bits, int width) {
    int64_t v = static_cast<int64_t>(bits);
    int64_t sign = int64_t{1} << (width - 1);
    return (v & sign) ? -(v & (sign - 1)) : v;
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
      ulp = oa > ob ? static_cast<uint64_t>(oa - ob) : static_cast<uint64_t>(ob - oa);
    } else {
      ulp = static_cast<uint64_t>(d);
    }
    if (ulp > s.max_ulp) s.max_ulp = ulp;
    if (bitwise || d > atol + rtol * std::fabs(x)) mismatch(i);
  }
}

constexpr int64_t kChunk = int64_t{1} << 20;

template <typename E>
DiffStats stats_for(const void* pa, const void* pb, int64_t n, double atol, double rtol, bool bitwise) {
  const auto* a = static_cast<const typename E::Raw*>(pa);
  const auto* b = static_cast<const typename E::Raw*>(pb);
  const int64_t chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  std::vector<Partial> parts(static_cast<size_t>(chunks));
  auto work = [&](int64_t first, int64_t step) {
    for (int64_t c = first; c < chunks; c += step)
      stats_chunk<E>(a, b, c * kChunk, std::min(n, (c + 1) * kChunk), atol, rtol, bitwise, parts[c]);
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
  if (total.na == 0 && total.nb == 0)
    s.cosine = 1;
  else if (total.na == 0 || total.nb == 0)
    s.cosine = 0;
  else
    s.cosine = total.dot / std::sqrt(total.na * total.nb);
  return s;
}

// Run options recorded in a dump, flattened to strings.
std::map<std::string, std::string> run_options(const DumpReader& r) {
  std::map<std::string, std::string> out;
  try {
    auto j = nlohmann::json::parse(r.attribute("run_options", "{}"));
    for (auto it = j.begin(); it != j.end(); ++it)
      out[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  } catch (const nlohmann::json::exception&) {
  }
  // The seeds actually drawn: two "--seed random" runs have equal options but different seeds.
  out["seed_value"] = r.attribute("seed");
  out["data_seed_value"] = r.attribute("data_seed");
  return out;
}

}  // namespace

DiffStats diff_stats(const std::string& dtype, const void* a, const void* b, int64_t n, const Tolerance& tol) {
  auto [atol, rtol] = tol.for_dtype(dtype);
  bool bitwise = tol.mode == Tolerance::Mode::bitwise;
  if (dtype == "float32") return stats_for<F32>(a, b, n, atol, rtol, bitwise);
  if (dtype == "float64") return stats_for<F64>(a, b, n, atol, rtol, bitwise);
  if (dtype == "float16") return stats_for<F16>(a, b, n, atol, rtol, bitwise);
  if (dtype == "bfloat16") return stats_for<BF16>(a, b, n, atol, rtol, bitwise);
  if (dtype == "int64") return stats_for<Int<int64_t>>(a, b, n, atol, rtol, bitwise);
  if (dtype == "int32") return stats_for<Int<int32_t>>(a, b, n, atol, rtol, bitwise);
  if (dtype == "int16") return stats_for<Int<int16_t>>(a, b, n, atol, rtol, bitwise);
  if (dtype == "int8") return stats_for<Int<int8_t>>(a, b, n, atol, rtol, bitwise);
  if (dtype == "uint8" || dtype == "bool") return stats_for<Int<uint8_t>>(a, b, n, atol, rtol, bitwise);
  throw InputError(fmt::format("cannot compare tensors of dtype '{}'", dtype));
}

bool Comparison::divergent() const {
  for (const auto& p : pairs)
    if (p.has_divergence()) return true;
  return false;
}

const PairComparison* Comparison::headline() const {
  const PairComparison* best = nullptr;
  for (const auto& p : pairs) {
    if (!p.first) continue;
    if (!best || p.diffs[*p.first].ref.order < best->diffs[*best->first].ref.order) best = &p;
  }
  return best;
}

namespace {

PairComparison compare_pair(const DumpReader& a, const DumpReader& b, const CompareOptions& opt) {
  PairComparison pc;
  pc.ref_path = a.path();
  pc.other_path = b.path();
  std::unordered_map<std::string, size_t> in_b;
  in_b.reserve(b.index().size());
  for (size_t i = 0; i < b.index().size(); ++i) in_b.emplace(b.index()[i].key(), i);
  std::vector<bool> b_seen(b.index().size(), false);

  // Pass 1: structure and hashes, from the indexes alone.
  std::vector<TensorDiff> all;
  std::vector<size_t> need_data;  // entries of `all` whose bytes must be compared
  int64_t last_b_order = -1;
  for (const auto& ma : a.index()) {
    TensorDiff d;
    d.ref = ma;
    auto it = in_b.find(ma.key());
    if (it == in_b.end()) {
      d.status = Status::missing;
      d.detail = "not recorded in the other run";
    } else {
      const TensorMeta& mb = b.index()[it->second];
      b_seen[it->second] = true;
      d.other = mb;
      ++pc.compared;
      if (mb.order < last_b_order) d.detail = "recorded in a different order";
      last_b_order = std::max(last_b_order, mb.order);
      if (ma.dtype != mb.dtype) {
        d.status = Status::dtype_mismatch;
        d.detail = fmt::format("{} vs {}", ma.dtype, mb.dtype);
      } else if (ma.shape != mb.shape) {
        d.status = Status::shape_mismatch;
        d.detail = fmt::format("[{}] vs [{}]", fmt::join(ma.shape, ", "), fmt::join(mb.shape, ", "));
      } else if (opt.hash_shortcut && ma.hash == mb.hash) {
        d.status = Status::match;
      } else {
        need_data.push_back(all.size());
      }
    }
    all.push_back(std::move(d));
  }

  // Pass 2: the data of the tensors whose hashes differ. The next pair of tensors is read on
  // another thread while this one's statistics are computed.
  struct Data {
    std::vector<std::byte> a, b;
  };
  auto read = [&](size_t k) {
    Data data;
    const TensorDiff& d = all[need_data[k]];
    size_t nbytes = static_cast<size_t>(d.ref.numel) * dtype_size(d.ref.dtype);
    data.a.resize(nbytes);
    data.b.resize(nbytes);
    a.read_into(d.ref, data.a.data(), nbytes);
    b.read_into(d.other, data.b.data(), nbytes);
    return data;
  };
  std::future<Data> next;
  if (!need_data.empty()) next = std::async(std::launch::async, read, size_t{0});
  for (size_t k = 0; k < need_data.size(); ++k) {
    Data cur = next.get();
    if (k + 1 < need_data.size()) next = std::async(std::launch::async, read, k + 1);
    TensorDiff& d = all[need_data[k]];
    pc.bytes_read += cur.a.size() + cur.b.size();
    if (std::memcmp(cur.a.data(), cur.b.data(), cur.a.size()) == 0) {
      d.status = Status::match;
    } else {
      d.stats = diff_stats(d.ref.dtype, cur.a.data(), cur.b.data(), d.ref.numel, opt.tolerance);
      d.status = d.stats.mismatched > 0 ? Status::values_differ : Status::close;
    }
  }

  // Pass 3: in execution order, tell sources from inherited divergences.
  bool all_matched_so_far = true;
  for (auto& d : all) {
    if (d.status == Status::match) {
      ++pc.identical;
      continue;
    }
    if (d.status == Status::close) ++pc.close;
    if (is_divergent(d.status)) {
      ++pc.divergent;
      if (d.ref.has_input_hash && d.other.has_input_hash) {
        d.inputs_identical = d.ref.input_hash == d.other.input_hash;
        d.inputs_basis = "input_hash";
      } else {
        d.inputs_identical = all_matched_so_far;
        d.inputs_basis = "earlier_tensors";
      }
      if (!pc.first) pc.first = pc.diffs.size();
      all_matched_so_far = false;
    }
    pc.diffs.push_back(std::move(d));
  }
  for (size_t i = 0; i < b.index().size(); ++i) {
    if (b_seen[i]) continue;
    TensorDiff d;
    d.ref = b.index()[i];
    d.other = b.index()[i];
    d.status = Status::extra;
    d.detail = "recorded only in the other run";
    ++pc.divergent;
    pc.diffs.push_back(std::move(d));
  }
  // A tensor only the other run recorded may come before the reference's first difference.
  for (size_t i = 0; i < pc.diffs.size(); ++i) {
    if (!is_divergent(pc.diffs[i].status)) continue;
    if (!pc.first || pc.diffs[i].ref.order < pc.diffs[*pc.first].ref.order) pc.first = i;
  }
  return pc;
}

}  // namespace

Comparison compare_dumps(const std::vector<std::string>& runs, const CompareOptions& options) {
  if (runs.size() < 2) throw UsageError("compare needs at least two dumps: the reference and one other");
  Comparison c;
  c.runs = runs;
  std::vector<std::unique_ptr<DumpReader>> readers;
  for (const auto& r : runs) readers.push_back(std::make_unique<DumpReader>(r));
  const DumpReader& ref = *readers[0];
  c.ref_attributes = ref.attributes();
  auto device_type = [](const DumpReader& r) {
    std::string d = r.attribute("device");
    return d.substr(0, d.find(':'));
  };
  CompareOptions opt = options;
  for (const auto& r : readers) {
    if (device_type(*r) == device_type(ref)) continue;
    if (!opt.tolerance_explicit && opt.tolerance.mode == Tolerance::Mode::bitwise) {
      opt.tolerance = Tolerance::torch_presets();
      c.notes.push_back(fmt::format(
          "runs on different devices ({} vs {}): bitwise equality is not expected across devices, so tensors are "
          "compared with torch's per-dtype tolerances (pass --atol/--rtol or --tolerance bitwise to choose)",
          ref.attribute("device"), r->attribute("device")));
    } else {
      c.notes.push_back(
          fmt::format("runs on different devices ({} vs {}): bitwise equality is not expected across "
                      "devices",
                      ref.attribute("device"), r->attribute("device")));
    }
    break;
  }
  c.tolerance = opt.tolerance;
  c.tensors = static_cast<int64_t>(ref.index().size());
  auto ref_opts = run_options(ref);
  for (size_t i = 1; i < readers.size(); ++i) {
    const DumpReader& other = *readers[i];
    if (ref.attribute("model_signature") != other.attribute("model_signature"))
      throw InputError(
          fmt::format("dumps of different models: '{}' records {} (signature {}), '{}' records {} "
                      "(signature {}); compare dumps of the same model",
                      ref.path(), ref.attribute("model"), ref.attribute("model_signature"), other.path(),
                      other.attribute("model"), other.attribute("model_signature")));
    PairComparison pc = compare_pair(ref, other, opt);
    pc.other_run = static_cast<int>(i);
    auto other_opts = run_options(other);
    std::set<std::string> keys;
    for (const auto& [k, v] : ref_opts) keys.insert(k);
    for (const auto& [k, v] : other_opts) keys.insert(k);
    for (const auto& k : keys) {
      if (k == "model") continue;
      auto va = ref_opts.count(k) ? ref_opts[k] : "-", vb = other_opts.count(k) ? other_opts[k] : "-";
      if (va != vb) pc.knob_diffs.emplace_back(k, fmt::format("{} vs {}", va, vb));
    }
    c.pairs.push_back(std::move(pc));
  }
  return c;
}

}  // namespace reprocheck
