// The HTML report of one check (render_html) and the pieces the audit report shares: the page,
// its stylesheet, and the per-layer chart as inline SVG. No script and no network: the file opens
// anywhere, offline, and prints.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "report_common.h"
#include "reprocheck/html.h"
#include "reprocheck/protocol.h"
#include "reprocheck/version.h"

namespace reprocheck {

namespace html {

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t') out += c;
  out = escape(out);
  // XML has &apos; as well, and readers of JUnit files expect it.
  for (size_t at = out.find("&#39;"); at != std::string::npos; at = out.find("&#39;", at)) out.replace(at, 5, "&apos;");
  return out;
}

std::string short_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (v == 0) return "0";
  return fmt::format("{:.3g}", v);
}

std::vector<std::pair<int, int64_t>> step_starts_of(const std::vector<ChartPoint>& points) {
  std::vector<std::pair<int, int64_t>> starts;
  for (const auto& p : points)
    if (starts.empty() || starts.back().first != p.step) starts.emplace_back(p.step, p.order);
  return starts;
}

namespace {

constexpr double kWidth = 880, kHeight = 270;
constexpr double kLeft = 62, kRight = 18, kTop = 34, kBottom = 38;
constexpr double kBand = 14;         // the hashes-only band above the plot
constexpr size_t kMaxPoints = 4000;  // more are thinned: the largest of each x pixel is kept

}  // namespace

namespace {

// Thinning keeps the first divergence and, per horizontal pixel, the largest difference.
std::vector<ChartPoint> thinned(const Chart& chart) {
  if (chart.points.size() <= kMaxPoints) return chart.points;
  std::map<int64_t, ChartPoint> per_pixel;
  const double span = static_cast<double>(std::max<int64_t>(chart.total, 1));
  for (const auto& p : chart.points) {
    auto px = static_cast<int64_t>(static_cast<double>(p.order) / span * (kWidth - kLeft - kRight));
    auto it = per_pixel.find(px);
    if (it == per_pixel.end())
      per_pixel.emplace(px, p);
    else if (it->second.order == chart.first_order)
      continue;
    else if (p.order == chart.first_order || (!p.hash_only && (it->second.hash_only || p.max_abs > it->second.max_abs)))
      it->second = p;
  }
  std::vector<ChartPoint> points;
  for (auto& [px, p] : per_pixel) points.push_back(std::move(p));
  return points;
}

// The chart's coordinates: x by execution order, y by log10 of the max abs diff, in whole decades.
struct Axes {
  double y0 = -8, y1 = 0, x_span = 1;
  double plot_top = kTop + kBand + 6, plot_bottom = kHeight - kBottom;
  Axes(const Chart& chart, const std::vector<ChartPoint>& points) {
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& p : points)
      if (!p.hash_only && p.max_abs > 0 && std::isfinite(p.max_abs)) {
        lo = std::min(lo, std::log10(p.max_abs));
        hi = std::max(hi, std::log10(p.max_abs));
      }
    if (!std::isfinite(lo)) lo = -8, hi = 0;
    y0 = std::floor(lo), y1 = std::ceil(hi);
    if (y1 - y0 < 2) y0 = y1 - 2;
    x_span = static_cast<double>(std::max<int64_t>(chart.total, 1));
  }
  double x(int64_t order) const {
    return kLeft + (static_cast<double>(order) + 0.5) / x_span * (kWidth - kLeft - kRight);
  }
  double y(double v) const {
    if (!(v > 0) || !std::isfinite(v)) return plot_bottom;
    return plot_bottom - (std::log10(v) - y0) / (y1 - y0) * (plot_bottom - plot_top);
  }
};

// Decade gridlines, step boundaries and the axes' labels.
std::string chart_frame(const Chart& chart, const Axes& a) {
  std::string svg;
  const int decades = static_cast<int>(a.y1 - a.y0);
  const int every = decades > 8 ? 2 : 1;
  for (int e = static_cast<int>(a.y0); e <= static_cast<int>(a.y1); ++e) {
    const double y = a.y(std::pow(10.0, e));
    svg += fmt::format(R"(<line class="grid" x1="{:.1f}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}"/>)", kLeft,
                       kWidth - kRight, y, y);
    if ((e - static_cast<int>(a.y0)) % every == 0)
      svg +=
          fmt::format(R"(<text class="tick" x="{:.1f}" y="{:.1f}" text-anchor="end">1e{}</text>)", kLeft - 6, y + 4, e);
  }
  for (const auto& [step, order] : chart.step_starts) {
    const double x = a.x(order) - 0.5 / a.x_span * (kWidth - kLeft - kRight);
    svg += fmt::format(R"(<line class="step" x1="{:.1f}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}"/>)", x, x, kTop,
                       a.plot_bottom);
    svg += fmt::format(R"(<text class="tick" x="{:.1f}" y="{:.1f}">{}</text>)", x + 3, kHeight - kBottom + 14,
                       step < 0 ? "init" : fmt::format("step {}", step));
  }
  svg += fmt::format(R"(<text class="band" x="{:.1f}" y="{:.1f}" text-anchor="end">hash</text>)", kLeft - 6,
                     kTop + kBand - 3);
  svg +=
      fmt::format(R"(<text class="axis" x="{:.1f}" y="{:.1f}" text-anchor="middle">tensors in execution order</text>)",
                  kLeft + (kWidth - kLeft - kRight) / 2, kHeight - 6);
  svg += fmt::format(
      R"~(<text class="axis" x="12" y="{:.1f}" transform="rotate(-90 12 {:.1f})" text-anchor="middle">max abs diff</text>)~",
      (a.plot_top + a.plot_bottom) / 2, (a.plot_top + a.plot_bottom) / 2);
  return svg;
}

// The first divergence's line and label, then every point.
std::string chart_points(const Chart& chart, const std::vector<ChartPoint>& points, const Axes& a) {
  std::string svg;
  const ChartPoint* first = nullptr;
  for (const auto& p : points)
    if (p.order == chart.first_order) first = &p;
  if (first) {
    const double x = a.x(first->order);
    svg += fmt::format(R"(<line class="first-line" x1="{:.1f}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}"/>)", x, x, kTop - 4,
                       a.plot_bottom);
    const bool right = x > kWidth * 0.6;
    svg +=
        fmt::format(R"(<text class="first-label" x="{:.1f}" y="{:.1f}" text-anchor="{}">first divergence: {}</text>)",
                    right ? x - 6 : x + 6, kTop - 8 + 4, right ? "end" : "start", escape(first->label));
  }
  svg += R"(<g class="points">)";
  for (const auto& p : points) {
    const bool is_first = p.order == chart.first_order;
    const double x = a.x(p.order);
    const std::string cls = std::string(is_first ? "pt first" : "pt") + (p.hash_only ? " hash-only" : "");
    const std::string value =
        p.hash_only ? "differs (hashes only, no statistics)" : fmt::format("max abs diff {}", short_number(p.max_abs));
    if (p.hash_only)
      svg += fmt::format(
          R"(<rect class="{}" x="{:.1f}" y="{:.1f}" width="3" height="{:.1f}"><title>{}: {}</title></rect>)", cls,
          x - 1.5, kTop + 2, kBand - 4, escape(p.label), value);
    else
      svg += fmt::format(R"(<circle class="{}" cx="{:.1f}" cy="{:.1f}" r="{}"><title>{}: {}</title></circle>)", cls, x,
                         a.y(p.max_abs), is_first ? 5 : 3, escape(p.label), value);
  }
  return svg + "</g>";
}

}  // namespace

std::string layer_chart(const Chart& chart) {
  const std::vector<ChartPoint> points = thinned(chart);
  const Axes axes(chart, points);
  std::string svg = fmt::format(
      R"(<svg class="layer-chart" data-points="{}" viewBox="0 0 {} {}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">)",
      points.size(), kWidth, kHeight, escape(chart.caption));
  return svg + chart_frame(chart, axes) + chart_points(chart, points, axes) + "</svg>";
}

std::string page(const std::string& title, const std::string& body) {
  static constexpr const char* kStyle = R"(
:root { --ok: #2f9e5b; --bad: #d64541; --fail: #b86e00; --info: #6b7280; --ink: #1f2430; --muted: #5f6877;
        --line: #e3e6ec; --bg: #f6f7f9; --card: #fff; --accent: #3867d6; --control: #7d5fb2; --regress: #c2185b; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
header.top { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; margin-bottom: 6px; }
.brand { font-weight: 700; color: var(--accent); letter-spacing: .02em; }
h1 { font-size: 26px; margin: 0; }
h2 { font-size: 18px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0 0 6px; }
.sub { color: var(--muted); margin: 2px 0 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; margin: 12px 0; }
.verdict { display: inline-block; padding: 3px 12px; border-radius: 999px; color: #fff; font-weight: 700; font-size: 14px; }
.verdict.reproducible { background: var(--ok); } .verdict.divergent { background: var(--bad); }
.verdict.inconclusive { background: var(--warn, #b7791f); } .banner.warn { border-left: 4px solid var(--warn, #b7791f); }
.verdict.failed { background: var(--fail); } .verdict.interrupted, .verdict.missing { background: var(--info); }
.banner { border-left: 6px solid var(--ok); }
.banner.bad { border-left-color: var(--bad); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
code { background: #eef1f6; padding: 1px 5px; border-radius: 4px; }
table { border-collapse: collapse; }
table.stats td, table.list td, table.list th { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
table.list th { color: var(--muted); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); }
.hint { border-left: 4px solid var(--accent); padding-left: 12px; margin: 10px 0; }
.regressions li { margin: 4px 0; }
.regressions .kind { display: inline-block; min-width: 11em; font-weight: 600; color: var(--bad); }
.regressions .nonblocking .kind { color: var(--muted); }
table.heatmap { border-collapse: separate; border-spacing: 6px; margin-left: -6px; table-layout: fixed; width: calc(100% + 12px); }
table.heatmap th { font-size: 13px; color: var(--muted); font-weight: 600; text-align: left; padding: 2px 4px; overflow-wrap: anywhere; }
table.heatmap th.model { width: 170px; overflow-wrap: break-word; color: var(--ink); }
td.cell { border-radius: 8px; padding: 8px 10px; color: #fff; vertical-align: top; font-size: 13px; line-height: 1.35; }
td.cell a { color: inherit; text-decoration: none; display: block; }
td.cell .word { font-weight: 700; font-size: 14px; }
td.cell .where { overflow-wrap: anywhere; opacity: .95; }
td.cell .time { opacity: .8; font-size: 12px; }
td.cell.reproducible { background: var(--ok); } td.cell.divergent { background: var(--bad); }
td.cell.divergent.control { background: var(--control); }
td.cell.failed { background: var(--fail); } td.cell.interrupted { background: var(--info); }
td.cell.missing { background: repeating-linear-gradient(45deg, #eceef2, #eceef2 6px, #f6f7f9 6px, #f6f7f9 12px); color: var(--muted); }
td.cell.broken { box-shadow: 0 0 0 3px var(--ink); }
td.cell.regressed { outline: 3px dashed var(--regress); outline-offset: 2px; }
td.cell .expect, td.cell .regressed-badge { display: inline-block; font-size: 11px; background: rgba(255,255,255,.22); border-radius: 4px; padding: 0 5px; margin-top: 3px; }
td.cell.missing .expect { background: none; }
.legend i.outline { background: none; box-shadow: 0 0 0 2px var(--ink); } .legend i.dashed { background: none; outline: 2px dashed var(--regress); }
svg .regression-mark { fill: var(--regress); } svg .regression-line { stroke: var(--regress); stroke-width: 1.5; stroke-dasharray: 4 3; fill: none; }
svg .regression-count { fill: var(--regress); font-size: 11px; font-weight: 700; font-family: system-ui, sans-serif; }
.legend span { display: inline-flex; align-items: center; gap: 6px; margin-right: 16px; font-size: 13px; color: var(--muted); }
.legend i { width: 14px; height: 14px; border-radius: 4px; display: inline-block; }
svg.layer-chart, svg.trend { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; } svg .step { stroke: #c9ced8; stroke-dasharray: 3 3; }
svg .tick, svg .axis, svg .band { fill: var(--muted); font-size: 11px; font-family: system-ui, sans-serif; }
svg .pt { fill: var(--accent); fill-opacity: .75; } svg .pt.hash-only { fill: #9aa3b2; }
svg .pt.first { fill: var(--bad); fill-opacity: 1; stroke: #fff; stroke-width: 1.5; }
svg .first-line { stroke: var(--bad); stroke-dasharray: 4 3; } svg .first-label { fill: var(--bad); font-size: 12px; font-weight: 600; font-family: system-ui, sans-serif; }
svg .bar.reproducible { fill: var(--ok); } svg .bar.divergent { fill: var(--bad); } svg .bar.failed { fill: var(--fail); }
svg .bar.interrupted { fill: var(--info); } svg .broken-line { stroke: var(--ink); stroke-width: 2; fill: none; }
svg .broken-dot { fill: var(--ink); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
)";
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n"
      "<style>{}</style>\n</head>\n<body>\n<main>\n{}\n</main>\n</body>\n</html>\n",
      escape(title), kStyle, body);
}

}  // namespace html

using namespace report_detail;

namespace {

std::string stats_table(const TensorDiff& d) {
  const auto& s = d.stats;
  std::string rows;
  auto row = [&](const std::string& k, const std::string& v) {
    rows += fmt::format("<tr><td class=\"muted\">{}</td><td class=\"mono\">{}</td></tr>", k, v);
  };
  row("mismatched elements", fmt::format("{} of {}", group_digits(s.mismatched), group_digits(s.numel)));
  row("max abs diff",
      html::escape(fmt::format("{:.4g} at {}: {} vs {}", s.max_abs, unravel_index(s.max_abs_index, d.ref.shape),
                               value(s.a_at_max), value(s.b_at_max))));
  row("max rel diff", fmt::format("{:.4g}", s.max_rel));
  row("mean abs / rms", fmt::format("{:.4g} / {:.4g}", s.mean_abs, s.rms));
  row("max ulp", std::to_string(s.max_ulp));
  row("cosine", html::escape(cosine_text(s.cosine)));
  row("first mismatch", html::escape(unravel_index(s.first_index, d.ref.shape)));
  return "<table class=\"stats\">" + rows + "</table>";
}

std::string html_hint(const Hint& x) {
  std::string out = fmt::format("<div class=\"hint\" data-cause=\"{}\"><h3>Likely cause: {}</h3><p>{}</p>",
                                html::escape(x.cause), html::escape(x.title), html::escape(x.evidence));
  if (x.fix_python != "-" && !x.fix_python.empty())
    out += fmt::format("<p>Fix: <code>{}</code></p>", html::escape(x.fix_python));
  if (!x.test_it.empty()) out += fmt::format("<p>Test it: <code>{}</code></p>", html::escape(x.test_it));
  return out + "</div>";
}

}  // namespace

namespace {

std::string html_header(const Comparison& c) {
  std::string body = fmt::format(
      "<header class=\"top\"><span class=\"brand\">reprocheck</span><h1>{}</h1>"
      "<span class=\"verdict {}\" id=\"verdict\">{}</span></header>",
      html::escape(model_name(c)), to_string(c.verdict()), html::escape(verdict_word(c)));
  body += fmt::format("<p class=\"sub\">{} · {} tensors per run · tolerance {}</p>", html::escape(runs_phrase(c)),
                      group_digits(tensors_per_run(c)), html::escape(c.tolerance.describe()));
  for (const auto& p : c.pairs) {
    if (c.capture.baseline.empty() || p.environment_diffs.empty()) continue;
    body += fmt::format(
        "<div class=\"card banner warn\" id=\"environment\"><b>Run {} ran elsewhere than the golden was "
        "recorded</b><table class=\"list\"><tr><th></th><th>the golden</th><th>now</th></tr>",
        p.other_run);
    for (const auto& e : p.environment_diffs)
      body += fmt::format("<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
                          html::escape(e.what), html::escape(e.reference), html::escape(e.other));
    body += "</table></div>";
  }
  std::string facts;
  for (const auto& p : c.pairs)
    if (!p.knob_diffs.empty())
      facts += fmt::format("<li>run {} differs from {} in: {}</li>", p.other_run, html::escape(reference_name(c)),
                           html::escape(knobs(p)));
  for (const auto& n : c.notes) facts += fmt::format("<li>note: {}</li>", html::escape(n));
  for (const auto& n : capture_sentences(c)) facts += fmt::format("<li>capture: {}</li>", html::escape(n));
  if (!facts.empty()) body += "<ul class=\"muted\">" + facts + "</ul>";
  return body;
}

std::string first_divergence_card(const Report& r, const PairComparison& h) {
  const Comparison& c = r.comparison;
  const auto& d = h.diffs[*h.first];
  std::string body = fmt::format(
      "<div class=\"card banner bad\" id=\"first-divergence\"><h2 style=\"margin-top:0\">First divergence</h2>"
      "<p class=\"mono\">{}</p><p>{} · run {} vs {}</p>",
      html::escape(describe(d.ref)), html::escape(provenance_tag(d)), h.other_run, html::escape(reference_name(c)));
  if (std::string sentence = data_sentence(d); !sentence.empty())
    body += fmt::format("<p>{}</p>", html::escape(sentence));
  else if (d.hash_only)
    body += "<p class=\"muted\">Differs by its hash; no statistics were captured for it.</p>";
  else if (d.status == Status::values_differ || d.status == Status::close)
    body += stats_table(d);
  else
    body += fmt::format("<p><code>{}</code>: {}</p>", to_string(d.status), html::escape(d.detail));
  if (c.drill)
    body += fmt::format("<p><a href=\"#drill-down\">First divergent op: {}</a></p>",
                        html::escape(c.drill->found ? c.drill->op + " -> " + c.drill->output : "none found"));
  for (const auto& x : r.hints) body += html_hint(x);
  return body + "</div>";
}

// The chart: every divergent tensor of the headline pair.
std::string chart_card(const Comparison& c, const PairComparison& h) {
  html::Chart chart;
  chart.total = c.tensors;
  chart.caption = fmt::format("max abs difference per tensor, run {} vs {}", h.other_run, reference_name(c));
  for (size_t i = 0; i < h.diffs.size(); ++i) {
    const auto& t = h.diffs[i];
    if (!is_divergent(t.status) && t.status != Status::close) continue;
    chart.points.push_back({t.ref.order, t.ref.step, t.stats.max_abs, t.hash_only, describe(t.ref)});
    if (i == *h.first) chart.first_order = t.ref.order;
  }
  for (const auto& m : c.ref_index)
    if (chart.step_starts.empty() || chart.step_starts.back().first != m.step)
      chart.step_starts.emplace_back(m.step, m.order);
  return fmt::format(
      "<h2>Divergence by layer</h2><div class=\"card\"><p class=\"muted\">{}: {} tensors differ. Hover a point for "
      "its name.</p>{}</div>",
      html::escape(chart.caption), group_digits(static_cast<int64_t>(chart.points.size())), html::layer_chart(chart));
}

// Pass 3: the first divergent op with its source line and statistics, and the captured step's op
// series (every op output that differs, in execution order).
std::string drill_card(const DrillDown& dd) {
  std::string body =
      fmt::format("<h2 id=\"drill-down\">First divergent op</h2><div class=\"card\"><p class=\"mono\">{}</p>",
                  html::escape(drill_summary(dd)));
  if (!dd.found) return body + "</div>";
  if (!dd.stack.empty()) {
    std::string frames;
    for (const auto& f : dd.stack) frames += fmt::format("<li class=\"mono\">{}</li>", html::escape(f));
    body += fmt::format("<p>{}</p><ol>{}</ol>",
                        dd.forward_site ? "The forward call it differentiates:" : "Called from:", frames);
  }
  if (dd.diff.status == Status::values_differ || dd.diff.status == Status::close) body += stats_table(dd.diff);
  html::Chart chart;
  chart.total = std::max<int64_t>(dd.series_total, 1);
  chart.caption = fmt::format("ops of step {}{}: max abs difference per op output", dd.step,
                              dd.scope.empty() ? "" : " in " + dd.scope);
  for (const auto& t : dd.series) {
    chart.points.push_back({t.ref.order, t.ref.step, t.stats.max_abs, t.hash_only, describe(t.ref)});
    if (t.ref.order == dd.diff.ref.order) chart.first_order = t.ref.order;
  }
  body += fmt::format("<p class=\"muted\">{}: {} op output(s) differ.</p>{}", html::escape(chart.caption),
                      chart.points.size(), html::layer_chart(chart));
  return body + "</div>";
}

std::string isolation_card(const Isolation& iso) {
  std::string items;
  for (const auto& s : iso.sources)
    items +=
        fmt::format("<li class=\"mono\">{} ({})</li>", html::escape(describe(s.ref)), html::escape(provenance_tag(s)));
  return fmt::format("<h2>Independent sources in step {}</h2><div class=\"card\"><ol>{}</ol><p>{}</p></div>", iso.step,
                     items,
                     iso.agreed ? fmt::format("With these replayed, the runs agree through step {}.", iso.step)
                                : html::escape("Stopped: " + iso.note));
}

std::string cascade_card(const PairComparison& h) {
  auto rows = cascade(h);
  if (rows.empty()) return "";
  std::string table;
  for (const auto& row : rows)
    table +=
        fmt::format("<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    row.step, to_string(row.phase), row.count, html::escape(cascade_max(row)));
  return "<h2>Divergent tensors after it</h2><div class=\"card\"><table class=\"list\"><tr><th class=\"num\">step</th>"
         "<th>phase</th><th class=\"num\">tensors</th><th class=\"num\">max abs diff</th></tr>" +
         table + "</table></div>";
}

}  // namespace

std::string render_html(const Report& r) {
  const Comparison& c = r.comparison;
  const PairComparison* h = c.headline();
  std::string body = html_header(c);
  if (c.verdict() == Verdict::inconclusive) {
    body += fmt::format("<div class=\"card banner warn\" id=\"inconclusive\">Nothing was proven either way: {}.</div>",
                        html::escape(c.inconclusive_reason()));
  } else if (!h) {
    body += fmt::format("<div class=\"card banner\">{}</div>",
                        c.capture.baseline.empty() ? "Every tensor matches across all runs."
                                                   : "Every tensor of the fresh runs matches the golden.");
  } else {
    body += first_divergence_card(r, *h) + chart_card(c, *h);
    if (c.drill) body += drill_card(*c.drill);
    if (r.isolation) body += isolation_card(*r.isolation);
    body += cascade_card(*h);
  }
  std::string prov;
  for (const char* key :
       {attr::kLibtorchVersion, attr::kCudaVersion, attr::kCudnnVersion, attr::kDeviceName, attr::kHost})
    if (std::string v = c.attribute(key); !v.empty()) prov += fmt::format(" · {} {}", key, html::escape(v));
  body += fmt::format("<footer>reprocheck {}{}</footer>", kVersion, prov);
  return html::page(fmt::format("reprocheck: {} — {}", model_name(c), verdict_word(c)), body);
}

}  // namespace reprocheck
