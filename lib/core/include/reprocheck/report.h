// Reports: pure functions of a Report value (a comparison, its hints, and the isolation when
// --isolate ran) that return text. They do no I/O; the tool writes them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/exit_codes.h"
#include "reprocheck/hints.h"
#include "reprocheck/isolate.h"

namespace reprocheck {

struct Report {
  Comparison comparison;
  std::vector<Hint> hints;             // explain(comparison)
  std::optional<Isolation> isolation;  // when --isolate ran
};

// The report of a comparison, with its hints.
Report make_report(Comparison comparison, std::optional<Isolation> isolation = std::nullopt);

// The exit code of a check or diff with this report: 0 reproducible (or matches the golden),
// 1 divergent, 2 inconclusive (nothing compared is never a pass).
ExitCode exit_code(const Report& r);

struct ReportOptions {
  bool color = false;       // ANSI colors (the tool enables them on a terminal without NO_COLOR)
  size_t max_cascade = 12;  // rows of the after-the-first-divergence summary in text and Markdown
};

std::string render_text(const Report& r, const ReportOptions& o = {});
std::string render_json(const Report& r);  // docs/report-json.md
std::string render_junit(const Report& r);
std::string render_markdown(const Report& r, const ReportOptions& o = {});
// Text for Markdown: the characters that make headings, links, emphasis, code, tables, entities or
// raw HTML escaped, line breaks made spaces, so that a name renders as itself (in a table cell too).
std::string markdown_escape(std::string_view s);
// A self-contained HTML page: the verdict, the first divergence with its statistics and causes, and
// the per-layer chart of the divergent tensors in execution order (reprocheck/html.h).
std::string render_html(const Report& r);

}  // namespace reprocheck
