// The HTML renderer's pieces: one self-contained page (inline CSS and SVG, no script, no network)
// and the per-layer divergence chart. A single check's report (render_html in report.h) and the
// audit report (reprocheck/audit.h) are both built from them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace reprocheck::html {

// Text for an HTML element or attribute: & < > " ' escaped.
std::string escape(std::string_view s);
// Text for an XML 1.0 element or attribute (JUnit reports): escaped as above, and the control
// characters XML 1.0 does not allow dropped.
std::string xml_escape(std::string_view s);

// One divergent tensor of a comparison, at its place in execution order.
struct ChartPoint {
  int64_t order = 0;  // index in the run's execution order
  int step = 0;
  double max_abs = 0;      // max abs difference; ignored when hash_only
  bool hash_only = false;  // differs by its hash alone: no statistics
  std::string label;       // "step 0 · forward · features.3 (Conv2d) output"
};

struct Chart {
  std::vector<ChartPoint> points;                    // in execution order
  int64_t first_order = -1;                          // the first divergence, marked
  int64_t total = 0;                                 // tensors per run (the x axis)
  std::vector<std::pair<int, int64_t>> step_starts;  // step, first order of the step (gridlines)
  std::string caption;
};

// The per-layer chart: tensors in execution order against their max abs difference on a log
// scale, the first divergence marked, tensors that differ by hash alone in a band at the top. An
// inline <svg class="layer-chart"> with data-points (points drawn) and a <title> per point.
std::string layer_chart(const Chart& chart);

// The step starts of a chart whose run's index is not at hand: the first point of each step.
std::vector<std::pair<int, int64_t>> step_starts_of(const std::vector<ChartPoint>& points);

// A complete page: <!DOCTYPE html>, the shared stylesheet, `body` inside <main>.
std::string page(const std::string& title, const std::string& body);

// "3.4e-07" style numbers for labels.
std::string short_number(double v);

}  // namespace reprocheck::html
