// Pass 3, the drill-down (docs/capture-ladder.md): when the first divergence is a layer's output, a
// gradient or a parameter gradient, the reference and the run that differed run again through that
// step with every op of it captured, forward and backward, and the first op whose output differs
// while every op before it matched is named with its module and the user's source line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "reprocheck/compare.h"

namespace reprocheck {

// What pass 3 captures: the step, the module whose ops ("" every op of the step), and why.
struct DrillPlan {
  int step = 0;
  std::string scope;
  std::string why;
  int other_run = 1;
  int rank = -1;  // the process (rank of a distributed run) whose ops are searched
};

// A record's layer within its process: a merged distributed dump prefixes it with "rankR/".
std::string layer_in_process(const TensorMeta& m);

// The plan's scope is a module that ran: it has a forward record in the plan's rank of `index` (a
// parameter of no model is named after its optimizer, which runs no op).
bool ran_forward(const std::vector<TensorMeta>& index, const DrillPlan& plan);

// The plan for the headline divergence of `c` with --drill `mode` (none, auto, full); nullopt when
// pass 3 has nothing to add: no divergence, one already at op granularity, or one in the data, the
// RNG states or the initial weights (their records name the cause), or, in a TorchScript check, in
// the optimizer's update (its C++ ops are not the graph's). A training script's update is drilled.
std::optional<DrillPlan> plan_drill(const Comparison& c, const std::string& mode);

// The plan for drilling into the divergent record `d` of the pair with run `other_run`;
// `update_ops`: the front end's op capture sees the optimizer's update (a training script's).
std::optional<DrillPlan> plan_for(const TensorDiff& d, int other_run, const std::string& mode, bool update_ops);

// Pass 3's finding from the comparison of its two runs (`c3`, step `plan.step` captured op by op):
// the first divergent op record, with its source from the reference's `op_sources` attribute. When a
// record before the step's ops diverged (the runs took another course this time), nothing is found
// and `earlier` holds that record.
DrillDown read_drill(const Comparison& c3, const DrillPlan& plan, const std::string& mode);

}  // namespace reprocheck
