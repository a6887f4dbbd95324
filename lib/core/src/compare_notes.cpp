// The notes of a comparison: what the runs could not see, and what the verdict does not claim.
#include "compare_notes.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "reprocheck/error.h"
#include "reprocheck/protocol.h"
#include "reprocheck/run_options.h"

namespace reprocheck {

void add_once(std::vector<std::string>& notes, std::string note) {
  if (std::find(notes.begin(), notes.end(), note) == notes.end()) notes.push_back(std::move(note));
}

CompareOptions device_tolerance(Comparison& c, const Readers& readers, const CompareOptions& options) {
  const DumpReader& ref = *readers[0];
  auto device_type = [](const DumpReader& r) {
    std::string d = r.attribute(attr::kDevice);
    return d.substr(0, d.find(':'));
  };
  CompareOptions opt = options;
  for (const auto& r : readers) {
    if (device_type(*r) == device_type(ref)) continue;
    const std::string devices = fmt::format("{} vs {}", ref.attribute(attr::kDevice), r->attribute(attr::kDevice));
    if (!opt.tolerance_explicit && opt.tolerance.mode == Tolerance::Mode::bitwise) {
      opt.tolerance = Tolerance::torch_presets();
      c.notes.push_back(fmt::format(
          "runs on different devices ({}): bitwise equality is not expected across devices, so tensors are "
          "compared with torch's per-dtype tolerances (pass --atol/--rtol or --tolerance bitwise to choose)",
          devices));
    } else {
      c.notes.push_back(
          fmt::format("runs on different devices ({}): bitwise equality is not expected across devices", devices));
    }
    break;
  }
  return opt;
}

namespace {

// JSON lists of sentences, or of steps, in an attribute ("" or text that does not parse: none).
std::vector<nlohmann::json> json_list(const DumpReader& r, const char* name) {
  std::vector<nlohmann::json> out;
  const std::string text = r.attribute(name);
  if (text.empty() || !json_depth_within(text, kMaxJsonDepth)) return out;
  try {
    auto j = nlohmann::json::parse(text);
    if (j.is_array())
      for (auto& x : j) out.push_back(x);
  } catch (const nlohmann::json::exception&) {
  }
  return out;
}

}  // namespace

namespace {

// Notes the reference run's attributes call for.
void add_reference_notes(Comparison& c, const DumpReader& ref) {
  if (auto n = ref.attribute(attr::kEvalFrozenOps); !n.empty())
    c.notes.push_back(fmt::format(
        "{} dropout or normalization op(s) have training switched off in the graph (a model traced in eval mode): "
        "--mode train does not reach them; trace it in train mode, or script it",
        n));
  if (auto recipe = ref.attribute(attr::kLossRecipe); !recipe.empty() && ref.attribute(attr::kLossRecipeNote) == "1")
    c.notes.push_back("trained on: " + recipe);
  if (auto n = ref.attribute(attr::kIgnoredOutputs); !n.empty())
    c.notes.push_back(fmt::format(
        "the model returns {} more output(s) that the loss ignores (such as auxiliary heads): only the first output "
        "is trained, so their gradients are not checked; train on all with --output-weights (e.g. 1,0.3,0.3)",
        n));
  if (ref.attribute(attr::kLayerFallback) == "leaf")
    c.notes.push_back("the model has no conv, dropout or batch-norm layer: every leaf layer was tapped instead");
  for (const auto& note : json_list(ref, attr::kCaptureNotes))
    if (note.is_string()) c.notes.push_back(note.get<std::string>());
  if (auto n = ref.attribute(attr::kUninitializedOpsNotRecorded); !n.empty())
    c.notes.push_back(fmt::format(
        "{} op output(s) uninitialized by contract (aten::empty and its kin) were not recorded and are not compared",
        n));
}

}  // namespace

void add_capture_notes(Comparison& c, const Readers& readers) {
  bool all_random = true, any_draw = false;
  for (const auto& r : readers) {
    all_random &= r->attribute(attr::kSeedMode) == "random";
    any_draw |= r->attribute(attr::kModelRngDraws, "1") != "0";
  }
  if (all_random && !any_draw)
    c.notes.push_back(
        "--seed random does not reach this model: it drew no random numbers (no dropout, no initialization under the "
        "seed), so equal runs say nothing about seeding");
  for (size_t i = 0; i < readers.size(); ++i) {
    std::vector<int> steps;
    for (const auto& s : json_list(*readers[i], attr::kNonfiniteLoss))
      if (s.is_number_integer()) steps.push_back(s.get<int>());
    if (steps.empty()) continue;
    c.notes.push_back(fmt::format(
        "the loss was NaN or Inf at step(s) {} of run {}: a check of a training that has diverged numerically says "
        "little; lower the learning rate, or look at the data and the loss",
        fmt::join(steps, ", "), i));
    break;
  }
  add_reference_notes(c, *readers[0]);
  for (size_t i = 0; i < readers.size(); ++i)
    for (const auto& note : json_list(*readers[i], attr::kReplicaNotes))
      if (note.is_string()) c.notes.push_back(fmt::format("run {}: {}", i, note.get<std::string>()));
}

// Runs with different seeds whose tensors all matched: a few random elements coincide often.
void add_seed_note(Comparison& c, const Readers& readers) {
  if (c.divergent()) return;
  const PairComparison* seeds = nullptr;
  for (const auto& p : c.pairs)
    for (const auto& [k, v] : p.knob_diffs)
      if (k == "seed_value") seeds = &p;
  if (!seeds) return;
  bool draws = false;
  for (const auto& r : readers) draws |= r->attribute(attr::kModelRngDraws, "1") != "0";
  if (!draws) return;  // the note that the seed does not reach the model says it
  std::string seed_values;
  for (const auto& [k, v] : seeds->knob_diffs)
    if (k == "seed_value") seed_values = v;
  const std::string elements = c.attribute(attr::kDropoutElements);
  std::string drawn = elements.empty() || elements == "0"
                          ? "the model draws few random numbers where they change what is recorded"
                          : fmt::format("the model's dropout layers drew {} random element(s) over {} step(s)",
                                        elements, c.attribute(attr::kSteps));
  c.notes.push_back(
      fmt::format("the runs used different seeds ({}) and still every tensor matched: {}, and with so "
                  "few, different seeds often give the same masks; check with more runs (--runs 5) or "
                  "more steps before trusting that the seed is not needed",
                  seed_values, drawn));
}

// For a distributed run: whether the rank of the first divergence diverged alone, the others only
// later (through the ranks' communication), said as a note.
std::string rank_alone_note(const Comparison& c) {
  const PairComparison* h = c.headline();
  if (!h || h->rank_firsts.empty()) return "";
  const TensorDiff& first = h->diffs[*h->first];
  std::vector<std::string> later;
  for (const auto& [rank, i] : h->rank_firsts) {
    if (rank == first.ref.rank) continue;
    const TensorDiff& d = h->diffs[i];
    if (d.when.step == first.when.step && d.when.phase == first.when.phase) return "";  // not alone
    later.push_back(fmt::format("rank {} from step {} ({}) on", rank, d.ref.step, to_string(d.ref.phase)));
  }
  int ranks = 0;
  try {
    ranks = std::stoi(c.attribute(attr::kRanks));
  } catch (const std::exception&) {
  }
  if (later.empty() && ranks <= 1) return "";
  return fmt::format(
      "rank {} alone diverged first (step {}, {}){}: the cause is local to rank {}; look at what that rank does "
      "differently (its seed, its data, rank-dependent code)",
      first.ref.rank, first.ref.step, to_string(first.ref.phase),
      later.empty()
          ? "; no other rank diverged"
          : fmt::format("; the others only later, {}, through the ranks' communication", fmt::join(later, ", ")),
      first.ref.rank);
}

void add_shard_note(Comparison& c) {
  const PairComparison* pair = c.headline();
  const std::string text = c.attribute(attr::kShards);
  if (!pair || !pair->first || text.empty() || !json_depth_within(text, kMaxJsonDepth)) return;
  const TensorMeta& m = pair->diffs[*pair->first].ref;
  auto shards = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!shards.is_object()) return;
  auto it = shards.find(m.tensor_name());
  if (it == shards.end() || !it->is_object()) return;
  const nlohmann::json& s = *it;
  auto dims = [](const nlohmann::json& v) {
    std::vector<std::string> out;
    if (v.is_array())
      for (const auto& d : v) out.push_back(d.dump());
    return fmt::format("[{}]", fmt::join(out, ", "));
  };
  const std::string placements = s.value("placements", std::string());
  const std::string where = s.contains("slice") && s["slice"].is_string()
                                ? fmt::format("the slice {} of", s["slice"].get<std::string>())
                                : fmt::format("a {} part of", dims(s.value("local", nlohmann::json())));
  c.notes.push_back(fmt::format(
      "{} is rank {}'s local shard: {} the full {} tensor ({} over a device mesh of {}); index the full tensor with "
      "that slice to find the divergent elements",
      m.tensor_name(), m.rank, where, dims(s.value("shape", nlohmann::json())), sanitize_text(placements),
      dims(s.value("mesh", nlohmann::json()))));
}

std::vector<EnvironmentDiff> environment_diffs(const std::map<std::string, std::string>& ref,
                                               const std::map<std::string, std::string>& other,
                                               const std::set<std::string>& knobs_differing) {
  struct Fact {
    const char* attr;
    const char* what;
    const char* knob;  // the run option that sets it, if any
  };
  static const Fact kFacts[] = {
      {attr::kReprocheckVersion, "reprocheck", nullptr},
      {attr::kLibtorchVersion, "LibTorch/torch", nullptr},
      {attr::kCudaVersion, "CUDA", nullptr},
      {attr::kCudnnVersion, "cuDNN", nullptr},
      {attr::kDevice, "device", "device"},
      {attr::kDeviceName, "device name", "device"},
      {attr::kCpu, "CPU", nullptr},
      {attr::kBlas, "BLAS", nullptr},
      {attr::kTorchThreads, "threads", "threads"},
      {attr::kDeterministic, "deterministic algorithms", "deterministic"},
      {attr::kTf32Cublas, "TF32 in cuBLAS", nullptr},
      {attr::kTf32Cudnn, "TF32 in cuDNN", nullptr},
      {attr::kFloat32MatmulPrecision, "float32 matmul precision", nullptr},
      {attr::kPythonVersion, "Python", nullptr},
  };
  std::vector<EnvironmentDiff> out;
  for (const auto& f : kFacts) {
    auto a = ref.find(f.attr), b = other.find(f.attr);
    if (a == ref.end() || b == other.end() || a->second == b->second) continue;
    if (f.knob && knobs_differing.count(f.knob)) continue;
    // A CPU run's device name is its CPU: said once, as the CPU.
    if (std::string(f.attr) == attr::kDeviceName && ref.count(attr::kCpu) && other.count(attr::kCpu) &&
        ref.at(attr::kDeviceName) == ref.at(attr::kCpu) && b->second == other.at(attr::kCpu))
      continue;
    out.push_back({f.what, a->second, b->second});
  }
  return out;
}

ModelChange model_change(const std::map<std::string, std::string>& ref,
                         const std::map<std::string, std::string>& other) {
  auto get = [](const std::map<std::string, std::string>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  const std::string sa = get(ref, attr::kModelSignature), sb = get(other, attr::kModelSignature);
  if (sa != sb && !sa.empty() && !sb.empty() && sa != "none" && sb != "none") return {"signature", sa, sb};
  const std::string ha = get(ref, attr::kModelHash), hb = get(other, attr::kModelHash);
  if (ha != hb && !ha.empty() && !hb.empty()) return {"file", ha, hb};
  return {};
}

}  // namespace reprocheck
