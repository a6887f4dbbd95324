#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>

#include "report_common.h"
#include "reprocheck/html.h"

namespace reprocheck {

using namespace report_detail;

namespace {

// A tensor group: one layer's records of one phase, across steps and calls (or the input batch,
// the output, the loss).
std::string group_name(const TensorMeta& m) {
  if (m.layer.empty()) return fmt::format("{} {}", to_string(m.phase), to_string(m.kind));
  return fmt::format("{} {} ({})", to_string(m.phase), m.layer, short_type_name(m.layer_type));
}

}  // namespace

std::string render_junit(const Report& r) {
  const Comparison& c = r.comparison;
  // Groups in order of first appearance in the reference run.
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> failures;
  std::map<std::string, bool> seen;
  for (const auto& p : c.pairs) {
    for (const auto& d : p.diffs)
      if (is_divergent(d.status))
        failures[group_name(d.ref)].push_back(fmt::format(
            "run {} vs {}: {}: {}", p.other_run, reference_name(c), describe(d.ref),
            d.hash_only                         ? d.detail
            : d.status == Status::values_differ ? fmt::format("{} of {} elements differ, max abs diff {:.4g}",
                                                              d.stats.mismatched, d.stats.numel, d.stats.max_abs)
                                                : fmt::format("{} ({})", to_string(d.status), d.detail)));
  }
  for (const auto& m : c.ref_index) {
    auto g = group_name(m);
    if (!seen[g]) {
      seen[g] = true;
      order.push_back(g);
    }
  }
  for (const auto& [g, f] : failures)
    if (!seen[g]) order.push_back(g);
  size_t nfail = 0;
  for (const auto& g : order) nfail += failures.count(g) ? 1 : 0;
  // Nothing compared is an error of the check, never a suite of passing cases.
  const bool inconclusive = c.verdict() == Verdict::inconclusive;
  const size_t nerr = inconclusive ? 1 : 0;
  std::string suite = fmt::format("reprocheck {}", model_name(c));
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += fmt::format("<testsuites name=\"reprocheck\" tests=\"{}\" failures=\"{}\" errors=\"{}\">\n",
                     order.size() + nerr, nfail, nerr);
  out += fmt::format("  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\">\n",
                     html::xml_escape(suite), order.size() + nerr, nfail, nerr);
  out += fmt::format(
      "    <properties>\n      <property name=\"tolerance\" value=\"{}\"/>\n      <property name=\"runs\" "
      "value=\"{}\"/>\n    </properties>\n",
      html::xml_escape(c.tolerance.describe()), c.runs.size());
  std::vector<std::string> notes = c.notes;
  for (auto& n : capture_sentences(c)) notes.push_back("capture: " + n);
  if (c.drill) notes.push_back("first divergent op: " + drill_summary(*c.drill));
  for (const auto& note : notes) {
    out.insert(out.rfind("    </properties>"),
               fmt::format("      <property name=\"note\" value=\"{}\"/>\n", html::xml_escape(note)));
  }
  if (inconclusive)
    out += fmt::format(
        "    <testcase classname=\"{}\" name=\"verdict\" time=\"0\">\n      <error type=\"inconclusive\" "
        "message=\"{}\"/>\n    </testcase>\n",
        html::xml_escape(suite), html::xml_escape("INCONCLUSIVE: " + c.inconclusive_reason()));
  for (const auto& g : order) {
    out += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"0\"", html::xml_escape(suite),
                       html::xml_escape(g));
    auto it = failures.find(g);
    if (it == failures.end()) {
      out += "/>\n";
      continue;
    }
    out += fmt::format(">\n      <failure type=\"divergence\" message=\"{}\">{}</failure>\n    </testcase>\n",
                       html::xml_escape(it->second.front()),
                       html::xml_escape(fmt::format("{}", fmt::join(it->second, "\n"))));
  }
  out += "  </testsuite>\n</testsuites>\n";
  return out;
}

}  // namespace reprocheck
