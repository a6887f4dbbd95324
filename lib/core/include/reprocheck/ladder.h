// The check: N runs compared, through the capture ladder (docs/capture-ladder.md). Pass 1 records
// hashes only; when every hash agrees the check is done. Otherwise pass 2 captures the reference
// and the runs that differed in full, up to the step of the first difference, and the report's
// statistics come from it. A golden (--baseline) takes the reference's place.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/runner.h"

namespace reprocheck {

struct CheckOptions {
  CompareOptions compare;
  bool full = false;         // one pass, full dumps (--full)
  bool hashes_only = false;  // one pass, hashes only, never a second (--hashes-only)
  std::string baseline;      // a golden dump: the reference, and the runner's runs are compared with it
  // Move the dumps into the runner's --keep folder before comparing, so that the report names the
  // kept files. Only with one pass (`full` or `hashes_only`): a kept dump is a whole run.
  bool keep = false;
  std::string drill = "auto";  // pass 3: none, auto, full (DrillDown)
};

struct CheckResult {
  Comparison comparison;
  std::vector<std::string> dumps;  // the runner's pass-1 (or only) dumps, run 0 first (kept ones with `keep`)
  // Keeping the dumps failed (a full disk): why. The check went on with the runs' own dumps, and
  // nothing was kept; the tool reports the verdict, then this, and exits 2.
  std::string keep_error;
};

// Throws what Runner::run and compare_dumps throw.
CheckResult run_check(Runner& runner, const CheckOptions& options, const ProgressFn& progress);

// Pass 1's comparison (hashes) with pass 2's judgement of the records of `window` (keys): each
// record pass 2 captured with data on both sides takes pass 2's status and statistics (or leaves
// the differences when it matched); every other record, and every count, stays pass 1's. A pair
// whose first divergence matched when captured again keeps pass 1's hashes and is listed as
// intermittent. `runs` maps pass 2's pair positions to pass 1's run numbers. Pure.
Comparison merge_passes(Comparison pass1, const Comparison& pass2, const std::vector<int>& runs,
                        const std::set<std::string>& window, int last_step);

}  // namespace reprocheck
