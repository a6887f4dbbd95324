#include "report_common.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "reprocheck/error.h"

namespace reprocheck {

namespace {

// With a golden, a thread count or a device the check did not ask for (no --threads, --device) is
// where the run ran: the runner's cores or OMP_NUM_THREADS, the GPU it has. It moves from the run
// options that differ to the environment.
void unasked_options_are_environment(Comparison& c) {
  if (c.capture.baseline.empty() || c.command_line.empty()) return;
  for (const char* key : {"threads", "device"}) {
    const std::string flag = std::string("--") + key;
    bool asked = false;
    for (const auto& a : c.command_line) {
      if (a == "--") break;
      asked = asked || a == flag || a.rfind(flag + "=", 0) == 0;
    }
    if (asked) continue;
    for (auto& p : c.pairs) {
      for (auto it = p.knob_values.begin(); it != p.knob_values.end();) {
        if (std::get<0>(*it) != key) {
          ++it;
          continue;
        }
        p.environment_diffs.insert(p.environment_diffs.begin(), {key, std::get<1>(*it), std::get<2>(*it)});
        it = p.knob_values.erase(it);
      }
      p.knob_diffs.erase(
          std::remove_if(p.knob_diffs.begin(), p.knob_diffs.end(), [&](const auto& k) { return k.first == key; }),
          p.knob_diffs.end());
    }
  }
}

}  // namespace

Report make_report(Comparison comparison, std::optional<Isolation> isolation) {
  unasked_options_are_environment(comparison);
  Report r;
  if (auto note = rank_alone_note(comparison); !note.empty()) comparison.notes.push_back(std::move(note));
  r.hints = explain(comparison);
  r.comparison = std::move(comparison);
  r.isolation = std::move(isolation);
  return r;
}

ExitCode exit_code(const Report& r) {
  switch (r.comparison.verdict()) {
    case Verdict::divergent:
      return ExitCode::divergent;
    case Verdict::inconclusive:
      return ExitCode::usage;
    case Verdict::reproducible:
      break;
  }
  return ExitCode::ok;
}

namespace report_detail {

const std::map<std::string, std::string>& checked_attributes(const Comparison& c) {
  if (!c.capture.baseline.empty() && !c.pairs.empty() && !c.pairs.front().other_attributes.empty())
    return c.pairs.front().other_attributes;
  return c.ref_attributes;
}

std::string checked_attribute(const Comparison& c, const std::string& key) {
  const auto& a = checked_attributes(c);
  auto it = a.find(key);
  return it == a.end() ? "" : it->second;
}

std::string model_name(const Comparison& c) {
  std::string m = checked_attribute(c, "model");
  return m.empty() ? "?" : m;
}

int64_t tensors_per_run(const Comparison& c) {
  if (c.capture.baseline.empty()) return c.tensors;
  std::string n = checked_attribute(c, "tensor_count");
  try {
    return n.empty() ? c.tensors : std::stoll(n);
  } catch (const std::exception&) {
    return c.tensors;
  }
}

std::string golden_words(const Comparison& c) {
  if (c.capture.baseline.empty()) return "";
  auto attr = [&](const char* k) { return c.attribute(k); };  // the golden's
  std::vector<std::string> facts;
  if (!attr("model").empty()) facts.push_back(attr("model"));
  facts.push_back(fmt::format("{} tensors", group_digits(c.tensors)));
  if (!attr("time").empty())
    facts.push_back("recorded " + attr("time") + (attr("host").empty() ? "" : " on " + attr("host")));
  return fmt::format("the golden '{}' ({})", c.capture.baseline, fmt::join(facts, ", "));
}

std::string describe(const TensorMeta& m) {
  std::string where = m.tensor_name();
  if (!m.layer_type.empty() && !m.is_loop_tensor()) where += fmt::format(" ({})", short_type_name(m.layer_type));
  if (m.kind == Kind::activation) where += " output";
  if (m.kind == Kind::grad) where += " grad of output";
  std::string step = m.step < 0 ? "before step 0" : fmt::format("step {}", m.step);
  std::string call = m.call > 0 ? fmt::format(" (call {})", m.call + 1) : "";
  return fmt::format("{} · {} · {}{}", step, to_string(m.phase), where, call);
}

std::string provenance_tag(const TensorDiff& d) {
  if (!d.inputs_identical) return "origin unknown";
  if (*d.inputs_identical)
    return d.inputs_basis == "input_hash" ? "source: its inputs were identical"
                                          : "source: everything recorded before it matched";
  return d.inputs_basis == "input_hash" ? "inherited: its inputs already differed"
                                        : "inherited: an earlier tensor already differed";
}

std::string group_digits(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

std::string bits_hex(uint64_t bits, const std::string& dtype) {
  int width = static_cast<int>(dtype_size(dtype)) * 2;
  return fmt::format("0x{:0{}x}", bits, width);
}

std::string value(double v) { return fmt::format("{:.9g}", v); }

std::vector<CascadeRow> cascade(const PairComparison& p) {
  std::vector<CascadeRow> rows;
  std::map<std::pair<int, Phase>, size_t> at;
  bool ranks = false;
  for (size_t i = 0; i < p.diffs.size(); ++i) {
    const auto& d = p.diffs[i];
    if (!is_divergent(d.status) || (p.first && i == *p.first)) continue;
    ranks |= d.ref.rank >= 0;
    auto key = std::make_pair(d.ref.step, d.ref.phase);
    auto it = at.find(key);
    if (it == at.end()) {
      it = at.emplace(key, rows.size()).first;
      rows.push_back({d.ref.step, d.ref.phase});
    }
    rows[it->second].count++;
    rows[it->second].hash_only += d.hash_only ? 1 : 0;
    if (d.status == Status::values_differ && !d.hash_only) {
      rows[it->second].with_stats++;
      rows[it->second].max_abs = std::max(rows[it->second].max_abs, d.stats.max_abs);
    }
  }
  // Several ranks' streams follow each other in a merged dump, with no common clock: their groups
  // go in logical time (step, then phase), as the first divergence is chosen.
  if (ranks)
    std::stable_sort(rows.begin(), rows.end(), [](const CascadeRow& a, const CascadeRow& b) {
      return std::make_pair(a.step, phase_rank(a.phase)) < std::make_pair(b.step, phase_rank(b.phase));
    });
  return rows;
}

std::string knobs(const PairComparison& p) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : p.knob_diffs) parts.push_back(fmt::format("{} ({})", k, v));
  return fmt::format("{}", fmt::join(parts, ", "));
}

std::string steps_of(const Comparison& c) {
  std::string s = checked_attribute(c, "steps");
  return s.empty() ? "?" : s;
}

std::string cosine_text(double cosine) {
  return std::isnan(cosine) ? "n/a (no finite pair)" : fmt::format("{:.9f}", cosine);
}

std::string verdict_word(const Comparison& c) {
  const Verdict v = c.verdict();
  if (v == Verdict::inconclusive) return "INCONCLUSIVE";
  if (!c.capture.baseline.empty()) return v == Verdict::divergent ? "NUMERICS CHANGED" : "MATCHES THE GOLDEN";
  return v == Verdict::divergent ? "DIVERGENT" : "REPRODUCIBLE";
}

std::string reference_name(const Comparison& c) { return c.capture.baseline.empty() ? "run 0" : "the golden"; }

std::string runs_phrase(const Comparison& c) {
  if (c.capture.baseline.empty()) return fmt::format("{} runs of {} step(s)", c.runs.size(), steps_of(c));
  return fmt::format("{} fresh run(s) of {} step(s) against {}", c.runs.size() - 1, steps_of(c), golden_words(c));
}

std::string cascade_max(const CascadeRow& row) {
  if (row.hash_only == row.count) return "hashes only";
  const int64_t other = row.count - row.hash_only - row.with_stats;  // shape, dtype, missing, extra
  std::vector<std::string> more;
  if (row.hash_only) more.push_back(fmt::format("{} by hash", row.hash_only));
  if (other) more.push_back(fmt::format("{} changed shape, dtype or presence", other));
  if (row.with_stats == 0) return fmt::format("{}", fmt::join(more, ", "));
  return fmt::format("{:.3g}{}", row.max_abs, more.empty() ? "" : fmt::format(" (+{})", fmt::join(more, ", +")));
}

std::vector<std::string> capture_sentences(const Comparison& c) {
  std::vector<std::string> out;
  const auto& k = c.capture;
  auto runs = [](const std::vector<int>& v) { return fmt::format("{}", fmt::join(v, ", ")); };
  if (!k.baseline.empty())
    out.push_back(
        fmt::format("run 0 is the golden '{}' ({})", k.baseline, k.baseline_hashes_only ? "hashes only" : "full"));
  if (k.mode == CaptureMode::ladder) {
    if (!k.pass2)
      out.push_back("pass 1 (hashes only) found every tensor equal: no tensor data was written");
    else
      out.push_back(
          fmt::format("pass 1 (hashes only) found a difference; pass 2 ran run(s) {} again through step {} and kept "
                      "the data of {} record(s) ({}): the statistics come from pass 2, the counts from pass 1's hashes",
                      runs(k.pass2_runs), k.pass2_steps - 1, k.pass2_records,
                      c.tolerance.mode == Tolerance::Mode::bitwise
                          ? "the first divergence and those that differ after it in its step"
                          : "every record whose hashes differ, to judge it against the tolerance"));
  } else if (k.mode == CaptureMode::hashes && c.hash_only_diffs() > 0) {
    out.push_back(
        fmt::format("{} divergent tensor(s) differ by their hashes alone: a run recorded only hashes, so "
                    "they have no statistics",
                    c.hash_only_diffs()));
  }
  if (!k.intermittent.empty())
    out.push_back(
        fmt::format("intermittent: run(s) {} diverged in pass 1 but not when captured again in pass 2; "
                    "the verdict stands on pass 1's hashes",
                    runs(k.intermittent)));
  if (!k.baseline.empty() && k.baseline_hashes_only && c.divergent()) {
    // In the front end's terms: the checked run's command for a training script, its model else.
    RunOptions now = c.ref_options;
    if (const auto* p = c.headline(); p && p->other_attributes.count("run_options")) try {
        now = from_json(p->other_attributes.at("run_options"));
      } catch (const InputError&) {
      }
    std::string command;
    for (const auto& a : now.command) command += (command.empty() ? "" : " ") + a;
    std::string model = !now.model.empty() ? now.model : model_name(c);
    out.push_back(fmt::format(
        "the golden holds hashes only, so the size of the change cannot be computed: record a full golden on the "
        "base commit ({}) and compare with 'reprocheck diff base.h5 run.h5'",
        command.empty() ? fmt::format("reprocheck record {} -o base.h5, or --save-baseline base.h5 --full", model)
                        : fmt::format("reprocheck run --save-baseline base.h5 --full -- {}", command)));
  }
  return out;
}

std::string data_sentence(const TensorDiff& d) {
  if (d.status != Status::values_differ) return "";
  if (d.hash_only) return d.detail;
  auto list = [](const std::vector<int64_t>& v) {
    const size_t shown = std::min<size_t>(v.size(), 12);
    return fmt::format("[{}{}]", fmt::join(v.begin(), v.begin() + static_cast<long>(shown), ", "),
                       v.size() > shown ? ", ..." : "");
  };
  if (d.ref.kind == Kind::rng_state) {
    std::string name = d.ref.name == "numpy"    ? "numpy global RNG"
                       : d.ref.name == "random" ? "Python random RNG"
                                                : d.ref.name + " RNG";
    return fmt::format("{} state differed at the start of step {}", name, d.ref.step);
  }
  if (d.ref.kind == Kind::indices) {
    std::string out = fmt::format("batch {} of the DataLoader: {} of {} samples differ", d.ref.call,
                                  group_digits(d.stats.mismatched), group_digits(d.stats.numel));
    if (!d.ref_values.empty()) out += fmt::format(" (indices {} vs {})", list(d.ref_values), list(d.other_values));
    return out;
  }
  return "";
}

std::string drill_summary(const DrillDown& dd) {
  const std::string captured = fmt::format("{} op(s) of step {}{} captured in {:.1f} s", dd.ops_captured, dd.step,
                                           dd.scope.empty() ? "" : " in " + dd.scope, dd.seconds);
  if (!dd.found) return fmt::format("no divergent op found: {} ({})", dd.note, captured);
  std::string where = dd.module.empty() ? "" : " in " + dd.module;
  std::string line = dd.source().empty() ? ""
                     : dd.forward_site   ? ", the backward of the call at " + dd.source()
                                         : ", called at " + dd.source();
  std::string by = dd.diff.status == Status::values_differ
                       ? fmt::format("; {} of {} elements differ, max abs diff {:.4g}", dd.diff.stats.mismatched,
                                     dd.diff.stats.numel, dd.diff.stats.max_abs)
                       : fmt::format("; {}", to_string(dd.diff.status));
  return fmt::format("{} -> {}{}{}{} (step {}, {}{}){} ({}{})", dd.op, dd.output, where, dd.inside(), line,
                     dd.diff.ref.step, to_string(dd.diff.ref.phase), dd.rank_words(), by, captured,
                     dd.note.empty() ? "" : "; " + dd.note);
}

}  // namespace report_detail
}  // namespace reprocheck
