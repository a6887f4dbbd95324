// --isolate: every independent source of divergence in the step of the first one. Each found
// source is replayed (its reference value substituted) in the other runs, which are run again,
// until the runs agree through that step.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "reprocheck/compare.h"

namespace reprocheck {

struct Isolation {
  std::vector<TensorDiff> sources;  // in the order found (execution order)
  int step = -1;                    // the step searched
  bool agreed = false;              // the runs agreed through `step` once every source was replayed
  std::string note;                 // why the search stopped early, if it did
  Comparison last;                  // the comparison after the last replay
};

// Runs the other runs again replaying the tensors with these keys from the reference run; returns
// the dumps to compare, the reference first (Runner::rerun_with_replay).
using ReplayFn = std::function<std::vector<std::string>(const std::vector<std::string>& keys)>;

Isolation isolate(const Comparison& first, const CompareOptions& options, const ReplayFn& replay, int max_sources = 16);

}  // namespace reprocheck
