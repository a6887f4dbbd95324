// The audit history in SQLite. Rows are only added, never changed: an audit's start, each cell as
// it finishes (its own transaction, so an interrupted audit keeps what it finished), the
// regressions found, and the audit's end. PRAGMA application_id marks the file as reprocheck's,
// PRAGMA user_version holds the schema version, and kMigrations lead from each version to the next.
#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "history_detail.h"
#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"

namespace reprocheck::audit {

namespace {

constexpr int kApplicationId = 0x52505243;  // "RPRC"

// Migration N leads from schema version N to N + 1. Never edit one that has shipped: add another.
const char* const kMigrations[] = {
    // 0 -> 1: audits, their cells, their ends.
    R"sql(
CREATE TABLE audits (
  id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, name TEXT NOT NULL, audit_file TEXT NOT NULL,
  started_at TEXT NOT NULL, shard TEXT NOT NULL, cells_planned INTEGER NOT NULL, cells_total INTEGER NOT NULL,
  magnitude_factor REAL NOT NULL, time_growth REAL NOT NULL, time_min_s REAL NOT NULL,
  reprocheck TEXT NOT NULL, libtorch TEXT NOT NULL, cuda TEXT NOT NULL, cudnn TEXT NOT NULL, device TEXT NOT NULL,
  host TEXT NOT NULL, git_commit TEXT NOT NULL);
CREATE TABLE cells (
  id INTEGER PRIMARY KEY, audit_id INTEGER NOT NULL REFERENCES audits(id), position INTEGER NOT NULL,
  key TEXT NOT NULL, model TEXT NOT NULL, column_label TEXT NOT NULL, settings TEXT NOT NULL, expect TEXT NOT NULL,
  tolerance TEXT NOT NULL, verdict TEXT NOT NULL, exit_code INTEGER NOT NULL, error TEXT NOT NULL,
  step INTEGER NOT NULL, tensor TEXT NOT NULL, layer TEXT NOT NULL, layer_type TEXT NOT NULL, phase TEXT NOT NULL,
  kind TEXT NOT NULL, origin TEXT NOT NULL, hash_only INTEGER NOT NULL, max_abs REAL NOT NULL, max_rel REAL NOT NULL,
  mismatched INTEGER NOT NULL, numel INTEGER NOT NULL, cause TEXT NOT NULL, cause_title TEXT NOT NULL, fix TEXT NOT NULL,
  seconds REAL NOT NULL, tensors INTEGER NOT NULL,
  reprocheck TEXT NOT NULL, libtorch TEXT NOT NULL, cuda TEXT NOT NULL, cudnn TEXT NOT NULL, device TEXT NOT NULL,
  host TEXT NOT NULL);
CREATE TABLE audit_ends (audit_id INTEGER PRIMARY KEY REFERENCES audits(id), status TEXT NOT NULL, finished_at TEXT NOT NULL);
)sql",
    // 1 -> 2: the per-layer chart of each cell, the regressions each audit found, and a lookup of
    // a cell's earlier results by its key.
    R"sql(
ALTER TABLE cells ADD COLUMN chart TEXT NOT NULL DEFAULT '[]';
CREATE TABLE regressions (
  id INTEGER PRIMARY KEY, audit_id INTEGER NOT NULL REFERENCES audits(id), key TEXT NOT NULL, model TEXT NOT NULL,
  column_label TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, blocking INTEGER NOT NULL);
CREATE INDEX cells_by_key ON cells(key, audit_id);
)sql",
    // 2 -> 3: timing regressions against a window of audits (and whether they block), the shards a
    // merged audit holds and those it lacks, and the first hint's evidence and test command.
    R"sql(
ALTER TABLE audits ADD COLUMN timing_window INTEGER NOT NULL DEFAULT 5;
ALTER TABLE audits ADD COLUMN timing_blocking INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audits ADD COLUMN merged_from TEXT NOT NULL DEFAULT '';
ALTER TABLE audits ADD COLUMN missing_shards TEXT NOT NULL DEFAULT '';
ALTER TABLE cells ADD COLUMN evidence TEXT NOT NULL DEFAULT '';
ALTER TABLE cells ADD COLUMN test_it TEXT NOT NULL DEFAULT '';
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == History::kSchemaVersion);

std::string random_uid() {
  std::random_device rd;
  std::mt19937_64 g((static_cast<uint64_t>(rd()) << 32) ^ rd());
  return fmt::format("{:016x}{:016x}", g(), g());
}
}  // namespace

using namespace history_detail;

History::History(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
History::~History() = default;

std::unique_ptr<History> History::open(const std::string& path, bool create, int schema, int busy_ms) {
  if (files::exists(path) && !files::is_regular(path))
    throw InputError(
        fmt::format("history database '{}': not a regular file; pass the path of a database file (--db)", path));
  if (!files::exists(path) && !create)
    throw InputError(fmt::format("history database '{}': no such file; pass the path of an audit's --db", path));
  if (!files::exists(path)) {
    const std::string dir = files::parent_dir(path);
    if (!files::is_directory(dir))
      throw InputError(fmt::format(
          "history database '{}': the folder '{}' does not exist; create it or pass another --db", path, dir));
  }
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(path.c_str(), &impl->db, flags, nullptr);
  if (rc != SQLITE_OK) impl->fail(rc, "open it");
  sqlite3_busy_timeout(impl->db, busy_ms);
  sqlite3_extended_result_codes(impl->db, 1);
  // A file that is not a database fails on its first read; a damaged one in the quick check.
  const int app = impl->pragma_int("application_id");
  const int version = impl->pragma_int("user_version");
  int objects = 0;
  {
    Stmt s(*impl, "SELECT count(*) FROM sqlite_master", "read it");
    if (s.step()) objects = static_cast<int>(s.integer(0));
  }
  if (app != kApplicationId && objects > 0)
    throw InputError(
        fmt::format("history database '{}' is an SQLite database, but not a reprocheck audit history; "
                    "pass another --db (it is left as it is)",
                    path));
  if (schema < 1 || schema > kSchemaVersion) throw UsageError(fmt::format("no history schema version {}", schema));
  if (version < 0)
    throw InputError(
        fmt::format("history database '{}' has schema version {}, which no reprocheck writes; it is "
                    "left as it is: restore it from a backup, or pass a new --db",
                    path, version));
  if (version > kSchemaVersion)
    throw InputError(
        fmt::format("history database '{}' has schema version {}, written by a newer reprocheck (this one "
                    "reads up to {}); use that reprocheck, or pass another --db",
                    path, version, kSchemaVersion));
  {
    Stmt s(*impl, "PRAGMA quick_check", "check it");
    std::string result = s.step() ? s.text(0) : "";
    if (result != "ok")
      throw InputError(
          fmt::format("history database '{}' is damaged ({}); it is left as it is: restore it from a backup, "
                      "or pass a new --db",
                      path, first_line(result)));
  }
  impl->exec("PRAGMA foreign_keys = ON", "configure it");
  if (version < schema) {
    impl->exec("BEGIN IMMEDIATE", "migrate it");
    try {
      // Read again under the write lock: another process may have migrated it meanwhile.
      for (int v = std::max(0, impl->pragma_int("user_version")); v < schema; ++v) {
        impl->exec(kMigrations[v], fmt::format("migrate it from schema {} to {}", v, v + 1));
        impl->exec(fmt::format("PRAGMA user_version = {}", v + 1), "migrate it");
      }
      impl->exec(fmt::format("PRAGMA application_id = {}", kApplicationId), "migrate it");
      impl->exec("COMMIT", "migrate it");
    } catch (const Error& e) {
      sqlite3_exec(impl->db, "ROLLBACK", nullptr, nullptr, nullptr);
      if (sqlite3_errcode(impl->db) == SQLITE_BUSY || sqlite3_errcode(impl->db) == SQLITE_LOCKED) throw;
      // Its version and its tables disagree (a copy edited by hand, a version set back): the
      // user's file to fix, not a failed run.
      throw InputError(
          fmt::format("history database '{}' is inconsistent: its schema version {} does not match its "
                      "tables ({}); it is left as it is: restore it from a backup, or pass a new --db",
                      path, version, first_line(e.what())));
    } catch (...) {
      sqlite3_exec(impl->db, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }
  return std::unique_ptr<History>(new History(std::move(impl)));
}

int History::schema_version() const { return impl_->pragma_int("user_version"); }

int64_t History::begin_audit(AuditInfo& info) {
  if (info.uid.empty()) info.uid = random_uid();
  impl_->exec("BEGIN IMMEDIATE", "start an audit in it");
  try {
    Stmt s(
        *impl_,
        "INSERT INTO audits (uid, name, audit_file, started_at, shard, cells_planned, cells_total, magnitude_factor, "
        "time_growth, time_min_s, reprocheck, libtorch, cuda, cudnn, device, host, git_commit, timing_window, "
        "timing_blocking, merged_from, missing_shards) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        "start an audit in it");
    const auto& p = info.provenance;
    s.bind(info.uid)
        .bind(info.name)
        .bind(info.audit_file)
        .bind(info.started_at)
        .bind(info.shard)
        .bind(info.cells_planned)
        .bind(info.cells_total)
        .bind(info.thresholds.magnitude_factor)
        .bind(info.thresholds.time_growth)
        .bind(info.thresholds.time_min_s)
        .bind(p)
        .bind(p.git_commit)
        .bind(info.thresholds.timing_window)
        .bind(info.thresholds.timing_blocking)
        .bind(info.merged_from)
        .bind(info.missing_shards);
    s.step();
    info.id = sqlite3_last_insert_rowid(impl_->db);
    impl_->exec("COMMIT", "start an audit in it");
  } catch (...) {
    sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  return info.id;
}

void History::add_cell(int64_t audit, const CellResult& r) {
  std::string marks = "?";  // audit_id, then one per cell column
  for (int i = 0; i < kCellColumnCount; ++i) marks += ",?";
  Stmt s(*impl_, fmt::format("INSERT INTO cells (audit_id, {}) VALUES ({})", kCellColumns, marks),
         "record a cell in it");
  const auto& p = r.provenance;
  s.bind(audit)
      .bind(r.position)
      .bind(r.key)
      .bind(r.model)
      .bind(r.column)
      .bind(r.settings)
      .bind(to_string(r.expect))
      .bind(r.tolerance)
      .bind(r.verdict)
      .bind(r.exit_code)
      .bind(r.error)
      .bind(r.step)
      .bind(r.tensor)
      .bind(r.layer)
      .bind(r.layer_type)
      .bind(r.phase)
      .bind(r.kind)
      .bind(r.origin)
      .bind(r.hash_only)
      .bind(r.max_abs)
      .bind(r.max_rel)
      .bind(r.mismatched)
      .bind(r.numel)
      .bind(r.cause)
      .bind(r.cause_title)
      .bind(r.fix)
      .bind(r.seconds)
      .bind(r.tensors)
      .bind(p)
      .bind(r.chart.empty() ? std::string("[]") : r.chart)
      .bind(r.evidence)
      .bind(r.test_it);
  s.step();
}

void History::end_audit(int64_t audit, const std::string& status, const std::string& finished_at) {
  Stmt s(*impl_, "INSERT INTO audit_ends (audit_id, status, finished_at) VALUES (?,?,?)", "end an audit in it");
  s.bind(audit).bind(status).bind(finished_at);
  s.step();
}

void History::add_regressions(int64_t audit, const std::vector<Regression>& regressions) {
  impl_->exec("BEGIN IMMEDIATE", "record regressions in it");
  try {
    for (const auto& g : regressions) {
      Stmt s(*impl_,
             "INSERT INTO regressions (audit_id, key, model, column_label, kind, message, blocking) VALUES "
             "(?,?,?,?,?,?,?)",
             "record regressions in it");
      s.bind(audit).bind(g.key).bind(g.model).bind(g.column).bind(g.kind).bind(g.message).bind(g.blocking);
      s.step();
    }
    impl_->exec("COMMIT", "record regressions in it");
  } catch (...) {
    sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace reprocheck::audit
