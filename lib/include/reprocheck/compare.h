// Comparing dumps in execution order: structure first, then hashes, then statistics for the
// tensors whose bytes differ. A comparison result is a value, never an exception.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "reprocheck/dump.h"

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
  std::pair<double, double> for_dtype(const std::string& dtype) const;
  std::string describe() const;  // "bitwise", "atol=1e-05 rtol=1.3e-06", "torch presets"
};

enum class Status {
  match,          // bitwise equal (hashes equal, or every element's bits equal)
  close,          // bytes differ, but every element is within the tolerance
  values_differ,  // some elements are not within the tolerance
  shape_mismatch,
  dtype_mismatch,
  missing,  // in the reference run only
  extra,    // in the other run only
};
const char* to_string(Status s);
inline bool is_divergent(Status s) { return s != Status::match && s != Status::close; }

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
  double cosine = 1;                // of a and b over finite pairs; 1 when both are zero
  int64_t nan_mismatch = 0;         // positions where exactly one is NaN
  int64_t inf_mismatch = 0;         // positions where the infinities differ
  int64_t signed_zeros = 0;         // positions holding +0 in one and -0 in the other
  int64_t first_index = -1;         // first element not within the tolerance
};

struct TensorDiff {
  TensorMeta ref;    // the reference run's record (the other run's, for `extra`)
  TensorMeta other;  // the other run's record, where it has one
  Status status = Status::match;
  DiffStats stats;     // for close and values_differ
  std::string detail;  // for shape and dtype mismatches: "[4, 3] vs [4, 4]"
  // Whether the inputs were identical: for layer activations from the input hashes; for other
  // tensors, whether every tensor recorded before it matched. nullopt: unknown.
  std::optional<bool> inputs_identical;
  std::string inputs_basis;  // "input_hash", "earlier_tensors"
};

struct PairComparison {
  std::string ref_path, other_path;
  int other_run = 1;
  int64_t compared = 0, identical = 0, close = 0, divergent = 0;
  uint64_t bytes_read = 0;        // tensor data read to compute statistics
  std::vector<TensorDiff> diffs;  // every tensor that is not a bitwise match, in execution order
  std::optional<size_t> first;    // index in `diffs` of the first divergent tensor
  std::vector<std::pair<std::string, std::string>> knob_diffs;  // run options that differ: name, "a vs b"
  bool has_divergence() const { return first.has_value(); }
};

struct Comparison {
  std::vector<std::string> runs;  // dump paths, the reference first
  Tolerance tolerance;
  std::map<std::string, std::string> ref_attributes;
  std::vector<PairComparison> pairs;  // the reference against each other run
  int64_t tensors = 0;                // in the reference run
  std::vector<std::string> notes;     // e.g. why the tolerance is not the one asked for
  bool divergent() const;
  // The pair whose first divergence comes first in execution order.
  const PairComparison* headline() const;
};

struct CompareOptions {
  Tolerance tolerance;
  // False: the tolerance is the default, and runs on different devices (CPU against CUDA) are
  // compared with torch's per-dtype presets instead of bitwise.
  bool tolerance_explicit = false;
  bool hash_shortcut = true;  // false: read and compare every tensor's data (benchmarks)
};

// Compares runs[1..] against runs[0]. Throws InputError for unreadable dumps, dumps of another
// format version, or dumps of different models (different model signatures).
Comparison compare_dumps(const std::vector<std::string>& runs, const CompareOptions& options = {});

// Statistics of one pair of equally shaped tensors of `dtype` (raw bytes, as stored).
DiffStats diff_stats(const std::string& dtype, const void* a, const void* b, int64_t numel, const Tolerance& tol);

// "torch.nn.modules.conv.Conv2d" -> "Conv2d".
std::string short_type_name(const std::string& type);

// "[3, 0, 1, 2]" for a flat row-major index into `shape`.
std::string unravel_index(int64_t flat, const std::vector<int64_t>& shape);

}  // namespace reprocheck
