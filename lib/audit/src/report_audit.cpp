// The audit's reports: text for the terminal, JSON, Markdown, JUnit (one test case per cell) and
// a self-contained HTML page (heatmap, regressions, per-layer charts, trend). Pure functions.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "reprocheck/audit.h"
#include "reprocheck/html.h"
#include "reprocheck/report.h"

namespace reprocheck::audit {

using nlohmann::json;

namespace {

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
  if (broken) s += fmt::format(", {} break{} {} expectation", broken, broken == 1 ? "s" : "", broken == 1 ? "its" : "their");
  s += blocking ? fmt::format(", {} regression{}", blocking, blocking == 1 ? "" : "s") : ", no regressions";
  return s;
}

std::string shard_words(const AuditInfo& a) { return a.shard.empty() ? "" : fmt::format(" · shard {}", a.shard); }

std::string xml(const std::string& s) { return html::xml_escape(s); }

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

json cell_json(const CellResult& c) {
  json j = {{"position", c.position},   {"key", c.key},         {"model", c.model},
            {"settings", json::object()}, {"column", c.column},  {"expect", to_string(c.expect)},
            {"tolerance", c.tolerance}, {"verdict", c.verdict}, {"meets_expectation", c.meets_expectation()},
            {"exit_code", c.exit_code}, {"seconds", c.seconds}, {"tensors", c.tensors}};
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
  j["hint"] = c.cause.empty() ? json(nullptr) : json({{"cause", c.cause}, {"title", c.cause_title}, {"fix", c.fix}});
  j["provenance"] = {{"reprocheck", c.provenance.reprocheck}, {"libtorch", c.provenance.libtorch},
                     {"cuda", c.provenance.cuda},             {"cudnn", c.provenance.cudnn},
                     {"device", c.provenance.device},         {"host", c.provenance.host}};
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
  out += line(fmt::format("       {:<{}}  {:<{}}  {:<13} {:<13} {:>8}  {}", "model", wm, "settings", wc, "verdict", "expected",
                          "time", ""));
  for (const auto& c : v.cells)
    out += line(fmt::format("  {:<4} {:<{}}  {:<{}}  {:<13} {:<13} {:>8}  {}", c.meets_expectation() ? "ok" : "FAIL", c.model,
                            wm, c.column, wc, c.verdict, to_string(c.expect), seconds_text(c.seconds),
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
                {"thresholds",
                 {{"magnitude_regression", a.thresholds.magnitude_factor},
                  {"time_regression", a.thresholds.time_growth},
                  {"time_regression_min_s", a.thresholds.time_min_s}}},
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
    j["determinism_costs"].push_back({{"model", c.model},
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
                          {"broken", t.broken}});
  j["notes"] = v.notes;
  j["broken"] = v.broken();
  j["blocking_regressions"] = v.blocking();
  j["exit_code"] = v.exit_code();
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string render_markdown(const AuditView& v) {
  auto md = [](const std::string& s) { return markdown_escape(s); };
  std::string out = fmt::format("### reprocheck audit: {}\n\n{}{}. Audit {} of the history, started {}.\n\n", md(v.info.name),
                                summary_line(v), md(shard_words(v.info)), v.info.id, v.info.started_at);
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
      if (!c->meets_expectation()) text += fmt::format(" ✗ expected {}", to_string(c->expect));
      else if (c->expect != Expect::reproducible) text += fmt::format(" (expected {})", to_string(c->expect));
      out += " " + text + " |";
    }
    out += "\n";
  }
  std::string failures;
  for (const auto& c : v.cells)
    if (!c.meets_expectation())
      failures += fmt::format("- {} `{}`: expected {}, {}\n", md(c.model), md(c.column), to_string(c.expect), md(what_happened(c)));
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
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"reprocheck audit\" tests=\"{0}\" failures=\"{1}\" "
      "errors=\"{2}\" time=\"{4:.3f}\">\n  <testsuite name=\"{5}\" tests=\"{0}\" failures=\"{1}\" "
      "errors=\"{2}\" skipped=\"{3}\" time=\"{4:.3f}\" timestamp=\"{6}\">\n{7}  </testsuite>\n</testsuites>\n",
      v.cells.size(), failures, errors, skipped, total, xml("reprocheck audit " + v.info.name), xml(v.info.started_at), cases);
}

namespace {

std::string trend_svg(const std::vector<TrendPoint>& trend) {
  constexpr double W = 880, H = 200, L = 44, R = 16, T = 14, B = 40;
  int top = 1;
  for (const auto& t : trend) top = std::max(top, t.reproducible + t.divergent + t.failed + t.interrupted);
  const double slot = (W - L - R) / static_cast<double>(std::max<size_t>(trend.size(), 1));
  const double bar = std::min(36.0, slot * 0.7);
  auto Y = [&](double n) { return H - B - n / top * (H - T - B); };
  std::string svg = fmt::format(
      R"(<svg class="trend" data-audits="{}" viewBox="0 0 {} {}" role="img" aria-label="cells per verdict over the last audits" xmlns="http://www.w3.org/2000/svg">)",
      trend.size(), W, H);
  const int step = top > 10 ? (top + 4) / 5 : 1;
  for (int n = 0; n <= top; n += step) {
    svg += fmt::format(R"(<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/><text class="tick" x="{}" y="{:.1f}" text-anchor="end">{}</text>)",
                       L, W - R, Y(n), Y(n), L - 6, Y(n) + 4, n);
  }
  std::string line;
  for (size_t i = 0; i < trend.size(); ++i) {
    const auto& t = trend[i];
    const double x = L + slot * (static_cast<double>(i) + 0.5);
    double base = 0;
    for (auto [count, cls] : {std::pair{t.reproducible, "reproducible"}, std::pair{t.divergent, "divergent"},
                              std::pair{t.failed, "failed"}, std::pair{t.interrupted, "interrupted"}}) {
      if (count == 0) continue;
      svg += fmt::format(R"(<rect class="bar {}" x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}"><title>audit {} ({}): {} {}</title></rect>)",
                         cls, x - bar / 2, Y(base + count), bar, Y(base) - Y(base + count), t.audit, t.started_at, count, cls);
      base += count;
    }
    line += fmt::format("{}{:.1f},{:.1f}", line.empty() ? "" : " ", x, Y(t.broken));
    svg += fmt::format(R"(<circle class="broken-dot" cx="{:.1f}" cy="{:.1f}" r="3"><title>audit {}: {} cell(s) broke their expectation</title></circle>)",
                       x, Y(t.broken), t.audit, t.broken);
    std::string date = t.started_at.size() >= 16 ? t.started_at.substr(5, 5) + " " + t.started_at.substr(11, 5) : t.started_at;
    if (trend.size() <= 16 || i % ((trend.size() + 15) / 16) == 0)
      svg += fmt::format(R"(<text class="tick" x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)", x, H - B + 14,
                         html::escape(date));
  }
  if (trend.size() > 1) svg += fmt::format(R"(<polyline class="broken-line" points="{}"/>)", line);
  svg += fmt::format(R"(<text class="axis" x="{:.1f}" y="{:.1f}" text-anchor="middle">audits, oldest first · bars: cells by verdict · line: cells that broke their expectation</text>)",
                     L + (W - L - R) / 2, H - 6);
  return svg + "</svg>";
}

html::Chart chart_of(const CellResult& c) {
  html::Chart chart;
  chart.total = std::max<int64_t>(c.tensors, 1);
  chart.caption = fmt::format("{} [{}]: max abs difference per tensor", c.model, c.column);
  try {
    const json points = json::parse(c.chart.empty() ? "[]" : c.chart);
    for (const auto& p : points) {
      if (!p.is_array() || p.size() < 4) continue;
      html::ChartPoint pt;
      pt.order = p[0].get<int64_t>();
      pt.step = p[1].get<int>();
      pt.hash_only = !p[2].is_number();
      pt.max_abs = pt.hash_only ? 0 : p[2].get<double>();
      pt.label = p[3].get<std::string>();
      chart.total = std::max(chart.total, pt.order + 1);
      chart.points.push_back(std::move(pt));
    }
  } catch (const json::exception&) {
    chart.points.clear();
  }
  // The points are the divergent tensors of the first divergence's pair, in execution order: the
  // first is the first divergence.
  if (!chart.points.empty()) chart.first_order = chart.points.front().order;
  chart.step_starts = html::step_starts_of(chart.points);
  return chart;
}

}  // namespace

std::string render_html(const AuditView& v) {
  using html::escape;
  const auto& a = v.info;
  std::string body;
  body += fmt::format(
      "<header class=\"top\"><span class=\"brand\">reprocheck audit</span><h1>{}</h1><span class=\"verdict {}\" "
      "id=\"audit-verdict\">{}</span></header>",
      escape(a.name), v.exit_code() ? "divergent" : "reproducible", v.exit_code() ? "NEEDS ATTENTION" : "ALL AS EXPECTED");
  body += fmt::format("<p class=\"sub\">{} · started {}{}{}</p>", escape(summary_line(v)), escape(a.started_at),
                      a.finished_at.empty() ? "" : " · finished " + escape(a.finished_at), escape(shard_words(a)));
  for (const auto& n : v.notes) body += fmt::format("<p class=\"card\">Note: {}</p>", escape(n));
  // Regressions first.
  body += "<section id=\"regressions\"><h2>Regressions against the previous audit</h2>";
  if (v.regressions.empty()) {
    body += "<div class=\"card banner\" id=\"no-regressions\">No regressions: every cell compares as before.</div>";
  } else {
    body += "<div class=\"card banner bad\"><ul class=\"regressions\">";
    for (const auto& r : v.regressions)
      body += fmt::format("<li class=\"regression{}\" data-kind=\"{}\"><span class=\"kind\">{}</span> <b>{}</b> <span class=\"mono\">{}</span>: {}</li>",
                          r.blocking ? "" : " nonblocking", escape(r.kind), escape(kind_words(r.kind)), escape(r.model),
                          escape(r.column), escape(r.message));
    body += "</ul></div>";
  }
  body += "</section>";
  // The heatmap.
  body += "<section id=\"matrix\"><h2>Models × settings</h2><div class=\"card\" style=\"overflow-x:auto\">"
          "<table class=\"heatmap\"><tr><th></th>";
  for (const auto& col : v.columns) body += fmt::format("<th class=\"mono\">{}</th>", escape(col));
  body += "</tr>";
  for (const auto& m : v.models) {
    body += fmt::format("<tr><th class=\"model\">{}</th>", escape(m));
    for (const auto& col : v.columns) {
      const CellResult* c = find_cell(v, m, col);
      if (!c) {
        body += "<td class=\"cell missing\" data-verdict=\"missing\">no cell</td>";
        continue;
      }
      std::string where;
      if (c->verdict == "divergent") where = c->layer.empty() ? c->tensor : c->layer;
      if (c->verdict == "divergent" && !c->phase.empty()) where += " · " + c->phase;
      if (c->verdict == "failed") where = c->error;
      std::string badge;
      if (!c->meets_expectation()) badge = fmt::format("<span class=\"expect\">✗ expected {}</span>", to_string(c->expect));
      else if (c->expect != Expect::reproducible) badge = fmt::format("<span class=\"expect\">expected {}</span>", to_string(c->expect));
      const bool detail = c->verdict == "divergent" || c->verdict == "failed";
      body += fmt::format(
          "<td class=\"cell {}{}\" data-verdict=\"{}\" data-model=\"{}\" data-column=\"{}\" data-meets=\"{}\" title=\"{}\">{}"
          "<div class=\"word\">{}</div><div class=\"where\">{}</div><div class=\"time\">{}</div>{}{}</td>",
          escape(c->verdict), c->meets_expectation() ? "" : " broken", escape(c->verdict), escape(c->model), escape(c->column),
          c->meets_expectation() ? "true" : "false", escape(what_happened(*c)),
          detail ? fmt::format("<a href=\"#cell-{}\">", c->position) : "", escape(c->verdict), escape(where),
          seconds_text(c->seconds), badge, detail ? "</a>" : "");
    }
    body += "</tr>";
  }
  body += "</table><p class=\"legend\"><span><i style=\"background:var(--ok)\"></i>reproducible</span><span><i "
          "style=\"background:var(--bad)\"></i>divergent</span><span><i style=\"background:var(--fail)\"></i>failed (the "
          "check could not decide)</span><span><i style=\"background:var(--ink)\"></i>outline: breaks its "
          "expectation</span></p></div></section>";
  // The trend.
  body += fmt::format("<section id=\"trend\"><h2>Trend</h2><div class=\"card\">{}</div></section>", trend_svg(v.trend));
  // The cost of determinism.
  if (!v.costs.empty()) {
    body += "<section id=\"costs\"><h2>Cost of determinism</h2><div class=\"card\"><table class=\"list\"><tr><th>model</th>"
            "<th>settings</th><th class=\"num\">on / off</th><th class=\"num\">before</th></tr>";
    for (const auto& c : v.costs)
      body += fmt::format("<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"num\">{:.2f}x</td><td class=\"num\">{}</td></tr>",
                          escape(c.model), escape(c.label.empty() ? "default" : c.label), c.ratio(),
                          c.previous_ratio() ? fmt::format("{:.2f}x", *c.previous_ratio()) : "–");
    body += "</table></div></section>";
  }
  // Details of the cells that diverged or failed.
  std::string details;
  for (const auto& c : v.cells) {
    if (c.verdict != "divergent" && c.verdict != "failed") continue;
    details += fmt::format("<div class=\"card cell-detail\" id=\"cell-{}\" data-verdict=\"{}\"><h3>{} <span class=\"mono muted\">{}</span> "
                           "<span class=\"verdict {}\">{}</span></h3>",
                           c.position, escape(c.verdict), escape(c.model), escape(c.column), escape(c.verdict), escape(c.verdict));
    if (c.verdict == "failed") {
      details += fmt::format("<p>The check failed (exit code {}): <span class=\"mono\">{}</span></p></div>", c.exit_code,
                             escape(c.error));
      continue;
    }
    details += fmt::format("<p>First divergence: <span class=\"mono\">{}</span> · {}</p>", escape(c.first_label()),
                           escape(c.origin == "source" ? "a source: its inputs were identical"
                                                       : c.origin == "inherited" ? "inherited: its inputs already differed"
                                                                                 : "origin unknown"));
    if (c.hash_only)
      details += "<p class=\"muted\">Found by hashes alone: no statistics.</p>";
    else if (c.max_abs >= 0)
      details += fmt::format("<p>max abs diff <b>{}</b> · max rel diff {} · {} of {} elements differ</p>",
                             html::short_number(c.max_abs), html::short_number(c.max_rel), c.mismatched, c.numel);
    if (!c.cause_title.empty())
      details += fmt::format("<div class=\"hint\"><b>Likely cause:</b> {}{}</div>", escape(c.cause_title),
                             c.fix.empty() ? "" : fmt::format(" · fix: <code>{}</code>", escape(c.fix)));
    details += html::layer_chart(chart_of(c)) + "</div>";
  }
  if (!details.empty()) body += "<section id=\"details\"><h2>Divergent and failed cells</h2>" + details + "</section>";
  const auto& p = a.provenance;
  body += fmt::format(
      "<footer>reprocheck {} · LibTorch {} · CUDA {} · cuDNN {} · {} · host {}{} · audit {} ({}) of {}</footer>",
      escape(p.reprocheck), escape(p.libtorch.empty() ? "?" : p.libtorch), escape(p.cuda.empty() ? "?" : p.cuda),
      escape(p.cudnn.empty() ? "?" : p.cudnn), escape(p.device.empty() ? "?" : p.device), escape(p.host),
      p.git_commit.empty() ? "" : " · commit " + escape(p.git_commit), a.id, escape(a.uid.substr(0, 8)), escape(a.audit_file));
  return html::page(fmt::format("reprocheck audit: {}", a.name), body);
}

}  // namespace reprocheck::audit
