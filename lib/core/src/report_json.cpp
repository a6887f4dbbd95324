#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "report_common.h"

namespace reprocheck {

using namespace report_detail;

namespace {

nlohmann::json stats_json(const TensorDiff& d) {
  const auto& s = d.stats;
  auto nd = [&](int64_t flat) {
    return flat < 0 ? nlohmann::json(nullptr) : nlohmann::json(unravel(flat, d.ref.shape));
  };
  return {{"numel", s.numel},
          {"mismatched", s.mismatched},
          {"max_abs", s.max_abs},
          {"max_abs_index", s.max_abs_index < 0 ? nlohmann::json(nullptr) : nlohmann::json(s.max_abs_index)},
          {"max_abs_index_nd", nd(s.max_abs_index)},
          {"a_at_max", s.a_at_max},
          {"b_at_max", s.b_at_max},
          {"a_bits", bits_hex(s.a_bits, d.ref.dtype)},
          {"b_bits", bits_hex(s.b_bits, d.ref.dtype)},
          {"max_rel", s.max_rel},
          {"mean_abs", s.mean_abs},
          {"rms", s.rms},
          {"max_ulp", s.max_ulp},
          {"cosine", std::isnan(s.cosine) ? nlohmann::json(nullptr) : nlohmann::json(s.cosine)},
          {"nan_mismatch", s.nan_mismatch},
          {"inf_mismatch", s.inf_mismatch},
          {"signed_zeros", s.signed_zeros},
          {"first_index", s.first_index < 0 ? nlohmann::json(nullptr) : nlohmann::json(s.first_index)},
          {"first_index_nd", nd(s.first_index)}};
}

nlohmann::json tensor_json(const TensorDiff& d, int run) {
  nlohmann::json j = {{"run", run},
                      {"order", d.ref.order},
                      {"step", d.ref.step},
                      {"phase", to_string(d.ref.phase)},
                      {"layer", d.ref.layer},
                      {"layer_type", d.ref.layer_type},
                      {"kind", to_string(d.ref.kind)},
                      {"name", d.ref.name},
                      {"call", d.ref.call},
                      {"rank", d.ref.rank >= 0 ? nlohmann::json(d.ref.rank) : nlohmann::json(nullptr)},
                      {"tensor", d.ref.tensor_name()},
                      {"dtype", d.ref.dtype},
                      {"shape", d.ref.shape},
                      {"status", to_string(d.status)},
                      {"detail", d.detail}};
  j["inputs_identical"] = d.inputs_identical ? nlohmann::json(*d.inputs_identical) : nlohmann::json(nullptr);
  j["inputs_basis"] = d.inputs_basis.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.inputs_basis);
  return j;
}

nlohmann::json isolation_json(const Isolation& iso) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& d : iso.sources) {
    auto t = tensor_json(d, 0);
    t.erase("run");
    t["max_abs"] = d.stats.max_abs;
    sources.push_back(t);
  }
  return {{"step", iso.step},
          {"sources", sources},
          {"agreed", iso.agreed},
          {"note", iso.note.empty() ? nlohmann::json(nullptr) : nlohmann::json(iso.note)}};
}

nlohmann::json drill_json(const DrillDown& dd) {
  auto opt = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  nlohmann::json j = {{"mode", dd.mode},     {"step", dd.step},         {"scope", dd.scope},
                      {"run", dd.other_run}, {"why", dd.why},           {"ops_captured", dd.ops_captured},
                      {"passes", dd.passes}, {"in_pass2", dd.in_pass2}, {"seconds", dd.seconds},
                      {"found", dd.found},   {"note", opt(dd.note)}};
  if (!dd.found) return j;
  j["op"] = dd.op;
  j["output"] = dd.output;
  j["module"] = dd.module;
  j["phase"] = to_string(dd.diff.ref.phase);
  j["file"] = opt(dd.file);
  j["line"] = dd.file.empty() ? nlohmann::json(nullptr) : nlohmann::json(dd.line);
  j["stack"] = dd.stack;
  j["generator"] = opt(dd.generator);
  j["autograd_node"] = opt(dd.node);
  j["within"] = opt(dd.within);
  j["tensor"] = tensor_json(dd.diff, dd.other_run);
  j["stats"] = dd.diff.status == Status::values_differ ? stats_json(dd.diff) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json capture_json(const Comparison& c) {
  const auto& k = c.capture;
  return {{"mode", to_string(k.mode)},
          {"pass2", k.pass2},
          {"pass2_steps", k.pass2_steps},
          {"pass2_records", k.pass2_records},
          {"pass2_runs", k.pass2_runs},
          {"intermittent_runs", k.intermittent},
          {"pass1_bytes", k.pass1_bytes},
          {"pass2_bytes", k.pass2_bytes},
          {"hash_only_tensors", c.hash_only_diffs()},
          {"sentences", capture_sentences(c)}};
}

// Each pair's counts and cascade; every divergent tensor of every pair into `divergent`.
nlohmann::json pairs_json(const Comparison& c, nlohmann::json& divergent) {
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& p : c.pairs) {
    nlohmann::json knobs = nlohmann::json::object();
    for (const auto& [k, v] : p.knob_diffs) knobs[k] = v;
    nlohmann::json cas = nlohmann::json::array();
    for (const auto& row : cascade(p))
      cas.push_back({{"step", row.step},
                     {"phase", to_string(row.phase)},
                     {"count", row.count},
                     {"max_abs", row.hash_only == row.count ? nlohmann::json(nullptr) : nlohmann::json(row.max_abs)},
                     {"hash_only", row.hash_only}});
    pairs.push_back({{"run", p.other_run},
                     {"dump", p.other_path},
                     {"compared", p.compared},
                     {"identical", p.identical},
                     {"close", p.close},
                     {"divergent", p.divergent},
                     {"knob_diffs", knobs},
                     {"after_first", cas}});
    for (const auto& d : p.diffs) {
      if (!is_divergent(d.status)) continue;
      auto t = tensor_json(d, p.other_run);
      t["mismatched"] = d.stats.mismatched;
      t["numel"] = d.stats.numel ? d.stats.numel : d.ref.numel;
      t["max_abs"] = d.hash_only ? nlohmann::json(nullptr) : nlohmann::json(d.stats.max_abs);
      t["hash_only"] = d.hash_only;
      divergent.push_back(t);
    }
  }
  return pairs;
}

nlohmann::json hints_json(const std::vector<Hint>& hints) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& x : hints)
    out.push_back({{"cause", x.cause},
                   {"title", x.title},
                   {"evidence", x.evidence},
                   {"fix_python", x.fix_python},
                   {"fix_flag", x.fix_flag},
                   {"test_it", x.test_it}});
  return out;
}

}  // namespace

std::string render_json(const Report& r) {
  const Comparison& c = r.comparison;
  nlohmann::json j;
  j["schema"] = "reprocheck-report/1";
  j["verdict"] = to_string(c.verdict());
  j["inconclusive_reason"] =
      c.verdict() == Verdict::inconclusive ? nlohmann::json(c.inconclusive_reason()) : nlohmann::json(nullptr);
  j["model"] = model_name(c);
  j["tolerance"] = c.tolerance.describe();
  j["tensors"] = tensors_per_run(c);
  // Where the checked run ran (the reference's, or a golden check's fresh run), from its dump's
  // attributes ("" when a dump does not say).
  static constexpr const char* kProvenance[] = {
      "reprocheck_version", "libtorch_version", "cuda_version", "cudnn_version", "device", "device_name", "cpu", "blas",
      "torch_threads",      "deterministic",    "host",         "front_end"};
  j["provenance"] = nlohmann::json::object();
  for (const char* key : kProvenance) j["provenance"][key] = checked_attribute(c, key);
  j["notes"] = c.notes;
  j["capture"] = capture_json(c);
  j["baseline"] = nullptr;
  if (!c.capture.baseline.empty()) {
    nlohmann::json env = nlohmann::json::array(), golden = nlohmann::json::object();
    if (!c.pairs.empty())
      for (const auto& e : c.pairs.front().environment_diffs)
        env.push_back({{"what", e.what}, {"golden", e.reference}, {"now", e.other}});
    for (const char* key : kProvenance) golden[key] = c.attribute(key);
    j["baseline"] = {{"path", c.capture.baseline},
                     {"hashes_only", c.capture.baseline_hashes_only},
                     {"matches", c.verdict() == Verdict::reproducible},
                     {"model", c.attribute("model")},
                     {"tensors", c.tensors},
                     {"recorded_at", c.attribute("time")},
                     {"provenance", golden},
                     {"environment_diffs", env}};
  }
  nlohmann::json runs = nlohmann::json::array();
  for (size_t i = 0; i < c.runs.size(); ++i) runs.push_back({{"index", i}, {"dump", c.runs[i]}});
  j["runs"] = runs;
  j["first_divergence"] = nullptr;
  if (const auto* h = c.headline()) {
    const auto& d = h->diffs[*h->first];
    auto fd = tensor_json(d, h->other_run);
    fd["stats"] = d.hash_only ? nlohmann::json(nullptr) : stats_json(d);
    fd["hash_only"] = d.hash_only;
    j["first_divergence"] = fd;
  }
  nlohmann::json divergent = nlohmann::json::array();
  j["pairs"] = pairs_json(c, divergent);
  j["divergent_tensors"] = divergent;
  j["hints"] = hints_json(r.hints);
  if (r.isolation) j["isolation"] = isolation_json(*r.isolation);
  j["drill_down"] = c.drill ? drill_json(*c.drill) : nlohmann::json(nullptr);
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace reprocheck
