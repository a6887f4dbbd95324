#include "reprocheck/runner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/subprocess.h"

namespace reprocheck {

namespace {

const char* kKnobs = "threads, device, deterministic, benchmark, seed, data-seed, mode";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string dump_name(int i) { return fmt::format("run-{}.h5", i); }

}  // namespace

RunOptions with_knob(const RunOptions& base, const std::string& knob, const std::string& v) {
  RunOptions o = base;
  auto boolean = [&](const std::string& val) {
    if (val == "on" || val == "true" || val == "1") return true;
    if (val == "off" || val == "false" || val == "0") return false;
    throw UsageError(fmt::format("bad value '{}' for --vary {}: expected on/off, true/false or 1/0", val, knob));
  };
  if (knob == "threads") {
    try {
      size_t used = 0;
      o.threads = std::stoi(v, &used);
      if (used != v.size() || o.threads < 1) throw std::invalid_argument(v);
    } catch (const std::exception&) {
      throw UsageError(fmt::format("bad value '{}' for --vary threads: expected a count of 1 or more", v));
    }
  } else if (knob == "device") {
    o.device = v;
  } else if (knob == "deterministic") {
    o.deterministic = v == "warn" ? "warn" : (boolean(v) ? "on" : "off");
  } else if (knob == "benchmark") {
    o.benchmark = boolean(v);
  } else if (knob == "seed") {
    o.seed = v;
  } else if (knob == "data-seed" || knob == "data_seed") {
    o.data_seed = v;
  } else if (knob == "mode") {
    o.mode = v;
  } else {
    throw UsageError(fmt::format("unknown knob '{}' for --vary: expected one of {}", knob, kKnobs));
  }
  validate(o);
  return o;
}

void parse_vary(const std::string& spec, RunnerOptions& o) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    throw UsageError(fmt::format("bad --vary '{}': expected KNOB=V1,V2,... (knobs: {})", spec, kKnobs));
  o.vary_knob = spec.substr(0, eq);
  o.vary_values = split(spec.substr(eq + 1), ',');
  if (o.vary_values.size() < 2)
    throw UsageError(fmt::format("bad --vary '{}': give at least two values, e.g. {}=1,2", spec, o.vary_knob));
  for (const auto& v : o.vary_values) with_knob(o.run, o.vary_knob, v);  // validates each value
}

Runner::Runner(RunnerOptions o) : o_(std::move(o)) {
  if (!o_.vary_values.empty()) o_.runs = static_cast<int>(o_.vary_values.size());
  if (o_.runs < 2) throw UsageError(fmt::format("--runs {}: a comparison needs at least 2 runs", o_.runs));
  if (o_.jobs < 1) throw UsageError(fmt::format("--jobs {}: expected 1 or more", o_.jobs));
  if (o_.timeout_s < 0) throw UsageError("--timeout must be positive (seconds)");
  if (!o_.keep_dir.empty()) {
    if (files::exists(o_.keep_dir) && !files::is_directory(o_.keep_dir))
      throw InputError(fmt::format("--keep '{}' is a file; name a folder for the dumps", o_.keep_dir));
    if (!files::exists(o_.keep_dir) && mkdir(o_.keep_dir.c_str(), 0755) != 0)
      throw InputError(fmt::format("--keep '{}': cannot create the folder: {}", o_.keep_dir, std::strerror(errno)));
    for (int i = 0; i < o_.runs; ++i)
      if (files::exists(o_.keep_dir + "/" + dump_name(i)) && !o_.overwrite)
        throw InputError(
            fmt::format("--keep '{}' already holds {}; pass --force to overwrite, or choose another folder",
                        o_.keep_dir, dump_name(i)));
  }
  if (o_.executable.empty()) o_.executable = self_executable();
  temp_dir_ = files::make_temp_dir("reprocheck-");
}

Runner::~Runner() {
  if (!temp_dir_.empty()) files::remove_tree(temp_dir_);
}

std::vector<std::string> Runner::run(const std::function<void(const WorkerEvent&)>& progress) {
  std::vector<int> all(static_cast<size_t>(o_.runs));
  for (int i = 0; i < o_.runs; ++i) all[i] = i;
  dumps_ = run_workers(all, {}, "", progress);
  return dumps_;
}

std::vector<std::string> Runner::rerun_with_replay(const std::string& reference, const std::vector<std::string>& keys,
                                                   const std::function<void(const WorkerEvent&)>& progress) {
  ++replays_;
  std::string keys_file = temp_dir_ + fmt::format("/replay-{}.keys", replays_);
  {
    std::ofstream f(keys_file);
    for (const auto& k : keys) f << k << "\n";
    if (!f.flush()) throw RunError(fmt::format("cannot write '{}': {}", keys_file, std::strerror(errno)));
  }
  std::vector<int> others;
  for (int i = 1; i < o_.runs; ++i) others.push_back(i);
  auto out = run_workers(others, {"--replay", reference, "--replay-keys", keys_file},
                         fmt::format(".replay-{}", replays_), progress);
  out[0] = reference;
  return out;
}

std::vector<std::string> Runner::run_workers(const std::vector<int>& indices, const std::vector<std::string>& extra,
                                             const std::string& suffix,
                                             const std::function<void(const WorkerEvent&)>& progress) {
  struct Slot {
    int index;
    std::unique_ptr<Process> proc;
    std::chrono::steady_clock::time_point start;
    std::string label, out, err, dump;
  };
  using Clock = std::chrono::steady_clock;
  std::vector<Slot> running;
  size_t next = 0, done = 0;
  std::vector<std::string> dumps(o_.runs);
  auto last_tick = Clock::now();

  auto start_worker = [&](int i) {
    RunOptions ro = o_.vary_knob.empty() ? o_.run : with_knob(o_.run, o_.vary_knob, o_.vary_values[i]);
    std::vector<std::string> argv{o_.executable, "record"};
    auto args = to_args(ro);
    argv.insert(argv.end(), args.begin(), args.end());
    Slot s;
    s.index = i;
    s.dump = temp_dir_ + fmt::format("/run-{}{}.h5", i, suffix);
    s.out = temp_dir_ + fmt::format("/run-{}{}.out", i, suffix);
    s.err = temp_dir_ + fmt::format("/run-{}{}.err", i, suffix);
    s.label = o_.vary_knob.empty() ? "" : fmt::format("{}={}", o_.vary_knob, o_.vary_values[i]);
    if (!suffix.empty()) s.label += s.label.empty() ? "replay" : ", replay";
    argv.insert(argv.end(), {"-o", s.dump});
    argv.insert(argv.end(), extra.begin(), extra.end());
    s.proc = std::make_unique<Process>(argv, s.out, s.err);
    s.start = Clock::now();
    progress({WorkerEvent::Kind::started, i, o_.runs, 0, 0, s.label, {}});
    running.push_back(std::move(s));
  };

  while (done < indices.size()) {
    if (interrupt_requested()) {
      for (auto& s : running) s.proc->stop(1.0);
      throw Interrupted();
    }
    while (next < indices.size() && static_cast<int>(running.size()) < o_.jobs) start_worker(indices[next++]);
    for (size_t k = 0; k < running.size();) {
      Slot& s = running[k];
      double elapsed = std::chrono::duration<double>(Clock::now() - s.start).count();
      auto st = s.proc->poll();
      if (!st && o_.timeout_s > 0 && elapsed > o_.timeout_s) {
        st = s.proc->stop(1.0);
        st->timed_out = true;
      }
      if (!st) {
        ++k;
        continue;
      }
      if (!st->ok()) {
        // The others are stopped by their Process destructors.
        std::string tail = tail_lines(s.err, 12);
        if (st->exited && st->code == 2) {
          // The worker rejected the input: relay its own one-line error.
          std::string line = first_line(tail.substr(
              tail.rfind("reprocheck: error: ") == std::string::npos ? 0 : tail.rfind("reprocheck: error: ") + 19));
          throw InputError(line.empty() ? fmt::format("run {} rejected its input", s.index) : line);
        }
        if (!st->timed_out && st->exited && st->code == 130 && interrupt_requested()) throw Interrupted();
        std::string label = s.label.empty() ? "" : fmt::format(" ({})", s.label);
        throw RunError(fmt::format("run {} of {}{} failed: {}; its last output:\n{}", s.index + 1, o_.runs, label,
                                   st->describe(o_.timeout_s), tail.empty() ? "  (none)\n" : tail));
      }
      struct stat sb {};
      stat(s.dump.c_str(), &sb);
      WorkerEvent ev{WorkerEvent::Kind::finished,       s.index, o_.runs, elapsed,
                     static_cast<uint64_t>(sb.st_size), s.label, {}};
      // Warnings the run printed (LibTorch's, with --deterministic=warn), each once.
      std::istringstream lines(tail_lines(s.err, 200));
      for (std::string line; std::getline(lines, line) && ev.messages.size() < 5;) {
        // LibTorch prefixes its warnings with "[W<date> <time> <file>:<line>] ": drop it.
        if (line.rfind("[W", 0) == 0 && line.find("] ") != std::string::npos) line = line.substr(line.find("] ") + 2);
        if (!line.empty() && std::find(ev.messages.begin(), ev.messages.end(), line) == ev.messages.end())
          ev.messages.push_back(line);
      }
      progress(ev);
      dumps[s.index] = s.dump;
      ++done;
      running.erase(running.begin() + static_cast<long>(k));
    }
    if (Clock::now() - last_tick > std::chrono::milliseconds(100)) {
      last_tick = Clock::now();
      for (const auto& s : running)
        progress({WorkerEvent::Kind::tick,
                  s.index,
                  o_.runs,
                  std::chrono::duration<double>(Clock::now() - s.start).count(),
                  0,
                  s.label,
                  {}});
    }
    if (done < indices.size()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return dumps;
}

Isolation isolate(Runner& runner, const std::vector<std::string>& dumps, const Comparison& first,
                  const CompareOptions& options, const std::function<void(const WorkerEvent&)>& progress,
                  int max_sources) {
  Isolation iso;
  iso.last = first;
  const PairComparison* h = first.headline();
  if (!h) {
    iso.agreed = true;
    return iso;
  }
  iso.step = h->diffs[*h->first].ref.step;
  std::vector<std::string> keys;
  const Comparison* cur = &first;
  for (;;) {
    const PairComparison* p = cur->headline();
    if (!p || p->diffs[*p->first].ref.step > iso.step) {
      iso.agreed = true;
      break;
    }
    const TensorDiff& d = p->diffs[*p->first];
    if (d.status != Status::values_differ) {
      iso.note = fmt::format("{} is {}, which cannot be replayed", d.ref.tensor_name(), to_string(d.status));
      break;
    }
    if (d.ref.phase == "after_step") {
      iso.note =
          fmt::format("{} differs after the optimizer step only; the step itself is the source", d.ref.tensor_name());
      iso.sources.push_back(d);
      break;
    }
    if (std::find(keys.begin(), keys.end(), d.ref.key()) != keys.end()) {
      iso.note = fmt::format("{} still differs although it was replayed", d.ref.tensor_name());
      break;
    }
    if (static_cast<int>(iso.sources.size()) >= max_sources) {
      iso.note = fmt::format("stopped after {} sources", max_sources);
      break;
    }
    iso.sources.push_back(d);
    keys.push_back(d.ref.key());
    auto replayed = runner.rerun_with_replay(dumps[0], keys, progress);
    iso.last = compare_dumps(replayed, options);
    cur = &iso.last;
  }
  return iso;
}

std::vector<std::string> Runner::keep() {
  std::vector<std::string> kept;
  for (size_t i = 0; i < dumps_.size(); ++i) {
    std::string dest = o_.keep_dir + "/" + dump_name(static_cast<int>(i));
    if (std::rename(dumps_[i].c_str(), dest.c_str()) != 0) {
      // Another file system: copy, then rename the copy into place.
      std::string tmp = o_.keep_dir + "/." + dump_name(static_cast<int>(i)) + ".tmp";
      {
        std::ifstream in(dumps_[i], std::ios::binary);
        std::ofstream out(tmp, std::ios::binary);
        out << in.rdbuf();
        if (!out.flush())
          throw InputError(fmt::format("--keep '{}': cannot write {}: {}", o_.keep_dir, dest, std::strerror(errno)));
      }
      if (std::rename(tmp.c_str(), dest.c_str()) != 0)
        throw InputError(fmt::format("--keep '{}': cannot write {}: {}", o_.keep_dir, dest, std::strerror(errno)));
    }
    kept.push_back(dest);
  }
  return kept;
}

}  // namespace reprocheck
