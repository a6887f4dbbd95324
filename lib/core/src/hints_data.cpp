// The rules of a training script's data pipeline and RNG records: which record came first, whether
// the dataset indices matched, whether the values are a reordering or a relabeling, which RNG
// states differed (in the first divergence's rank), and who draws the order: the DataLoader's own
// sampler, a sampler or batch sampler of the script's, a DistributedSampler, random_split.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "hints_evidence.h"
#include "reprocheck/protocol.h"

namespace reprocheck::hints_detail {

namespace {

using P = std::optional<Proposal>;

std::string values(const std::vector<int64_t>& v) {
  const size_t shown = std::min<size_t>(v.size(), 8);
  return fmt::format("[{}{}]", fmt::join(v.begin(), v.begin() + static_cast<long>(shown), ", "),
                     v.size() > shown ? ", ..." : "");
}

std::string loader_words(const Evidence& e) {
  return e.loader && !e.loader->name.empty() ? fmt::format("the DataLoader '{}'", e.loader->name) : "the DataLoader";
}

// "batch 0 of the DataLoader at step 0 on rank 1: 8 of 8 samples differ (indices [...] vs [...])"
std::string batch_sentence(const Evidence& e) {
  const auto& d = e.d();
  std::string s = fmt::format("batch {} of {} at step {}{}: {} of {} samples differ", d.ref.call, loader_words(e),
                              d.ref.step, e.on_rank(), d.stats.mismatched, d.stats.numel);
  if (!d.ref_values.empty()) s += fmt::format(" (indices {} vs {})", values(d.ref_values), values(d.other_values));
  return s;
}

bool first_is(const Evidence& e, Kind kind) { return e.d().ref.kind == kind; }

// The fix for a generator that differed, in the order a script most likely drew from it.
struct GeneratorFix {
  const char* name;
  const char* fix;
};

// The record of `kind` in the same batch (step and call) as `m`, and whether it diverged.
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

P split_before_seed(const Evidence& e) {
  if (!first_is(e, Kind::indices) || e.d().ref.name != "split") return std::nullopt;
  return Proposal{
      "random_split",
      "random_split draws the split without a seed",
      fmt::format("{} holds a Subset whose dataset indices differ{} ({} of {}): random_split drew "
                  "another split in each run{}",
                  loader_words(e), e.on_rank(), e.d().stats.mismatched, e.d().stats.numel, rng_note(e.rngs)),
      "random_split(dataset, lengths, generator=torch.Generator().manual_seed(0)) (or seed torch before "
      "splitting)",
      "-",
      ""};
}

P worker_arrival_order(const Evidence& e) {
  if (!first_is(e, Kind::indices) || !e.loader || e.loader->workers == 0 || e.loader->in_order || !e.rngs.empty())
    return std::nullopt;
  return Proposal{"worker_arrival_order",
                  "batches arrive in the order the workers finish them (in_order=False)",
                  fmt::format("{}; the DataLoader has {} workers and in_order=False, and no RNG state differed: the "
                              "same batches, delivered in another order",
                              batch_sentence(e), e.loader->workers),
                  "DataLoader(..., in_order=True) (the default): batches are then returned in sampler order",
                  "--runs 5",
                  "--runs 5"};
}

P distributed_sampler(const Evidence& e) {
  if (!first_is(e, Kind::indices) || !e.loader || e.loader->sampler_short() != "DistributedSampler")
    return std::nullopt;
  return Proposal{"distributed_sampler",
                  "the DistributedSampler's order changes from run to run",
                  fmt::format("{}; its DistributedSampler draws the order from its seed and the epoch set with "
                              "set_epoch(){}",
                              batch_sentence(e), rng_note(e.rngs)),
                  "DistributedSampler(dataset, shuffle=True, seed=0) with the same fixed seed on every rank, and "
                  "sampler.set_epoch(epoch) with the epoch number at the start of every epoch",
                  "-",
                  ""};
}

P weighted_sampler(const Evidence& e) {
  if (!first_is(e, Kind::indices) || !e.loader ||
      (e.loader->sampler_short() != "WeightedRandomSampler" && !e.loader->replacement))
    return std::nullopt;
  const bool own = e.loader->sampler_generator;
  return Proposal{
      "weighted_sampler",
      fmt::format("the {} draws different samples (with replacement) in each run", e.loader->sampler_short()),
      fmt::format("{}; the {} draws samples with replacement from {}{}", batch_sentence(e), e.loader->sampler_short(),
                  own ? "its own generator"
                      : "torch's global RNG (the DataLoader's generator does not "
                        "reach a sampler the script gives)",
                  rng_note(e.rngs)),
      fmt::format("{}(..., generator=torch.Generator().manual_seed(0)){}", e.loader->sampler_short(),
                  own ? " with a fixed seed for its generator" : ", or torch.manual_seed(0) at the top"),
      "-",
      ""};
}

P user_sampler(const Evidence& e) {
  if (!first_is(e, Kind::indices) || !e.loader || !e.loader->user_sampler()) return std::nullopt;
  static const GeneratorFix kFixes[] = {
      {"numpy", "np.random.seed(0) at the top of the script, or give the sampler its own np.random.default_rng(0)"},
      {"random", "random.seed(0) at the top of the script, or give the sampler its own random.Random(0)"},
      {"torch",
       "torch.manual_seed(0) at the top of the script, or give the sampler a "
       "torch.Generator().manual_seed(0) to draw from"},
  };
  const std::string who = e.loader->sampler_short();
  for (const auto& g : kFixes) {
    if (!e.rngs.count(g.name)) continue;
    return Proposal{"user_sampler",
                    fmt::format("the script's {} draws the order from an unseeded {}", who, generator_label(g.name)),
                    fmt::format("{}; the order comes from the script's own {}, not from the DataLoader's generator{}",
                                batch_sentence(e), who, rng_note(e.rngs)),
                    g.fix,
                    "-",
                    ""};
  }
  return Proposal{"user_sampler",
                  fmt::format("the script's {} draws the order from a source that changes", who),
                  fmt::format("{}; the order comes from the script's own {}{}: it draws from a source reprocheck "
                              "does not record (os.urandom, the clock, a generator object of its own)",
                              batch_sentence(e), who, rng_note(e.rngs)),
                  fmt::format("seed whatever the {} draws from with a fixed value", who),
                  "-",
                  ""};
}

P unseeded_shuffle(const Evidence& e) {
  if (!first_is(e, Kind::indices)) return std::nullopt;
  const auto& d = e.d();
  const std::string what = d.same_multiset ? "same samples, different order" : "different samples";
  if (e.rngs.count("generator"))
    return Proposal{"unseeded_shuffle",
                    "the DataLoader's generator is seeded differently in each run",
                    fmt::format("{}{}", batch_sentence(e), rng_note(e.rngs)),
                    "DataLoader(..., generator=torch.Generator().manual_seed(0)) with a fixed seed (not one from the "
                    "clock or torch.seed())",
                    "-",
                    ""};
  return Proposal{"unseeded_shuffle",
                  fmt::format("the DataLoader shuffles without a seed: {}", what),
                  fmt::format("{}{}", batch_sentence(e), rng_note(e.rngs)),
                  "torch.manual_seed(0) at the top of the script, and DataLoader(..., shuffle=True, "
                  "generator=torch.Generator().manual_seed(0))",
                  "--seed 0",
                  ""};
}

P rng_first(const Evidence& e) {
  if (!first_is(e, Kind::rng_state)) return std::nullopt;
  const auto& d = e.d();
  const auto& c = *e.c;
  const bool distributed = d.ref.rank >= 0;
  const bool init_matched = std::any_of(c.ref_index.begin(), c.ref_index.end(), [&](const TensorMeta& m) {
    return m.phase == Phase::init && m.rank == d.ref.rank;
  });
  if (d.ref.name == "generator" || d.ref.name == "sampler.generator")
    return Proposal{"unseeded_shuffle",
                    fmt::format("{} is seeded differently in each run", generator_label(d.ref.name)),
                    fmt::format("{} state differed at step {}{} before any batch differed", generator_label(d.ref.name),
                                d.ref.step, e.on_rank()),
                    "seed it with a fixed value: generator=torch.Generator().manual_seed(0)",
                    "-",
                    ""};
  // Every run ended with the same torch seed (recorded), yet the state differed as the first step
  // began: a constant seed that came only after training had started (after the model's first call).
  const auto seed = c.ref_attributes.find(attr::kSeed);
  if (d.ref.name == "torch" && d.ref.step == 0 && init_matched && !distributed && seed != c.ref_attributes.end() &&
      !seed->second.empty() && !e.seed_differs())
    return Proposal{"rng_not_seeded",
                    "the torch RNG is seeded only after training has begun",
                    fmt::format("torch RNG state differed at the start of step 0 although everything recorded before "
                                "it matched, the initial parameters included, and every run ended with the same seed "
                                "({}): torch.manual_seed is called with a constant, but after the model's first call; "
                                "what ran before it drew from an unseeded generator",
                                seed->second),
                    "move torch.manual_seed(0) to the top of the script, before the data, the model and its first "
                    "call",
                    "--seed 0",
                    ""};
  if (d.ref.name == "torch" && (d.ref.step > 0 || (init_matched && !distributed)))
    return Proposal{"rng_reseeded",
                    "the torch RNG is reseeded during training (torch.seed() or a seed from the clock)",
                    fmt::format("torch RNG state differed at the start of step {}{} although everything recorded "
                                "before it matched{}: the script seeds the RNG again with a value that changes from "
                                "run to run",
                                d.ref.step, e.on_rank(), init_matched ? ", the initial parameters included" : ""),
                    "seed once, at the top: torch.manual_seed(0); drop torch.seed() or seeds taken from time.time() "
                    "inside the loop",
                    "--seed 0",
                    ""};
  const std::string fix = d.ref.name == "numpy"    ? "np.random.seed(0) at the top of the script"
                          : d.ref.name == "random" ? "random.seed(0) at the top of the script"
                                                   : "torch.manual_seed(0) at the top of the script";
  const std::string where_note =
      distributed ? fmt::format(
                        " on rank {} (its initial weights matched: built under a seed, or copied from rank 0 as DDP "
                        "does)",
                        d.ref.rank)
                  : "";
  return Proposal{"rng_not_seeded",
                  "an RNG the script uses is not seeded",
                  fmt::format("{} state differed at the start of step {}{}, before any other record of that rank "
                              "diverged",
                              generator_label(d.ref.name), d.ref.step, where_note),
                  distributed ? fix +
                                    ", on every rank (not only on rank 0), and the same wherever the script seeds "
                                    "again, with no seed from the clock on any rank"
                              : fix,
                  "--seed 0",
                  ""};
}

P hash_seed_order(const Evidence& e) {
  const auto& d = e.d();
  if (!(first_is(e, Kind::batch) || (e.script && first_is(e, Kind::input))) || !d.relabeling || d.same_multiset)
    return std::nullopt;
  bool indices_diverged = false;
  const TensorMeta* indices =
      first_is(e, Kind::batch) ? same_batch(*e.c, d.ref, Kind::indices, &indices_diverged) : nullptr;
  const std::string same = indices && !indices_diverged
                               ? fmt::format("the dataset indices of batch {} matched", d.ref.call)
                               : "no dataset indices were recorded for it";
  return Proposal{
      "hash_seed_order",
      "token ids depend on set or dict iteration order, which changes with Python's hash seed",
      fmt::format("{} differs at step {} but only by relabeling: the same elements are equal to each other "
                  "in both runs, under other ids ({}); {}",
                  d.ref.tensor_name(), d.ref.step,
                  d.ref_values.empty() ? "integer values"
                                       : fmt::format("{} vs {}", values(d.ref_values), values(d.other_values)),
                  same),
      "build the vocabulary from sorted(...) instead of iterating a set or dict of strings (or set "
      "PYTHONHASHSEED=0 for every run)",
      "--seed 0",
      "--vary env:PYTHONHASHSEED=0,1"};
}

P random_in_loop(const Evidence& e) {
  const auto& d = e.d();
  if (!e.script || !first_is(e, Kind::input)) return std::nullopt;
  bool loader_seen = false;
  for (const auto& r : e.c->ref_index) loader_seen |= r.kind == Kind::batch && r.step == d.ref.step;
  if (!loader_seen) return std::nullopt;
  return Proposal{"random_in_loop",
                  "code between the DataLoader and the model draws unseeded random numbers",
                  fmt::format("the model's input at step {}{} differs while the DataLoader's batch of that step "
                              "matched{}: mixup, cutmix or torch.randperm in the loop draws from an unseeded generator",
                              d.ref.step, e.on_rank(), rng_note(e.rngs)),
                  "seed the generator the loop draws from: g = torch.Generator().manual_seed(0) and "
                  "torch.randperm(n, generator=g), or seed the global RNG with torch.manual_seed(0)",
                  "--seed 0",
                  ""};
}

// A training script's model input (or loss target) that is the first record to differ at a step
// where no DataLoader made a batch: the script builds its batches itself, from a source the seeds do
// not reach. A layer selection cannot localize it; the fix is where the batch is made.
P script_batch(const Evidence& e) {
  const auto& d = e.d();
  if (!e.script || !(first_is(e, Kind::input) || first_is(e, Kind::target)) || e.seed_differs()) return std::nullopt;
  for (const auto& r : e.c->ref_index)
    if (r.kind == Kind::batch && r.step == d.ref.step) return std::nullopt;  // random_in_loop's case
  return Proposal{"script_batch",
                  "the script builds its batches from a source the seeds do not reach",
                  fmt::format("the model's {} at step {}{} is the first record that differs, no DataLoader "
                              "made a batch at that step, and every record before it matched{}: the script builds "
                              "the batch itself (a numpy Generator, random.Random, a file or a list read in "
                              "an unsorted order, the clock)",
                              d.ref.tensor_name(), d.ref.step, e.on_rank(), rng_note(e.rngs)),
                  "seed what builds the batches: np.random.default_rng(0) (np.random.seed(0) does not seed the "
                  "Generator API), random.Random(0), torch.Generator().manual_seed(0); read files and lists in "
                  "sorted(...) order; nothing from the clock or the OS",
                  "-",
                  ""};
}

std::string batch_values_sentence(const Evidence& e, std::string* same) {
  const auto& d = e.d();
  bool indices_diverged = false;
  const TensorMeta* indices = same_batch(*e.c, d.ref, Kind::indices, &indices_diverged);
  *same = indices && !indices_diverged ? fmt::format("the dataset indices of batch {} matched", d.ref.call)
                                       : "no dataset indices were recorded for it";
  return fmt::format("batch {} of {} at step {}{}: {} differs ({} of {} values)", d.ref.call, loader_words(e),
                     d.ref.step, e.on_rank(), d.ref.tensor_name(), d.stats.mismatched, d.stats.numel);
}

P worker_seeding(const Evidence& e) {
  if (!first_is(e, Kind::batch) || !e.loader || e.loader->workers == 0) return std::nullopt;
  std::string same;
  const std::string what = batch_values_sentence(e, &same);
  return Proposal{"worker_seeding",
                  "the DataLoader's workers draw augmentation from unseeded seeds",
                  fmt::format("{} while {}; the DataLoader has {} workers, each seeded from a base seed drawn from the "
                              "torch RNG{}",
                              what, same, e.loader->workers, rng_note(e.rngs)),
                  "def seed_worker(worker_id): s = torch.initial_seed() % 2**32; numpy.random.seed(s); "
                  "random.seed(s); then DataLoader(..., worker_init_fn=seed_worker, "
                  "generator=torch.Generator().manual_seed(0))",
                  "--seed 0",
                  ""};
}

P augmentation(const Evidence& e) {
  if (!first_is(e, Kind::batch)) return std::nullopt;
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
  std::string same;
  const std::string what = batch_values_sentence(e, &same);
  for (const auto& g : kGenerators) {
    auto it = e.rngs.find(g.name);
    if (it == e.rngs.end()) continue;
    return Proposal{g.cause,
                    g.title,
                    fmt::format("{} while {}; {} state differed at the start of step {}", what, same,
                                generator_label(g.name), it->second),
                    g.fix,
                    "--seed 0",
                    ""};
  }
  return Proposal{"data_values",
                  "the data differs, with no RNG state to blame",
                  fmt::format("{} while {}{}: the dataset itself or its transform changes between runs (file order, "
                              "a random source reprocheck does not record, such as os.urandom or a generator object)",
                              what, same, rng_note(e.rngs)),
                  "-",
                  "--ops",
                  "--runs 3 --keep runs"};
}

}  // namespace

const std::vector<RuleRow>& data_rules() {
  static const std::vector<RuleRow> rows = {
      {"random_split", "data", split_before_seed},
      {"worker_arrival_order", "data", worker_arrival_order},
      {"distributed_sampler", "data", distributed_sampler},
      {"weighted_sampler", "data", weighted_sampler},
      {"user_sampler", "data", user_sampler},
      {"unseeded_shuffle", "data", unseeded_shuffle},
      {"rng_not_seeded", "data", rng_first},
      {"hash_seed_order", "data", hash_seed_order},
      {"random_in_loop", "data", random_in_loop},
      {"script_batch", "data", script_batch},
      {"worker_seeding", "data", worker_seeding},
      {"augmentation", "data", augmentation},
  };
  return rows;
}

}  // namespace reprocheck::hints_detail
