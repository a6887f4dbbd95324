// How the runner starts a run: a WorkerLauncher turns a job (run options, dump path, replay) into
// a command. The TorchScript front end's worker is `reprocheck record`; tests use a fake one; other
// front ends bring their own.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "reprocheck/protocol.h"
#include "reprocheck/run_options.h"

namespace reprocheck {

struct WorkerJob {
  int index = 0;       // 0-based run index
  RunOptions options;  // with the --vary knob applied
  std::string dump;    // where the worker writes its dump
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
  // After the worker exited successfully: makes sure job.dump exists (the runner's contract).
  // Throws InputError when the worker wrote none, saying why.
  virtual void collect(const WorkerJob& job) const;
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

// The Python front end's worker: the user's own command (`reprocheck run -- COMMAND`), with the
// capture package switched on through the environment (docs/python.md):
//   REPROCHECK_CAPTURE       the dump to write (each rank of a distributed run writes DUMP.rankR.h5,
//                            merged into DUMP by collect())
//   REPROCHECK_RUN_OPTIONS   the run options as JSON (steps, layers, ops, threads, deterministic, ...)
//   REPROCHECK_REPLAY, REPROCHECK_REPLAY_KEYS   replay for --isolate
// and the options' env settings (--vary env:NAME=...).
class ScriptLauncher : public WorkerLauncher {
 public:
  // `install_hint`: the command that installs the capture package, for the error when it is missing.
  explicit ScriptLauncher(std::string install_hint) : install_hint_(std::move(install_hint)) {}
  Command command(const WorkerJob& job) const override;
  bool can_replay() const override { return true; }
  void collect(const WorkerJob& job) const override;

 private:
  std::string install_hint_;
};

inline constexpr const char* kCaptureEnv = env::kCapture;
inline constexpr const char* kRunOptionsEnv = env::kRunOptions;
inline constexpr const char* kReplayEnv = env::kReplay;
inline constexpr const char* kReplayKeysEnv = env::kReplayKeys;

}  // namespace reprocheck
