#include "reprocheck/compare.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <future>
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
    out = to_strings(from_json(r.attribute("run_options", "{}")));
  } catch (const InputError&) {
  }
  out.erase("model");
  // The seeds actually drawn: two "--seed random" runs have equal options but different seeds.
  out["seed_value"] = r.attribute("seed");
  out["data_seed_value"] = r.attribute("data_seed");
  return out;
}

}  // namespace

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
  c.ref_index = ref.index();
  try {
    c.ref_options = from_json(ref.attribute("run_options", "{}"));
  } catch (const InputError&) {
  }
  auto ref_opts = run_option_strings(ref);
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
