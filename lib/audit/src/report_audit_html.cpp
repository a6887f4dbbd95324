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
  for (const auto& t : trend) top = std::max(top, t.reproducible + t.divergent + t.failed + t.interrupted);
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
  std::string line;
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
    std::string date =
        t.started_at.size() >= 16 ? t.started_at.substr(5, 5) + " " + t.started_at.substr(11, 5) : t.started_at;
    if (trend.size() <= 16 || i % ((trend.size() + 15) / 16) == 0)
      svg += fmt::format(R"(<text class="tick" x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)", x, H - B + 14,
                         html::escape(date));
  }
  if (trend.size() > 1) svg += fmt::format(R"(<polyline class="broken-line" points="{}"/>)", line);
  svg += fmt::format(
      R"(<text class="axis" x="{:.1f}" y="{:.1f}" text-anchor="middle">audits, oldest first · bars: cells by verdict · line: cells that broke their expectation</text>)",
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

std::string html_heatmap(const AuditView& v) {
  using html::escape;
  std::string body;
  // The heatmap.
  body +=
      "<section id=\"matrix\"><h2>Models × settings</h2><div class=\"card\" style=\"overflow-x:auto\">"
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
      if (!c->meets_expectation())
        badge = fmt::format("<span class=\"expect\">✗ expected {}</span>", to_string(c->expect));
      else if (c->expect != Expect::reproducible)
        badge = fmt::format("<span class=\"expect\">expected {}</span>", to_string(c->expect));
      const bool detail = c->verdict == "divergent" || c->verdict == "failed";
      body += fmt::format(
          "<td class=\"cell {}{}\" data-verdict=\"{}\" data-model=\"{}\" data-column=\"{}\" data-meets=\"{}\" "
          "title=\"{}\">{}"
          "<div class=\"word\">{}</div><div class=\"where\">{}</div><div class=\"time\">{}</div>{}{}</td>",
          escape(c->verdict), c->meets_expectation() ? "" : " broken", escape(c->verdict), escape(c->model),
          escape(c->column), c->meets_expectation() ? "true" : "false", escape(what_happened(*c)),
          detail ? fmt::format("<a href=\"#cell-{}\">", c->position) : "", escape(c->verdict), escape(where),
          seconds_text(c->seconds), badge, detail ? "</a>" : "");
    }
    body += "</tr>";
  }
  body +=
      "</table><p class=\"legend\"><span><i style=\"background:var(--ok)\"></i>reproducible</span><span><i "
      "style=\"background:var(--bad)\"></i>divergent</span><span><i style=\"background:var(--fail)\"></i>failed (the "
      "check could not decide)</span><span><i style=\"background:var(--ink)\"></i>outline: breaks its "
      "expectation</span></p></div></section>";
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
        c.position, escape(c.verdict), escape(c.model), escape(c.column), escape(c.verdict), escape(c.verdict));
    if (c.verdict == "failed") {
      details += fmt::format("<p>The check failed (exit code {}): <span class=\"mono\">{}</span></p></div>",
                             c.exit_code, escape(c.error));
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
    if (!c.cause_title.empty())
      details += fmt::format("<div class=\"hint\"><b>Likely cause:</b> {}{}</div>", escape(c.cause_title),
                             c.fix.empty() ? "" : fmt::format(" · fix: <code>{}</code>", escape(c.fix)));
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
      escape(a.name), v.exit_code() ? "divergent" : "reproducible",
      v.exit_code() ? "NEEDS ATTENTION" : "ALL AS EXPECTED");
  body += fmt::format("<p class=\"sub\">{} · started {}{}{}</p>", escape(summary_line(v)), escape(a.started_at),
                      a.finished_at.empty() ? "" : " · finished " + escape(a.finished_at), escape(shard_words(a)));
  for (const auto& n : v.notes) body += fmt::format("<p class=\"card\">Note: {}</p>", escape(n));
  body += html_regressions(v) + html_heatmap(v);
  // The trend.
  body += fmt::format("<section id=\"trend\"><h2>Trend</h2><div class=\"card\">{}</div></section>", trend_svg(v.trend));
  body += html_costs(v) + html_details(v) + html_footer(v);
  return html::page(fmt::format("reprocheck audit: {}", a.name), body);
}

}  // namespace reprocheck::audit
