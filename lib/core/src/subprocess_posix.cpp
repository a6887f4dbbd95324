#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/subprocess.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

std::string ExitStatus::describe(double timeout_s) const {
  if (timed_out) return fmt::format("timed out after {:g} s (killed)", timeout_s);
  if (exited) return fmt::format("exit code {}", code);
  const char* name = sigabbrev_np(signal);
  std::string note = signal == SIGKILL ? ": killed from outside, often by the kernel when memory ran out" : "";
  return fmt::format("killed by signal {} (SIG{}{})", signal, name ? name : "?", note);
}

void OutputTail::append(const char* data, size_t n) {
  text_.append(data, n);
  if (text_.size() > 2 * limit_) {
    text_.erase(0, text_.size() - limit_);
    truncated_ = true;
  }
}

std::string OutputTail::last_lines(size_t n) const {
  std::vector<std::string> lines;
  std::istringstream in(text_);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (truncated_ && !lines.empty()) lines.erase(lines.begin());  // the first one lost its start
  const size_t from = lines.size() > n ? lines.size() - n : 0;
  std::string out;
  for (size_t i = from; i < lines.size(); ++i) out += sanitize_text(lines[i]) + "\n";
  return out;
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
  if (name.find('/') != std::string::npos) {
    if (access(name.c_str(), X_OK) != 0)
      throw CommandError(
          fmt::format("cannot run '{}': {}; check the command's path", sanitize_text(name), std::strerror(errno)));
    return name;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  throw CommandError(fmt::format("cannot run '{}': no such program on PATH; check the command", sanitize_text(name)));
}

// What the child tells the parent when it cannot exec: where it failed, and errno.
struct ExecFailure {
  int stage;  // 1: entering the working folder, 2: exec
  int error;
};

// This process's environment with `extra` set on top, as NAME=VALUE strings.
std::vector<std::string> environment(const std::vector<std::pair<std::string, std::string>>& extra) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) vars[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : vars) out.push_back(k + "=" + v);
  return out;
}

// What the child's side of fork needs: only async-signal-safe calls happen there.
struct ChildFds {
  pid_t parent;
  int devnull, out, err, status;
  const char* cwd;
};

[[noreturn]] void exec_child(const ChildFds& f, const std::string& program, std::vector<char*>& argv,
                             std::vector<char*>& envp) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != f.parent) _exit(127);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  dup2(f.devnull, 0);
  dup2(f.out, 1);
  dup2(f.err, 2);
  ExecFailure failure{1, 0};
  if (!f.cwd || chdir(f.cwd) == 0) {
    execve(program.c_str(), argv.data(), envp.data());
    failure.stage = 2;
  }
  failure.error = errno;
  ssize_t ignored = write(f.status, &failure, sizeof failure);
  (void)ignored;
  _exit(127);
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

}  // namespace

Process::Process(const ProcessSpec& spec) {
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are made (the parent has threads).
  if (spec.argv.empty()) throw RunError("cannot start a process: empty command");
  const std::string program = resolve_program(spec.argv[0]);
  std::vector<std::string> args = spec.argv;
  std::vector<std::string> env_strings = environment(spec.env);
  auto cargv = c_strings(args);
  auto cenv = c_strings(env_strings);
  int out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1};
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || pipe2(status, O_CLOEXEC) != 0 || devnull < 0) {
    int e = errno;
    for (int fd : {out[0], out[1], err[0], err[1], status[0], status[1], devnull})
      if (fd >= 0) close(fd);
    throw RunError(fmt::format("cannot start '{}': {}", sanitize_text(spec.argv[0]), std::strerror(e)));
  }
  const char* cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child({parent, devnull, out[1], err[1], status[1], cwd}, program, cargv, cenv);
  int fork_errno = errno;
  close(out[1]);
  close(err[1]);
  close(status[1]);
  close(devnull);
  if (pid < 0) {
    for (int fd : {out[0], err[0], status[0]}) close(fd);
    throw RunError(
        fmt::format("cannot start '{}': fork failed: {}", sanitize_text(spec.argv[0]), std::strerror(fork_errno)));
  }
  setpgid(pid, pid);  // also from the parent, so that kill(-pid) works at once
  // The status pipe closes on a successful exec (close-on-exec); a failed one writes its errno.
  ExecFailure failure{0, 0};
  ssize_t n;
  while ((n = read(status[0], &failure, sizeof failure)) < 0 && errno == EINTR) {
  }
  close(status[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    close(out[0]);
    close(err[0]);
    if (failure.stage == 1)
      throw CommandError(fmt::format("cannot enter the folder '{}' to run '{}': {}", sanitize_text(spec.cwd),
                                     sanitize_text(spec.argv[0]), std::strerror(failure.error)));
    throw CommandError(fmt::format("cannot run '{}': {}; check the command", sanitize_text(spec.argv[0]),
                                   std::strerror(failure.error)));
  }
  pid_ = pid;
  out_fd_ = out[0];
  err_fd_ = err[0];
  for (int fd : {out_fd_, err_fd_}) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETPIPE_SZ, 1 << 20);  // best effort: fewer stalls of a chatty child between polls
  }
}

Process::~Process() {
  if (pid_ > 0 && !status_) stop(0.5);
  close_fd(out_fd_);
  close_fd(err_fd_);
}

void Process::drain() {
  char buffer[16384];
  for (auto [fd, tail] : {std::pair<int*, OutputTail*>{&out_fd_, &out_}, {&err_fd_, &err_}}) {
    while (*fd >= 0) {
      ssize_t n = read(*fd, buffer, sizeof buffer);
      if (n > 0) {
        tail->append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        close_fd(*fd);
      } else if (errno != EINTR) {
        break;  // EAGAIN: nothing more for now
      }
    }
  }
}

std::vector<int> Process::fds() const {
  std::vector<int> out;
  for (int fd : {out_fd_, err_fd_})
    if (fd >= 0) out.push_back(fd);
  return out;
}

// Ends whatever is left in the child's process group (a script's forked helpers), while the
// child itself is still an unreaped zombie: its group id cannot have been reused.
void Process::end_group() { kill(-pid_, SIGKILL); }

std::optional<ExitStatus> Process::poll() {
  if (status_) return status_;
  drain();
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid_)
    return std::nullopt;
  end_group();
  int st = 0;
  while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  drain();
  close_fd(out_fd_);  // a helper that kept the pipe open is gone; what it wrote before is read
  close_fd(err_fd_);
  status_ = from_wait(st);
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
  while (!poll()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return *status_;
}

void ProcessPool::run(size_t count, const Callbacks& cb) {
  using Clock = std::chrono::steady_clock;
  struct Slot {
    size_t index;
    std::unique_ptr<Process> process;
    Clock::time_point start;
  };
  std::vector<Slot> running;
  size_t next = 0, done = 0;
  auto last_tick = Clock::now();
  auto elapsed = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  while (done < count) {
    if (interrupt_requested()) {
      for (auto& slot : running) slot.process->stop(o_.grace_s);
      throw Interrupted();
    }
    while (next < count && static_cast<int>(running.size()) < std::max(o_.jobs, 1)) {
      const size_t i = next++;
      Slot slot{i, nullptr, Clock::now()};
      try {
        slot.process = std::make_unique<Process>(cb.spec(i));
      } catch (const CommandError& e) {
        if (!cb.start_failed) throw;
        cb.start_failed(i, e);
        ++done;
        continue;
      }
      if (cb.started) cb.started(i);
      running.push_back(std::move(slot));
    }
    // Wait for output or for a child's end, whichever comes first (at most 20 ms).
    std::vector<pollfd> fds;
    for (const auto& slot : running)
      for (int fd : slot.process->fds()) fds.push_back({fd, POLLIN, 0});
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 20);
    else if (!running.empty())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (size_t k = 0; k < running.size();) {
      Slot& slot = running[k];
      auto status = slot.process->poll();
      if (!status && o_.timeout_s > 0 && elapsed(slot.start) > o_.timeout_s) {
        status = slot.process->stop(o_.grace_s);
        status->timed_out = true;
      }
      if (!status) {
        ++k;
        continue;
      }
      Slot ended = std::move(slot);
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
      ++done;
      if (cb.finished) cb.finished({ended.index, *status, elapsed(ended.start), ended.process.get()});
    }
    if (cb.tick && elapsed(last_tick) >= cb.tick_s) {
      last_tick = Clock::now();
      std::vector<std::pair<size_t, double>> now;
      for (const auto& slot : running) now.emplace_back(slot.index, elapsed(slot.start));
      cb.tick(now);
    }
  }
}

std::unique_ptr<Process> run_to_end(const ProcessSpec& spec, double timeout_s, ExitStatus* status) {
  auto p = std::make_unique<Process>(spec);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (auto st = p->poll()) {
      *status = *st;
      return p;
    }
    if (timeout_s > 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s) {
      *status = p->stop(0.5);
      status->timed_out = true;
      return p;
    }
    auto fds = p->fds();
    std::vector<pollfd> pfds;
    for (int fd : fds) pfds.push_back({fd, POLLIN, 0});
    if (pfds.empty())
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    else
      ::poll(pfds.data(), pfds.size(), 10);
  }
}

namespace {

// The isolated child: runs `body`, writes its error (if any) to `fd`, exits 0 or 2.
[[noreturn]] void run_body_and_exit(const std::function<std::string()>& body, int fd) {
  // A crash here ends this child quietly; the parent reports it.
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) signal(sig, SIG_DFL);
  std::string message;
  try {
    message = body();
  } catch (const std::exception& e) {
    message = e.what();
  }
  for (size_t off = 0; off < message.size();) {
    ssize_t n = ::write(fd, message.data() + off, message.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  _exit(message.empty() ? 0 : 2);
}

// Reads what a non-blocking pipe holds now into `message` (up to 1 MB kept); false once every
// writer has closed it.
bool read_available(int fd, std::string& message) {
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0 && message.size() < (1 << 20)) message.append(buffer, static_cast<size_t>(n));
    if (n == 0) return false;  // every writer closed it: the child ended (or closed it)
    if (n < 0) return true;    // EAGAIN: nothing more for now
  }
}

}  // namespace

IsolatedOutcome run_isolated(const std::function<std::string()>& body, double timeout_s) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {  // no isolation possible: run it here
    IsolatedOutcome out;
    out.message = body();
    out.kind = out.message.empty() ? IsolatedOutcome::Kind::ok : IsolatedOutcome::Kind::failed;
    return out;
  }
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    run_body_and_exit(body, fds[1]);
  }
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    IsolatedOutcome out;
    out.message = body();
    out.kind = out.message.empty() ? IsolatedOutcome::Kind::ok : IsolatedOutcome::Kind::failed;
    return out;
  }
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string message;
  int status = 0;
  bool pipe_open = true;
  auto stop = [&] {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    close(fds[0]);
  };
  for (;;) {
    if (pipe_open) {
      pollfd p{fds[0], POLLIN, 0};
      ::poll(&p, 1, 5);
      pipe_open = read_available(fds[0], message);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    if (interrupt_requested()) {
      stop();
      throw Interrupted();
    }
    if (std::chrono::steady_clock::now() > deadline) {
      stop();
      return {IsolatedOutcome::Kind::timed_out, message, 0};
    }
  }
  // What the child wrote before it ended.
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;)
    if (message.size() < (1 << 20)) message.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {IsolatedOutcome::Kind::ok, "", 0};
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2 && !message.empty())
    return {IsolatedOutcome::Kind::failed, message, 0};
  return {IsolatedOutcome::Kind::crashed, message, WIFSIGNALED(status) ? WTERMSIG(status) : 0};
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

}  // namespace reprocheck
