// Child processes for the runner's workers (POSIX: subprocess_posix.cpp).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace reprocheck {

struct ExitStatus {
  bool exited = false;  // exited normally with `code`; else killed by `signal`
  int code = 0;
  int signal = 0;
  bool timed_out = false;  // killed by the runner after its timeout
  bool ok() const { return exited && code == 0; }
  // "exit code 2", "killed by signal 9 (SIGKILL)", "timed out after 10 s (killed)".
  std::string describe(double timeout_s = 0) const;
};

// A started child process. The child runs in its own process group (so a terminal's Ctrl-C
// reaches only the parent, which stops its children) and is killed if the parent dies.
class Process {
 public:
  // Starts argv[0] (searched on PATH when it has no slash) with this process's environment plus
  // `env`, and stdout and stderr written to the given files, in the folder `cwd` ("" : this
  // process's). Throws RunError.
  Process(const std::vector<std::string>& argv, const std::string& stdout_path, const std::string& stderr_path,
          const std::vector<std::pair<std::string, std::string>>& env = {}, const std::string& cwd = "");
  ~Process();  // kills and reaps a child still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Non-blocking: the exit status once the child has ended.
  std::optional<ExitStatus> poll();
  // SIGTERM, then SIGKILL after `grace_s`; reaps the child.
  ExitStatus stop(double grace_s = 2.0);

 private:
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

// A TCP port on the loopback interface that was free a moment ago (0 when none could be found).
int free_tcp_port();

// The path of the running executable (/proc/self/exe).
std::string self_executable();

// The last `lines` lines of a text file.
std::string tail_lines(const std::string& path, size_t lines);

}  // namespace reprocheck
