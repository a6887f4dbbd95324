// reprocheck audit AUDIT.toml: every cell of the audit file is one check, run as its own
// `reprocheck` process (so a crash is that cell's failure, and a cell is exactly the check the
// same flags would run); results go to the history database as they finish; the reports compare
// each cell with its previous audit. `reprocheck audit merge` combines shard databases.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "cli.h"
#include "commands.h"
#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/subprocess.h"
#include "reprocheck/version.h"

namespace reprocheck::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct ReportFlags {
  std::string json, markdown, junit, html;
  void add_to(CLI::App& app) {
    app.add_option("--json", json, "write the audit as JSON (schema reprocheck-audit/1)");
    app.add_option("--markdown", markdown, "write a Markdown summary (for a CI step summary)");
    app.add_option("--junit", junit, "write a JUnit XML report (one test case per cell)");
    app.add_option("--html", html, "write a self-contained HTML report (heatmap, regressions, charts, trend)");
  }
  void check() const {
    for (const auto* p : {&json, &markdown, &junit, &html})
      if (!p->empty()) files::check_writable(*p, "report");
  }
  void write(const audit::AuditView& v) const {
    if (!json.empty()) files::write_file_atomically(json, audit::render_json(v), "report");
    if (!markdown.empty()) files::write_file_atomically(markdown, audit::render_markdown(v), "report");
    if (!junit.empty()) files::write_file_atomically(junit, audit::render_junit(v), "report");
    if (!html.empty()) files::write_file_atomically(html, audit::render_html(v), "report");
  }
};

// The bar on a terminal; one line per finished cell otherwise (and above the bar).
class AuditProgress {
 public:
  explicit AuditProgress(size_t total) : total_(total), tty_(isatty(STDERR_FILENO) != 0), start_(Clock::now()) {}
  ~AuditProgress() { clear(); }
  void finished(const audit::CellResult& r, size_t done) {
    clear();
    std::string expected = r.meets_expectation() ? "" : fmt::format(", expected {}", audit::to_string(r.expect));
    fmt::print(stderr, "cell {}/{} {} [{}]: {}{} in {:.2f} s\n", done, total_, r.model, r.column, r.verdict, expected,
               r.seconds);
    if (r.verdict == "failed") fmt::print(stderr, "  {}\n", r.error);
    std::fflush(stderr);
  }
  void tick(size_t done, const std::vector<std::string>& running) {
    if (!tty_) return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    constexpr int kWidth = 24;
    const int filled = total_ ? static_cast<int>(kWidth * done / total_) : 0;
    std::string bar;
    for (int i = 0; i < kWidth; ++i) bar += i < filled ? "█" : "░";
    std::string eta =
        done ? fmt::format(" · ETA {}", clock(elapsed / static_cast<double>(done) * static_cast<double>(total_ - done)))
             : "";
    // Redrawn at most 5 times a second; the running cell's name is cut to fit a line.
    if (shown_ && Clock::now() - drawn_ < std::chrono::milliseconds(200)) return;
    drawn_ = Clock::now();
    std::string name = running.empty() ? "" : running.front();
    if (name.size() > 60) name = name.substr(0, 57) + "...";
    std::string now =
        name.empty() ? "" : " · " + name + (running.size() > 1 ? fmt::format(" +{}", running.size() - 1) : "");
    fmt::print(stderr, "\r\033[K{} {}/{} cells · {}{}{}", bar, done, total_, clock(elapsed), eta, now);
    std::fflush(stderr);
    shown_ = true;
  }

 private:
  static std::string clock(double s) {
    auto t = static_cast<int64_t>(s + 0.5);
    return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                     : fmt::format("{}:{:02}", t / 60, t % 60);
  }
  void clear() {
    if (tty_ && shown_) fmt::print(stderr, "\r\033[K");
    shown_ = false;
  }
  size_t total_;
  bool tty_;
  bool shown_ = false;
  Clock::time_point start_;
  Clock::time_point drawn_;
};

// Records what the regressions are, renders the reports, and returns the exit code.
int finish(audit::History& history, int64_t id, const std::vector<std::string>& models, const ReportFlags& reports,
           const std::string& db) {
  auto cells = history.cells(id);
  const auto info = history.audit(id);
  const int window = std::max(1, info.thresholds.timing_window);
  auto regressions = audit::find_regressions(
      cells, [&](const std::string& key) { return history.recent(key, id, window); }, info.thresholds);
  if (!regressions.empty()) history.add_regressions(id, regressions);
  audit::AuditView view = audit::make_view(history, id, models);
  fmt::print("{}", audit::render_text(view));
  fmt::print("history: {} (audit {})\n", db, id);
  std::fflush(stdout);
  reports.write(view);
  return view.exit_code();
}

int cmd_audit_merge(const std::vector<std::string>& args) {
  CLI::App app("Merge the databases of an audit's shards into one audit of a history database, and report it",
               "reprocheck audit merge");
  std::vector<std::string> shards;
  std::string db;
  bool allow_missing = false;
  ReportFlags reports;
  app.add_option("shards", shards, "the shards' databases (--db of each 'reprocheck audit --shard I/N')")->required();
  app.add_option("--db", db, "the history database the merged audit is added to (created when missing)")->required();
  app.add_flag("--allow-missing-shards", allow_missing,
               "merge the shards that exist into an audit marked incomplete (exit 3), naming the missing ones");
  reports.add_to(app);
  if (int code = parse(app, args); code >= 0) return code;
  reports.check();
  auto history = audit::History::open(db, true);
  const auto merged = audit::merge_shards(shards, *history, db, allow_missing);
  if (!merged.added) {
    // The same merge again (a rerun CI job): nothing is added; the reports are those of that audit.
    fmt::print(stderr, "these shards are already in {} as audit {}: nothing added\n", db, merged.id);
    audit::AuditView view = audit::make_view(*history, merged.id);
    fmt::print("{}", audit::render_text(view));
    fmt::print("history: {} (audit {})\n", db, merged.id);
    std::fflush(stdout);
    reports.write(view);
    return view.exit_code();
  }
  fmt::print(
      stderr, "merged {} shard(s), {} cell(s), into audit {} of {}{}\n", shards.size(),
      history->cells(merged.id).size(), merged.id, db,
      merged.missing.empty() ? "" : fmt::format(" (incomplete: shard(s) {} missing)", fmt::join(merged.missing, ", ")));
  return finish(*history, merged.id, {}, reports, db);
}

}  // namespace

namespace {

int print_cells(const std::vector<audit::Cell>& cells) {
  for (const auto& c : cells) {
    std::string cmd = "reprocheck";
    for (const auto& a : c.args) cmd += " " + (a.find_first_of(" \"'") == std::string::npos ? a : "'" + a + "'");
    fmt::print("{} [{}] expect {}, tolerance {}\n  (cd {} && {})\n", c.model, c.column, audit::to_string(c.expect),
               c.tolerance, c.cwd, cmd);
  }
  return to_int(ExitCode::ok);
}

void make_keep_folder(const std::string& keep) {
  if (keep.empty()) return;
  if (files::exists(keep) && !files::is_directory(keep))
    throw InputError(fmt::format("--keep '{}': not a folder; pass a folder for the cells' reports", keep));
  if (!files::is_directory(keep) && mkdir(keep.c_str(), 0755) != 0)
    throw InputError(fmt::format("--keep '{}': cannot create the folder: {}", keep, std::strerror(errno)));
}

}  // namespace

int cmd_audit(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "merge") return cmd_audit_merge({args.begin() + 1, args.end()});
  CLI::App app(
      "Run an audit file's matrix of checks (models x settings), record them in a history database, and flag "
      "cells that break their expectation or regress against the previous audit (docs/audit.md)",
      "reprocheck audit AUDIT.toml");
  std::string file, db, shard, keep;
  int jobs = 0;
  double timeout = 0;
  bool list = false;
  ReportFlags reports;
  app.add_option("audit", file, "the audit file (TOML)")->required();
  app.add_option("--db", db, "the history database (default: the file's [audit] db, else NAME.sqlite here)");
  app.add_option("--jobs", jobs, "cells at a time (default: the file's [audit] jobs, else 1)");
  app.add_option("--shard", shard, "run shard I of N (1-based): a deterministic share of the cells; see 'audit merge'");
  app.add_option("--timeout", timeout,
                 "seconds a cell may take before it is stopped and recorded as failed (0: no limit)");
  app.add_option("--keep", keep, "keep each cell's JSON report and log in this folder");
  app.add_flag("--list", list, "list the cells and the command each runs, and stop");
  reports.add_to(app);
  if (int code = parse(app, args); code >= 0) return code;
  if (jobs < 0 || (app.count("--jobs") && jobs < 1))
    throw UsageError(fmt::format("bad --jobs {}: expected 1 or more", jobs));
  if (timeout < 0) throw UsageError(fmt::format("bad --timeout {}: expected 0 or more seconds", timeout));
  audit::AuditSpec spec = audit::load_spec(file);
  std::vector<audit::Cell> cells = spec.cells;
  std::string shard_text;
  if (!shard.empty()) {
    auto [i, n] = audit::parse_shard(shard);
    cells = audit::shard_cells(spec.cells, i, n);
    shard_text = fmt::format("{}/{}", i, n);
  }
  std::map<std::string, int> position;
  for (size_t i = 0; i < spec.cells.size(); ++i) position[spec.cells[i].key] = static_cast<int>(i);
  const std::string self = self_executable();
  if (list) return print_cells(cells);
  if (db.empty()) db = !spec.db.empty() ? spec.db : spec.name + ".sqlite";
  if (jobs == 0) jobs = spec.jobs;
  reports.check();
  make_keep_folder(keep);
  // The history first: a damaged or locked database fails before any cell runs.
  auto history = audit::History::open(db, true);
  install_interrupt_handler();
  const std::string tmp = files::make_temp_dir("reprocheck-audit-");
  struct Cleanup {
    std::string dir;
    ~Cleanup() { files::remove_tree(dir); }
  } cleanup{tmp};
  audit::AuditInfo info = audit::new_audit(spec, shard_text, cells.size(), self);
  const int64_t id = history->begin_audit(info);
  fmt::print(stderr, "audit {}: {} cell(s){}, {} at a time; history {} (audit {})\n", spec.name, cells.size(),
             shard_text.empty() ? "" : " (shard " + shard_text + ")", jobs, db, id);
  AuditProgress progress(cells.size());
  audit::RunObserver observer;
  observer.finished = [&](const audit::CellResult& r, size_t done) { progress.finished(r, done); };
  observer.tick = [&](size_t done, const std::vector<std::string>& running) { progress.tick(done, running); };
  const bool complete = audit::run_cells(cells, position, {self, jobs, timeout, keep, tmp}, *history, id, observer);
  const bool interrupted = !complete;
  size_t done = history->cells(id).size();
  history->end_audit(id, interrupted ? "interrupted" : "complete", audit::utc_now());
  const int code = finish(*history, id, spec.models, reports, db);  // 130 when interrupted, as the reports say
  if (interrupted)
    fmt::print(stderr, "interrupted: {} of {} cells finished and are in the history\n", done, cells.size());
  return code;
}

}  // namespace reprocheck::cli
