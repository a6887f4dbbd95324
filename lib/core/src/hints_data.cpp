// Hints from a training script's data pipeline and RNG records: which record came first, whether
// the dataset indices matched, whether the values are a reordering or a relabeling, which RNG
// states differed, and how the DataLoader was configured (its record's type says workers and
// in_order).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "hints_evidence.h"

namespace reprocheck::hints_detail {

namespace {

struct Loader {
  int workers = 0;
  bool in_order = true;
};

// "torch.utils.data.DataLoader[workers=2,in_order=0]"
std::optional<Loader> loader_of(const TensorMeta& m) {
  if (m.layer_type.rfind("torch.utils.data.DataLoader", 0) != 0) return std::nullopt;
  Loader l;
  auto w = m.layer_type.find("workers=");
  if (w != std::string::npos) l.workers = std::atoi(m.layer_type.c_str() + w + 8);
  l.in_order = m.layer_type.find("in_order=0") == std::string::npos;
  return l;
}

// The generators whose state differed, with the first step at which each did.
std::map<std::string, int> rng_differences(const PairComparison& p) {
  std::map<std::string, int> out;
  for (const auto& d : p.diffs)
    if (is_divergent(d.status) && d.ref.kind == Kind::rng_state) out.emplace(d.ref.name, d.ref.step);
  return out;
}

std::string generator_label(const std::string& name) {
  if (name == "numpy") return "numpy global RNG";
  if (name == "random") return "Python random RNG";
  return name + " RNG";
}

std::string rng_note(const std::map<std::string, int>& rngs) {
  std::vector<std::string> parts;
  for (const auto& [name, step] : rngs)
    parts.push_back(fmt::format("{} state differed at the start of step {}", generator_label(name), step));
  return parts.empty() ? "; no RNG state differed" : "; " + fmt::format("{}", fmt::join(parts, ", "));
}

std::string values(const std::vector<int64_t>& v) {
  const size_t shown = std::min<size_t>(v.size(), 8);
  return fmt::format("[{}{}]", fmt::join(v.begin(), v.begin() + static_cast<long>(shown), ", "),
                     v.size() > shown ? ", ..." : "");
}

// The record of `kind` in the same batch (step and call) as `m`, and whether it diverged; null
// when the run has none.
const TensorMeta* same_batch(const Comparison& c, const TensorMeta& m, Kind kind, bool* diverged) {
  const TensorMeta* found = nullptr;
  for (const auto& r : c.ref_index)
    if (r.kind == kind && r.step == m.step && r.call == m.call && r.phase == Phase::input && r.layer == m.layer) {
      found = &r;
      break;
    }
  *diverged = false;
  if (found)
    for (const auto& p : c.pairs)
      for (const auto& d : p.diffs)
        if (is_divergent(d.status) && d.ref.key() == found->key()) *diverged = true;
  return found;
}

}  // namespace

void explain_data(const Comparison& c, const Evidence& e, Hints& hints) {
  const TensorDiff& d = *e.first;
  const auto rngs = rng_differences(*e.pair);
  const bool script = !c.ref_options.command.empty();

  if (d.ref.kind == Kind::indices) {
    const auto loader = loader_of(d.ref).value_or(Loader{});
    std::string batch = fmt::format("batch {} of the DataLoader at step {}: {} of {} samples differ", d.ref.call,
                                    d.ref.step, d.stats.mismatched, d.stats.numel);
    if (!d.ref_values.empty())
      batch += fmt::format(" (indices {} vs {})", values(d.ref_values), values(d.other_values));
    if (loader.workers > 0 && !loader.in_order && rngs.empty()) {
      hints.add("worker_arrival_order", "batches arrive in the order the workers finish them (in_order=False)",
                fmt::format("{}; the DataLoader has {} workers and in_order=False, and no RNG state differed: the "
                            "same batches, delivered in another order",
                            batch, loader.workers),
                "DataLoader(..., in_order=True) (the default): batches are then returned in sampler order",
                "--runs 5");
      return;
    }
    hints.add("unseeded_shuffle", "the DataLoader shuffles without a seed: same samples, different order",
              fmt::format("{}{}", batch, rng_note(rngs)),
              "torch.manual_seed(0) at the top of the script, and DataLoader(..., shuffle=True, "
              "generator=torch.Generator().manual_seed(0))",
              "--seed 0");
    return;
  }

  if (d.ref.kind == Kind::rng_state) {
    const bool init_matched =
        std::any_of(c.ref_index.begin(), c.ref_index.end(), [](const TensorMeta& m) { return m.phase == Phase::init; });
    if (d.ref.name == "torch" && (d.ref.step > 0 || init_matched)) {
      hints.add("rng_reseeded", "the torch RNG is reseeded during training (torch.seed() or a seed from the clock)",
                fmt::format("torch RNG state differed at the start of step {} although everything recorded before it "
                            "matched{}: the script seeds the RNG again with a value that changes from run to run",
                            d.ref.step, init_matched ? ", the initial parameters included" : ""),
                "seed once, at the top: torch.manual_seed(0); drop torch.seed() or seeds taken from time.time() "
                "inside the loop",
                "--seed 0");
      return;
    }
    const std::string fix = d.ref.name == "numpy"  ? "np.random.seed(0) at the top of the script"
                            : d.ref.name == "random" ? "random.seed(0) at the top of the script"
                                                     : "torch.manual_seed(0) at the top of the script";
    hints.add("rng_not_seeded", "an RNG the script uses is not seeded",
              fmt::format("{} state differed at the start of step {}, before any other record diverged",
                          generator_label(d.ref.name), d.ref.step),
              fix, "--seed 0");
    return;
  }

  // Data values: a DataLoader batch, or the model's input.
  const bool batch = d.ref.kind == Kind::batch;
  const bool model_input = script && d.ref.kind == Kind::input;
  if (!batch && !model_input) return;
  bool indices_diverged = false;
  const TensorMeta* indices = batch ? same_batch(c, d.ref, Kind::indices, &indices_diverged) : nullptr;
  const std::string same_indices =
      indices && !indices_diverged ? fmt::format("the dataset indices of batch {} matched", d.ref.call)
                                   : "no dataset indices were recorded for it";

  if (d.relabeling && !d.same_multiset) {
    hints.add("hash_seed_order",
              "token ids depend on set or dict iteration order, which changes with Python's hash seed",
              fmt::format("{} differs at step {} but only by relabeling: the same elements are equal to each other "
                          "in both runs, under other ids ({}); {}",
                          d.ref.tensor_name(), d.ref.step, d.ref_values.empty() ? "integer values" : fmt::format("{} vs {}", values(d.ref_values), values(d.other_values)),
                          same_indices),
              "build the vocabulary from sorted(...) instead of iterating a set or dict of strings (or set "
              "PYTHONHASHSEED=0 for every run)",
              "--seed 0", "--vary env:PYTHONHASHSEED=0,1");
    return;
  }
  if (model_input) {
    // The loader's batch of this step matched, yet the model received other values.
    bool loader_seen = false;
    for (const auto& r : c.ref_index) loader_seen |= r.kind == Kind::batch && r.step == d.ref.step;
    if (loader_seen) {
      hints.add("random_in_loop", "code between the DataLoader and the model draws unseeded random numbers",
                fmt::format("the model's input at step {} differs while the DataLoader's batch of that step "
                            "matched{}: mixup, cutmix or torch.randperm in the loop draws from an unseeded "
                            "generator",
                            d.ref.step, rng_note(rngs)),
                "seed the generator the loop draws from: g = torch.Generator().manual_seed(0) and "
                "torch.randperm(n, generator=g), or seed the global RNG with torch.manual_seed(0)",
                "--seed 0");
    }
    return;
  }
  const auto loader = loader_of(d.ref).value_or(Loader{});
  const std::string what = fmt::format("batch {} of the DataLoader at step {}: {} differs ({} of {} values)",
                                       d.ref.call, d.ref.step, d.ref.tensor_name(), d.stats.mismatched, d.stats.numel);
  if (loader.workers > 0) {
    hints.add("worker_seeding", "the DataLoader's workers draw augmentation from unseeded seeds",
              fmt::format("{} while {}; the DataLoader has {} workers, each seeded from a base seed drawn from the "
                          "torch RNG{}",
                          what, same_indices, loader.workers, rng_note(rngs)),
              "def seed_worker(worker_id): s = torch.initial_seed() % 2**32; numpy.random.seed(s); random.seed(s); "
              "then DataLoader(..., worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0))",
              "--seed 0");
    return;
  }
  // Augmentation in the main process: the generator whose state differed, in the order a script
  // most likely drew from them.
  struct Generator {
    const char *name, *cause, *title, *fix;
  };
  static const Generator kGenerators[] = {
      {"numpy", "augmentation_numpy", "augmentation draws differ: numpy's global RNG is not seeded",
       "np.random.seed(0) at the top of the script (or a np.random.default_rng(seed) per sample)"},
      {"random", "augmentation_random", "augmentation draws differ: Python's random module is not seeded",
       "random.seed(0) at the top of the script"},
      {"torch", "augmentation_torch", "augmentation draws differ: the torch RNG is not seeded",
       "torch.manual_seed(0) at the top of the script"},
  };
  for (const auto& g : kGenerators) {
    auto it = rngs.find(g.name);
    if (it == rngs.end()) continue;
    hints.add(g.cause, g.title,
              fmt::format("{} while {}; {} state differed at the start of step {}", what, same_indices,
                          generator_label(g.name), it->second),
              g.fix, "--seed 0");
    return;
  }
  hints.add("data_values", "the data differs, with no RNG state to blame",
            fmt::format("{} while {}{}: the dataset itself or its transform changes between runs (file order, "
                        "a random source reprocheck does not record, such as os.urandom or a generator object)",
                        what, same_indices, rng_note(rngs)),
            "-", "--ops", "--runs 3 --keep runs");
}

}  // namespace reprocheck::hints_detail
