// What a captured tensor is: its place in the run (step, phase, execution order), where it comes
// from (layer, kind, name) and its content (dtype, shape, hash).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace reprocheck {

// When in a training step a tensor was recorded. Stored in dumps by name (to_string).
enum class Phase {
  init,     // before the first step: initial parameters and buffers (step -1)
  input,    // the batch: model inputs and targets
  forward,  // layer and op outputs, in forward order
  output,   // the model's output
  loss,
  backward,    // gradients with respect to layer and op outputs, in backward order
  param_grad,  // parameter gradients, as autograd produces them
  after_step,  // parameters, buffers and optimizer state after the optimizer step
  rng,         // RNG states at the start of a step (the Python front end)
};

// What a tensor holds. Stored in dumps by name (to_string).
// indices: the dataset indices of a DataLoader batch; batch: a tensor of that batch; rng_state: an
// RNG's state (layer: torch, cuda, numpy, random); optim_state: an optimizer's per-parameter state.
enum class Kind {
  activation,
  grad,
  param,
  buffer,
  input,
  target,
  output,
  loss,
  param_grad,
  indices,
  batch,
  rng_state,
  optim_state,
};

const char* to_string(Phase p);
const char* to_string(Kind k);
std::optional<Phase> parse_phase(std::string_view s);
std::optional<Kind> parse_kind(std::string_view s);

struct TensorMeta {
  int64_t order = -1;  // execution order within the run, assigned on write
  int32_t step = -1;   // -1 for tensors before the first step (initial parameters)
  Phase phase = Phase::forward;
  std::string layer;       // module path ("" for the model itself) or "path:aten::op#k"
  std::string layer_type;  // demangled module type or op name
  Kind kind = Kind::activation;
  std::string name;   // parameter/buffer name, or "out" / "out.1" for activations
  int32_t call = 0;   // how many times this layer had already been called in this step
  std::string dtype;  // a name from dtype.h
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t hash = 0;        // XXH3-64 of the raw little-endian bytes, row-major
  uint64_t input_hash = 0;  // combined XXH3-64 of the layer's tensor inputs (activations)
  bool has_input_hash = false;
  // "tensors/000123"; for a row without data (a hash-only dump), the function of its hash:
  // kHashOnlyXxh3 (XXH3-64 of the bytes, as for rows with data) or kHashOnlyWords (hash_words,
  // computed where the tensor lived: on a CUDA device).
  std::string dataset;
  // The rank of a distributed run, from the "rankR" that a merged dump puts first in `layer`
  // (DumpReader fills it when the dump has a `ranks` attribute); -1 for a single process.
  int32_t rank = -1;

  bool has_data() const { return dataset.rfind("tensors/", 0) == 0; }

  // A readable name: "layer1.0.conv1", "features.0.weight", "<model>".
  std::string tensor_name() const;
  // The identity used to pair tensors across runs.
  std::string key() const;
  // Parameters, buffers and their gradients, named by the parameter.
  bool is_state() const {
    return kind == Kind::param || kind == Kind::buffer || kind == Kind::param_grad || kind == Kind::optim_state;
  }
  // Tensors of the training loop itself: data, output, loss, RNG states.
  bool is_loop_tensor() const {
    return kind == Kind::input || kind == Kind::target || kind == Kind::output || kind == Kind::loss ||
           kind == Kind::indices || kind == Kind::batch || kind == Kind::rng_state;
  }
};

// Where a phase falls in a training step, for ordering records of different streams (ranks) by
// logical time: init, rng, input, forward, output, loss, backward, param_grad, after_step.
int phase_rank(Phase p);

// The logical time of a record: (step, phase rank, order). Within one stream (a run, or one rank
// of it) execution order is the truth; across ranks there is no common clock, so records compare
// by step, then phase, then their position. Lower is earlier.
struct LogicalTime {
  int32_t step = 0;
  int phase = 0;
  int64_t order = 0;
  int32_t rank = -1;
  bool operator<(const LogicalTime& o) const {
    if (step != o.step) return step < o.step;
    if (phase != o.phase) return phase < o.phase;
    if (order != o.order) return order < o.order;
    return rank < o.rank;
  }
};
// `local_order`: the record's position within its own rank's stream.
inline LogicalTime logical_time(const TensorMeta& m, int64_t local_order) {
  return {m.step, phase_rank(m.phase), local_order, m.rank};
}

// The rank a merged dump's layer names ("rank3", "rank3/layer1.conv"), or -1.
int32_t rank_of_layer(const std::string& layer);
// A rank's layer as a merged dump names it: "rank3" for "", "rank3/layer1.conv" for "layer1.conv".
std::string rank_layer(int32_t rank, const std::string& layer);
// The layer as rank `rank` wrote it, without the merged dump's "rankR/" (the inverse of rank_layer).
std::string layer_in_rank(int32_t rank, const std::string& layer);

// "[3, 0, 1, 2]" for a flat row-major index into `shape`; "-" for a negative index.
std::string unravel_index(int64_t flat, const std::vector<int64_t>& shape);
// The same as a vector of coordinates (empty for a negative index).
std::vector<int64_t> unravel(int64_t flat, const std::vector<int64_t>& shape);

// "torch.nn.modules.conv.Conv2d" -> "Conv2d".
std::string short_type_name(const std::string& type);

// Text read from a file, safe to print anywhere: control characters and bytes that are not valid
// UTF-8 become "\xNN" (names in dumps are data, never terminal escapes or broken JSON).
std::string sanitize_text(const std::string& raw);

inline constexpr const char* kHashOnlyXxh3 = "hash:xxh3";
inline constexpr const char* kHashOnlyWords = "hash:words";

uint64_t hash_bytes(const void* data, size_t nbytes);  // XXH3-64
// How to run `work` on `workers` threads at once, the caller's included (a front end passes its
// framework's thread pool, whose idle workers would otherwise spin beside new threads).
using RunOnThreads = std::function<void(size_t workers, const std::function<void()>& work)>;
// hash_bytes of each span, largest first, on up to `max_workers` threads through `run` (by default
// threads of its own); below 1 MiB in all, on the calling thread alone. Hashing is bound by memory
// bandwidth, which one core does not saturate.
std::vector<uint64_t> hash_spans(const std::vector<std::pair<const void*, size_t>>& spans, size_t max_workers,
                                 const RunOnThreads& run = {});
// XXH3-64 of a file's bytes, read in blocks (never the whole file at once); 0 when it cannot be read.
uint64_t hash_file(const std::string& path);
// The hash a CUDA device computes without moving the data (docs/dump-format.md): the bytes as
// little-endian 32-bit words w_i (zero-padded), sum_i w_i * (i * 0x3C6EF372FE94F82A + 1) + nbytes,
// mod 2^64. Integer addition is associative, so the value does not depend on reduction order.
uint64_t hash_words(const void* data, size_t nbytes);
// The hash of `data` by the function a row names (its `dataset`: data rows and kHashOnlyXxh3 use
// XXH3-64, kHashOnlyWords hash_words).
uint64_t hash_for_row(const TensorMeta& row, const void* data, size_t nbytes);
// Folds `hash` into `seed`: a layer's input hash is the fold of its inputs' hashes, in order.
uint64_t combine_hash(uint64_t seed, uint64_t hash);

}  // namespace reprocheck
