// The runner: N fresh worker processes that each record the same seeded run (or one knob's
// values, with --vary), into a private temporary folder.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/run.h"

namespace reprocheck {

struct RunnerOptions {
  RunOptions run;
  int runs = 2;
  int jobs = 1;
  double timeout_s = 0;  // per worker; 0: none
  std::string keep_dir;  // move the dumps there when done ("" removes them)
  bool overwrite = false;
  std::string vary_knob;                 // threads, device, deterministic, benchmark, seed, data-seed, mode
  std::vector<std::string> vary_values;  // one per run
  std::string executable;                // the reprocheck binary the workers run
};

// Parses "--vary KNOB=V1,V2,..." into the options. Throws UsageError.
void parse_vary(const std::string& spec, RunnerOptions& o);
// `base` with the knob set to `value`. Throws UsageError for an unknown knob or a bad value.
RunOptions with_knob(const RunOptions& base, const std::string& knob, const std::string& value);

struct WorkerEvent {
  enum class Kind { started, finished, tick } kind;
  int index = 0;  // 0-based run index
  int runs = 0;
  double seconds = 0;  // since the worker started
  uint64_t dump_bytes = 0;
  std::string label;                  // "threads=2" for a varied run, else ""
  std::vector<std::string> messages;  // finished: distinct lines the run wrote to stderr (warnings)
};

class Runner {
 public:
  explicit Runner(RunnerOptions o);
  ~Runner();  // stops workers still running and removes the temporary folder
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Runs every worker; returns the dump paths, run 0 first. Throws RunError when a worker
  // fails (InputError when it failed on the user's input), Interrupted on Ctrl-C.
  std::vector<std::string> run(const std::function<void(const WorkerEvent&)>& progress);

  // Runs runs 1..N-1 again, each replaying `keys` from `reference` (see RecordTarget); returns
  // the new dumps in run order (run 0's is `reference` itself).
  std::vector<std::string> rerun_with_replay(const std::string& reference, const std::vector<std::string>& keys,
                                             const std::function<void(const WorkerEvent&)>& progress);

  // Moves the dumps into keep_dir; returns their new paths.
  std::vector<std::string> keep();
  const std::string& temp_dir() const { return temp_dir_; }

 private:
  std::vector<std::string> run_workers(const std::vector<int>& indices, const std::vector<std::string>& extra,
                                       const std::string& suffix,
                                       const std::function<void(const WorkerEvent&)>& progress);
  RunnerOptions o_;
  std::string temp_dir_;
  int replays_ = 0;
  std::vector<std::string> dumps_;
};

}  // namespace reprocheck

namespace reprocheck {

// --isolate: every independent source of divergence in the step of the first one. Each found
// source is replayed (its reference value substituted) in the other runs, which are run again,
// until the runs agree through that step.
struct Isolation {
  std::vector<TensorDiff> sources;  // in the order found (execution order)
  int step = -1;                    // the step searched
  bool agreed = false;              // the runs agreed through `step` once every source was replayed
  std::string note;                 // why the search stopped early, if it did
  Comparison last;                  // the comparison after the last replay
};

Isolation isolate(Runner& runner, const std::vector<std::string>& dumps, const Comparison& first,
                  const CompareOptions& options, const std::function<void(const WorkerEvent&)>& progress,
                  int max_sources = 16);

}  // namespace reprocheck
