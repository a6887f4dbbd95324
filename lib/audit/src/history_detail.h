// The history database's connection, prepared statements and the cells table's columns, shared
// by history.cpp (opening, migrating, writing) and history_read.cpp (queries). Not a public header.
#pragma once

#include <fmt/format.h>
#include <sqlite3.h>

#include <string>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"

namespace reprocheck::audit {

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

namespace history_detail {

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

inline Expect expect_from(const std::string& s) {
  if (s == "divergent") return Expect::divergent;
  if (s == "info") return Expect::info;
  return Expect::reproducible;
}

inline constexpr const char* kCellColumns =
    "position, key, model, column_label, settings, expect, tolerance, verdict, exit_code, error, step, tensor, layer, "
    "layer_type, phase, kind, origin, hash_only, max_abs, max_rel, mismatched, numel, cause, cause_title, fix, "
    "seconds, "
    "tensors, reprocheck, libtorch, cuda, cudnn, device, host, chart, evidence, test_it";
inline constexpr int kCellColumnCount = 36;

// The provenance columns from column `c` on, in the order Stmt::bind(Provenance) writes them.
inline Provenance read_provenance(const Stmt& s, int& c) {
  Provenance p;
  p.reprocheck = s.text(c++);
  p.libtorch = s.text(c++);
  p.cuda = s.text(c++);
  p.cudnn = s.text(c++);
  p.device = s.text(c++);
  p.host = s.text(c++);
  return p;
}

// A cells row read in kCellColumns order (after its audit_id).
CellResult cell_from(const Stmt& s);

}  // namespace history_detail

}  // namespace reprocheck::audit
