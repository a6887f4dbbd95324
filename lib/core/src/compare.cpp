#include "reprocheck/compare.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <nlohmann/json.hpp>
#include <memory>
#include <set>
#include <unordered_map>

#include "reprocheck/dump.h"
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

namespace {

// Run options recorded in a dump, as text, for telling which differ between runs.
std::map<std::string, std::string> run_option_strings(const DumpReader& r) {
  std::map<std::string, std::string> out;
  try {
    // Options a dump of an older reprocheck does not carry read as their defaults.
    out = to_strings(with_recipe_defaults(from_json(r.attribute("run_options", "{}"))));
  } catch (const InputError&) {
  }
  out.erase("model");
  out.erase("hashes_only");  // how a run was captured, not what it computed
  // The seeds actually drawn: two "--seed random" runs have equal options but different seeds.
  out["seed_value"] = r.attribute("seed");
  out["data_seed_value"] = r.attribute("data_seed");
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
    if (!best || p.diffs[*p.first].ref.order < best->diffs[*best->first].ref.order) best = &p;
  }
  return best;
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

PairComparison compare_pair(const DumpReader& ref, const DumpReader& other, const CompareOptions& options) {
  PairComparison pair;
  pair.ref_path = ref.path();
  pair.other_path = other.path();
  std::unordered_map<std::string, size_t> in_other;
  in_other.reserve(other.index().size());
  for (size_t i = 0; i < other.index().size(); ++i) in_other.emplace(other.index()[i].key(), i);
  std::vector<bool> other_seen(other.index().size(), false);
  // A dump without any optimizer state (TorchScript runs of older reprocheck versions recorded none)
  // against one with it: the state is left out of the comparison, with a note, instead of every
  // row of it counting as missing.
  auto has_optim = [](const DumpReader& r) {
    return std::any_of(r.index().begin(), r.index().end(), [](const TensorMeta& m) { return m.kind == Kind::optim_state; });
  };
  const bool skip_optim = has_optim(ref) != has_optim(other);
  pair.skipped_optim_state = skip_optim;

  // Pass 1: structure and hashes, from the indexes alone.
  std::vector<TensorDiff> all;
  std::vector<size_t> need_data;  // entries of `all` whose bytes must be compared
  std::vector<size_t> hash_only;  // entries whose hashes differ (or are of other functions) and one side has no data
  int64_t last_other_order = -1;
  for (const auto& ref_meta : ref.index()) {
    if (ref_meta.step > options.max_step || (skip_optim && ref_meta.kind == Kind::optim_state)) continue;
    TensorDiff diff;
    diff.ref = ref_meta;
    auto it = in_other.find(ref_meta.key());
    if (it == in_other.end()) {
      diff.status = Status::missing;
      diff.detail = "not recorded in the other run";
    } else {
      const TensorMeta& other_meta = other.index()[it->second];
      other_seen[it->second] = true;
      diff.other = other_meta;
      ++pair.compared;
      if (other_meta.order < last_other_order) diff.detail = "recorded in ref different order";
      last_other_order = std::max(last_other_order, other_meta.order);
      if (ref_meta.dtype != other_meta.dtype) {
        diff.status = Status::dtype_mismatch;
        diff.detail = fmt::format("{} vs {}", ref_meta.dtype, other_meta.dtype);
      } else if (ref_meta.shape != other_meta.shape) {
        diff.status = Status::shape_mismatch;
        diff.detail = fmt::format("[{}] vs [{}]", fmt::join(ref_meta.shape, ", "), fmt::join(other_meta.shape, ", "));
      } else if (options.hash_shortcut && ref_meta.hash == other_meta.hash &&
                 hash_function(ref_meta) == hash_function(other_meta)) {
        diff.status = Status::match;
      } else if (!ref_meta.has_data() || !other_meta.has_data()) {
        hash_only.push_back(all.size());
      } else {
        need_data.push_back(all.size());
      }
    }
    all.push_back(std::move(diff));
  }

  // Rows without data: a hash of another function is computed from the side that has data; the
  // rest differ by their hashes alone.
  for (size_t k : hash_only) {
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

  // Pass 2: the data of the tensors whose hashes differ. The next pair of tensors is read on
  // another thread while this one's statistics are computed.
  struct Data {
    std::vector<std::byte> ref, other;
  };
  auto read = [&](size_t k) {
    Data data;
    const TensorDiff& diff = all[need_data[k]];
    size_t nbytes = static_cast<size_t>(diff.ref.numel) * dtype_size(diff.ref.dtype);
    data.ref.resize(nbytes);
    data.other.resize(nbytes);
    ref.read_into(diff.ref, data.ref.data(), nbytes);
    other.read_into(diff.other, data.other.data(), nbytes);
    return data;
  };
  std::future<Data> next;
  if (!need_data.empty()) next = std::async(std::launch::async, read, size_t{0});
  for (size_t k = 0; k < need_data.size(); ++k) {
    Data current = next.get();
    if (k + 1 < need_data.size()) next = std::async(std::launch::async, read, k + 1);
    TensorDiff& diff = all[need_data[k]];
    pair.bytes_read += current.ref.size() + current.other.size();
    if (std::memcmp(current.ref.data(), current.other.data(), current.ref.size()) == 0) {
      diff.status = Status::match;
    } else {
      diff.stats = diff_stats(diff.ref.dtype, current.ref.data(), current.other.data(), diff.ref.numel, options.tolerance);
      diff.status = diff.stats.mismatched > 0 ? Status::values_differ : Status::close;
      if (diff.status == Status::values_differ) describe_integers(diff, current.ref.data(), current.other.data());
    }
  }

  // Pass 3: in execution order, tell sources from inherited divergences.
  bool all_matched_so_far = true;
  for (auto& diff : all) {
    if (diff.status == Status::match) {
      ++pair.identical;
      continue;
    }
    if (diff.status == Status::close) ++pair.close;
    if (is_divergent(diff.status)) {
      ++pair.divergent;
      if (diff.ref.has_input_hash && diff.other.has_input_hash) {
        diff.inputs_identical = diff.ref.input_hash == diff.other.input_hash;
        diff.inputs_basis = "input_hash";
      } else {
        diff.inputs_identical = all_matched_so_far;
        diff.inputs_basis = "earlier_tensors";
      }
      if (!pair.first) pair.first = pair.diffs.size();
      all_matched_so_far = false;
    }
    pair.diffs.push_back(std::move(diff));
  }
  for (size_t i = 0; i < other.index().size(); ++i) {
    if (other_seen[i] || other.index()[i].step > options.max_step ||
        (skip_optim && other.index()[i].kind == Kind::optim_state))
      continue;
    TensorDiff diff;
    diff.ref = other.index()[i];
    diff.other = other.index()[i];
    diff.status = Status::extra;
    diff.detail = "recorded only in the other run";
    ++pair.divergent;
    pair.diffs.push_back(std::move(diff));
  }
  // A tensor only the other run recorded may come before the reference's first difference.
  for (size_t i = 0; i < pair.diffs.size(); ++i) {
    if (!is_divergent(pair.diffs[i].status)) continue;
    if (!pair.first || pair.diffs[i].ref.order < pair.diffs[*pair.first].ref.order) pair.first = i;
  }
  return pair;
}

// What the runs could not see: notes about the capture and the run options that cannot reach
// the model, so that a REPRODUCIBLE verdict is not read as more than it is.
void add_capture_notes(Comparison& c, const std::vector<std::unique_ptr<DumpReader>>& readers) {
  const DumpReader& ref = *readers[0];
  bool all_random = true, any_draw = false;
  for (const auto& r : readers) {
    all_random &= r->attribute("seed_mode") == "random";
    any_draw |= r->attribute("model_rng_draws", "1") != "0";
  }
  if (all_random && !any_draw)
    c.notes.push_back("--seed random does not reach this model: it drew no random numbers (no dropout, no "
                      "initialization under the seed), so equal runs say nothing about seeding");
  if (auto n = ref.attribute("eval_frozen_ops"); !n.empty())
    c.notes.push_back(fmt::format("{} dropout or normalization op(s) have training switched off in the graph (a "
                                  "model traced in eval mode): --mode train does not reach them; trace it in "
                                  "train mode, or script it",
                                  n));
  if (auto recipe = ref.attribute("loss_recipe"); !recipe.empty() && ref.attribute("loss_recipe_note") == "1")
    c.notes.push_back("trained on: " + recipe);
  if (auto n = ref.attribute("ignored_outputs"); !n.empty())
    c.notes.push_back(fmt::format("the model returns {} more output(s) that the loss ignores (such as auxiliary "
                                  "heads): only the first output is trained, so their gradients are not checked; "
                                  "train on all with --output-weights (e.g. 1,0.3,0.3)",
                                  n));
  if (ref.attribute("layer_fallback") == "leaf")
    c.notes.push_back("the model has no conv, dropout or batch-norm layer: every leaf layer was tapped instead");
  if (auto notes = ref.attribute("capture_notes"); !notes.empty() && json_depth_within(notes, kMaxJsonDepth)) {
    try {
      for (const auto& note : nlohmann::json::parse(notes)) c.notes.push_back(note.get<std::string>());
    } catch (const nlohmann::json::exception&) {
    }
  }
}

}  // namespace

Comparison compare_dumps(const std::vector<std::string>& runs, const CompareOptions& options) {
  if (runs.size() < 2) throw UsageError("compare needs at least two dumps: the reference and one other");
  Comparison c;
  c.runs = runs;
  // Every dump is opened and verified (index, datasets, data against hashes) in a child process
  // first, so a file that makes HDF5 itself crash is an input error; the same bytes then read safely
  // here.
  if (options.verify_data)
    for (const auto& r : runs) DumpReader::check_isolated(r, options.read_timeout_s);
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
  add_capture_notes(c, readers);
  if (auto n = ref.attribute("uninitialized_ops_not_recorded"); !n.empty())
    c.notes.push_back(fmt::format("{} op output(s) uninitialized by contract (aten::empty and its kin) were not "
                                  "recorded and are not compared",
                                  n));
  for (size_t i = 0; i < readers.size(); ++i) {
    auto text = readers[i]->attribute("replica_notes");
    if (text.empty() || !json_depth_within(text, kMaxJsonDepth)) continue;
    try {
      for (const auto& note : nlohmann::json::parse(text)) c.notes.push_back(fmt::format("run {}: {}", i, note.get<std::string>()));
    } catch (const nlohmann::json::exception&) {
    }
  }
  c.tensors = 0;
  for (const auto& m : ref.index()) c.tensors += m.step <= options.max_step ? 1 : 0;
  for (const auto& r : readers)
    if (r->hashes_only()) c.capture.mode = "hashes";
  c.ref_index = ref.index();
  try {
    c.ref_options = from_json(ref.attribute("run_options", "{}"));
  } catch (const InputError&) {
  }
  auto ref_opts = run_option_strings(ref);
  for (size_t i = 1; i < readers.size(); ++i) {
    const DumpReader& other = *readers[i];
    if (ref.attribute("model_signature") != other.attribute("model_signature")) {
      if (!options.allow_other_model)
        throw InputError(
            fmt::format("dumps of different models: '{}' records {} (signature {}), '{}' records {} "
                        "(signature {}); compare dumps of the same model",
                        ref.path(), ref.attribute("model"), ref.attribute("model_signature"), other.path(),
                        other.attribute("model"), other.attribute("model_signature")));
      std::string note = fmt::format("the model changed since '{}' was recorded (signature {} vs {}): tensors are "
                                     "paired by layer name",
                                     ref.path(), ref.attribute("model_signature"), other.attribute("model_signature"));
      if (std::find(c.notes.begin(), c.notes.end(), note) == c.notes.end()) c.notes.push_back(std::move(note));
    }
    PairComparison pc = compare_pair(ref, other, opt);
    pc.other_run = static_cast<int>(i);
    if (pc.skipped_optim_state) {
      std::string note = "one of the dumps records no optimizer state (an older reprocheck): the optimizer state is "
                         "not compared";
      if (std::find(c.notes.begin(), c.notes.end(), note) == c.notes.end()) c.notes.push_back(std::move(note));
    }
    auto other_opts = run_option_strings(other);
    std::set<std::string> keys;
    for (const auto& [k, v] : ref_opts) keys.insert(k);
    for (const auto& [k, v] : other_opts) keys.insert(k);
    for (const auto& k : keys) {
      auto va = ref_opts.count(k) ? ref_opts[k] : "-", vb = other_opts.count(k) ? other_opts[k] : "-";
      if (va != vb) pc.knob_diffs.emplace_back(k, fmt::format("{} vs {}", va, vb));
    }
    c.pairs.push_back(std::move(pc));
  }
  return c;
}

}  // namespace reprocheck
