#include <fmt/format.h>

#include <cctype>
#include <string_view>

#include "report_common.h"

namespace reprocheck {

using namespace report_detail;

namespace {

std::string md(const std::string& s) { return markdown_escape(s); }

// A code span: backticks inside it would end it, so they become quotes.
std::string code(std::string s) {
  for (char& c : s)
    if (c == '`') c = '\'';
  return "`" + s + "`";
}

}  // namespace

std::string markdown_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\`*_[]<>#|&").find(c) != std::string_view::npos) out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  return out;
}

std::string render_markdown(const Report& r, const ReportOptions& o) {
  const Comparison& c = r.comparison;
  const Isolation* iso = r.isolation ? &*r.isolation : nullptr;
  std::string out;
  const PairComparison* h = c.headline();
  std::string word = verdict_word(c);
  for (char& ch : word) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  out += fmt::format("### reprocheck: **{}**\n\n", word);
  out += fmt::format("Model {} · {} · {} tensors per run · tolerance {}\n\n", code(model_name(c)), md(runs_phrase(c)),
                     group_digits(tensors_per_run(c)), c.tolerance.describe());
  for (const auto& p : c.pairs)
    if (!p.knob_diffs.empty())
      out += fmt::format("Run {} differs from {} in: {}\n\n", p.other_run, reference_name(c), md(knobs(p)));
  for (const auto& p : c.pairs) {
    if (c.capture.baseline.empty() || p.environment_diffs.empty()) continue;
    out += fmt::format("Run {} ran elsewhere than the golden was recorded:\n\n| | the golden | now |\n|---|---|---|\n",
                       p.other_run);
    for (const auto& e : p.environment_diffs)
      out += fmt::format("| {} | {} | {} |\n", md(e.what), md(e.reference), md(e.other));
    out += "\n";
  }
  for (const auto& n : c.notes) out += fmt::format("Note: {}\n\n", md(n));
  for (const auto& n : capture_sentences(c)) out += fmt::format("Capture: {}\n\n", md(n));
  if (c.verdict() == Verdict::inconclusive) {
    out += fmt::format("Nothing was proven either way: {}.\n", md(c.inconclusive_reason()));
    return out;
  }
  if (!h) {
    out += c.capture.baseline.empty() ? "Every tensor matches across all runs.\n"
                                      : "Every tensor of the fresh runs matches the golden.\n";
    return out;
  }
  const auto& d = h->diffs[*h->first];
  out += fmt::format("**First divergence:** {} ({})\n\n", md(describe(d.ref)), provenance_tag(d));
  if (c.drill) out += fmt::format("**First divergent op:** {}\n\n", md(drill_summary(*c.drill)));
  for (const auto& x : r.hints)
    out += fmt::format("**Likely cause:** {}. {}.{}{}\n\n", md(x.title), md(x.evidence),
                       x.fix_python == "-" ? "" : fmt::format(" Fix: {}.", code(x.fix_python)),
                       x.test_it.empty() ? "" : fmt::format(" Test it with {}.", code(x.test_it)));
  if (std::string sentence = data_sentence(d); !sentence.empty()) {
    out += md(sentence) + "\n\n";
  } else if (d.status == Status::values_differ) {
    const auto& s = d.stats;
    out += "| statistic | value |\n|---|---|\n";
    out += fmt::format("| mismatched elements | {} of {} |\n", group_digits(s.mismatched), group_digits(s.numel));
    out += fmt::format("| max abs diff | {:.4g} at {}: `{}` vs `{}` |\n", s.max_abs,
                       unravel_index(s.max_abs_index, d.ref.shape), value(s.a_at_max), value(s.b_at_max));
    out +=
        fmt::format("| max rel diff | {:.4g} |\n| mean abs / rms | {:.4g} / {:.4g} |\n", s.max_rel, s.mean_abs, s.rms);
    out += fmt::format("| max ulp | {} |\n| cosine | {} |\n", s.max_ulp, cosine_text(s.cosine));
    out += fmt::format("| first mismatch | {} |\n\n", unravel_index(s.first_index, d.ref.shape));
  } else {
    out += fmt::format("`{}`: {}\n\n", to_string(d.status), md(d.detail));
  }
  if (iso) {
    out += fmt::format("**Independent sources in step {}:**\n\n", iso->step);
    for (size_t i = 0; i < iso->sources.size(); ++i)
      out += fmt::format("{}. {} ({})\n", i + 1, md(describe(iso->sources[i].ref)), provenance_tag(iso->sources[i]));
    out += iso->agreed ? fmt::format("\nWith these replayed, the runs agree through step {}.\n\n", iso->step)
                       : fmt::format("\nStopped: {}.\n\n", md(iso->note));
  }
  auto rows = cascade(*h);
  if (!rows.empty()) {
    out +=
        "<details><summary>Divergent tensors after it</summary>\n\n| step | phase | tensors | max abs diff "
        "|\n|---|---|---:|---:|\n";
    for (size_t i = 0; i < rows.size() && i < o.max_cascade * 4; ++i)
      out += fmt::format("| {} | {} | {} | {} |\n", rows[i].step, to_string(rows[i].phase), rows[i].count,
                         cascade_max(rows[i]));
    out += "\n</details>\n";
  }
  return out;
}

}  // namespace reprocheck
