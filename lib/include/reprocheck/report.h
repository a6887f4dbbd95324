// Rendering a Comparison for people (text, Markdown) and machines (JSON, JUnit XML).
#pragma once

#include <string>

#include "reprocheck/compare.h"
#include "reprocheck/runner.h"

namespace reprocheck {

struct ReportOptions {
  bool color = false;       // ANSI colors (the tool enables them on a terminal without NO_COLOR)
  size_t max_cascade = 12;  // rows of the after-the-first-divergence summary in text and Markdown
};

std::string render_text(const Comparison& c, const ReportOptions& o = {});
std::string render_json(const Comparison& c, const Isolation* isolation = nullptr);  // docs/report-json.md
std::string render_junit(const Comparison& c);
std::string render_markdown(const Comparison& c, const ReportOptions& o = {}, const Isolation* isolation = nullptr);
std::string render_isolation_text(const Isolation& iso, const ReportOptions& o = {});

// Writes `text` to `path` through a temporary file and a rename. Throws InputError.
void write_report_file(const std::string& path, const std::string& text);

}  // namespace reprocheck
