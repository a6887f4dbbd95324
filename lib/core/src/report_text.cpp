#include <fmt/format.h>

#include <functional>

#include "report_common.h"

namespace reprocheck {

using namespace report_detail;

namespace {

template <typename Paint>
std::string isolation_text(const Isolation& iso, const Paint& paint) {
  std::string out = fmt::format("\n{}  {} independent source(s) in step {}, in execution order:\n",
                                paint("isolation", "1"), iso.sources.size(), iso.step);
  for (size_t i = 0; i < iso.sources.size(); ++i) {
    const auto& d = iso.sources[i];
    out += fmt::format("  {}. {}  ({}; max abs diff {:.3g})\n", i + 1, describe(d.ref), provenance_tag(d),
                       d.stats.max_abs);
  }
  if (iso.agreed)
    out += fmt::format("  with these replayed from run 0, the runs agree through step {}\n", iso.step);
  else
    out += fmt::format("  stopped: {}\n", iso.note);
  return out;
}

}  // namespace

namespace {

using Paint = std::function<std::string(const std::string&, const char*)>;

std::string header(const Comparison& c) {
  std::string out = fmt::format("{}: {}, {} tensors each, tolerance {}\n", model_name(c), runs_phrase(c),
                                group_digits(tensors_per_run(c)), c.tolerance.describe());
  for (const auto& p : c.pairs)
    if (!p.knob_diffs.empty())
      out += fmt::format("run {} differs from {} in: {}\n", p.other_run, reference_name(c), knobs(p));
  // Where a golden was recorded, side by side with where the fresh run ran, when that differs.
  for (const auto& p : c.pairs) {
    if (c.capture.baseline.empty() || p.environment_diffs.empty()) continue;
    out += fmt::format("run {} ran elsewhere than the golden was recorded:\n  {:<26} {:<30} {}\n", p.other_run, "",
                       "the golden", "now");
    for (const auto& e : p.environment_diffs) out += fmt::format("  {:<26} {:<30} {}\n", e.what, e.reference, e.other);
  }
  for (const auto& n : c.notes) out += fmt::format("note: {}\n", n);
  for (const auto& n : capture_sentences(c)) out += fmt::format("capture: {}\n", n);
  return out;
}

// The verdict of a check that found no divergence.
std::string agreement(const Comparison& c, const Paint& paint) {
  if (c.verdict() == Verdict::inconclusive)
    return fmt::format("\n{} ({}; nothing was proven either way)\n", paint("verdict: INCONCLUSIVE", "1;33"),
                       c.inconclusive_reason());
  int64_t close = 0;
  for (const auto& p : c.pairs) close += p.close;
  std::string how = close ? fmt::format("{} within tolerance, the rest bitwise identical", group_digits(close))
                          : "all bitwise identical";
  if (!c.capture.baseline.empty())
    return fmt::format("\n{} (every tensor of {} fresh run(s) matches it: {})\n",
                       paint("verdict: " + verdict_word(c), "1;32"), c.runs.size() - 1, how);
  return fmt::format("\n{} (every tensor matches across {} runs: {})\n", paint("verdict: REPRODUCIBLE", "1;32"),
                     c.runs.size(), how);
}

std::string statistics(const TensorDiff& d) {
  if (std::string sentence = data_sentence(d); !sentence.empty()) return sentence + "\n";
  if (d.status != Status::values_differ) return fmt::format("{}: {}\n", to_string(d.status), d.detail);
  const auto& s = d.stats;
  std::string out =
      fmt::format("{} of {} elements differ ({:.3g}%)\n", group_digits(s.mismatched), group_digits(s.numel),
                  100.0 * static_cast<double>(s.mismatched) / static_cast<double>(std::max<int64_t>(s.numel, 1)));
  if (s.max_abs_index >= 0)
    out += fmt::format("  max abs diff     {:.4g} at {}: {} ({}) vs {} ({})\n", s.max_abs,
                       unravel_index(s.max_abs_index, d.ref.shape), value(s.a_at_max), bits_hex(s.a_bits, d.ref.dtype),
                       value(s.b_at_max), bits_hex(s.b_bits, d.ref.dtype));
  out += fmt::format("  max rel diff     {:<12.4g} mean abs {:<12.4g} rms {:.4g}\n", s.max_rel, s.mean_abs, s.rms);
  out += fmt::format("  max ulp          {:<12} cosine   {}\n", s.max_ulp, cosine_text(s.cosine));
  if (s.nan_mismatch || s.inf_mismatch || s.signed_zeros)
    out += fmt::format("  nan mismatches   {:<12} inf mismatches {:<6} signed zeros {}\n", s.nan_mismatch,
                       s.inf_mismatch, s.signed_zeros);
  return out + fmt::format("  first mismatch   {}\n", unravel_index(s.first_index, d.ref.shape));
}

// Pass 3's first divergent op: what, where in the user's code, by how much, and what was captured.
std::string drill_text(const DrillDown& dd, const std::string& ref, const Paint& paint) {
  const std::string scope = dd.scope.empty() ? "" : " in " + dd.scope;
  const std::string captured =
      dd.in_pass2 ? fmt::format("pass 2's runs of run {} and {} captured {} op(s) of step {}{} as well ({:.1f} s)",
                                dd.other_run, ref, dd.ops_captured, dd.step, scope, dd.seconds)
                  : fmt::format("pass 3 ran run {} and {} again and captured {} op(s) of step {}{} ({:.1f} s)",
                                dd.other_run, ref, dd.ops_captured, dd.step, scope, dd.seconds);
  if (!dd.found) return fmt::format("\n{}  {}\n  {}\n", paint("first divergent op", "1"), dd.note, captured);
  std::string out = fmt::format("\n{}  {} -> {}{} (step {}, {}{}){}\n", paint("first divergent op", "1;31"), dd.op,
                                dd.output, dd.module.empty() ? "" : " in " + dd.module, dd.diff.ref.step,
                                to_string(dd.diff.ref.phase), dd.rank_words(), dd.inside());
  if (!dd.source().empty())
    out += fmt::format("  {} {}{}\n", dd.forward_site ? "backward of the call at" : "called at", dd.source(),
                       dd.node.empty() ? "" : fmt::format(" ({})", dd.node));
  for (size_t i = 1; i < dd.stack.size() && i < 4; ++i) out += fmt::format("    from {}\n", dd.stack[i]);
  if (dd.diff.inputs_identical.value_or(true)) out += "  every op before it matched: inputs identical\n";
  if (!dd.note.empty()) out += "  " + dd.note + "\n";
  out += fmt::format("  run {} vs {}   ", dd.other_run, ref) + statistics(dd.diff);
  return out + "  " + captured + "\n";
}

std::string hints_text(const std::vector<Hint>& hints, const Paint& paint) {
  std::string out;
  for (size_t i = 0; i < hints.size(); ++i) {
    const auto& x = hints[i];
    out += fmt::format("\n{}  {}\n", paint(i == 0 ? "likely cause" : "also possible", "1"), x.title);
    out += fmt::format("  evidence   {}\n", x.evidence);
    if (x.fix_python != "-") out += fmt::format("  fix        {}\n", x.fix_python);
    if (!x.test_it.empty()) out += fmt::format("  test it    {}\n", x.test_it);
  }
  return out;
}

// What diverged after the first divergence, pair by pair.
std::string after_it(const Comparison& c, const PairComparison* h, const ReportOptions& o) {
  const std::string ref = reference_name(c);
  std::string out;
  for (const auto& p : c.pairs) {
    auto rows = cascade(p);
    int64_t after = 0;
    for (const auto& r : rows) after += r.count;
    if (&p != h && p.first) {
      out += fmt::format("\nrun {} vs {}: first divergence {}\n", p.other_run, ref, describe(p.diffs[*p.first].ref));
    } else if (&p != h) {
      out += fmt::format("\nrun {} vs {}: identical\n", p.other_run, ref);
      continue;
    }
    out += fmt::format("\nafter it  {} more divergent tensor(s) of {} compared (run {} vs {})\n", group_digits(after),
                       group_digits(p.compared), p.other_run, ref);
    if (!rows.empty()) out += fmt::format("  {:<14} {:<11} {:>7}   {}\n", "step", "phase", "tensors", "max abs diff");
    for (size_t i = 0; i < rows.size() && i < o.max_cascade; ++i)
      out += fmt::format("  {:<14} {:<11} {:>7}   {}\n",
                         rows[i].step < 0 ? "before step 0" : fmt::format("step {}", rows[i].step),
                         to_string(rows[i].phase), rows[i].count, cascade_max(rows[i]));
    if (rows.size() > o.max_cascade) out += fmt::format("  ... {} more groups\n", rows.size() - o.max_cascade);
  }
  return out;
}

}  // namespace

std::string render_text(const Report& r, const ReportOptions& o) {
  const Comparison& c = r.comparison;
  Paint paint = [&](const std::string& s, const char* code) {
    return o.color ? fmt::format("\033[{}m{}\033[0m", code, s) : s;
  };
  std::string out = header(c);
  const PairComparison* h = c.headline();
  if (c.verdict() == Verdict::inconclusive || !h) return out + agreement(c, paint);
  const TensorDiff& d = h->diffs[*h->first];
  const std::string ref = reference_name(c);
  out += fmt::format("\n{}  {}\n", paint("first divergence", "1;31"), describe(d.ref));
  out += fmt::format("  {}\n", provenance_tag(d));
  out += fmt::format("  run {} vs {}   ", h->other_run, ref) + statistics(d);
  if (c.drill) out += drill_text(*c.drill, ref, paint);
  out += hints_text(r.hints, paint);
  out += after_it(c, h, o);
  if (r.isolation) out += isolation_text(*r.isolation, paint);
  out += fmt::format("\n{} (run {} differs from {}, first at {})\n", paint("verdict: " + verdict_word(c), "1;31"),
                     h->other_run, ref, describe(d.ref));
  return out;
}

}  // namespace reprocheck
