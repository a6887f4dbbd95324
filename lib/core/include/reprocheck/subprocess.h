// Child processes (POSIX: subprocess_posix.cpp) and the one pool that runs them: the check's runs
// and the audit's cells.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "reprocheck/error.h"

namespace reprocheck {

struct ExitStatus {
  bool exited = false;  // exited normally with `code`; else killed by `signal`
  int code = 0;
  int signal = 0;
  bool timed_out = false;  // killed by the runner after its timeout
  bool ok() const { return exited && code == 0; }
  // "exit code 2", "killed by signal 9 (SIGKILL)", "timed out after 10 s (killed)".
  std::string describe(double timeout_s = 0) const;
  // The shell's convention: the exit code, or 128 + the signal.
  int shell_code() const { return exited ? code : 128 + signal; }
};

// A command that cannot be run at all: no such program, not executable, a bad interpreter.
// The user's input (their command, or an installation to fix): exit code 2.
class CommandError : public InputError {
 public:
  using InputError::InputError;
};

// The last bytes a process wrote, bounded: what it said last survives even when the disk it would
// have been logged to is full.
class OutputTail {
 public:
  explicit OutputTail(size_t limit = 64 << 10) : limit_(limit) {}
  void append(const char* data, size_t n);
  const std::string& text() const { return text_; }
  // The last `n` lines, control characters and invalid UTF-8 escaped (safe for a terminal).
  std::string last_lines(size_t n) const;
  bool truncated() const { return truncated_; }

 private:
  size_t limit_;
  std::string text_;
  bool truncated_ = false;
};

struct ProcessSpec {
  std::vector<std::string> argv;                         // argv[0] is searched on PATH when it has no slash
  std::vector<std::pair<std::string, std::string>> env;  // added to this process's environment
  std::string cwd;                                       // "" : this process's folder
};

// A started child process. It runs in its own process group (a terminal's Ctrl-C reaches only the
// parent, which stops its children), is killed if the parent dies, and when it ends (by itself,
// by stop(), or with this object) every process left in its group ends too: a script's forked
// helpers never outlive the run. Its stdout and stderr come back through pipes into bounded tails
// in memory.
class Process {
 public:
  // Throws CommandError when the program cannot be executed (the reason from the child's exec),
  // RunError when no process can be started.
  explicit Process(const ProcessSpec& spec);
  ~Process();  // stops a child still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Non-blocking: reads what the child wrote; the exit status once the child has ended.
  std::optional<ExitStatus> poll();
  // SIGTERM to the group, then SIGKILL after `grace_s`; reaps the child.
  ExitStatus stop(double grace_s = 2.0);
  // The open output pipes (for waiting on them with poll(2)).
  std::vector<int> fds() const;
  const OutputTail& stdout_tail() const { return out_; }
  const OutputTail& stderr_tail() const { return err_; }

 private:
  void drain();
  void end_group();
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  OutputTail out_, err_;
  std::optional<ExitStatus> status_;
};

// Runs commands, `jobs` at a time, each with an optional deadline; Ctrl-C stops them all.
class ProcessPool {
 public:
  struct Options {
    int jobs = 1;
    double timeout_s = 0;  // per process; 0: none
    double grace_s = 1.0;  // between SIGTERM and SIGKILL when stopping
  };
  struct Finished {
    size_t index = 0;
    ExitStatus status;  // status.timed_out when the deadline stopped it
    double seconds = 0;
    const Process* process = nullptr;  // its output tails
  };
  struct Callbacks {
    std::function<ProcessSpec(size_t)> spec;  // the command of task i
    // When task i could not be started (CommandError): its error. Default: rethrow.
    std::function<void(size_t, const CommandError&)> start_failed;
    std::function<void(size_t)> started;
    // Task i ended. May throw: the pool then stops every other process and rethrows.
    std::function<void(const Finished&)> finished;
    // About every `tick_s` seconds: the running tasks and their elapsed seconds.
    std::function<void(const std::vector<std::pair<size_t, double>>&)> tick;
    double tick_s = 0.1;
  };

  explicit ProcessPool(Options o) : o_(o) {}
  // Runs tasks 0..count-1 in order, at most `jobs` at once. Throws Interrupted on Ctrl-C (after
  // stopping every running process), or what a callback threw.
  void run(size_t count, const Callbacks& cb);

 private:
  Options o_;
};

// Runs `body` in a forked child, for code that may crash or hang on hostile input (HDF5 on a
// damaged file): "" from `body` is success, any other text its error. The child's message is read
// while the deadline runs, so a child that hangs with the pipe open is stopped at the deadline
// like any other. Ctrl-C stops it and throws Interrupted.
struct IsolatedOutcome {
  enum class Kind { ok, failed, crashed, timed_out } kind = Kind::ok;
  std::string message;  // failed: the body's error
  int signal = 0;       // crashed: the signal that ended it
};
IsolatedOutcome run_isolated(const std::function<std::string()>& body, double timeout_s);

// Runs one command to its end (or its deadline), for helpers that need its output: the process,
// ended, with its tails. Throws CommandError when it cannot be started.
std::unique_ptr<Process> run_to_end(const ProcessSpec& spec, double timeout_s, ExitStatus* status);

// A TCP port on the loopback interface that was free a moment ago (0 when none could be found).
int free_tcp_port();

// The path of the running executable (/proc/self/exe).
std::string self_executable();

}  // namespace reprocheck
