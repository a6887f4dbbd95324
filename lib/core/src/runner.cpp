#include "reprocheck/runner.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>
#include <tuple>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/subprocess.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

namespace {

std::string dump_name(int i) { return fmt::format("run-{}.h5", i); }

// The error line each process of a failed run wrote when it raised (the capture writes
// ERROR_FILE.rankR, or ERROR_FILE.pidN outside a distributed run), the earliest first: the rank that
// failed first is the cause, the others usually lost their peer. "" when none wrote one.
std::string process_errors(const std::string& error_path) {
  const std::string dir = files::parent_dir(error_path), prefix = files::base_name(error_path) + ".";
  std::vector<std::tuple<int64_t, std::string, std::string>> found;  // mtime (ns), who, line
  for (const auto& name : files::entries(dir)) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string tag = name.substr(prefix.size());
    std::string who;
    if (tag.rfind("rank", 0) == 0 && tag.size() > 4 && tag.size() < 12 &&
        std::all_of(tag.begin() + 4, tag.end(), ::isdigit))
      who = "rank " + tag.substr(4);
    else if (tag.rfind("pid", 0) == 0 && tag.size() > 3 && tag.size() < 13 &&
             std::all_of(tag.begin() + 3, tag.end(), ::isdigit))
      who = "process " + tag.substr(3);
    else
      continue;
    struct stat sb {};
    if (stat((dir + "/" + name).c_str(), &sb) != 0) continue;
    std::string line = sanitize_text(first_line(files::read_text_or_empty(dir + "/" + name)));
    if (line.size() > 300) line = line.substr(0, 297) + "...";
    if (!line.empty())
      found.emplace_back(int64_t{sb.st_mtim.tv_sec} * 1000000000 + sb.st_mtim.tv_nsec, std::move(who), std::move(line));
  }
  // A launcher's own error (mp.spawn relaying a child's) only repeats what its ranks said.
  if (std::any_of(found.begin(), found.end(), [](const auto& f) { return std::get<1>(f).rfind("rank", 0) == 0; }))
    found.erase(std::remove_if(found.begin(), found.end(),
                               [](const auto& f) { return std::get<1>(f).rfind("process", 0) == 0; }),
                found.end());
  if (found.empty()) return "";
  std::sort(found.begin(), found.end());
  const bool one = found.size() == 1 && std::get<1>(found[0]).rfind("process", 0) == 0;
  std::string out = one ? fmt::format("the script raised {}", std::get<2>(found[0]))
                        : fmt::format("{} raised {}{}", std::get<1>(found[0]), found.size() > 1 ? "first: " : "",
                                      std::get<2>(found[0]));
  for (size_t i = 1; i < found.size() && i < 4; ++i)
    out += fmt::format("{}{}: {}", i == 1 ? " (then " : "; ", std::get<1>(found[i]), std::get<2>(found[i]));
  if (found.size() > 1) out += found.size() > 4 ? fmt::format("; {} more)", found.size() - 4) : ")";
  return out;
}

// The error that a failed worker stands for (the pool stops the others): the worker's own line when
// it rejected its input, else how it ended, what its processes raised, and its last output.
[[noreturn]] void fail_run(const ProcessPool::Finished& f, int index, int runs, const std::string& label,
                           const std::string& error_path, double timeout_s) {
  const ExitStatus& status = f.status;
  if (!status.timed_out && status.exited && status.code == to_int(ExitCode::interrupted) && interrupt_requested())
    throw Interrupted();
  // The run's own last output, kept in memory (its folder may be on a full disk), escaped.
  const std::string tail = f.process->stderr_tail().last_lines(12);
  if (status.exited && status.code == to_int(ExitCode::usage)) {
    // The worker rejected the input: relay its own one-line error.
    std::string line = sanitize_text(first_line(files::read_text_or_empty(error_path)));
    if (line.empty()) {
      std::string said = first_line(f.process->stderr_tail().last_lines(1));
      if (said.rfind(kErrorPrefix, 0) == 0) line = said.substr(std::strlen(kErrorPrefix));
    }
    if (line.empty()) line = fmt::format("run {} rejected its input; its last output:\n{}", index + 1, tail);
    throw InputError(line);
  }
  const std::string raised = process_errors(error_path);
  throw RunError(fmt::format("run {} of {}{} failed: {}{}; its last output:\n{}", index + 1, runs,
                             label.empty() ? "" : fmt::format(" ({})", label), status.describe(timeout_s),
                             raised.empty() ? "" : "; " + raised, tail.empty() ? "  (none)\n" : tail));
}

// Warnings a finished run wrote to stderr (LibTorch's, with --deterministic=warn), each once.
std::vector<std::string> distinct_messages(const OutputTail& err, size_t most) {
  std::vector<std::string> out;
  std::istringstream lines(err.last_lines(200));
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
      throw InputError(
          fmt::format("--keep '{}': folder '{}' does not exist or is not writable", o_.keep_dir, writable));
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
    int index = 0;
    WorkerJob job;
    std::string label, error_path;
  };
  std::vector<Slot> slots(indices.size());
  std::vector<std::string> dumps(o_.runs);
  for (size_t k = 0; k < indices.size(); ++k) {
    const int index = indices[k];
    Slot& slot = slots[k];
    WorkerJob& job = slot.job;
    job.index = index;
    job.options = o_.vary.empty() ? o_.run : with_knob(o_.run, o_.vary.knob, o_.vary.values[index]);
    if (adjust) adjust(job.options, index);
    job.replay_dump = replay_dump;
    job.replay_keys_file = replay_keys;
    slot.index = index;
    const std::string base = temp_dir_ + fmt::format("/run-{}{}", index, suffix);
    job.dump = base + ".h5";
    slot.error_path = base + ".error";
    slot.label = o_.vary.empty() ? "" : fmt::format("{}={}", o_.vary.knob, o_.vary.values[index]);
    if (!suffix.empty()) {
      const char* what = suffix.rfind(".pass", 0) == 0 ? "captured again" : "replay";
      slot.label += slot.label.empty() ? what : fmt::format(", {}", what);
    }
  }

  ProcessPool pool({o_.jobs, o_.timeout_s, 1.0});
  ProcessPool::Callbacks cb;
  cb.spec = [&](size_t k) {
    Command command = launcher_->command(slots[k].job);
    command.env.emplace_back(kErrorFileEnv, slots[k].error_path);
    return ProcessSpec{command.argv, command.env, ""};
  };
  cb.started = [&](size_t k) {
    progress({WorkerEvent::Kind::started, slots[k].index, o_.runs, 0, 0, slots[k].label, {}});
  };
  cb.finished = [&](const ProcessPool::Finished& f) {
    const Slot& slot = slots[f.index];
    if (!f.status.ok()) fail_run(f, slot.index, o_.runs, slot.label, slot.error_path, o_.timeout_s);
    launcher_->collect(slot.job);
    struct stat sb {};
    stat(slot.job.dump.c_str(), &sb);
    progress({WorkerEvent::Kind::finished, slot.index, o_.runs, f.seconds, static_cast<uint64_t>(sb.st_size),
              slot.label, distinct_messages(f.process->stderr_tail(), 5)});
    dumps[slot.index] = slot.job.dump;
  };
  cb.tick = [&](const std::vector<std::pair<size_t, double>>& now) {
    for (const auto& [k, seconds] : now)
      progress({WorkerEvent::Kind::tick, slots[k].index, o_.runs, seconds, 0, slots[k].label, {}});
  };
  pool.run(slots.size(), cb);
  return dumps;
}

std::vector<std::string> Runner::keep() {
  const bool made = !files::is_directory(o_.keep_dir);
  if (made && mkdir(o_.keep_dir.c_str(), 0755) != 0)
    throw InputError(fmt::format("--keep '{}': cannot create the folder: {}", o_.keep_dir, std::strerror(errno)));
  // All or nothing: a dump that cannot be kept (a full disk) undoes the others, and a folder made
  // for them goes too; the runs' own dumps stay where they were, for the comparison.
  std::vector<std::pair<std::string, std::string>> moved;  // renamed: (from, to)
  std::vector<std::string> copied;
  std::vector<std::string> kept;
  try {
    for (size_t i = 0; i < dumps_.size(); ++i) {
      std::string dest = o_.keep_dir + "/" + dump_name(static_cast<int>(i));
      if (std::rename(dumps_[i].c_str(), dest.c_str()) == 0) {
        moved.emplace_back(dumps_[i], dest);
      } else {
        // Another file system: copy through a temporary, then rename into place.
        files::copy_file_atomically(dumps_[i], dest, "--keep dump");
        copied.push_back(dest);
      }
      kept.push_back(dest);
    }
  } catch (const Error& e) {
    for (const auto& [from, to] : moved) std::rename(to.c_str(), from.c_str());
    for (const auto& c : copied) unlink(c.c_str());
    if (made) rmdir(o_.keep_dir.c_str());
    throw InputError(fmt::format("{}; nothing was kept in '{}'", e.what(), o_.keep_dir));
  }
  dumps_ = kept;
  return kept;
}

}  // namespace reprocheck
