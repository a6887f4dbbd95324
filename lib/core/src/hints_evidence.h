// Evidence for the cause hints, and the rule table they are chosen from. Not a public header.
//
// A rule is a pure function of the Evidence: it returns a hint whose evidence line states the facts
// it was chosen on, and whose fix acts on exactly those facts (a fix never contradicts its own
// evidence: when numpy's state is what differed, the fix is about numpy).
#pragma once

#include <fmt/format.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "reprocheck/hints.h"
#include "reprocheck/layers.h"

namespace reprocheck::hints_detail {

inline bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// How a training script's DataLoader was set up (the dump's `data_loaders` attribute, by the layer
// of its records; older dumps put workers and in_order in the records' type).
struct Loader {
  std::string name;  // the script's variable, when found ("train_loader")
  int workers = 0;
  bool in_order = true;
  std::string sampler;             // qualified class of the sampler ("torch.utils.data.sampler.RandomSampler")
  std::string batch_sampler;       // qualified class of a batch_sampler the script gave ("" for torch's own)
  bool generator = false;          // DataLoader(generator=...)
  bool sampler_generator = false;  // the sampler has a generator of its own
  bool replacement = false;        // the sampler draws with replacement
  bool subset = false;             // the dataset is a Subset (random_split)
  bool user_sampler() const;       // a sampler or batch sampler of the script's own
  std::string sampler_short() const;
};

struct Evidence {
  const Comparison* c = nullptr;
  const PairComparison* pair = nullptr;
  const TensorDiff* first = nullptr;     // pass 3's first divergent op when it found one, else `headline`
  const TensorDiff* headline = nullptr;  // the check's first divergent record
  const TensorDiff& d() const { return *first; }
  std::string device;           // of the reference run
  RunOptions options;           // the reference run's
  std::set<std::string> knobs;  // run options that differ
  // Generators whose state differed in the first divergence's rank, with the first step each did.
  std::map<std::string, int> rngs;
  std::optional<Loader> loader;  // of the first record, when it is a DataLoader's
  bool script = false;           // a training script (reprocheck run)
  // Pass 3's first divergent op, when it found one: then `first` is that op's record.
  const DrillDown* drill = nullptr;
  LayerCategories categories;

  std::string knob(const std::string& k) const;
  bool differs(const std::string& k) const { return knobs.count(k) > 0; }
  bool seed_differs() const { return differs("seed_value") || differs("seed"); }
  bool backward() const { return d().ref.phase == Phase::backward || d().ref.phase == Phase::param_grad; }
  bool cuda() const { return starts_with(device, "cuda"); }
  bool source() const { return d().inputs_identical.value_or(false); }
  // An op's record (pass 3, --ops) by its op, a layer's by its type.
  bool is(const TensorMeta& m, LayerCategory c) const {
    if (m.layer.find('#') != std::string::npos) return category_of_ops({m.layer_type}) == c;
    return categories.is(m.layer_type, c);
  }
  bool random_op() const;
  // Pass 3's first divergent op had inputs that differed although every op before it matched.
  bool outside_input() const { return drill && !drill->diff.inputs_identical.value_or(true); }
  // Whether generator `name`'s recorded state differed at the start of `step` or before.
  bool rng_differed_by(const std::string& name, int step) const {
    auto it = rngs.find(name);
    return it != rngs.end() && it->second <= step;
  }  // the first record is a random op's output (op-level capture)
  // The rank of a distributed run the first divergence is in, as words: " on rank 1" ("" for one process).
  std::string on_rank() const;
};

Evidence gather(const Comparison& c);

// A hint in the making: `run_flag` is the `reprocheck run` flag that confirms it for a training
// script; `test_flag` the flag for a TorchScript check ("" when rerunning is the test).
struct Proposal {
  std::string cause, title, evidence, fix_python, fix_flag, run_flag;
};
using Rule = std::function<std::optional<Proposal>(const Evidence&)>;

struct RuleRow {
  const char* cause;
  // Rules of one group exclude each other: only the first that applies is listed.
  const char* group;
  Rule rule;
};

// The hints of a check against a golden (hints_change.cpp): what changed since it was recorded.
std::vector<Hint> explain_change(const Comparison& c);

// The rules of a training script's data pipeline and RNG records, in order (hints_data.cpp).
const std::vector<RuleRow>& data_rules();
// The rules of the model, its layers and the run options (hints.cpp).
const std::vector<RuleRow>& model_rules();

// Pass 3's first divergent op read a value made outside torch's ops; a parameter or optimizer state
// after the step is the first record to differ (hints_update.cpp).
std::optional<Proposal> outside_input(const Evidence& e);
std::optional<Proposal> step_update(const Evidence& e);

inline std::string where(const TensorDiff& d) {
  std::string name = d.ref.tensor_name();
  std::string type =
      d.ref.layer_type.empty() || d.ref.is_loop_tensor() ? "" : fmt::format(" ({})", short_type_name(d.ref.layer_type));
  return fmt::format("{}{} at step {} ({})", name, type, d.ref.step, to_string(d.ref.phase));
}

// Bit of evidence naming the differing run options, e.g. "; the runs differ in threads (1 vs 2)".
std::string knob_note(const Evidence& e, std::initializer_list<const char*> keys);

std::string generator_label(const std::string& name);
// "; numpy global RNG state differed at the start of step 0", or "; no RNG state differed".
std::string rng_note(const std::map<std::string, int>& rngs);

}  // namespace reprocheck::hints_detail
