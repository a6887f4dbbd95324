// From every option's value (Settings, options.h) to what the runner, the check and the comparison
// take; the rules that relate options to each other.
#pragma once

#include "reprocheck/compare.h"
#include "reprocheck/ladder.h"
#include "reprocheck/options.h"
#include "reprocheck/runner.h"

namespace reprocheck {

// What the command line said beyond the values: which options were given.
struct Given {
  bool runs = false, tolerance = false;
};

// Checks the options that depend on each other (--full with --hashes-only, --baseline with --vary,
// ...) and settles their consequences (--keep and --isolate capture full dumps; a golden check
// runs one fresh run unless --runs says otherwise). Throws UsageError or InputError.
void settle(Settings& s, const Given& given);

RunnerOptions runner_options(const Settings& s);
CheckOptions check_options(const Settings& s);
CompareOptions compare_options(const Settings& s, const Given& given);

}  // namespace reprocheck
