#include "reprocheck/runner.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/subprocess.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

namespace {

using Clock = std::chrono::steady_clock;

std::string dump_name(int i) { return fmt::format("run-{}.h5", i); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Warnings a finished run wrote to stderr (LibTorch's, with --deterministic=warn), each once.
std::vector<std::string> distinct_messages(const std::string& stderr_path, size_t most) {
  std::vector<std::string> out;
  std::istringstream lines(tail_lines(stderr_path, 200));
  for (std::string line; std::getline(lines, line) && out.size() < most;) {
    line = sanitize_text(line);
    // LibTorch prefixes its warnings with "[W<date> <time> <file>:<line>] ": drop it.
    if (line.rfind("[W", 0) == 0 && line.find("] ") != std::string::npos) line = line.substr(line.find("] ") + 2);
    if (!line.empty() && std::find(out.begin(), out.end(), line) == out.end()) out.push_back(line);
  }
  return out;
}

}  // namespace

Runner::Runner(RunnerOptions o, std::shared_ptr<const WorkerLauncher> launcher)
    : o_(std::move(o)), launcher_(std::move(launcher)) {
  if (!o_.vary.empty()) o_.runs = static_cast<int>(o_.vary.values.size());
  if (o_.runs < o_.min_runs)
    throw UsageError(o_.min_runs == 2 ? fmt::format("--runs {}: a comparison needs at least 2 runs", o_.runs)
                                      : fmt::format("--runs {}: expected 1 or more", o_.runs));
  if (o_.jobs < 1) throw UsageError(fmt::format("--jobs {}: expected 1 or more", o_.jobs));
  if (o_.timeout_s < 0) throw UsageError("--timeout must be positive (seconds)");
  if (!o_.keep_dir.empty()) {
    // Checked before any run starts; the folder itself is made only when there are dumps to keep.
    while (o_.keep_dir.size() > 1 && o_.keep_dir.back() == '/') o_.keep_dir.pop_back();
    if (files::exists(o_.keep_dir) && !files::is_directory(o_.keep_dir))
      throw InputError(fmt::format("--keep '{}' is a file; name a folder for the dumps", o_.keep_dir));
    const std::string writable = files::is_directory(o_.keep_dir) ? o_.keep_dir : files::parent_dir(o_.keep_dir);
    if (!files::is_directory(writable) || access(writable.c_str(), W_OK) != 0)
      throw InputError(fmt::format("--keep '{}': folder '{}' does not exist or is not writable", o_.keep_dir, writable));
    keep_lock_ = std::make_unique<files::DestinationLock>(o_.keep_dir, "--keep folder");
    for (int i = 0; i < o_.runs; ++i)
      if (files::exists(o_.keep_dir + "/" + dump_name(i)) && !o_.overwrite)
        throw InputError(
            fmt::format("--keep '{}' already holds {}; pass --force to overwrite, or choose another folder",
                        o_.keep_dir, dump_name(i)));
  }
  temp_dir_ = files::make_temp_dir("reprocheck-");
}

Runner::~Runner() {
  if (!temp_dir_.empty()) files::remove_tree(temp_dir_);
}

std::vector<std::string> Runner::run(const ProgressFn& progress, const Adjust& adjust) {
  std::vector<int> all(static_cast<size_t>(o_.runs));
  for (int i = 0; i < o_.runs; ++i) all[i] = i;
  dumps_ = run_workers(all, "", "", "", progress, adjust);
  return dumps_;
}

std::vector<std::string> Runner::rerun(const std::vector<int>& indices, const Adjust& adjust,
                                       const ProgressFn& progress) {
  ++reruns_;
  return run_workers(indices, "", "", fmt::format(".pass-{}", reruns_ + 1), progress, adjust);
}

std::vector<std::string> Runner::rerun_with_replay(const std::string& reference, const std::vector<std::string>& keys,
                                                   const ProgressFn& progress) {
  if (!launcher_->can_replay()) throw UsageError("--isolate: this front end's runs cannot replay tensors");
  ++replays_;
  std::string keys_file = temp_dir_ + fmt::format("/replay-{}.keys", replays_);
  std::string text;
  for (const auto& k : keys) text += k + "\n";
  files::write_file_atomically(keys_file, text, "replay keys");
  std::vector<int> others;
  for (int i = 1; i < o_.runs; ++i) others.push_back(i);
  auto out = run_workers(others, reference, keys_file, fmt::format(".replay-{}", replays_), progress);
  out[0] = reference;
  return out;
}

std::vector<std::string> Runner::run_workers(const std::vector<int>& indices, const std::string& replay_dump,
                                             const std::string& replay_keys, const std::string& suffix,
                                             const ProgressFn& progress, const Adjust& adjust) {
  struct Slot {
    int index;
    WorkerJob job;
    std::unique_ptr<Process> process;
    Clock::time_point start;
    std::string label, stdout_path, stderr_path, error_path, dump;
  };
  std::vector<Slot> running;
  size_t next = 0, done = 0;
  std::vector<std::string> dumps(o_.runs);
  auto last_tick = Clock::now();

  auto start_worker = [&](int index) {
    WorkerJob job;
    job.index = index;
    job.options = o_.vary.empty() ? o_.run : with_knob(o_.run, o_.vary.knob, o_.vary.values[index]);
    if (adjust) adjust(job.options, index);
    job.replay_dump = replay_dump;
    job.replay_keys_file = replay_keys;
    Slot slot;
    slot.index = index;
    std::string base = temp_dir_ + fmt::format("/run-{}{}", index, suffix);
    slot.dump = job.dump = base + ".h5";
    slot.stdout_path = base + ".out";
    slot.stderr_path = base + ".err";
    slot.error_path = base + ".error";
    slot.label = o_.vary.empty() ? "" : fmt::format("{}={}", o_.vary.knob, o_.vary.values[index]);
    if (!suffix.empty()) {
      const char* what = suffix.rfind(".pass", 0) == 0 ? "full capture" : "replay";
      slot.label += slot.label.empty() ? what : fmt::format(", {}", what);
    }
    slot.job = job;
    Command command = launcher_->command(job);
    command.env.emplace_back(kErrorFileEnv, slot.error_path);
    slot.process = std::make_unique<Process>(command.argv, slot.stdout_path, slot.stderr_path, command.env);
    slot.start = Clock::now();
    progress({WorkerEvent::Kind::started, index, o_.runs, 0, 0, slot.label, {}});
    running.push_back(std::move(slot));
  };

  // Throws the error that a failed worker stands for. The others are stopped by their Process
  // destructors.
  auto fail = [&](const Slot& slot, const ExitStatus& status) {
    if (!status.timed_out && status.exited && status.code == to_int(ExitCode::interrupted) && interrupt_requested())
      throw Interrupted();
    // The run's own output, with control characters escaped (it reaches the user's terminal).
    std::string tail;
    std::istringstream lines(tail_lines(slot.stderr_path, 12));
    for (std::string line; std::getline(lines, line);) tail += sanitize_text(line) + "\n";
    if (status.exited && status.code == to_int(ExitCode::usage)) {
      // The worker rejected the input: relay its own one-line error.
      std::string line = sanitize_text(first_line(read_text(slot.error_path)));
      if (line.empty()) line = fmt::format("run {} rejected its input; its last output:\n{}", slot.index + 1, tail);
      throw InputError(line);
    }
    std::string label = slot.label.empty() ? "" : fmt::format(" ({})", slot.label);
    throw RunError(fmt::format("run {} of {}{} failed: {}; its last output:\n{}", slot.index + 1, o_.runs, label,
                               status.describe(o_.timeout_s), tail.empty() ? "  (none)\n" : tail));
  };

  while (done < indices.size()) {
    if (interrupt_requested()) {
      for (auto& slot : running) slot.process->stop(1.0);
      throw Interrupted();
    }
    while (next < indices.size() && static_cast<int>(running.size()) < o_.jobs) start_worker(indices[next++]);
    for (size_t k = 0; k < running.size();) {
      Slot& slot = running[k];
      double elapsed = seconds_since(slot.start);
      auto status = slot.process->poll();
      if (!status && o_.timeout_s > 0 && elapsed > o_.timeout_s) {
        status = slot.process->stop(1.0);
        status->timed_out = true;
      }
      if (!status) {
        ++k;
        continue;
      }
      if (!status->ok()) fail(slot, *status);
      launcher_->collect(slot.job);
      struct stat sb {};
      stat(slot.dump.c_str(), &sb);
      progress({WorkerEvent::Kind::finished, slot.index, o_.runs, elapsed, static_cast<uint64_t>(sb.st_size),
                slot.label, distinct_messages(slot.stderr_path, 5)});
      dumps[slot.index] = slot.dump;
      ++done;
      running.erase(running.begin() + static_cast<long>(k));
    }
    if (Clock::now() - last_tick > std::chrono::milliseconds(100)) {
      last_tick = Clock::now();
      for (const auto& slot : running)
        progress({WorkerEvent::Kind::tick, slot.index, o_.runs, seconds_since(slot.start), 0, slot.label, {}});
    }
    if (done < indices.size()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return dumps;
}

std::vector<std::string> Runner::keep() {
  if (!files::is_directory(o_.keep_dir) && mkdir(o_.keep_dir.c_str(), 0755) != 0)
    throw InputError(fmt::format("--keep '{}': cannot create the folder: {}", o_.keep_dir, std::strerror(errno)));
  std::vector<std::string> kept;
  for (size_t i = 0; i < dumps_.size(); ++i) {
    std::string dest = o_.keep_dir + "/" + dump_name(static_cast<int>(i));
    // Another file system: copy through a temporary, then rename into place.
    if (std::rename(dumps_[i].c_str(), dest.c_str()) != 0) files::copy_file_atomically(dumps_[i], dest, "--keep dump");
    dumps_[i] = dest;
    kept.push_back(dest);
  }
  return kept;
}

}  // namespace reprocheck
