// The history database: rows round-trip, nothing is rewritten, migrations keep old rows, and a
// damaged, foreign, newer or locked file is refused with one line and left as it was.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <sstream>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "test_util.h"

namespace audit = reprocheck::audit;

namespace {

audit::CellResult cell(const std::string& key, const std::string& verdict, double seconds = 1.0) {
  audit::CellResult r;
  r.key = key;
  r.model = key.substr(0, key.find('['));
  r.column = "threads=1";
  r.settings = R"({"threads":"1"})";
  r.verdict = verdict;
  r.seconds = seconds;
  if (verdict == "divergent") {
    r.step = 0;
    r.phase = "forward";
    r.tensor = "conv1";
    r.kind = "activation";
    r.max_abs = 1e-6;
    r.chart = R"([[3,0,1e-06,"step 0 · forward · conv1"]])";
  }
  return r;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t add_audit(audit::History& h, const std::vector<audit::CellResult>& cells,
                  const std::string& status = "complete") {
  audit::AuditInfo info;
  info.name = "night";
  info.started_at = audit::utc_now();
  info.cells_planned = static_cast<int>(cells.size());
  int64_t id = h.begin_audit(info);
  for (const auto& c : cells) h.add_cell(id, c);
  h.end_audit(id, status, audit::utc_now());
  return id;
}

TEST(History, RoundTripsAuditsCellsAndThePreviousResultOfACell) {
  testutil::TempDir dir;
  auto h = audit::History::open(dir.file("h.sqlite"), true);
  EXPECT_EQ(h->schema_version(), audit::History::kSchemaVersion);
  int64_t first = add_audit(*h, {cell("a[t=1]", "reproducible", 2.0), cell("b[t=1]", "divergent")});
  int64_t second = add_audit(*h, {cell("a[t=1]", "divergent"), cell("b[t=1]", "divergent")}, "interrupted");
  EXPECT_LT(first, second);
  auto cells = h->cells(first);
  ASSERT_EQ(cells.size(), 2u);
  EXPECT_EQ(cells[1].tensor, "conv1");
  EXPECT_DOUBLE_EQ(cells[1].max_abs, 1e-6);
  EXPECT_EQ(cells[1].chart, R"([[3,0,1e-06,"step 0 · forward · conv1"]])");
  auto prev = h->previous("a[t=1]", second);
  ASSERT_TRUE(prev);
  EXPECT_EQ(prev->verdict, "reproducible");
  EXPECT_DOUBLE_EQ(prev->seconds, 2.0);
  EXPECT_FALSE(h->previous("a[t=1]", first));
  EXPECT_EQ(h->audit(second).status, "interrupted");
  EXPECT_EQ(h->audit(first).status, "complete");
  auto trend = h->trend(second, 10);
  ASSERT_EQ(trend.size(), 2u);
  EXPECT_EQ(trend[0].reproducible, 1);
  EXPECT_EQ(trend[1].divergent, 2);
  EXPECT_EQ(trend[1].broken, 2);  // both expected reproducible
  h->add_regressions(second, {{"a[t=1]", "a", "threads=1", "newly_divergent", "newly divergent", true}});
  ASSERT_EQ(h->regressions(second).size(), 1u);
  EXPECT_TRUE(h->regressions(first).empty());
  // Reopening finds everything, and the schema is not migrated again.
  h.reset();
  auto again = audit::History::open(dir.file("h.sqlite"), false);
  EXPECT_EQ(again->audits(), (std::vector<int64_t>{first, second}));
}

TEST(History, RecentResultsTheWindowMergedShardsAndRegressionsOnTheTrend) {
  testutil::TempDir dir;
  auto h = audit::History::open(dir.file("h.sqlite"), true);
  std::vector<int64_t> ids;
  for (double s : {1.0, 2.0, 3.0, 4.0}) ids.push_back(add_audit(*h, {cell("a[t=1]", "reproducible", s)}));
  auto recent = h->recent("a[t=1]", ids.back(), 2);
  ASSERT_EQ(recent.size(), 2u);  // latest first, the window's size
  EXPECT_DOUBLE_EQ(recent[0].seconds, 3.0);
  EXPECT_DOUBLE_EQ(recent[1].seconds, 2.0);
  EXPECT_EQ(recent[0].audit, ids[2]);
  EXPECT_EQ(h->recent("a[t=1]", ids.back(), 10).size(), 3u);
  // A merged audit remembers its shards' uids.
  audit::AuditInfo merged;
  merged.name = "night";
  merged.started_at = audit::utc_now();
  merged.merged_from = "aaaa,bbbb";
  merged.missing_shards = "3/3";
  merged.thresholds.timing_window = 7;
  merged.thresholds.timing_blocking = false;
  const int64_t m = h->begin_audit(merged);
  h->add_cell(m, cell("a[t=1]", "reproducible"));
  h->end_audit(m, "incomplete", audit::utc_now());
  EXPECT_EQ(h->merged_audit_of("bbbb"), m);
  EXPECT_FALSE(h->merged_audit_of("bbb"));
  const auto info = h->audit(m);
  EXPECT_EQ(info.status, "incomplete");
  EXPECT_EQ(info.missing_shards, "3/3");
  EXPECT_EQ(info.thresholds.timing_window, 7);
  EXPECT_FALSE(info.thresholds.timing_blocking);
  h->add_regressions(
      m, {{"a[t=1]", "a", "t=1", "time_grew", "slower", false}, {"a[t=1]", "a", "t=1", "newly_divergent", "x", true}});
  auto trend = h->trend(m, 10);
  EXPECT_EQ(trend.back().regressions, 2);
  EXPECT_EQ(trend.back().blocking, 1);
  EXPECT_EQ(trend.front().regressions, 0);
}

TEST(History, MigratesAnOlderSchemaKeepingItsRows) {
  testutil::TempDir dir;
  const std::string path = dir.file("old.sqlite");
  {
    auto v1 = audit::History::open(path, true, 1);
    EXPECT_EQ(v1->schema_version(), 1);
    // Version-1 rows, written as version 1 did (no chart, timing or evidence columns).
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const int64_t id = 1;
    ASSERT_EQ(sqlite3_exec(db,
                           "INSERT INTO audits (id, uid, name, audit_file, started_at, shard, cells_planned, "
                           "cells_total, magnitude_factor, time_growth, time_min_s, reprocheck, libtorch, cuda, cudnn, "
                           "device, host, git_commit) VALUES (1, 'u1', 'night', 'n.toml', '2026-01-01T00:00:00Z', '', "
                           "1, 1, 10, 0.5, 5, '0.1.0', '', '', '', '', '', '')",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    std::string sql =
        "INSERT INTO cells (audit_id, position, key, model, column_label, settings, expect, tolerance, verdict, "
        "exit_code, error, step, tensor, layer, layer_type, phase, kind, origin, hash_only, max_abs, max_rel, "
        "mismatched, numel, cause, cause_title, fix, seconds, tensors, reprocheck, libtorch, cuda, cudnn, device, "
        "host) "
        "VALUES (" +
        std::to_string(id) +
        ", 0, 'a[t=1]', 'a', 'default', '{}', 'reproducible', 'bitwise', 'reproducible', 0, '', 0, '', '', '', '', '', "
        "'', 0, -1, -1, 0, 0, '', '', '', 1.5, 10, '0.1.0', '', '', '', '', '')";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  auto h = audit::History::open(path, false);
  EXPECT_EQ(h->schema_version(), audit::History::kSchemaVersion);
  auto ids = h->audits();
  ASSERT_EQ(ids.size(), 1u);
  auto cells = h->cells(ids[0]);
  ASSERT_EQ(cells.size(), 1u);
  EXPECT_EQ(cells[0].key, "a[t=1]");
  EXPECT_DOUBLE_EQ(cells[0].seconds, 1.5);
  EXPECT_EQ(cells[0].chart, "[]");
  EXPECT_TRUE(h->regressions(ids[0]).empty());  // the table version 2 added
  EXPECT_EQ(cells[0].evidence, "");             // the columns version 3 added
  const auto info = h->audit(ids[0]);
  EXPECT_EQ(info.thresholds.timing_window, 5);
  EXPECT_TRUE(info.thresholds.timing_blocking);
  EXPECT_EQ(info.merged_from, "");
}

TEST(History, RefusesDamagedForeignAndNewerFilesAndLeavesThemAsTheyWere) {
  testutil::TempDir dir;
  auto refused = [&](const std::string& path, const std::string& why) {
    const std::string before = slurp(path);
    try {
      audit::History::open(path, true);
      ADD_FAILURE() << "opened " << path;
    } catch (const reprocheck::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
    EXPECT_EQ(slurp(path), before) << path << " was changed";
  };
  // Not a database at all.
  std::ofstream(dir.file("junk.sqlite")) << std::string(3000, 'j');
  refused(dir.file("junk.sqlite"), "damaged");
  // A real history, truncated in the middle of its pages.
  {
    auto h = audit::History::open(dir.file("cut.sqlite"), true);
    std::vector<audit::CellResult> many;
    for (int i = 0; i < 200; ++i) many.push_back(cell("m[" + std::to_string(i) + "]", "divergent"));
    add_audit(*h, many);
  }
  std::string whole = slurp(dir.file("cut.sqlite"));
  ASSERT_GT(whole.size(), 8192u);
  std::string cut = whole;
  for (size_t i = 4096 + 100; i < cut.size(); i += 7) cut[i] = static_cast<char>(0xA5);
  std::ofstream(dir.file("cut.sqlite"), std::ios::binary | std::ios::trunc) << cut;
  refused(dir.file("cut.sqlite"), "damaged");
  // Someone else's SQLite database.
  {
    sqlite3* db = nullptr;
    sqlite3_open(dir.file("other.sqlite").c_str(), &db);
    sqlite3_exec(db, "CREATE TABLE t (x)", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  refused(dir.file("other.sqlite"), "not a reprocheck audit history");
  // A newer reprocheck's.
  { auto h = audit::History::open(dir.file("new.sqlite"), true); }
  {
    sqlite3* db = nullptr;
    sqlite3_open(dir.file("new.sqlite").c_str(), &db);
    sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  refused(dir.file("new.sqlite"), "newer reprocheck");
  // A negative schema version, which no reprocheck writes.
  { auto h = audit::History::open(dir.file("neg.sqlite"), true); }
  {
    sqlite3* db = nullptr;
    sqlite3_open(dir.file("neg.sqlite").c_str(), &db);
    sqlite3_exec(db, "PRAGMA user_version = -1", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  refused(dir.file("neg.sqlite"), "which no reprocheck writes");
  EXPECT_THROW(audit::History::open(dir.file("absent.sqlite"), false), reprocheck::InputError);
  EXPECT_THROW(audit::History::open(dir.file("no/such/folder.sqlite"), true), reprocheck::InputError);
}

TEST(History, ALockedDatabaseIsOneClearError) {
  testutil::TempDir dir;
  const std::string path = dir.file("h.sqlite");
  audit::History::open(path, true);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  try {
    auto h = audit::History::open(path, true, audit::History::kSchemaVersion, 100);
    audit::AuditInfo info;
    h->begin_audit(info);
    ADD_FAILURE() << "wrote to a locked database";
  } catch (const reprocheck::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("is locked by another process"), std::string::npos) << e.what();
  }
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  auto h = audit::History::open(path, true);  // free again
  EXPECT_TRUE(h->audits().empty());
}

}  // namespace
