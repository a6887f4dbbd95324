// How the runner starts a run: a WorkerLauncher turns a job (run options, dump path, replay) into
// a command. The TorchScript front end's worker is `reprocheck record`; tests use a fake one; other
// front ends bring their own.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "reprocheck/run_options.h"

namespace reprocheck {

struct WorkerJob {
  int index = 0;        // 0-based run index
  RunOptions options;   // with the --vary knob applied
  std::string dump;     // where the worker writes its dump
  // Replay (--isolate): the tensors whose keys are listed in `replay_keys_file`, one per line,
  // take their values from `replay_dump`. Both empty for an ordinary run.
  std::string replay_dump, replay_keys_file;
};

struct Command {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;  // added to the runner's environment
};

class WorkerLauncher {
 public:
  virtual ~WorkerLauncher() = default;
  virtual Command command(const WorkerJob& job) const = 0;
  // Whether the worker can replay tensors (--isolate).
  virtual bool can_replay() const = 0;
};

// The TorchScript front end's worker: `EXECUTABLE record MODEL [options] -o DUMP`.
class RecordLauncher : public WorkerLauncher {
 public:
  explicit RecordLauncher(std::string executable) : executable_(std::move(executable)) {}
  Command command(const WorkerJob& job) const override;
  bool can_replay() const override { return true; }

 private:
  std::string executable_;
};

}  // namespace reprocheck
