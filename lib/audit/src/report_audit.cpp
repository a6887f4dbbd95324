// The audit's reports: text for the terminal, JSON, Markdown, JUnit (one test case per cell) and
// a self-contained HTML page (heatmap, regressions, per-layer charts, trend). Pure functions.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "report_audit_common.h"
#include "reprocheck/audit.h"
#include "reprocheck/html.h"
#include "reprocheck/report.h"

namespace reprocheck::audit {

using nlohmann::json;

namespace report_detail {

std::string kind_words(const std::string& kind) {
  std::string s = kind;
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

const CellResult* find_cell(const AuditView& v, const std::string& model, const std::string& column) {
  for (const auto& c : v.cells)
    if (c.model == model && c.column == column) return &c;
  return nullptr;
}

std::string summary_line(const AuditView& v) {
  const int n = static_cast<int>(v.cells.size()), broken = v.broken(), blocking = v.blocking();
  std::string s = fmt::format("{} of {} cell{} as expected", n - broken, n, n == 1 ? "" : "s");
  if (broken)
    s += fmt::format(", {} break{} {} expectation", broken, broken == 1 ? "s" : "", broken == 1 ? "its" : "their");
  s += blocking ? fmt::format(", {} regression{}", blocking, blocking == 1 ? "" : "s") : ", no regressions";
  return s;
}

std::string shard_words(const AuditInfo& a) { return a.shard.empty() ? "" : fmt::format(" · shard {}", a.shard); }

std::string what_happened(const CellResult& c) {
  if (c.verdict == "failed") return "failed: " + c.error;
  if (c.verdict == "interrupted") return "interrupted";
  if (c.verdict == "divergent") {
    std::string s = "first divergence " + c.first_label();
    if (c.max_abs >= 0 && !c.hash_only) s += fmt::format(" (max abs diff {:.3g})", c.max_abs);
    return s;
  }
  return "every tensor matches";
}

}  // namespace report_detail

using namespace report_detail;

namespace {

std::string xml(const std::string& s) { return html::xml_escape(s); }

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

json cell_json(const CellResult& c) {
  json j = {{"position", c.position},     {"key", c.key},         {"model", c.model},
            {"settings", json::object()}, {"column", c.column},   {"expect", to_string(c.expect)},
            {"tolerance", c.tolerance},   {"verdict", c.verdict}, {"meets_expectation", c.meets_expectation()},
            {"exit_code", c.exit_code},   {"seconds", c.seconds}, {"tensors", c.tensors}};
  try {
    j["settings"] = json::parse(c.settings);
  } catch (const json::exception&) {
  }
  j["error"] = c.error.empty() ? json(nullptr) : json(c.error);
  j["first_divergence"] = nullptr;
  if (c.verdict == "divergent") {
    j["first_divergence"] = {{"step", c.step},
                             {"phase", c.phase},
                             {"layer", c.layer},
                             {"layer_type", c.layer_type},
                             {"kind", c.kind},
                             {"tensor", c.tensor},
                             {"origin", c.origin},
                             {"hash_only", c.hash_only},
                             {"max_abs", c.max_abs >= 0 ? json(c.max_abs) : json(nullptr)},
                             {"max_rel", c.max_rel >= 0 ? json(c.max_rel) : json(nullptr)},
                             {"mismatched", c.mismatched},
                             {"numel", c.numel}};
  }
  j["hint"] = c.cause.empty() ? json(nullptr)
                              : json({{"cause", c.cause},
                                      {"title", c.cause_title},
                                      {"evidence", c.evidence},
                                      {"fix", c.fix},
                                      {"test_it", c.test_it.empty() ? json(nullptr) : json(c.test_it)}});
  j["provenance"] = {
      {"reprocheck", c.provenance.reprocheck}, {"libtorch", c.provenance.libtorch}, {"cuda", c.provenance.cuda},
      {"cudnn", c.provenance.cudnn},           {"device", c.provenance.device},     {"host", c.provenance.host}};
  return j;
}

}  // namespace

std::string render_text(const AuditView& v) {
  std::string out = fmt::format("audit {}: {} cell{}{} · audit {} in the history\n\n", v.info.name, v.cells.size(),
                                v.cells.size() == 1 ? "" : "s", shard_words(v.info), v.info.id);
  size_t wm = 5, wc = 8;
  for (const auto& c : v.cells) wm = std::max(wm, c.model.size()), wc = std::max(wc, c.column.size());
  wc = std::min<size_t>(wc, 40);
  auto line = [](std::string s) {
    s.erase(s.find_last_not_of(' ') + 1);
    return s + "\n";
  };
  out += line(fmt::format("       {:<{}}  {:<{}}  {:<13} {:<13} {:>8}  {}", "model", wm, "settings", wc, "verdict",
                          "expected", "time", ""));
  for (const auto& c : v.cells)
    out += line(fmt::format("  {:<4} {:<{}}  {:<{}}  {:<13} {:<13} {:>8}  {}", c.meets_expectation() ? "ok" : "FAIL",
                            c.model, wm, c.column, wc, c.verdict, to_string(c.expect), seconds_text(c.seconds),
                            c.verdict == "reproducible" ? "" : what_happened(c)));
  if (!v.regressions.empty()) {
    out += fmt::format("\nregressions against the previous audit ({}):\n", v.regressions.size());
    for (const auto& r : v.regressions)
      out += fmt::format("  {}{} [{}]: {}: {}\n", r.blocking ? "" : "(listed, not failing) ", r.model, r.column,
                         kind_words(r.kind), r.message);
  }
  if (!v.costs.empty()) {
    out += "\ncost of determinism (time with deterministic on / off):\n";
    for (const auto& c : v.costs)
      out += fmt::format("  {} [{}]: {:.2f}x{}\n", c.model, c.label.empty() ? "default" : c.label, c.ratio(),
                         c.previous_ratio() ? fmt::format(" ({:.2f}x before)", *c.previous_ratio()) : "");
  }
  for (const auto& n : v.notes) out += fmt::format("\nnote: {}\n", n);
  out += fmt::format("\naudit: {} (exit {})\n", summary_line(v), v.exit_code());
  return out;
}

std::string render_json(const AuditView& v) {
  json j;
  j["schema"] = "reprocheck-audit/1";
  const auto& a = v.info;
  j["audit"] = {{"id", a.id},
                {"uid", a.uid},
                {"name", a.name},
                {"file", a.audit_file},
                {"started_at", a.started_at},
                {"finished_at", a.finished_at},
                {"status", a.status},
                {"shard", a.shard},
                {"cells_planned", a.cells_planned},
                {"cells_total", a.cells_total},
                {"missing_shards", split_list(a.missing_shards)},
                {"thresholds",
                 {{"magnitude_regression", a.thresholds.magnitude_factor},
                  {"time_regression", a.thresholds.time_growth},
                  {"time_regression_min_s", a.thresholds.time_min_s},
                  {"timing", a.thresholds.timing_blocking ? "blocking" : "info"},
                  {"timing_window", a.thresholds.timing_window}}},
                {"provenance",
                 {{"reprocheck", a.provenance.reprocheck},
                  {"libtorch", a.provenance.libtorch},
                  {"cuda", a.provenance.cuda},
                  {"cudnn", a.provenance.cudnn},
                  {"device", a.provenance.device},
                  {"host", a.provenance.host},
                  {"git_commit", a.provenance.git_commit}}}};
  j["models"] = v.models;
  j["columns"] = v.columns;
  j["cells"] = json::array();
  for (const auto& c : v.cells) j["cells"].push_back(cell_json(c));
  j["regressions"] = json::array();
  for (const auto& r : v.regressions)
    j["regressions"].push_back({{"key", r.key},
                                {"model", r.model},
                                {"column", r.column},
                                {"kind", r.kind},
                                {"message", r.message},
                                {"blocking", r.blocking}});
  j["determinism_costs"] = json::array();
  for (const auto& c : v.costs)
    j["determinism_costs"].push_back(
        {{"model", c.model},
         {"settings", c.label},
         {"with", c.with},
         {"without", c.without},
         {"ratio", c.ratio()},
         {"previous_ratio", c.previous_ratio() ? json(*c.previous_ratio()) : json(nullptr)}});
  j["trend"] = json::array();
  for (const auto& t : v.trend)
    j["trend"].push_back({{"audit", t.audit},
                          {"started_at", t.started_at},
                          {"status", t.status},
                          {"reproducible", t.reproducible},
                          {"divergent", t.divergent},
                          {"failed", t.failed},
                          {"interrupted", t.interrupted},
                          {"broken", t.broken},
                          {"regressions", t.regressions},
                          {"blocking_regressions", t.blocking}});
  j["notes"] = v.notes;
  j["broken"] = v.broken();
  j["blocking_regressions"] = v.blocking();
  j["exit_code"] = v.exit_code();
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string render_markdown(const AuditView& v) {
  auto md = [](const std::string& s) { return markdown_escape(s); };
  std::string out = fmt::format("### reprocheck audit: {}\n\n{}{} (exit {}). Audit {} of the history, started {}.\n\n",
                                md(v.info.name), summary_line(v), md(shard_words(v.info)), v.exit_code(), v.info.id,
                                v.info.started_at);
  if (!v.regressions.empty()) {
    out += "**Regressions against the previous audit:**\n\n";
    for (const auto& r : v.regressions)
      out += fmt::format("- {}{} `{}`: **{}**: {}\n", r.blocking ? "" : "(listed, not failing) ", md(r.model),
                         md(r.column), kind_words(r.kind), md(r.message));
    out += "\n";
  }
  out += "| model |";
  for (const auto& col : v.columns) out += " " + md(col) + " |";
  out += "\n|---|";
  for (size_t i = 0; i < v.columns.size(); ++i) out += "---|";
  out += "\n";
  for (const auto& m : v.models) {
    out += "| " + md(m) + " |";
    for (const auto& col : v.columns) {
      const CellResult* c = find_cell(v, m, col);
      if (!c) {
        out += " |";
        continue;
      }
      std::string text = c->verdict == "divergent" ? "**divergent** at " + md(c->tensor) : c->verdict;
      if (c->verdict == "failed") text = "**failed**";
      if (!c->meets_expectation())
        text += fmt::format(" ✗ expected {}", to_string(c->expect));
      else if (c->expect != Expect::reproducible)
        text += fmt::format(" (expected {})", to_string(c->expect));
      out += " " + text + " |";
    }
    out += "\n";
  }
  std::string failures;
  for (const auto& c : v.cells)
    if (!c.meets_expectation())
      failures += fmt::format("- {} `{}`: expected {}, {}\n", md(c.model), md(c.column), to_string(c.expect),
                              md(what_happened(c)));
  if (!failures.empty()) out += "\n**Cells that break their expectation:**\n\n" + failures;
  for (const auto& n : v.notes) out += fmt::format("\nNote: {}\n", md(n));
  return out;
}

std::string render_junit(const AuditView& v) {
  int failures = 0, errors = 0, skipped = 0;
  double total = 0;
  std::string cases;
  for (const auto& c : v.cells) {
    total += c.seconds;
    std::string body;
    std::vector<const Regression*> mine;
    for (const auto& r : v.regressions)
      if (r.key == c.key && r.blocking) mine.push_back(&r);
    if (c.verdict == "failed") {
      ++errors;
      body = fmt::format("<error message=\"{}\">{}</error>", xml("the check failed: " + c.error), xml(c.error));
    } else if (c.verdict == "interrupted") {
      ++skipped;
      body = "<skipped message=\"the audit was interrupted\"/>";
    } else if (!c.meets_expectation() || !mine.empty()) {
      ++failures;
      std::string message = !c.meets_expectation()
                                ? fmt::format("expected {}, was {}", to_string(c.expect), c.verdict)
                                : fmt::format("regression: {}: {}", kind_words(mine[0]->kind), mine[0]->message);
      std::string text = what_happened(c);
      for (const auto* r : mine) text += "\nregression: " + kind_words(r->kind) + ": " + r->message;
      if (!c.cause_title.empty()) text += "\nlikely cause: " + c.cause_title + (c.fix.empty() ? "" : "; fix: " + c.fix);
      body = fmt::format("<failure message=\"{}\" type=\"{}\">{}</failure>", xml(message),
                         c.meets_expectation() ? "regression" : "expectation", xml(text));
    }
    cases += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\">{}</testcase>\n",
                         xml("audit." + v.info.name + "." + c.model), xml(c.column), c.seconds, body);
  }
  return fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"reprocheck audit\" tests=\"{0}\" "
      "failures=\"{1}\" "
      "errors=\"{2}\" time=\"{4:.3f}\">\n  <testsuite name=\"{5}\" tests=\"{0}\" failures=\"{1}\" "
      "errors=\"{2}\" skipped=\"{3}\" time=\"{4:.3f}\" timestamp=\"{6}\">\n{7}  </testsuite>\n</testsuites>\n",
      v.cells.size(), failures, errors, skipped, total, xml("reprocheck audit " + v.info.name), xml(v.info.started_at),
      cases);
}

}  // namespace reprocheck::audit
