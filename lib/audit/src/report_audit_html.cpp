// The audit's HTML page: regressions first, the heatmap, the trend, the cost of determinism, and the
// divergent and failed cells with their charts.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "report_audit_common.h"
#include "reprocheck/audit.h"
#include "reprocheck/html.h"
#include "reprocheck/report.h"

namespace reprocheck::audit {

using namespace report_detail;
using json = nlohmann::json;

namespace {

std::string trend_svg(const std::vector<TrendPoint>& trend) {
  constexpr double W = 880, H = 200, L = 44, R = 16, T = 14, B = 40;
  int top = 1;
  for (const auto& t : trend)
    top = std::max({top, t.reproducible + t.divergent + t.failed + t.interrupted, t.regressions});
  const double slot = (W - L - R) / static_cast<double>(std::max<size_t>(trend.size(), 1));
  const double bar = std::min(36.0, slot * 0.7);
  auto Y = [&](double n) { return H - B - n / top * (H - T - B); };
  std::string svg = fmt::format(
      R"(<svg class="trend" data-audits="{}" viewBox="0 0 {} {}" role="img" aria-label="cells per verdict over the last audits" xmlns="http://www.w3.org/2000/svg">)",
      trend.size(), W, H);
  const int step = top > 10 ? (top + 4) / 5 : 1;
  for (int n = 0; n <= top; n += step) {
    svg += fmt::format(
        R"(<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/><text class="tick" x="{}" y="{:.1f}" text-anchor="end">{}</text>)",
        L, W - R, Y(n), Y(n), L - 6, Y(n) + 4, n);
  }
  std::string line, regress_line;
  for (size_t i = 0; i < trend.size(); ++i) {
    const auto& t = trend[i];
    const double x = L + slot * (static_cast<double>(i) + 0.5);
    double base = 0;
    for (auto [count, cls] : {std::pair{t.reproducible, "reproducible"}, std::pair{t.divergent, "divergent"},
                              std::pair{t.failed, "failed"}, std::pair{t.interrupted, "interrupted"}}) {
      if (count == 0) continue;
      svg += fmt::format(
          R"(<rect class="bar {}" x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}"><title>audit {} ({}): {} {}</title></rect>)",
          cls, x - bar / 2, Y(base + count), bar, Y(base) - Y(base + count), t.audit, t.started_at, count, cls);
      base += count;
    }
    line += fmt::format("{}{:.1f},{:.1f}", line.empty() ? "" : " ", x, Y(t.broken));
    svg += fmt::format(
        R"(<circle class="broken-dot" cx="{:.1f}" cy="{:.1f}" r="3"><title>audit {}: {} cell(s) broke their expectation</title></circle>)",
        x, Y(t.broken), t.audit, t.broken);
    // Regressions found against earlier audits: a diamond at their count, the count above it.
    regress_line += fmt::format("{}{:.1f},{:.1f}", regress_line.empty() ? "" : " ", x, Y(t.regressions));
    if (t.regressions > 0)
      svg += fmt::format(
          R"(<path class="regression-mark" data-audit="{}" data-count="{}" data-blocking="{}" d="M{:.1f} {:.1f} l5 5 l-5 5 l-5 -5 z"><title>audit {}: {} regression(s), {} blocking</title></path><text class="regression-count" x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)",
          t.audit, t.regressions, t.blocking, x, Y(t.regressions) - 5, t.audit, t.regressions, t.blocking, x,
          Y(t.regressions) - 8, t.regressions);
    std::string date =
        t.started_at.size() >= 16 ? t.started_at.substr(5, 5) + " " + t.started_at.substr(11, 5) : t.started_at;
    if (trend.size() <= 16 || i % ((trend.size() + 15) / 16) == 0)
      svg += fmt::format(R"(<text class="tick" x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)", x, H - B + 14,
                         html::escape(date));
  }
  if (trend.size() > 1) svg += fmt::format(R"(<polyline class="broken-line" points="{}"/>)", line);
  if (trend.size() > 1) svg += fmt::format(R"(<polyline class="regression-line" points="{}"/>)", regress_line);
  svg += fmt::format(
      R"(<text class="axis" x="{:.1f}" y="{:.1f}" text-anchor="middle">audits, oldest first · bars: cells by verdict · line: cells that broke their expectation · ◆ regressions</text>)",
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
      if (!p.is_array() || p.size() < 4 || !p[0].is_number_integer() || !p[1].is_number_integer()) continue;
      html::ChartPoint pt;
      pt.order = p[0].get<int64_t>();
      if (pt.order < 0 || pt.order == std::numeric_limits<int64_t>::max()) continue;  // a history file's nonsense
      pt.step = int(std::clamp<int64_t>(p[1].get<int64_t>(), -1, std::numeric_limits<int>::max()));
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

namespace {

std::string html_regressions(const AuditView& v) {
  using html::escape;
  std::string body;
  // Regressions first.
  body += "<section id=\"regressions\"><h2>Regressions against the previous audit</h2>";
  if (v.regressions.empty()) {
    body += "<div class=\"card banner\" id=\"no-regressions\">No regressions: every cell compares as before.</div>";
  } else {
    body += "<div class=\"card banner bad\"><ul class=\"regressions\">";
    for (const auto& r : v.regressions)
      body += fmt::format(
          "<li class=\"regression{}\" data-kind=\"{}\"><span class=\"kind\">{}</span> <b>{}</b> <span "
          "class=\"mono\">{}</span>: {}</li>",
          r.blocking ? "" : " nonblocking", escape(r.kind), escape(kind_words(r.kind)), escape(r.model),
          escape(r.column), escape(r.message));
    body += "</ul></div>";
  }
  body += "</section>";
  return body;
}

// The regressions of each cell, by its key.
std::map<std::string, std::vector<const Regression*>> regressions_by_cell(const AuditView& v) {
  std::map<std::string, std::vector<const Regression*>> out;
  for (const auto& r : v.regressions) out[r.key].push_back(&r);
  return out;
}

std::string heatmap_cell(const CellResult& c, const std::vector<const Regression*>& regressions) {
  using html::escape;
  std::string where;
  if (c.verdict == "divergent") where = c.layer.empty() ? c.tensor : c.layer;
  if (c.verdict == "divergent" && !c.phase.empty()) where += " · " + c.phase;
  if (c.verdict == "failed") where = c.error;
  std::string badge;
  if (!c.meets_expectation())
    badge = fmt::format("<span class=\"expect\">✗ expected {}</span>", to_string(c.expect));
  else if (c.expect != Expect::reproducible)
    badge = fmt::format("<span class=\"expect\">expected {}</span>", to_string(c.expect));
  std::string kinds, title = what_happened(c);
  bool blocking = false;
  for (const auto* r : regressions) {
    kinds += (kinds.empty() ? "" : ",") + r->kind;
    title += fmt::format("\n{}: {}", kind_words(r->kind), r->message);
    blocking = blocking || r->blocking;
  }
  if (blocking) badge += fmt::format("<span class=\"regressed-badge\">▲ {}</span>", escape(kind_words(kinds)));
  const bool detail = c.verdict == "divergent" || c.verdict == "failed";
  const bool control = c.verdict == "divergent" && c.expect == Expect::divergent;
  return fmt::format(
      "<td class=\"cell {}{}{}{}\" data-verdict=\"{}\" data-model=\"{}\" data-column=\"{}\" data-meets=\"{}\" "
      "data-regressions=\"{}\" title=\"{}\">{}"
      "<div class=\"word\">{}</div><div class=\"where\">{}</div><div class=\"time\">{}</div>{}{}</td>",
      escape(c.verdict), control ? " control" : "", c.meets_expectation() ? "" : " broken",
      blocking ? " regressed" : "", escape(c.verdict), escape(c.model), escape(c.column),
      c.meets_expectation() ? "true" : "false", escape(kinds), escape(title),
      detail ? fmt::format("<a href=\"#cell-{}\">", c.position) : "",
      escape(control ? "divergent as expected" : c.verdict), escape(where), seconds_text(c.seconds), badge,
      detail ? "</a>" : "");
}

// Models with the same columns (one matrix shape) share a heatmap, and its columns come
// kColumnsPerTable at a time, so that no table is wider than the page.
constexpr size_t kColumnsPerTable = 5;

std::string html_heatmap(const AuditView& v) {
  using html::escape;
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> groups;  // columns, models
  for (const auto& m : v.models) {
    std::vector<std::string> cols;
    for (const auto& col : v.columns)
      if (find_cell(v, m, col)) cols.push_back(col);
    if (cols.empty()) continue;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == cols; });
    if (g == groups.end())
      groups.push_back({cols, {m}});
    else
      g->second.push_back(m);
  }
  const auto regressions = regressions_by_cell(v);
  const std::vector<const Regression*> none;
  std::string body = "<section id=\"matrix\"><h2>Models × settings</h2>";
  for (const auto& [cols, models] : groups)
    for (size_t from = 0; from < cols.size(); from += kColumnsPerTable) {
      const size_t to = std::min(cols.size(), from + kColumnsPerTable);
      body += fmt::format(
          "<div class=\"card\"><table class=\"heatmap\" data-columns=\"{}\"><tr><th class=\"model\"></th>", to - from);
      for (size_t i = from; i < to; ++i) body += fmt::format("<th class=\"mono\">{}</th>", escape(cols[i]));
      for (size_t i = to; i < from + kColumnsPerTable && cols.size() > kColumnsPerTable; ++i) body += "<th></th>";
      body += "</tr>";
      for (const auto& m : models) {
        body += fmt::format("<tr><th class=\"model\">{}</th>", escape(m));
        for (size_t i = from; i < to; ++i) {
          const CellResult* c = find_cell(v, m, cols[i]);
          auto it = regressions.find(c->key);
          body += heatmap_cell(*c, it == regressions.end() ? none : it->second);
        }
        for (size_t i = to; i < from + kColumnsPerTable && cols.size() > kColumnsPerTable; ++i) body += "<td></td>";
        body += "</tr>";
      }
      body += "</table></div>";
    }
  body +=
      "<p class=\"legend\"><span><i style=\"background:var(--ok)\"></i>reproducible</span><span><i "
      "style=\"background:var(--bad)\"></i>divergent</span><span><i style=\"background:var(--control)\"></i>divergent "
      "as expected (a negative control)</span><span><i style=\"background:var(--fail)\"></i>failed (the check could "
      "not decide)</span><span><i class=\"outline\"></i>breaks its expectation</span><span><i "
      "class=\"dashed\"></i>a blocking regression</span></p></section>";
  return body;
}

std::string html_costs(const AuditView& v) {
  using html::escape;
  std::string body;
  // The cost of determinism.
  if (!v.costs.empty()) {
    body +=
        "<section id=\"costs\"><h2>Cost of determinism</h2><div class=\"card\"><table class=\"list\"><tr><th>model</th>"
        "<th>settings</th><th class=\"num\">on / off</th><th class=\"num\">before</th></tr>";
    for (const auto& c : v.costs)
      body += fmt::format(
          "<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"num\">{:.2f}x</td><td class=\"num\">{}</td></tr>",
          escape(c.model), escape(c.label.empty() ? "default" : c.label), c.ratio(),
          c.previous_ratio() ? fmt::format("{:.2f}x", *c.previous_ratio()) : "–");
    body += "</table></div></section>";
  }
  return body;
}

std::string html_details(const AuditView& v) {
  using html::escape;
  std::string body;
  // Details of the cells that diverged or failed.
  std::string details;
  for (const auto& c : v.cells) {
    if (c.verdict != "divergent" && c.verdict != "failed") continue;
    details += fmt::format(
        "<div class=\"card cell-detail\" id=\"cell-{}\" data-verdict=\"{}\"><h3>{} <span class=\"mono "
        "muted\">{}</span> "
        "<span class=\"verdict {}\">{}</span></h3>",
        c.position, escape(c.verdict), escape(c.model), escape(c.column), escape(c.verdict),
        escape(c.verdict == "divergent" && c.expect == Expect::divergent ? "divergent as expected" : c.verdict));
    if (c.verdict == "failed") {
      details += fmt::format(
          "<p>The check failed (exit code {}): <span class=\"mono failure-reason\">{}</span></p></div>", c.exit_code,
          escape(c.error.empty() ? "it gave no reason; run it with --keep to keep its log" : c.error));
      continue;
    }
    details += fmt::format("<p>First divergence: <span class=\"mono\">{}</span> · {}</p>", escape(c.first_label()),
                           escape(c.origin == "source"      ? "a source: its inputs were identical"
                                  : c.origin == "inherited" ? "inherited: its inputs already differed"
                                                            : "origin unknown"));
    if (c.hash_only)
      details += "<p class=\"muted\">Found by hashes alone: no statistics.</p>";
    else if (c.max_abs >= 0)
      details += fmt::format("<p>max abs diff <b>{}</b> · max rel diff {} · {} of {} elements differ</p>",
                             html::short_number(c.max_abs), html::short_number(c.max_rel), c.mismatched, c.numel);
    if (!c.cause_title.empty()) {
      details += fmt::format("<div class=\"hint cause\" data-cause=\"{}\"><b>Likely cause:</b> {}", escape(c.cause),
                             escape(c.cause_title));
      if (!c.evidence.empty())
        details +=
            fmt::format("<div class=\"evidence\"><span class=\"muted\">evidence</span> {}</div>", escape(c.evidence));
      if (!c.fix.empty())
        details +=
            fmt::format("<div class=\"fix\"><span class=\"muted\">fix</span> <code>{}</code></div>", escape(c.fix));
      if (!c.test_it.empty())
        details += fmt::format("<div class=\"test-it\"><span class=\"muted\">test it</span> <code>{}</code></div>",
                               escape(c.test_it));
      details += "</div>";
    }
    details += html::layer_chart(chart_of(c)) + "</div>";
  }
  if (!details.empty()) body += "<section id=\"details\"><h2>Divergent and failed cells</h2>" + details + "</section>";
  return body;
}

std::string html_footer(const AuditView& v) {
  using html::escape;
  std::string body;
  const auto& a = v.info;
  const auto& p = a.provenance;
  body += fmt::format(
      "<footer>reprocheck {} · LibTorch {} · CUDA {} · cuDNN {} · {} · host {}{} · audit {} ({}) of {}</footer>",
      escape(p.reprocheck), escape(p.libtorch.empty() ? "?" : p.libtorch), escape(p.cuda.empty() ? "?" : p.cuda),
      escape(p.cudnn.empty() ? "?" : p.cudnn), escape(p.device.empty() ? "?" : p.device), escape(p.host),
      p.git_commit.empty() ? "" : " · commit " + escape(p.git_commit), a.id, escape(a.uid.substr(0, 8)),
      escape(a.audit_file));
  return body;
}

}  // namespace

std::string render_html(const AuditView& v) {
  using html::escape;
  const auto& a = v.info;
  std::string body;
  body += fmt::format(
      "<header class=\"top\"><span class=\"brand\">reprocheck audit</span><h1>{}</h1><span class=\"verdict {}\" "
      "id=\"audit-verdict\">{}</span></header>",
      escape(a.name),
      v.exit_code() == 0   ? "reproducible"
      : v.exit_code() == 1 ? "divergent"
                           : "failed",
      v.exit_code() == 0          ? "ALL AS EXPECTED"
      : v.exit_code() == 1        ? "NEEDS ATTENTION"
      : a.status == "interrupted" ? "INTERRUPTED"
                                  : "INCOMPLETE");
  body += fmt::format("<p class=\"sub\">{} · exit {} · started {}{}{}</p>", escape(summary_line(v)), v.exit_code(),
                      escape(a.started_at), a.finished_at.empty() ? "" : " · finished " + escape(a.finished_at),
                      escape(shard_words(a)));
  for (const auto& n : v.notes) body += fmt::format("<p class=\"card\">Note: {}</p>", escape(n));
  body += html_regressions(v) + html_heatmap(v);
  // The trend.
  body += fmt::format("<section id=\"trend\"><h2>Trend</h2><div class=\"card\">{}</div></section>", trend_svg(v.trend));
  body += html_costs(v) + html_details(v) + html_footer(v);
  return html::page(fmt::format("reprocheck audit: {}", a.name), body);
}

}  // namespace reprocheck::audit
