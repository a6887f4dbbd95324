// Comparing dumps in execution order: structure first, then hashes, then statistics for the
// tensors whose bytes differ. A comparison result is a value, never an exception.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "reprocheck/layers.h"
#include "reprocheck/run_options.h"
#include "reprocheck/stats.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

// A check's outcome. inconclusive: nothing was compared (zero tensors, or nothing of the model),
// so there is no evidence either way; never a pass.
enum class Verdict { reproducible, divergent, inconclusive };
const char* to_string(Verdict v);

// How runs were captured: one pass of full dumps, one pass of hashes only, or the ladder (hashes
// first, then full capture of the runs and steps that differ).
enum class CaptureMode { full, hashes, ladder };
const char* to_string(CaptureMode m);

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

struct TensorDiff {
  TensorMeta ref;    // the reference run's record (the other run's, for `extra`)
  TensorMeta other;  // the other run's record, where it has one
  LogicalTime when;  // of `ref`, with its position in its own rank's stream
  Status status = Status::match;
  DiffStats stats;     // for close and values_differ
  std::string detail;  // for shape and dtype mismatches: "[4, 3] vs [4, 4]"
  // Whether the inputs were identical: for layer activations from the input hashes; for other
  // tensors, whether every tensor recorded before it matched: in its own stream (rank), and in
  // every other rank at an earlier step or phase. nullopt: unknown.
  std::optional<bool> inputs_identical;
  std::string inputs_basis;  // "input_hash", "earlier_tensors"
  // Integer tensors whose values differ: the same values in another order (same_multiset), or the
  // same pattern of equal elements under other values (relabeling: a[i] == a[j] iff b[i] == b[j],
  // as when token ids come from a vocabulary built in another order).
  bool same_multiset = false, relabeling = false;
  // The bytes differ by their hashes, but a run recorded only the hash: no statistics exist.
  bool hash_only = false;
  // The values of small integer tensors (dataset indices), up to kPreviewValues of each side.
  std::vector<int64_t> ref_values, other_values;
};

inline constexpr size_t kPreviewValues = 64;

// A fact of where a run ran (the software, the hardware, the numeric settings) that differs
// between the reference and another run: what, and each one's value.
struct EnvironmentDiff {
  std::string what;  // "LibTorch", "CPU", "BLAS", "threads", ...
  std::string reference, other;
};

// How the other run's model differs from the reference's: its signature, else its file's hash.
struct ModelChange {
  std::string what;  // "signature", "file", or "" (the same model)
  std::string reference, other;
  bool changed() const { return !what.empty(); }
};

struct PairComparison {
  std::string ref_path, other_path;
  std::map<std::string, std::string> other_attributes;  // the other run's dump attributes
  int other_run = 1;
  int64_t compared = 0, identical = 0, close = 0, divergent = 0;
  uint64_t bytes_read = 0;        // tensor data read to compute statistics
  std::vector<TensorDiff> diffs;  // every tensor that is not a bitwise match, in execution order
  // Index in `diffs` of the first divergent tensor: the first of its rank's stream, and of those
  // the earliest by logical time (step, phase, position) over all ranks.
  std::optional<size_t> first;
  // Ranks (of a distributed run) with a divergent record, each with its own first one (an index in
  // `diffs`), in rank order. Empty for a single process.
  std::vector<std::pair<int32_t, size_t>> rank_firsts;
  std::vector<std::pair<std::string, std::string>> knob_diffs;  // run options that differ: name, "a vs b"
  // The same options, each one's value in the reference and in the other run.
  std::vector<std::tuple<std::string, std::string, std::string>> knob_values;
  std::vector<EnvironmentDiff> environment_diffs;  // where the runs ran, when that differs
  ModelChange model_change;
  bool skipped_optim_state = false;  // one dump had no optimizer state: it was not compared
  bool has_divergence() const { return first.has_value(); }
};

// How the runs were captured, and where the report's figures come from (the capture ladder).
struct CaptureSummary {
  // "full": one pass, full dumps. "hashes": hashes only (no statistics where hashes differ).
  // "ladder": hashes first, then full capture of the runs that differed, up to their first
  // divergent step.
  CaptureMode mode = CaptureMode::full;
  bool pass2 = false;                         // the ladder's second pass ran
  int pass2_steps = 0;                        // steps it reached (0 .. pass2_steps - 1)
  int64_t pass2_records = 0;                  // records whose data it kept (the window)
  std::vector<int> pass2_runs;                // runs it captured again (0, the reference, first)
  std::vector<int> intermittent;              // runs whose first pass diverged and whose second did not
  uint64_t pass1_bytes = 0, pass2_bytes = 0;  // dump bytes written by each pass
  std::string baseline;                       // the golden the runs were compared with ("" when none)
  bool baseline_hashes_only = false;
};

// Pass 3, the drill-down: the reference and the headline's other run ran again through the step of
// the first divergence with every op of that step captured (forward and backward, within `scope`),
// and the first op whose output differed while every op before it matched.
struct DrillDown {
  std::string mode;   // auto, full
  int step = 0;       // the step captured
  std::string scope;  // module path whose ops were captured ("" every op of the step)
  int other_run = 1;
  std::string why;           // what the first divergence was that called for it
  int64_t ops_captured = 0;  // ops (records) captured in the reference run
  // More than 1 when a scoped capture found nothing and the whole step was captured, or when the
  // runs did not diverge again (a difference that comes and goes) and ran once more (at most 3).
  int passes = 1;
  // The ops were captured by pass 2's runs (pass 1's hashes already called for the drill-down), with
  // no runs of pass 3's own.
  bool in_pass2 = false;
  double seconds = 0;  // the runs and the comparison
  bool found = false;
  TensorDiff diff;                 // the op's output (ref.layer "module:aten::op#k", ref.name the output)
  std::string op, output, module;  // "aten::convolution_backward", "grad_weight", "features.0"
  std::string file;                // the user's source line ("" when unknown)
  int line = 0;                    // of the forward call (of a backward op: the forward call it differentiates)
  std::vector<std::string> stack;  // "file:line in function", innermost first
  std::string generator;           // a forward op's generator: "global", "private" ("" unknown)
  std::string node;                // a backward op's autograd node ("ConvolutionBackward0")
  std::string within;              // the call the op ran inside ("torch.nn.functional.dropout", a custom op)
  std::string note;                // why nothing was found, when so; or where pass 3 moved to
  // Pass 3's runs diverged before the captured step's ops: the first such record.
  std::optional<TensorDiff> earlier;
  // The captured step's op records that differ, in execution order (the HTML report's op series),
  // and the number of records of the reference run they are ordered among.
  std::vector<TensorDiff> series;
  int64_t series_total = 0;
  bool forward_site = false;  // `file:line` is the forward call a backward op differentiates
  bool backward() const { return diff.ref.phase == Phase::backward; }
  std::string source() const;
  // ", inside X" when the op ran inside a call of another name (F.dropout, a custom op); "" otherwise.
  std::string inside() const;
  // ", rank R" for an op of a distributed run's rank R; "" for one process.
  std::string rank_words() const;  // "model.py:42", or ""
};

struct Comparison {
  std::vector<std::string> runs;  // dump paths, the reference first
  Tolerance tolerance;
  std::map<std::string, std::string> ref_attributes;
  RunOptions ref_options;             // the reference run's options, from its dump
  std::vector<TensorMeta> ref_index;  // the reference run's tensors, in execution order
  std::vector<PairComparison> pairs;  // the reference against each other run
  int64_t tensors = 0;                // in the reference run
  int max_step = 1 << 30;             // the last step compared
  std::vector<std::string> notes;     // e.g. why the tolerance is not the one asked for
  CaptureSummary capture;
  std::optional<DrillDown> drill;  // pass 3, when it ran
  // The check's own arguments as given (`reprocheck` ARGS, `reprocheck run` ARGS -- COMMAND), for
  // the commands its hints suggest; empty for `reprocheck diff`.
  std::vector<std::string> command_line;
  // Tensors whose hashes differ where a run recorded only hashes: divergent, without statistics.
  int64_t hash_only_diffs() const;
  bool divergent() const;
  Verdict verdict() const;
  // Why the verdict is inconclusive ("" when it is not).
  std::string inconclusive_reason() const;
  // The pair whose first divergence comes first in logical time (step, phase, position).
  const PairComparison* headline() const;
  std::string attribute(const std::string& name) const;  // of the reference run; "" when absent
};

struct CompareOptions {
  Tolerance tolerance;
  // False: the tolerance is the default, and runs on different devices (CPU against CUDA) are
  // compared with torch's per-dtype presets instead of bitwise.
  bool tolerance_explicit = false;
  bool hash_shortcut = true;  // false: read and compare every tensor's data (benchmarks)
  // Read every tensor of every dump once and check it against its stored hash, so that a damaged
  // tensor is an error, not a match by its hash.
  bool verify_data = true;
  double read_timeout_s = 0;  // for each dump's verification; 0: by its size (DumpReader::check_isolated)
  // Only tensors of steps <= max_step are paired (the ladder's second pass records fewer steps).
  int max_step = 1 << 30;
  // Dumps of different models (signatures) are compared, with a note, instead of refused: a golden
  // recorded before the model's code changed.
  bool allow_other_model = false;
};

// For a distributed run whose first divergence is in one rank while the others diverged only
// later: a sentence saying so; "" otherwise.
std::string rank_alone_note(const Comparison& c);

// Compares runs[1..] against runs[0]. Throws InputError for unreadable dumps, dumps of another
// format version, or dumps of different models (different model signatures).
Comparison compare_dumps(const std::vector<std::string>& runs, const CompareOptions& options = {});

// Recomputes a pair's first divergence, each rank's first, each record's source or inherited and
// the pair's counts from its `diffs` (after the capture ladder judged some of them again).
void classify_again(PairComparison& pair);

}  // namespace reprocheck
