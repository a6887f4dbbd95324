#include <fmt/format.h>

#include "report_common.h"

namespace reprocheck {

using namespace report_detail;

std::string render_markdown(const Report& r, const ReportOptions& o) {
  const Comparison& c = r.comparison;
  const Isolation* iso = r.isolation ? &*r.isolation : nullptr;
  std::string out;
  const PairComparison* h = c.headline();
  out += fmt::format("### reprocheck: {}\n\n", h ? "**divergent**" : "**reproducible**");
  out += fmt::format("Model `{}` · {} runs of {} step(s) · {} tensors per run · tolerance {}\n\n", model_name(c),
                     c.runs.size(), steps_of(c), group_digits(c.tensors), c.tolerance.describe());
  for (const auto& p : c.pairs)
    if (!p.knob_diffs.empty()) out += fmt::format("Run {} differs from run 0 in: {}\n\n", p.other_run, knobs(p));
  for (const auto& n : c.notes) out += fmt::format("Note: {}\n\n", n);
  if (!h) {
    out += "Every tensor matches across all runs.\n";
    return out;
  }
  const auto& d = h->diffs[*h->first];
  out += fmt::format("**First divergence:** {} ({})\n\n", describe(d.ref), provenance_tag(d));
  for (const auto& x : r.hints)
    out += fmt::format("**Likely cause:** {}. {}.{} Test it with `{}`.\n\n", x.title, x.evidence,
                       x.fix_python == "-" ? "" : fmt::format(" Fix: `{}`.", x.fix_python), x.test_it);
  if (std::string sentence = data_sentence(d); !sentence.empty()) {
    out += sentence + "\n\n";
  } else if (d.status == Status::values_differ) {
    const auto& s = d.stats;
    out += "| statistic | value |\n|---|---|\n";
    out += fmt::format("| mismatched elements | {} of {} |\n", group_digits(s.mismatched), group_digits(s.numel));
    out += fmt::format("| max abs diff | {:.4g} at {}: `{}` vs `{}` |\n", s.max_abs,
                       unravel_index(s.max_abs_index, d.ref.shape), value(s.a_at_max), value(s.b_at_max));
    out +=
        fmt::format("| max rel diff | {:.4g} |\n| mean abs / rms | {:.4g} / {:.4g} |\n", s.max_rel, s.mean_abs, s.rms);
    out += fmt::format("| max ulp | {} |\n| cosine | {:.9f} |\n", s.max_ulp, s.cosine);
    out += fmt::format("| first mismatch | {} |\n\n", unravel_index(s.first_index, d.ref.shape));
  } else {
    out += fmt::format("`{}`: {}\n\n", to_string(d.status), d.detail);
  }
  if (iso) {
    out += fmt::format("**Independent sources in step {}:**\n\n", iso->step);
    for (size_t i = 0; i < iso->sources.size(); ++i)
      out += fmt::format("{}. {} ({})\n", i + 1, describe(iso->sources[i].ref), provenance_tag(iso->sources[i]));
    out += iso->agreed ? fmt::format("\nWith these replayed, the runs agree through step {}.\n\n", iso->step)
                       : fmt::format("\nStopped: {}.\n\n", iso->note);
  }
  auto rows = cascade(*h);
  if (!rows.empty()) {
    out +=
        "<details><summary>Divergent tensors after it</summary>\n\n| step | phase | tensors | max abs diff "
        "|\n|---|---|---:|---:|\n";
    for (size_t i = 0; i < rows.size() && i < o.max_cascade * 4; ++i)
      out += fmt::format("| {} | {} | {} | {:.3g} |\n", rows[i].step, to_string(rows[i].phase), rows[i].count, rows[i].max_abs);
    out += "\n</details>\n";
  }
  return out;
}

}  // namespace reprocheck
