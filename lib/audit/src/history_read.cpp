// The history's queries: an audit, its cells, a cell's earlier results, the trend, the regressions.
#include <fmt/format.h>

#include "history_detail.h"

namespace reprocheck::audit {

namespace history_detail {

CellResult cell_from(const Stmt& s) {
  CellResult r;
  int c = 0;
  r.audit = s.integer(c++);
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
  r.provenance = read_provenance(s, c);
  r.chart = s.text(c++);
  r.evidence = s.text(c++);
  r.test_it = s.text(c++);
  return r;
}

}  // namespace history_detail

using namespace history_detail;

AuditInfo History::audit(int64_t id) const {
  Stmt s(*impl_,
         "SELECT a.id, uid, name, audit_file, started_at, shard, cells_planned, cells_total, magnitude_factor, "
         "time_growth, time_min_s, reprocheck, libtorch, cuda, cudnn, device, host, git_commit, "
         "coalesce(e.status, 'unfinished'), coalesce(e.finished_at, ''), timing_window, timing_blocking, merged_from, "
         "missing_shards FROM audits a LEFT JOIN audit_ends e ON "
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
  a.provenance = read_provenance(s, c);
  a.provenance.git_commit = s.text(c++);
  a.status = s.text(c++);
  a.finished_at = s.text(c++);
  a.thresholds.timing_window = static_cast<int>(s.integer(c++));
  a.thresholds.timing_blocking = s.integer(c++) != 0;
  a.merged_from = s.text(c++);
  a.missing_shards = s.text(c++);
  return a;
}

std::vector<int64_t> History::audits() const {
  Stmt s(*impl_, "SELECT id FROM audits ORDER BY id", "list its audits");
  std::vector<int64_t> ids;
  while (s.step()) ids.push_back(s.integer(0));
  return ids;
}

std::vector<CellResult> History::cells(int64_t audit) const {
  Stmt s(*impl_, fmt::format("SELECT audit_id, {} FROM cells WHERE audit_id = ? ORDER BY position, id", kCellColumns),
         "read cells");
  s.bind(audit);
  std::vector<CellResult> out;
  while (s.step()) out.push_back(cell_from(s));
  return out;
}

std::optional<CellResult> History::previous(const std::string& key, int64_t audit) const {
  auto r = recent(key, audit, 1);
  if (r.empty()) return std::nullopt;
  return r.front();
}

std::vector<CellResult> History::recent(const std::string& key, int64_t audit, int limit) const {
  Stmt s(*impl_,
         fmt::format("SELECT audit_id, {} FROM cells WHERE key = ? AND audit_id < ? AND verdict <> 'interrupted' "
                     "ORDER BY audit_id DESC, id DESC",
                     kCellColumns),
         "read a cell's earlier results");
  s.bind(key).bind(audit);
  std::vector<CellResult> out;
  // One result per audit (a merged audit holds each cell once; this guards against a file edited by hand).
  while (static_cast<int>(out.size()) < limit && s.step()) {
    CellResult r = cell_from(s);
    if (out.empty() || out.back().audit != r.audit) out.push_back(std::move(r));
  }
  return out;
}

std::optional<int64_t> History::merged_audit_of(const std::string& shard_uid) const {
  Stmt s(*impl_, "SELECT id, merged_from FROM audits WHERE merged_from <> '' ORDER BY id", "read its merged audits");
  while (s.step()) {
    const std::string list = "," + s.text(1) + ",";
    if (list.find("," + shard_uid + ",") != std::string::npos) return s.integer(0);
  }
  return std::nullopt;
}

std::vector<TrendPoint> History::trend(int64_t up_to_audit, int limit) const {
  Stmt s(*impl_,
         "SELECT a.id, a.started_at, coalesce(e.status, 'unfinished'), "
         "sum(c.verdict = 'reproducible'), sum(c.verdict = 'divergent'), sum(c.verdict = 'failed'), "
         "sum(c.verdict = 'interrupted'), sum(c.verdict = 'failed' OR (c.expect = 'reproducible' AND c.verdict = "
         "'divergent') OR (c.expect = 'divergent' AND c.verdict = 'reproducible')), "
         "(SELECT count(*) FROM regressions g WHERE g.audit_id = a.id), "
         "(SELECT count(*) FROM regressions g WHERE g.audit_id = a.id AND g.blocking) "
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
    t.regressions = static_cast<int>(s.integer(8));
    t.blocking = static_cast<int>(s.integer(9));
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
