#include "reprocheck/compare.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "compare_notes.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/protocol.h"

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

namespace {

// Run options recorded in a dump, as text, for telling which differ between runs.
std::map<std::string, std::string> run_option_strings(const DumpReader& r) {
  std::map<std::string, std::string> out;
  try {
    // Options a dump of an older reprocheck does not carry read as their defaults.
    out = to_strings(with_recipe_defaults(from_json(r.attribute(attr::kRunOptions, "{}"))));
  } catch (const InputError&) {
  }
  out.erase("model");
  // How a run was captured, not what it computed.
  for (const char* k : {"hashes_only", "capture_plan", "model_hash"}) out.erase(k);
  // The seeds actually drawn: two "--seed random" runs have equal options but different seeds.
  out["seed_value"] = r.attribute(attr::kSeed);
  out["data_seed_value"] = r.attribute(attr::kDataSeed);
  return out;
}

}  // namespace

int64_t Comparison::hash_only_diffs() const {
  int64_t n = 0;
  for (const auto& p : pairs)
    for (const auto& d : p.diffs) n += d.hash_only ? 1 : 0;
  return n;
}

bool Comparison::divergent() const {
  for (const auto& p : pairs)
    if (p.has_divergence()) return true;
  return false;
}

std::string Comparison::attribute(const std::string& name) const {
  auto it = ref_attributes.find(name);
  return it == ref_attributes.end() ? std::string() : it->second;
}

const PairComparison* Comparison::headline() const {
  const PairComparison* best = nullptr;
  for (const auto& p : pairs) {
    if (!p.first) continue;
    if (!best || p.diffs[*p.first].when < best->diffs[*best->first].when) best = &p;
  }
  return best;
}

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::reproducible:
      return "reproducible";
    case Verdict::divergent:
      return "divergent";
    case Verdict::inconclusive:
      return "inconclusive";
  }
  return "?";
}

const char* to_string(CaptureMode m) {
  switch (m) {
    case CaptureMode::full:
      return "full";
    case CaptureMode::hashes:
      return "hashes";
    case CaptureMode::ladder:
      return "ladder";
  }
  return "?";
}

std::string Comparison::inconclusive_reason() const {
  if (divergent()) return "";
  int64_t compared = 0;
  for (const auto& p : pairs) compared += p.compared;
  if (pairs.empty() || compared == 0) return "no tensor was compared: the runs recorded nothing in common";
  bool model = false;
  for (const auto& m : ref_index) model |= m.step <= max_step && !m.is_loop_tensor();
  bool loss = false;
  for (const auto& m : ref_index) loss |= m.step <= max_step && m.kind == Kind::loss;
  if (!model && !loss)
    return "no tensor of the model was recorded (no parameter, layer output, loss or gradient): only the data and "
           "RNG records were compared";
  return "";
}

Verdict Comparison::verdict() const {
  if (divergent()) return Verdict::divergent;
  return inconclusive_reason().empty() ? Verdict::reproducible : Verdict::inconclusive;
}

namespace {

// For integer tensors that differ: whether they hold the same values in another order, or the same
// pattern under other values; and the values themselves when the tensor is small.
void describe_integers(TensorDiff& diff, const void* ref_data, const void* other_data) {
  constexpr int64_t kLimit = int64_t{1} << 24;
  auto dtype = parse_dtype(diff.ref.dtype);
  if (!dtype || dtype_info(*dtype).floating || *dtype == DType::bool_ || diff.ref.numel > kLimit) return;
  auto a = integer_values(*dtype, ref_data, diff.ref.numel);
  auto b = integer_values(*dtype, other_data, diff.ref.numel);
  if (a.size() <= kPreviewValues) {
    diff.ref_values = a;
    diff.other_values = b;
  }
  std::unordered_map<int64_t, int64_t> forward, backward;
  bool relabeling = true;
  for (size_t i = 0; i < a.size() && relabeling; ++i) {
    auto f = forward.emplace(a[i], b[i]).first;
    auto r = backward.emplace(b[i], a[i]).first;
    relabeling = f->second == b[i] && r->second == a[i];
  }
  diff.relabeling = relabeling;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  diff.same_multiset = a == b;
}

// The function a row's hash was computed with: XXH3 for rows with data.
const char* hash_function(const TensorMeta& m) { return m.dataset == kHashOnlyWords ? kHashOnlyWords : kHashOnlyXxh3; }

// Where each record stands in its own rank's stream (a merged distributed dump holds one stream
// per rank, one after another; a single process holds one).
std::vector<int64_t> local_orders(const std::vector<TensorMeta>& index) {
  std::map<int32_t, int64_t> next;
  std::vector<int64_t> out(index.size());
  for (size_t i = 0; i < index.size(); ++i) out[i] = next[index[i].rank]++;
  return out;
}

// The work a pair leaves after its indexes are paired: rows whose bytes must be read, and rows
// that differ by hash where a side has no data.
struct Pending {
  std::vector<size_t> need_data, hash_only;
};

void check_structure(TensorDiff& diff, const CompareOptions& options, size_t at, Pending& pending) {
  const TensorMeta& a = diff.ref;
  const TensorMeta& b = diff.other;
  if (a.dtype != b.dtype) {
    diff.status = Status::dtype_mismatch;
    diff.detail = fmt::format("{} vs {}", a.dtype, b.dtype);
  } else if (a.shape != b.shape) {
    diff.status = Status::shape_mismatch;
    diff.detail = fmt::format("[{}] vs [{}]", fmt::join(a.shape, ", "), fmt::join(b.shape, ", "));
  } else if (options.hash_shortcut && a.hash == b.hash && hash_function(a) == hash_function(b)) {
    diff.status = Status::match;
  } else if (!a.has_data() || !b.has_data()) {
    pending.hash_only.push_back(at);
  } else {
    pending.need_data.push_back(at);
  }
}

// Pass 1, from the indexes alone: records pair by key and, where a key repeats (gradient
// accumulation, a module called twice), by their order within that key. Structure and hashes.
std::vector<TensorDiff> pair_rows(const DumpReader& ref, const DumpReader& other, const CompareOptions& options,
                                  bool skip_optim, PairComparison& pair, Pending& pending) {
  const auto& ref_index = ref.index();
  const auto& other_index = other.index();
  std::unordered_map<std::string, std::vector<size_t>> in_other;
  in_other.reserve(other_index.size());
  for (size_t i = 0; i < other_index.size(); ++i) in_other[other_index[i].key()].push_back(i);
  std::unordered_map<std::string, size_t> taken;  // occurrences of a key already paired
  std::vector<bool> other_seen(other_index.size(), false);
  const auto ref_local = local_orders(ref_index), other_local = local_orders(other_index);
  auto excluded = [&](const TensorMeta& m) {
    return m.step > options.max_step || (skip_optim && m.kind == Kind::optim_state);
  };
  std::vector<TensorDiff> all;
  for (size_t r = 0; r < ref_index.size(); ++r) {
    const TensorMeta& ref_meta = ref_index[r];
    if (excluded(ref_meta)) continue;
    TensorDiff diff;
    diff.ref = ref_meta;
    diff.when = logical_time(ref_meta, ref_local[r]);
    const std::string key = ref_meta.key();
    auto it = in_other.find(key);
    const size_t occurrence = taken[key]++;
    if (it == in_other.end() || occurrence >= it->second.size()) {
      diff.status = Status::missing;
      diff.detail = "not recorded in the other run";
    } else {
      const size_t o = it->second[occurrence];
      other_seen[o] = true;
      diff.other = other_index[o];
      ++pair.compared;
      check_structure(diff, options, all.size(), pending);
    }
    all.push_back(std::move(diff));
  }
  for (size_t i = 0; i < other_index.size(); ++i) {
    if (other_seen[i] || excluded(other_index[i])) continue;
    TensorDiff diff;
    diff.ref = other_index[i];
    diff.other = other_index[i];
    diff.when = logical_time(other_index[i], other_local[i]);
    diff.status = Status::extra;
    diff.detail = "recorded only in the other run";
    all.push_back(std::move(diff));
  }
  return all;
}

// Rows without data: a hash of another function is computed from the side that has data; the
// rest differ by their hashes alone.
void resolve_hash_only(std::vector<TensorDiff>& all, const std::vector<size_t>& rows, const DumpReader& ref,
                       const DumpReader& other, PairComparison& pair) {
  for (size_t k : rows) {
    TensorDiff& diff = all[k];
    const TensorMeta* with_data = diff.ref.has_data() ? &diff.ref : diff.other.has_data() ? &diff.other : nullptr;
    const TensorMeta* without = with_data == &diff.ref ? &diff.other : &diff.ref;
    if (with_data && hash_function(*with_data) != hash_function(*without)) {
      const DumpReader& r = with_data == &diff.ref ? ref : other;
      auto bytes = r.read(*with_data);
      pair.bytes_read += bytes.size();
      if (hash_for_row(*without, bytes.data(), bytes.size()) == without->hash) {
        diff.status = Status::match;
        continue;
      }
    }
    diff.status = Status::values_differ;
    diff.hash_only = true;
    diff.detail = with_data || hash_function(diff.ref) == hash_function(diff.other)
                      ? "the hashes differ; a run recorded only hashes, so there are no statistics"
                      : "the hashes differ, computed on different devices; a run recorded only hashes";
  }
}

// Pass 2: the data of the tensors whose hashes differ. The next pair of tensors is read on
// another thread while this one's statistics are computed.
void compare_data(std::vector<TensorDiff>& all, const std::vector<size_t>& rows, const DumpReader& ref,
                  const DumpReader& other, const CompareOptions& options, PairComparison& pair) {
  struct Data {
    std::vector<std::byte> ref, other;
  };
  auto read = [&](size_t k) {
    Data data;
    const TensorDiff& diff = all[rows[k]];
    ref.check_data(diff.ref);  // before anything is allocated for them
    other.check_data(diff.other);
    size_t nbytes = static_cast<size_t>(diff.ref.numel) * dtype_size(diff.ref.dtype);
    data.ref.resize(nbytes);
    data.other.resize(nbytes);
    ref.read_into(diff.ref, data.ref.data(), nbytes);
    other.read_into(diff.other, data.other.data(), nbytes);
    return data;
  };
  std::future<Data> next;
  if (!rows.empty()) next = std::async(std::launch::async, read, size_t{0});
  for (size_t k = 0; k < rows.size(); ++k) {
    Data current = next.get();
    if (k + 1 < rows.size()) next = std::async(std::launch::async, read, k + 1);
    TensorDiff& diff = all[rows[k]];
    pair.bytes_read += current.ref.size() + current.other.size();
    if (std::memcmp(current.ref.data(), current.other.data(), current.ref.size()) == 0) {
      diff.status = Status::match;
    } else {
      diff.stats =
          diff_stats(diff.ref.dtype, current.ref.data(), current.other.data(), diff.ref.numel, options.tolerance);
      diff.status = diff.stats.mismatched > 0 ? Status::values_differ : Status::close;
      if (diff.status == Status::values_differ) describe_integers(diff, current.ref.data(), current.other.data());
    }
  }
}

// Pass 3: the first divergence of each rank's stream; the headline first over all ranks by
// logical time; source or inherited for every divergent record.
void classify(std::vector<TensorDiff>& all, PairComparison& pair) {
  std::map<int32_t, size_t> rank_first;  // rank -> index in `all` of its stream's first divergence
  for (size_t i = 0; i < all.size(); ++i) {
    if (!is_divergent(all[i].status)) continue;
    auto [it, fresh] = rank_first.emplace(all[i].ref.rank, i);
    if (!fresh && all[i].when.order < all[it->second].when.order) it->second = i;
  }
  // Before the phase of `t`, in another rank's stream: a divergence there can reach `t` through
  // the ranks' communication.
  auto other_rank_earlier = [&](const TensorDiff& t) {
    for (const auto& [rank, i] : rank_first) {
      const LogicalTime& w = all[i].when;
      if (rank != t.ref.rank && (w.step < t.when.step || (w.step == t.when.step && w.phase < t.when.phase)))
        return true;
    }
    return false;
  };
  std::map<int32_t, size_t> in_diffs;
  for (size_t i = 0; i < all.size(); ++i) {
    TensorDiff& diff = all[i];
    if (diff.status == Status::match) {
      ++pair.identical;
      continue;
    }
    if (diff.status == Status::close) ++pair.close;
    if (is_divergent(diff.status)) {
      ++pair.divergent;
      if (diff.status != Status::extra && diff.ref.has_input_hash && diff.other.has_input_hash) {
        diff.inputs_identical = diff.ref.input_hash == diff.other.input_hash;
        diff.inputs_basis = "input_hash";
      } else {
        diff.inputs_identical = rank_first.at(diff.ref.rank) == i && !other_rank_earlier(diff);
        diff.inputs_basis = "earlier_tensors";
      }
      if (rank_first.at(diff.ref.rank) == i) in_diffs[diff.ref.rank] = pair.diffs.size();
    }
    pair.diffs.push_back(std::move(diff));
  }
  for (const auto& [rank, i] : in_diffs) {
    if (rank >= 0) pair.rank_firsts.emplace_back(rank, i);
    if (!pair.first || pair.diffs[i].when < pair.diffs[*pair.first].when) pair.first = i;
  }
}

PairComparison compare_pair(const DumpReader& ref, const DumpReader& other, const CompareOptions& options) {
  PairComparison pair;
  pair.ref_path = ref.path();
  pair.other_path = other.path();
  // A dump without any optimizer state (TorchScript runs of older reprocheck versions recorded none)
  // against one with it: the state is left out of the comparison, with a note, instead of every
  // row of it counting as missing.
  auto has_optim = [](const DumpReader& r) {
    return std::any_of(r.index().begin(), r.index().end(),
                       [](const TensorMeta& m) { return m.kind == Kind::optim_state; });
  };
  pair.skipped_optim_state = has_optim(ref) != has_optim(other);
  Pending pending;
  std::vector<TensorDiff> all = pair_rows(ref, other, options, pair.skipped_optim_state, pair, pending);
  resolve_hash_only(all, pending.hash_only, ref, other, pair);
  compare_data(all, pending.need_data, ref, other, options, pair);
  classify(all, pair);
  return pair;
}

}  // namespace

namespace {

// Every dump compared with itself matches: pairing cannot invent a divergence (checked when the
// test suite asks for the invariants).
void check_self_comparisons(const Readers& readers, CompareOptions opt) {
  opt.max_step = 1 << 30;
  for (const auto& r : readers) {
    PairComparison self = compare_pair(*r, *r, opt);
    if (self.has_divergence() || self.compared != static_cast<int64_t>(r->index().size()))
      throw RunError(fmt::format(
          "invariant broken: dump '{}' compared with itself {}", r->path(),
          self.has_divergence() ? "diverges at " + self.diffs[*self.first].ref.key() : "left tensors unpaired"));
  }
}

// The reference against one other run: its pair, the run options that differ, the notes it calls for.
PairComparison compare_with_reference(Comparison& c, const DumpReader& ref, const DumpReader& other, int run,
                                      const CompareOptions& opt) {
  if (ref.attribute(attr::kModelSignature) != other.attribute(attr::kModelSignature)) {
    if (!opt.allow_other_model)
      throw InputError(fmt::format(
          "dumps of different models: '{}' records {} (signature {}), '{}' records {} (signature {}); compare dumps "
          "of the same model",
          ref.path(), ref.attribute(attr::kModel), ref.attribute(attr::kModelSignature), other.path(),
          other.attribute(attr::kModel), other.attribute(attr::kModelSignature)));
    add_once(c.notes,
             fmt::format("the model changed since '{}' was recorded (signature {} vs {}): tensors are paired "
                         "by layer name",
                         ref.path(), ref.attribute(attr::kModelSignature), other.attribute(attr::kModelSignature)));
  }
  PairComparison pc = compare_pair(ref, other, opt);
  pc.other_run = run;
  if (pc.skipped_optim_state)
    add_once(c.notes,
             "one of the dumps records no optimizer state (an older reprocheck): the optimizer state is not compared");
  auto ref_opts = run_option_strings(ref), other_opts = run_option_strings(other);
  std::set<std::string> keys;
  for (const auto& [k, v] : ref_opts) keys.insert(k);
  for (const auto& [k, v] : other_opts) keys.insert(k);
  std::set<std::string> differing;
  for (const auto& k : keys) {
    auto va = ref_opts.count(k) ? ref_opts[k] : "-", vb = other_opts.count(k) ? other_opts[k] : "-";
    if (va == vb) continue;
    pc.knob_diffs.emplace_back(k, fmt::format("{} vs {}", va, vb));
    pc.knob_values.emplace_back(k, va, vb);
    differing.insert(k);
  }
  pc.other_attributes = other.attributes();
  pc.environment_diffs = environment_diffs(c.ref_attributes, pc.other_attributes, differing);
  pc.model_change = model_change(c.ref_attributes, pc.other_attributes);
  return pc;
}

}  // namespace

void classify_again(PairComparison& pair) {
  std::vector<TensorDiff> all = std::move(pair.diffs);
  pair.diffs.clear();
  pair.first.reset();
  pair.rank_firsts.clear();
  pair.divergent = pair.close = pair.identical = 0;
  for (auto& d : all) {
    d.inputs_identical.reset();
    d.inputs_basis.clear();
  }
  classify(all, pair);
  int64_t paired = 0;
  for (const auto& d : pair.diffs) paired += d.status != Status::missing && d.status != Status::extra;
  pair.identical = std::max<int64_t>(0, pair.compared - paired);
}

Comparison compare_dumps(const std::vector<std::string>& runs, const CompareOptions& options) {
  if (runs.size() < 2) throw UsageError("compare needs at least two dumps: the reference and one other");
  Comparison c;
  c.runs = runs;
  // Every dump is opened and verified (index, datasets, data against hashes) in a child process
  // first, so a file that makes HDF5 itself crash is an input error; the same bytes then read safely
  // here.
  if (options.verify_data)
    for (const auto& r : runs) DumpReader::check_isolated(r, options.read_timeout_s);
  Readers readers;
  for (const auto& r : runs) readers.push_back(std::make_unique<DumpReader>(r));
  const DumpReader& ref = *readers[0];
  c.ref_attributes = ref.attributes();
  const CompareOptions opt = device_tolerance(c, readers, options);
  c.tolerance = opt.tolerance;
  add_capture_notes(c, readers);
  c.max_step = options.max_step;
  for (const auto& m : ref.index()) c.tensors += m.step <= options.max_step ? 1 : 0;
  for (const auto& r : readers)
    if (r->hashes_only()) c.capture.mode = CaptureMode::hashes;
  c.ref_index = ref.index();
  try {
    c.ref_options = from_json(ref.attribute(attr::kRunOptions, "{}"));
  } catch (const InputError&) {
  }
  if (invariants_checked()) check_self_comparisons(readers, opt);
  for (size_t i = 1; i < readers.size(); ++i)
    c.pairs.push_back(compare_with_reference(c, ref, *readers[i], static_cast<int>(i), opt));
  add_seed_note(c, readers);
  add_shard_note(c);
  return c;
}

}  // namespace reprocheck
