#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <deque>
#include <fstream>
#include <thread>

#include "reprocheck/error.h"
#include "reprocheck/subprocess.h"

namespace reprocheck {

std::string ExitStatus::describe(double timeout_s) const {
  if (timed_out) return fmt::format("timed out after {:g} s (killed)", timeout_s);
  if (exited) return fmt::format("exit code {}", code);
  const char* name = sigabbrev_np(signal);
  std::string note = signal == SIGKILL ? ": killed from outside, often by the kernel when memory ran out" : "";
  return fmt::format("killed by signal {} (SIG{}{})", signal, name ? name : "?", note);
}

namespace {

ExitStatus from_wait(int st) {
  ExitStatus s;
  if (WIFEXITED(st)) {
    s.exited = true;
    s.code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    s.signal = WTERMSIG(st);
  }
  return s;
}

// The program to execute: `name` itself when it has a slash, else its first executable match on
// PATH (resolved before fork: the child only calls execve).
std::string resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  throw RunError(fmt::format("cannot start '{}': no such program on PATH; check the command", name));
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, const std::string& out, const std::string& err,
                 const std::vector<std::pair<std::string, std::string>>& env, const std::string& cwd) {
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are made (the parent has threads).
  if (argv.empty()) throw RunError("cannot start a worker: empty command");
  const std::string program = resolve_program(argv[0]);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) vars[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : vars) env_strings.push_back(k + "=" + v);
  std::vector<char*> cenv;
  for (auto& s : env_strings) cenv.push_back(s.data());
  cenv.push_back(nullptr);
  int fo = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int fe = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fo < 0 || fe < 0 || devnull < 0) {
    int e = errno;
    if (fo >= 0) close(fo);
    if (fe >= 0) close(fe);
    if (devnull >= 0) close(devnull);
    throw RunError(fmt::format("cannot start a worker: cannot open its log files in '{}': {}", out, std::strerror(e)));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    dup2(devnull, 0);
    dup2(fo, 1);
    dup2(fe, 2);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) {
      const char msg[] = "reprocheck: error: cannot enter the working folder of the command\n";
      ssize_t ignored = write(2, msg, sizeof msg - 1);
      (void)ignored;
      _exit(127);
    }
    execve(program.c_str(), cargv.data(), cenv.data());
    const char msg[] = "reprocheck: error: cannot execute the worker binary\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
  }
  int fork_errno = errno;
  close(fo);
  close(fe);
  close(devnull);
  if (pid < 0) throw RunError(fmt::format("cannot start a worker: fork failed: {}", std::strerror(fork_errno)));
  setpgid(pid, pid);  // also from the parent, so that kill(-pid) works at once
  pid_ = pid;
}

Process::~Process() {
  if (pid_ > 0 && !status_) stop(0.5);
}

std::optional<ExitStatus> Process::poll() {
  if (status_) return status_;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) status_ = from_wait(st);
  return status_;
}

ExitStatus Process::stop(double grace_s) {
  if (poll()) return *status_;
  kill(-pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (poll()) return *status_;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(-pid_, SIGKILL);
  int st = 0;
  while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = from_wait(st);
  return *status_;
}

int free_tcp_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

std::string self_executable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw RunError("cannot find the reprocheck executable (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

std::string tail_lines(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (last.size() > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += l + "\n";
  return out;
}

}  // namespace reprocheck
