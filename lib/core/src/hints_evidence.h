// Evidence for the cause hints, shared by hints.cpp (the model's layers and settings) and
// hints_data.cpp (a training script's data pipeline and RNGs). Not a public header.
#pragma once

#include <fmt/format.h>

#include <set>
#include <string>
#include <vector>

#include "reprocheck/hints.h"
#include "reprocheck/layers.h"

namespace reprocheck::hints_detail {

inline bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

inline bool is_conv(const TensorMeta& m) { return is_category(m.layer_type, LayerCategory::conv); }
inline bool is_dropout(const TensorMeta& m) { return is_category(m.layer_type, LayerCategory::dropout); }
inline bool is_bn(const TensorMeta& m) { return is_category(m.layer_type, LayerCategory::batchnorm); }

struct Evidence {
  const TensorDiff* first = nullptr;
  const PairComparison* pair = nullptr;
  std::string device;  // of the reference run
  std::string layers;  // the layer selection
  bool ops = false;
  std::set<std::string> knobs;  // run options that differ
  std::string knob(const std::string& k) const {
    for (const auto& [name, v] : pair->knob_diffs)
      if (name == k) return v;
    return "";
  }
  bool differs(const std::string& k) const { return knobs.count(k) > 0; }
  bool backward() const { return first->ref.phase == Phase::backward || first->ref.phase == Phase::param_grad; }
  bool cuda() const { return starts_with(device, "cuda"); }
  bool source() const { return first->inputs_identical.value_or(false); }
};

inline std::string where(const TensorDiff& d) {
  std::string name = d.ref.tensor_name();
  std::string type = d.ref.layer_type.empty() ? "" : fmt::format(" ({})", short_type_name(d.ref.layer_type));
  return fmt::format("{}{} at step {} ({})", name, type, d.ref.step, to_string(d.ref.phase));
}

// Bit of evidence naming the differing run options, e.g. "; the runs differ in threads (1 vs 2)".
inline std::string knob_note(const Evidence& e, std::initializer_list<const char*> keys) {
  std::vector<std::string> parts;
  for (const char* k : keys)
    if (e.differs(k)) parts.push_back(fmt::format("{} ({})", k, e.knob(k)));
  if (parts.empty()) return "";
  std::string out = "; the runs differ in ";
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return out;
}

// `run_flag`: for a training script, the flags of `reprocheck run` that confirm the hint (kept in
// test_it until explain() writes the whole command there).
struct Hints {
  std::vector<Hint> list;
  void add(const char* cause, const char* title, std::string evidence, std::string fix_python, std::string fix_flag,
           std::string run_flag = "") {
    for (const auto& x : list)
      if (x.cause == cause) return;
    list.push_back({cause, title, std::move(evidence), std::move(fix_python), std::move(fix_flag), std::move(run_flag)});
  }
};

// Hints from a training script's data pipeline and RNG records (the Python front end).
void explain_data(const Comparison& c, const Evidence& e, Hints& hints);

}  // namespace reprocheck::hints_detail
