#include "reprocheck/error.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include "reprocheck/interrupt.h"

namespace reprocheck {

bool invariants_checked() {
  const char* v = std::getenv(kInvariantsEnv);
  return v && *v && std::string(v) != "0";
}

std::string first_line(const std::string& message) {
  std::string line = message.substr(0, message.find('\n'));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '.')) line.pop_back();
  return line;
}

std::string error_line(const std::string& message) { return std::string(kErrorPrefix) + message; }

void report_error_to_runner(const std::string& message) noexcept {
  const char* path = std::getenv(kErrorFileEnv);
  if (!path || !*path) return;
  if (std::FILE* f = std::fopen(path, "w")) {
    std::fputs(message.c_str(), f);
    std::fclose(f);
  }
}

namespace {
std::atomic<bool> g_interrupt{false};
std::mutex g_cleanup_mu;
std::set<std::string>& cleanup_paths() {
  static std::set<std::string> paths;
  return paths;
}
}  // namespace

void register_cleanup(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_cleanup_mu);
  cleanup_paths().insert(path);
}

void unregister_cleanup(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_cleanup_mu);
  cleanup_paths().erase(path);
}

void start_interrupt_watchdog(double grace_s) {
  std::thread([grace_s] {
    while (!interrupt_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::duration<double>(grace_s));
    {
      std::lock_guard<std::mutex> lock(g_cleanup_mu);
      for (const auto& path : cleanup_paths()) ::unlink(path.c_str());
    }
    std::fputs(error_line("interrupted\n").c_str(), stderr);
    _exit(to_int(ExitCode::interrupted));
  }).detach();
}

void request_interrupt() noexcept { g_interrupt.store(true, std::memory_order_relaxed); }
bool interrupt_requested() noexcept { return g_interrupt.load(std::memory_order_relaxed); }
void reset_interrupt() noexcept { g_interrupt.store(false, std::memory_order_relaxed); }
void check_interrupt() {
  if (interrupt_requested()) throw Interrupted();
}

}  // namespace reprocheck
