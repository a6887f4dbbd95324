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
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == History::kSchemaVersion);

}  // namespace

struct History::Impl {
  std::string path;
  sqlite3* db = nullptr;
  ~Impl() {
    if (db) sqlite3_close_v2(db);
  }

  [[noreturn]] void fail(int rc, const std::string& doing) const {
    const std::string why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    const int primary = rc & 0xff;
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
      throw InputError(
          fmt::format("history database '{}' is locked by another process (an audit still writing to it?); "
                      "wait for it to finish, or pass another --db",
                      path));
    if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT)
      throw InputError(
          fmt::format("history database '{}' is damaged ({}); it is left as it is: restore it from a backup, "
                      "or pass a new --db",
                      path, why));
    if (primary == SQLITE_READONLY || primary == SQLITE_CANTOPEN || primary == SQLITE_PERM)
      throw InputError(fmt::format(
          "history database '{}': cannot {} ({}); check the file's and its folder's permissions", path, doing, why));
    if (primary == SQLITE_FULL || primary == SQLITE_IOERR)
      throw RunError(fmt::format("history database '{}': cannot {} ({}); check the disk", path, doing, why));
    throw RunError(fmt::format("history database '{}': cannot {} ({})", path, doing, why));
  }
  void exec(const std::string& sql, const std::string& doing) const {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    sqlite3_free(err);
    if (rc != SQLITE_OK) fail(rc, doing);
  }
  int pragma_int(const char* name) const {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db, fmt::format("PRAGMA {}", name).c_str(), -1, &st, nullptr);
    if (rc != SQLITE_OK) fail(rc, "read it");
    rc = sqlite3_step(st);
    int v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail(rc, "read it");
    return v;
  }
};

namespace {

// A prepared statement, bound by position, finalized on scope exit.
class Stmt {
 public:
  Stmt(const History::Impl& h, const std::string& sql, const char* doing) : h_(h), doing_(doing) {
    int rc = sqlite3_prepare_v2(h.db, sql.c_str(), -1, &st_, nullptr);
    if (rc != SQLITE_OK) h.fail(rc, doing);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt& bind(const std::string& v) {
    check(sqlite3_bind_text(st_, ++n_, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(const char* v) { return bind(std::string(v)); }
  Stmt& bind(int64_t v) {
    check(sqlite3_bind_int64(st_, ++n_, v));
    return *this;
  }
  Stmt& bind(int v) { return bind(static_cast<int64_t>(v)); }
  Stmt& bind(bool v) { return bind(static_cast<int64_t>(v)); }
  Stmt& bind(double v) {
    check(sqlite3_bind_double(st_, ++n_, v));
    return *this;
  }
  // The provenance columns, in the order both tables have them.
  Stmt& bind(const Provenance& p) {
    return bind(p.reprocheck).bind(p.libtorch).bind(p.cuda).bind(p.cudnn).bind(p.device).bind(p.host);
  }
  bool step() {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    h_.fail(rc, doing_);
  }
  std::string text(int col) const {
    const unsigned char* p = sqlite3_column_text(st_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(st_, col))) : "";
  }
  int64_t integer(int col) const { return sqlite3_column_int64(st_, col); }
  double real(int col) const { return sqlite3_column_double(st_, col); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) h_.fail(rc, doing_);
  }
  const History::Impl& h_;
  const char* doing_;
  sqlite3_stmt* st_ = nullptr;
  int n_ = 0;
};

std::string random_uid() {
  std::random_device rd;
  std::mt19937_64 g((static_cast<uint64_t>(rd()) << 32) ^ rd());
  return fmt::format("{:016x}{:016x}", g(), g());
}

Expect expect_from(const std::string& s) {
  if (s == "divergent") return Expect::divergent;
  if (s == "info") return Expect::info;
  return Expect::reproducible;
}

constexpr const char* kCellColumns =
    "position, key, model, column_label, settings, expect, tolerance, verdict, exit_code, error, step, tensor, layer, "
    "layer_type, phase, kind, origin, hash_only, max_abs, max_rel, mismatched, numel, cause, cause_title, fix, "
    "seconds, "
    "tensors, reprocheck, libtorch, cuda, cudnn, device, host, chart";
constexpr int kCellColumnCount = 34;

CellResult cell_from(const Stmt& s) {
  CellResult r;
  int c = 0;
  r.position = static_cast<int>(s.integer(c++));
  r.key = s.text(c++);
  r.model = s.text(c++);
  r.column = s.text(c++);
  r.settings = s.text(c++);
  r.expect = expect_from(s.text(c++));
  r.tolerance = s.text(c++);
  r.verdict = s.text(c++);
  r.exit_code = static_cast<int>(s.integer(c++));
  r.error = s.text(c++);
  r.step = static_cast<int>(s.integer(c++));
  r.tensor = s.text(c++);
  r.layer = s.text(c++);
  r.layer_type = s.text(c++);
  r.phase = s.text(c++);
  r.kind = s.text(c++);
  r.origin = s.text(c++);
  r.hash_only = s.integer(c++) != 0;
  r.max_abs = s.real(c++);
  r.max_rel = s.real(c++);
  r.mismatched = s.integer(c++);
  r.numel = s.integer(c++);
  r.cause = s.text(c++);
  r.cause_title = s.text(c++);
  r.fix = s.text(c++);
  r.seconds = s.real(c++);
  r.tensors = s.integer(c++);
  r.provenance.reprocheck = s.text(c++);
  r.provenance.libtorch = s.text(c++);
  r.provenance.cuda = s.text(c++);
  r.provenance.cudnn = s.text(c++);
  r.provenance.device = s.text(c++);
  r.provenance.host = s.text(c++);
  r.chart = s.text(c++);
  return r;
}

}  // namespace

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
        "time_growth, time_min_s, reprocheck, libtorch, cuda, cudnn, device, host, git_commit) VALUES "
        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
        .bind(p.git_commit);
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
      .bind(r.chart.empty() ? std::string("[]") : r.chart);
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

AuditInfo History::audit(int64_t id) const {
  Stmt s(*impl_,
         "SELECT a.id, uid, name, audit_file, started_at, shard, cells_planned, cells_total, magnitude_factor, "
         "time_growth, time_min_s, reprocheck, libtorch, cuda, cudnn, device, host, git_commit, "
         "coalesce(e.status, 'unfinished'), coalesce(e.finished_at, '') FROM audits a LEFT JOIN audit_ends e ON "
         "e.audit_id = a.id WHERE a.id = ?",
         "read an audit");
  s.bind(id);
  if (!s.step()) throw InputError(fmt::format("history database '{}' has no audit {}", impl_->path, id));
  AuditInfo a;
  int c = 0;
  a.id = s.integer(c++);
  a.uid = s.text(c++);
  a.name = s.text(c++);
  a.audit_file = s.text(c++);
  a.started_at = s.text(c++);
  a.shard = s.text(c++);
  a.cells_planned = static_cast<int>(s.integer(c++));
  a.cells_total = static_cast<int>(s.integer(c++));
  a.thresholds.magnitude_factor = s.real(c++);
  a.thresholds.time_growth = s.real(c++);
  a.thresholds.time_min_s = s.real(c++);
  a.provenance.reprocheck = s.text(c++);
  a.provenance.libtorch = s.text(c++);
  a.provenance.cuda = s.text(c++);
  a.provenance.cudnn = s.text(c++);
  a.provenance.device = s.text(c++);
  a.provenance.host = s.text(c++);
  a.provenance.git_commit = s.text(c++);
  a.status = s.text(c++);
  a.finished_at = s.text(c++);
  return a;
}

std::vector<int64_t> History::audits() const {
  Stmt s(*impl_, "SELECT id FROM audits ORDER BY id", "list its audits");
  std::vector<int64_t> ids;
  while (s.step()) ids.push_back(s.integer(0));
  return ids;
}

std::vector<CellResult> History::cells(int64_t audit) const {
  Stmt s(*impl_, fmt::format("SELECT {} FROM cells WHERE audit_id = ? ORDER BY position, id", kCellColumns),
         "read cells");
  s.bind(audit);
  std::vector<CellResult> out;
  while (s.step()) out.push_back(cell_from(s));
  return out;
}

std::optional<CellResult> History::previous(const std::string& key, int64_t audit) const {
  Stmt s(*impl_,
         fmt::format("SELECT {} FROM cells WHERE key = ? AND audit_id < ? AND verdict <> 'interrupted' ORDER BY "
                     "audit_id DESC, id DESC LIMIT 1",
                     kCellColumns),
         "read a cell's earlier result");
  s.bind(key).bind(audit);
  if (!s.step()) return std::nullopt;
  return cell_from(s);
}

std::vector<TrendPoint> History::trend(int64_t up_to_audit, int limit) const {
  Stmt s(*impl_,
         "SELECT a.id, a.started_at, coalesce(e.status, 'unfinished'), "
         "sum(c.verdict = 'reproducible'), sum(c.verdict = 'divergent'), sum(c.verdict = 'failed'), "
         "sum(c.verdict = 'interrupted'), sum(c.verdict = 'failed' OR (c.expect = 'reproducible' AND c.verdict = "
         "'divergent') OR (c.expect = 'divergent' AND c.verdict = 'reproducible')) "
         "FROM audits a LEFT JOIN audit_ends e ON e.audit_id = a.id JOIN cells c ON c.audit_id = a.id "
         "WHERE a.id <= ? GROUP BY a.id ORDER BY a.id DESC LIMIT ?",
         "read the trend");
  s.bind(up_to_audit).bind(limit);
  std::vector<TrendPoint> out;
  while (s.step()) {
    TrendPoint t;
    t.audit = s.integer(0);
    t.started_at = s.text(1);
    t.status = s.text(2);
    t.reproducible = static_cast<int>(s.integer(3));
    t.divergent = static_cast<int>(s.integer(4));
    t.failed = static_cast<int>(s.integer(5));
    t.interrupted = static_cast<int>(s.integer(6));
    t.broken = static_cast<int>(s.integer(7));
    out.insert(out.begin(), t);
  }
  return out;
}

std::vector<Regression> History::regressions(int64_t audit) const {
  Stmt s(*impl_,
         "SELECT key, model, column_label, kind, message, blocking FROM regressions WHERE audit_id = ? ORDER BY id",
         "read regressions");
  s.bind(audit);
  std::vector<Regression> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.integer(5) != 0});
  return out;
}

}  // namespace reprocheck::audit
