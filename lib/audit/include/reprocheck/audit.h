// The nightly audit: a TOML file of models and a settings matrix, expanded into cells (each one
// check), a history of results in SQLite, the regressions against the previous audit of each
// cell, and the audit's reports. Pure functions except History, which owns its database file.
// docs/audit.md describes the file and the reports.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace reprocheck::audit {

enum class Expect { reproducible, divergent, info };
const char* to_string(Expect e);

// When a regression counts (the [audit] table of the file).
struct Thresholds {
  double magnitude_factor = 10;  // the first divergence's max abs diff grew this many times
  double time_growth = 0.5;      // a check's time grew by more than this share (0.5: +50 %)
  double time_min_s = 5;         // ... and by more than this many seconds (noise below it)
  // Timing regressions compare a cell with the median of its last `timing_window` results of the
  // same verdict (one fast night on a shared runner is not a baseline).
  int timing_window = 5;
  bool timing_blocking = true;  // false ([audit] timing = "info"): timing regressions are listed, never fail
};

// One check of the audit: a model under one combination of settings.
struct Cell {
  std::string key;     // stable identity across audits: "model[setting=value,...]", all settings sorted
  std::string model;   // the model's name
  std::string column;  // the matrix values that make this cell ("threads=2 deterministic=on"), or "default"
  std::map<std::string, std::string> settings;  // every setting, as the check's flags take them
  Expect expect = Expect::reproducible;
  std::string tolerance = "bitwise";  // "bitwise", "torch", or "atol=A rtol=R"
  std::vector<std::string> args;      // the check's arguments after the reprocheck executable
  std::string cwd;                    // where the check runs
  bool script = false;                // a training script (reprocheck run), else a TorchScript model
};

struct AuditSpec {
  std::string path;  // the audit file
  std::string name;
  std::string db;  // the history database from the file ("" when it names none)
  int jobs = 1;
  Thresholds thresholds;
  std::vector<std::string> models;  // names, in the file's order
  std::vector<Cell> cells;          // in the file's order: models, then matrix combinations
};

// Reads and expands an audit file. Throws InputError naming the file, line and column of the
// first problem: "nightly.toml:12:1: unknown setting 'thread'; expected one of ...".
AuditSpec load_spec(const std::string& path);

// `--shard I/N`: the cells of shard I (1-based) of N, a deterministic round-robin share of the
// cell list. Throws UsageError for a malformed text.
std::pair<int, int> parse_shard(const std::string& text);
std::vector<Cell> shard_cells(const std::vector<Cell>& cells, int index, int count);

// Where the software and hardware were (one audit's runs, or one cell's check).
struct Provenance {
  std::string reprocheck, libtorch, cuda, cudnn, device, host, git_commit;
};

// The outcome of one cell.
struct CellResult {
  int64_t audit = 0;  // the audit it was recorded in (0: not yet recorded)
  int position = 0;   // the cell's index in the whole audit's cell list (shards keep it)
  std::string key, model, column;
  std::string settings;  // JSON object of the cell's settings
  Expect expect = Expect::reproducible;
  std::string tolerance = "bitwise";
  std::string verdict;  // reproducible, divergent, failed (the check could not decide), interrupted
  int exit_code = 0;
  std::string error;  // why a failed check failed: its first error line (and the run's last words)
  // The first divergence (divergent cells).
  int step = 0;
  std::string tensor, layer, layer_type, phase, kind, origin;  // origin: source, inherited, unknown
  bool hash_only = false;                                      // no statistics (hashes only)
  double max_abs = -1, max_rel = -1;                           // -1: none
  int64_t mismatched = 0, numel = 0;
  std::string cause, cause_title, fix;  // the first hint
  std::string evidence, test_it;        // ... what in the dumps points there, and the command that confirms it
  double seconds = 0;
  int64_t tensors = 0;
  std::string chart;  // JSON [[order, step, max_abs or null, label], ...]: the per-layer chart's points
  Provenance provenance;

  // Whether the verdict is what the cell expects (an info cell always is; a failed one never).
  bool meets_expectation() const;
  std::string first_label() const;  // "step 0 · param_grad · features.0.weight", "" when none
};

// A check's JSON report (docs/report-json.md) read into a cell's result. Throws InputError.
void read_check_report(const std::string& json_text, CellResult& out);

struct Regression {
  std::string key, model, column;
  std::string kind;  // newly_divergent, newly_reproducible, recovered (a negative control fires again),
                     // divergence_moved, magnitude_grew, time_grew, determinism_cost_grew
  std::string message;
  bool blocking = true;  // false: listed, but the exit code stays 0 (an info cell, or a cell fixed)
};

// A cell's earlier results (not interrupted ones), latest first, at most the timing window's.
using PastResults = std::function<std::vector<CellResult>(const std::string& key)>;

// The regressions of `now` against each cell's earlier results: verdicts and first divergences
// against the latest, times against the median of the results of the same verdict.
std::vector<Regression> find_regressions(const std::vector<CellResult>& now, const PastResults& past,
                                         const Thresholds& thresholds);

// Cells that differ only in `deterministic`: the time of the deterministic one over the other.
struct DeterminismCost {
  std::string model, with, without;                     // cell keys (deterministic on / off)
  std::string label;                                    // the other settings
  double on_s = 0, off_s = 0;                           // the two checks' times
  std::optional<std::pair<double, double>> previous_s;  // the same cells' times in their previous audit
  double ratio() const { return on_s / off_s; }
  std::optional<double> previous_ratio() const {
    if (!previous_s) return std::nullopt;
    return previous_s->first / previous_s->second;
  }
};
std::vector<DeterminismCost> determinism_costs(const std::vector<CellResult>& now, const PastResults& past);

struct AuditInfo {
  int64_t id = 0;
  std::string uid;                                        // unique across machines: merges keep it
  std::string name, audit_file, started_at, finished_at;  // UTC, ISO 8601
  std::string status = "running";  // running, complete, interrupted, incomplete (a merge without some shards)
  std::string shard;               // "2/4"; "" unsharded; "merged from 4 shards"
  std::string merged_from;         // a merged audit: the shards' audit uids, comma-separated
  std::string missing_shards;      // a merge with --allow-missing-shards: "2/4,3/4"
  int cells_planned = 0;           // cells of this audit (of this shard)
  int cells_total = 0;             // cells of the whole audit file
  Thresholds thresholds;
  Provenance provenance;
};

// One audit's counts, for the trend.
struct TrendPoint {
  int64_t audit = 0;
  std::string started_at, status;
  int reproducible = 0, divergent = 0, failed = 0, interrupted = 0, broken = 0;
  int regressions = 0, blocking = 0;  // found against earlier audits
};

// The history database. Rows are only ever added: an audit is a row in `audits`, each finished
// cell a row in `cells`, and its end a row in `audit_ends`. PRAGMA user_version holds the schema
// version; opening an older file migrates it, a newer one is refused.
class History {
 public:
  static constexpr int kSchemaVersion = 3;
  // Opens (create: makes a missing file) and migrates to `schema` (tests pass an older one).
  // Throws InputError for a damaged file, a file that is not reprocheck's, one from a newer
  // reprocheck, or one locked by another process for longer than `busy_ms`.
  static std::unique_ptr<History> open(const std::string& path, bool create, int schema = kSchemaVersion,
                                       int busy_ms = 3000);
  ~History();
  History(const History&) = delete;
  History& operator=(const History&) = delete;

  int schema_version() const;
  int64_t begin_audit(AuditInfo& info);  // sets info.id
  void add_cell(int64_t audit, const CellResult& r);
  void end_audit(int64_t audit, const std::string& status, const std::string& finished_at);
  void add_regressions(int64_t audit, const std::vector<Regression>& regressions);

  AuditInfo audit(int64_t id) const;
  std::vector<int64_t> audits() const;  // ids, oldest first
  std::vector<CellResult> cells(int64_t audit) const;
  // The latest result of the cell from an audit that started before `audit`.
  std::optional<CellResult> previous(const std::string& key, int64_t audit) const;
  // Its latest `limit` results before `audit`, latest first (interrupted ones left out).
  std::vector<CellResult> recent(const std::string& key, int64_t audit, int limit) const;
  // The merged audit that holds a shard audit of this uid, if any.
  std::optional<int64_t> merged_audit_of(const std::string& shard_uid) const;
  std::vector<TrendPoint> trend(int64_t up_to_audit, int limit) const;
  std::vector<Regression> regressions(int64_t audit) const;  // as recorded by add_regressions

  struct Impl;

 private:
  explicit History(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Everything a report shows.
struct AuditView {
  AuditInfo info;
  std::vector<std::string> models;   // rows, in order
  std::vector<std::string> columns;  // in order
  std::vector<CellResult> cells;
  std::vector<Regression> regressions;
  std::vector<DeterminismCost> costs;
  std::vector<TrendPoint> trend;
  std::vector<std::string> notes;
  int broken() const;    // cells that break their expectation
  int blocking() const;  // blocking regressions
  // 130 interrupted; 3 incomplete (shards missing from a merge); 1 when a cell breaks its
  // expectation or a blocking regression; else 0. The summary and every report state this code.
  int exit_code() const;
};

// Builds the view of an audit from the history (regressions against earlier audits, the trend).
AuditView make_view(const History& history, int64_t audit, const std::vector<std::string>& model_order = {});

std::string render_text(const AuditView& v);
std::string render_json(const AuditView& v);  // schema reprocheck-audit/1
std::string render_markdown(const AuditView& v);
std::string render_junit(const AuditView& v);  // one test case per cell
std::string render_html(const AuditView& v);

// Running an audit's cells: each cell is one `reprocheck` child process (the exact check its flags
// run, --json into a private folder), `jobs` at a time, through the core's ProcessPool.
struct RunConfig {
  std::string executable;  // the reprocheck command
  int jobs = 1;
  double timeout_s = 0;  // per cell; 0: none
  std::string keep_dir;  // "" or where each cell's report and last output are kept
  std::string temp_dir;  // private, for the cells' reports
};
struct RunObserver {
  std::function<void(const CellResult&, size_t done)> finished;
  std::function<void(size_t done, const std::vector<std::string>& running)> tick;
};
// Runs `cells` (positions: each cell's index in the whole audit) into the history's audit `id`.
// Returns false when interrupted (the cells finished so far are recorded).
bool run_cells(const std::vector<Cell>& cells, const std::map<std::string, int>& positions, const RunConfig& config,
               History& history, int64_t id, const RunObserver& observer);

// A new audit of `spec` (of its shard `shard`, "" for all), about to run `planned` cells: its name,
// file, start time, thresholds and this machine's provenance.
AuditInfo new_audit(const AuditSpec& spec, const std::string& shard, size_t planned, const std::string& executable);

// Where this machine is: reprocheck, LibTorch/CUDA/cuDNN (from reprocheck-torch --version next to
// `executable`), the CPU, the host, and the git commit of `audit_dir` ("+dirty" when changed).
Provenance local_provenance(const std::string& executable, const std::string& audit_dir);

// `audit merge`: the shards' latest audits merged into one new audit of `db`. Throws UsageError or
// InputError for shards that are not one audit's set (one given twice, the target itself, shards of
// different audits) and, unless `allow_missing`, for a missing shard: with it, the audit is
// recorded "incomplete" and names the missing shards. Shards already merged into `target` add
// nothing: `added` is false and the id is that of their merged audit.
struct MergeResult {
  int64_t id = 0;
  bool added = true;
  std::vector<std::string> missing;  // "2/4"
};
MergeResult merge_shards(const std::vector<std::string>& shards, History& target, const std::string& target_path,
                         bool allow_missing = false);

std::string utc_now();               // "2026-11-27T11:24:29Z"
std::string seconds_text(double s);  // "1.41 s", "21.8 s"

}  // namespace reprocheck::audit
