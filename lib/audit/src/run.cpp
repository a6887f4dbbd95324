// Running an audit: the cells through the core's ProcessPool, host probing, and the merge of
// shards.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/host.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/subprocess.h"
#include "reprocheck/version.h"

namespace reprocheck::audit {

namespace {

std::string settings_json(const Cell& c) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : c.settings) j[k] = v;
  return j.dump();
}

// A failed check's reason: its first error line (without the prefix, and without a dangling "its
// last output:"), with the last thing the failed run said when that says more than "(none)"; else
// the check's last line.
std::string reason(const OutputTail& err) {
  std::istringstream in(err.last_lines(60));
  std::string last, error, said;
  bool in_error = false;
  for (std::string l; std::getline(in, l);) {
    const auto begin = l.find_first_not_of(" \t\r");
    if (begin == std::string::npos) continue;
    std::string text = l.substr(begin, l.find_last_not_of(" \t\r") + 1 - begin);
    last = text;
    if (l.rfind(kErrorPrefix, 0) == 0) {
      if (!error.empty()) {  // a later error line: the run's own last words, or the check's next error
        if (in_error) said = l.substr(std::strlen(kErrorPrefix));
        continue;
      }
      error = l.substr(std::strlen(kErrorPrefix));
      in_error = true;
    } else if (in_error && text != "(none)") {
      said = text;  // the failed run's last output, as the check relays it
    }
  }
  for (const char* dangling : {"; its last output:", " its last output:"})
    if (error.size() >= std::strlen(dangling) &&
        error.compare(error.size() - std::strlen(dangling), std::string::npos, dangling) == 0)
      error.erase(error.size() - std::strlen(dangling));
  std::string out = error.empty() ? last : error;
  // A run that was stopped says "interrupted" last: that is how it ended, not why.
  if (!error.empty() && !said.empty() && said != error && said != "interrupted") out += "; its last output: " + said;
  if (out.size() > 400) out = out.substr(0, 400) + "...";
  return out;
}

// The output of a short command, or "" when it cannot run or fails.
std::string command_output(const std::vector<std::string>& argv, const std::string& cwd) {
  try {
    ExitStatus st;
    auto p = run_to_end({argv, {}, cwd}, 20, &st);
    return st.ok() ? p->stdout_tail().text() : "";
  } catch (const Error&) {
    return "";
  }
}

std::string field(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name, 0) == 0) {
      std::string v = line.substr(name.size());
      v.erase(0, v.find_first_not_of(' '));
      return v;
    }
  return "";
}

}  // namespace

Provenance local_provenance(const std::string& executable, const std::string& audit_dir) {
  Provenance p;
  p.reprocheck = kVersion;
  const std::string torch = files::parent_dir(executable) + "/reprocheck-torch";
  if (access(torch.c_str(), X_OK) == 0) {
    std::string v = command_output({torch, "--version"}, "");
    p.libtorch = field(v, "LibTorch");
    p.cuda = field(v, "CUDA");
    p.cudnn = field(v, "cuDNN");
  }
  const HostFacts host = host_facts();
  p.device = host.cpu;
  p.host = host.host;
  std::string commit = command_output({"git", "rev-parse", "HEAD"}, audit_dir);
  commit.erase(commit.find_last_not_of("\n\r ") + 1);
  if (!commit.empty()) {
    std::string dirty = command_output({"git", "status", "--porcelain", "--untracked-files=no"}, audit_dir);
    p.git_commit = commit + (dirty.find_first_not_of("\n ") != std::string::npos ? "+dirty" : "");
  }
  return p;
}

namespace {

// The cells of one audit run: what each one's result starts as, and where it goes when it ends.
struct CellRun {
  const std::vector<Cell>& cells;
  const std::map<std::string, int>& positions;
  const RunConfig& config;
  History& history;
  int64_t id;
  const RunObserver& observer;
  size_t done = 0;

  std::string base(size_t i) const { return fmt::format("{}/cell-{}", config.temp_dir, i); }
  CellResult start_result(size_t i) const {
    const Cell& c = cells[i];
    CellResult res;
    res.position = positions.at(c.key);
    res.key = c.key;
    res.model = c.model;
    res.column = c.column;
    res.settings = settings_json(c);
    res.expect = c.expect;
    res.tolerance = c.tolerance;
    return res;
  }
  void record(const CellResult& res, const std::string& err_text, const std::string& out_text) {
    if (!config.keep_dir.empty()) {
      const std::string name = fmt::format("{}/cell-{}", config.keep_dir, res.position);
      if (!err_text.empty()) files::write_file_atomically(name + ".err", err_text, "kept cell output");
      if (!out_text.empty()) files::write_file_atomically(name + ".out", out_text, "kept cell output");
    }
    history.add_cell(id, res);
    ++done;
    if (observer.finished) observer.finished(res, done);
  }
  // A finished check: its JSON report read into the result, or why it failed.
  CellResult result_of(const ProcessPool::Finished& f) const {
    CellResult res = start_result(f.index);
    res.seconds = f.seconds;
    res.exit_code = f.status.shell_code();
    const std::string report = base(f.index) + ".json";
    const std::string why = reason(f.process->stderr_tail());
    if (f.status.timed_out) {
      res.verdict = "failed";
      res.error =
          fmt::format("timed out after {:g} s (stopped); raise --timeout, or lower the cell's steps", config.timeout_s);
    } else if (f.status.exited && (f.status.code == 0 || f.status.code == 1) && files::exists(report)) {
      try {
        read_check_report(files::read_text(report, "cell report"), res);
      } catch (const Error& e) {
        res.verdict = "failed";
        res.error = e.what();
      }
    } else {
      res.verdict = "failed";
      res.error = why.empty() ? f.status.describe() : fmt::format("{} ({})", why, f.status.describe());
    }
    if (!config.keep_dir.empty() && files::exists(report))
      files::copy_file_atomically(report, fmt::format("{}/cell-{}.json", config.keep_dir, res.position),
                                  "kept cell report");
    return res;
  }
};

}  // namespace

AuditInfo new_audit(const AuditSpec& spec, const std::string& shard, size_t planned, const std::string& executable) {
  char buf[PATH_MAX];
  const std::string file = spec.path;
  const std::string dir = realpath(files::parent_dir(file).c_str(), buf) ? std::string(buf) : files::parent_dir(file);
  AuditInfo info;
  info.name = spec.name;
  info.audit_file = realpath(file.c_str(), buf) ? std::string(buf) : file;
  info.started_at = utc_now();
  info.shard = shard;
  info.cells_planned = static_cast<int>(planned);
  info.cells_total = static_cast<int>(spec.cells.size());
  info.thresholds = spec.thresholds;
  info.provenance = local_provenance(executable, dir);
  return info;
}

bool run_cells(const std::vector<Cell>& cells, const std::map<std::string, int>& positions, const RunConfig& config,
               History& history, int64_t id, const RunObserver& observer) {
  CellRun run{cells, positions, config, history, id, observer};
  ProcessPool pool({config.jobs, config.timeout_s, 5.0});
  ProcessPool::Callbacks cb;
  cb.spec = [&](size_t i) {
    const Cell& c = cells[i];
    std::vector<std::string> argv{config.executable};
    auto dash = std::find(c.args.begin(), c.args.end(), "--");
    argv.insert(argv.end(), c.args.begin(), dash);
    argv.insert(argv.end(), {"--json", run.base(i) + ".json"});
    argv.insert(argv.end(), dash, c.args.end());
    return ProcessSpec{argv, {{"NO_COLOR", "1"}}, c.cwd};
  };
  cb.start_failed = [&](size_t i, const CommandError& e) {
    CellResult res = run.start_result(i);
    res.verdict = "failed";
    res.exit_code = to_int(ExitCode::usage);
    res.error = e.what();
    run.record(res, std::string(e.what()) + "\n", "");
  };
  cb.finished = [&](const ProcessPool::Finished& f) {
    run.record(run.result_of(f), f.process->stderr_tail().text(), f.process->stdout_tail().text());
  };
  cb.tick = [&](const std::vector<std::pair<size_t, double>>& now) {
    if (!observer.tick) return;
    std::vector<std::string> names;
    for (const auto& [i, s] : now) names.push_back(fmt::format("{} [{}]", cells[i].model, cells[i].column));
    observer.tick(run.done, names);
  };
  cb.tick_s = 0.05;
  try {
    pool.run(cells.size(), cb);
  } catch (const Interrupted&) {
    return false;
  }
  return true;
}

namespace {

struct Shard {
  AuditInfo info;
  std::vector<CellResult> cells;
  int index = 1, count = 1;
};

// Each shard database's latest audit, checked to be a shard, not the target, and not given twice.
std::vector<Shard> read_shards(const std::vector<std::string>& shards, const std::string& target_path) {
  char buf[PATH_MAX];
  std::set<std::string> seen;
  const std::string target = realpath(target_path.c_str(), buf) ? std::string(buf) : target_path;
  std::vector<Shard> parts;
  for (const auto& path : shards) {
    const std::string real = realpath(path.c_str(), buf) ? std::string(buf) : path;
    if (real == target)
      throw UsageError(fmt::format("shard '{}' is the --db history itself; merge shards into another database", path));
    if (!seen.insert(real).second) throw UsageError(fmt::format("shard '{}' is given twice", path));
    auto h = History::open(path, false);
    auto ids = h->audits();
    if (ids.empty())
      throw InputError(fmt::format("shard database '{}' holds no audit; pass the --db of a shard's audit", path));
    Shard s;
    s.info = h->audit(ids.back());
    s.cells = h->cells(ids.back());
    if (s.info.shard.empty()) {
      if (shards.size() > 1)
        throw InputError(
            fmt::format("'{}': its latest audit is not a shard (run with --shard I/N); merge shards only", path));
    } else {
      auto [i, n] = parse_shard(s.info.shard);
      s.index = i, s.count = n;
    }
    parts.push_back(std::move(s));
  }
  const auto& first = parts.front();
  std::set<int> indices;
  for (const auto& p : parts) {
    if (p.info.name != first.info.name || p.count != first.count || p.info.cells_total != first.info.cells_total)
      throw InputError(
          fmt::format("the shards are of different audits: '{}' ({} cells, {} shards) and '{}' ({} cells, {} "
                      "shards); merge the shards of one audit",
                      first.info.name, first.info.cells_total, first.count, p.info.name, p.info.cells_total, p.count));
    if (!indices.insert(p.index).second)
      throw InputError(fmt::format("shard {}/{} is given twice; pass each shard's database once", p.index, p.count));
  }
  return parts;
}

}  // namespace

MergeResult merge_shards(const std::vector<std::string>& shards, History& history, const std::string& target_path,
                         bool allow_missing) {
  const std::vector<Shard> parts = read_shards(shards, target_path);
  const auto& first = parts.front();
  MergeResult result;
  // Shards merged before add nothing: the same merge run twice is one audit. Some of them merged
  // before, with others new, is refused: each shard belongs to one merged audit.
  std::set<int64_t> done;
  std::vector<std::string> merged_before;
  for (const auto& p : parts)
    if (auto id = history.merged_audit_of(p.info.uid)) {
      done.insert(*id);
      merged_before.push_back(fmt::format("{}/{}", p.index, p.count));
    }
  if (!done.empty()) {
    std::vector<std::string> uids;
    for (const auto& p : parts) uids.push_back(p.info.uid);
    std::sort(uids.begin(), uids.end());
    const AuditInfo before = history.audit(*done.begin());
    std::vector<std::string> held;
    for (size_t start = 0; start <= before.merged_from.size();) {
      size_t comma = std::min(before.merged_from.find(',', start), before.merged_from.size());
      held.push_back(before.merged_from.substr(start, comma - start));
      start = comma + 1;
    }
    std::sort(held.begin(), held.end());
    if (done.size() > 1 || held != uids)
      throw InputError(fmt::format(
          "shard(s) {} are already in '{}' as audit {}, which holds other shards than these; merge each shard "
          "once (pass the shards of one merge, or the ones not merged yet)",
          fmt::join(merged_before, ", "), target_path, *done.begin()));
    result.id = *done.begin();
    result.added = false;
    return result;
  }
  std::set<int> indices;
  for (const auto& p : parts) indices.insert(p.index);
  for (int i = 1; i <= first.count; ++i)
    if (!indices.count(i)) result.missing.push_back(fmt::format("{}/{}", i, first.count));
  if (!result.missing.empty() && !allow_missing)
    throw InputError(
        fmt::format("shard {} is missing; pass every shard's database, or --allow-missing-shards to "
                    "merge the shards that exist into an audit marked incomplete",
                    result.missing.front()));
  AuditInfo info = first.info;
  info.id = 0;
  info.uid.clear();
  info.shard = first.count <= 1         ? ""
               : result.missing.empty() ? fmt::format("merged from {} shards", first.count)
                                        : fmt::format("merged from {} of {} shards", parts.size(), first.count);
  info.cells_planned = 0;
  info.merged_from.clear();
  info.missing_shards.clear();
  for (const auto& m : result.missing) info.missing_shards += (info.missing_shards.empty() ? "" : ",") + m;
  std::string status = "complete", finished;
  std::vector<CellResult> cells;
  for (const auto& p : parts) {
    info.merged_from += (info.merged_from.empty() ? "" : ",") + p.info.uid;
    info.started_at = std::min(info.started_at, p.info.started_at);
    finished = std::max(finished, p.info.finished_at);
    info.cells_planned += p.info.cells_planned;
    if (p.info.status != "complete") status = p.info.status == "interrupted" ? "interrupted" : "unfinished";
    cells.insert(cells.end(), p.cells.begin(), p.cells.end());
  }
  if (status == "complete" && !result.missing.empty()) status = "incomplete";
  std::stable_sort(cells.begin(), cells.end(), [](const auto& a, const auto& b) { return a.position < b.position; });
  result.id = history.begin_audit(info);
  for (const auto& c : cells) history.add_cell(result.id, c);
  history.end_audit(result.id, status, finished.empty() ? utc_now() : finished);
  return result;
}

}  // namespace reprocheck::audit
