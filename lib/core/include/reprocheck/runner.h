// The runner: N fresh worker processes that each record the same seeded run (or one knob's
// values, with --vary), into a private temporary folder.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "reprocheck/files.h"
#include "reprocheck/run_options.h"
#include "reprocheck/worker.h"

namespace reprocheck {

struct RunnerOptions {
  RunOptions run;
  int runs = 2;
  int min_runs = 2;  // 1 when the runs are compared with a golden, or one run records it
  int jobs = 1;
  double timeout_s = 0;  // per worker; 0: none
  std::string keep_dir;  // keep() moves the dumps there
  bool overwrite = false;
  Vary vary;  // one run per value; overrides `runs`
};

struct WorkerEvent {
  enum class Kind { started, finished, tick } kind;
  int index = 0;  // 0-based run index
  int runs = 0;
  double seconds = 0;  // since the worker started
  uint64_t dump_bytes = 0;
  std::string label;                  // "threads=2" for a varied run, else ""
  std::vector<std::string> messages;  // finished: distinct lines the run wrote to stderr (warnings)
};
using ProgressFn = std::function<void(const WorkerEvent&)>;

class Runner {
 public:
  // Throws UsageError for bad counts, InputError for a --keep folder that cannot take the dumps.
  Runner(RunnerOptions o, std::shared_ptr<const WorkerLauncher> launcher);
  ~Runner();  // stops workers still running and removes the temporary folder
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Runs every worker; returns the dump paths, run 0 first. Throws RunError when a worker
  // fails, InputError when it rejected the user's input, Interrupted on Ctrl-C.
  // `adjust`, when given, changes each run's options (run index given; the capture ladder: hashes
  // only, or the seeds a first pass drew).
  using Adjust = std::function<void(RunOptions&, int)>;
  std::vector<std::string> run(const ProgressFn& progress, const Adjust& adjust = {});

  // Runs the runs `indices` again with `adjust` applied (the ladder's second pass); returns a path
  // per run index, "" for the runs not run again.
  std::vector<std::string> rerun(const std::vector<int>& indices, const Adjust& adjust, const ProgressFn& progress);

  // Runs runs 1..N-1 again, each replaying `keys` from `reference`; returns the new dumps in run
  // order (run 0's is `reference` itself).
  std::vector<std::string> rerun_with_replay(const std::string& reference, const std::vector<std::string>& keys,
                                             const ProgressFn& progress);

  // Moves the dumps of run() into keep_dir as run-N.h5; returns their new paths.
  std::vector<std::string> keep();
  const std::string& temp_dir() const { return temp_dir_; }
  int runs() const { return o_.runs; }

 private:
  std::vector<std::string> run_workers(const std::vector<int>& indices, const std::string& replay_dump,
                                       const std::string& replay_keys, const std::string& suffix,
                                       const ProgressFn& progress, const Adjust& adjust = {});
  RunnerOptions o_;
  std::shared_ptr<const WorkerLauncher> launcher_;
  std::string temp_dir_;
  int replays_ = 0, reruns_ = 0;
  std::vector<std::string> dumps_;
  std::unique_ptr<files::DestinationLock> keep_lock_;
};

}  // namespace reprocheck
