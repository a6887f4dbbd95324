#include "reprocheck/ladder.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <set>

#include "reprocheck/drill.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/protocol.h"

namespace reprocheck {

namespace {

uint64_t file_bytes(const std::vector<std::string>& paths) {
  uint64_t n = 0;
  for (const auto& p : paths) {
    struct stat st {};
    if (!p.empty() && stat(p.c_str(), &st) == 0) n += static_cast<uint64_t>(st.st_size);
  }
  return n;
}

// Whether a tolerance other than bitwise judges the tensors (then unequal hashes are not yet a
// divergence, and pass 2 must cover every step where hashes differ).
bool judged_by_tolerance(const Comparison& c) { return c.tolerance.mode != Tolerance::Mode::bitwise; }

PairComparison merge_pair(const PairComparison& p1, const PairComparison& p2, int last_step) {
  PairComparison m = p2;
  m.other_run = p1.other_run;
  m.knob_diffs = p1.knob_diffs;
  for (const auto& d : p1.diffs) {
    if (d.ref.step <= last_step) continue;
    if (is_divergent(d.status)) ++m.divergent;
    if (d.status == Status::close) ++m.close;
    m.diffs.push_back(d);
  }
  int64_t paired_diffs = 0;
  for (const auto& d : m.diffs) paired_diffs += d.status != Status::missing && d.status != Status::extra;
  m.compared = p1.compared;
  m.identical = std::max<int64_t>(0, m.compared - paired_diffs);
  return m;
}

void keep_dumps(Runner& runner, CheckResult& result) {
  try {
    result.dumps = runner.keep();
  } catch (const Error& e) {
    result.keep_error = e.what();
  }
}

}  // namespace

Comparison merge_passes(Comparison pass1, const Comparison& pass2, const std::vector<int>& runs, int last_step) {
  for (size_t k = 0; k < pass2.pairs.size() && k < runs.size(); ++k) {
    auto it = std::find_if(pass1.pairs.begin(), pass1.pairs.end(),
                           [&](const PairComparison& p) { return p.other_run == runs[k]; });
    if (it == pass1.pairs.end()) continue;
    const PairComparison& p2 = pass2.pairs[k];
    // Bitwise equal where pass 1's hashes differed: the difference did not come back.
    if (it->has_divergence() && !p2.has_divergence() && p2.close == 0) {
      pass1.capture.intermittent.push_back(it->other_run);
      continue;
    }
    *it = merge_pair(*it, p2, last_step);
  }
  pass1.capture.pass2 = true;
  pass1.capture.pass2_steps = last_step + 1;
  pass1.capture.mode = CaptureMode::ladder;
  for (const auto& n : pass2.notes)
    if (std::find(pass1.notes.begin(), pass1.notes.end(), n) == pass1.notes.end()) pass1.notes.push_back(n);
  return pass1;
}

namespace {

// One check's plan: the options, the golden, and how the lists of dumps to compare are made.
struct Check {
  Runner& runner;
  const CheckOptions& o;
  const ProgressFn& progress;
  CompareOptions compare;
  bool golden = false, golden_hashes_only = false;

  std::vector<std::string> with_reference(const std::vector<std::string>& dumps) const {
    std::vector<std::string> list;
    if (golden) list.push_back(o.baseline);
    list.insert(list.end(), dumps.begin(), dumps.end());
    return list;
  }
  CheckResult finish(CheckResult result, Comparison c) const {
    c.capture.baseline = o.baseline;
    c.capture.baseline_hashes_only = golden_hashes_only;
    result.comparison = std::move(c);
    return result;
  }
  Comparison second_pass(Comparison c1, const std::vector<std::string>& pass1_dumps) const;
  void third_pass(Comparison& c, const std::vector<std::string>& pass1_dumps) const;
  void drill_runs(DrillPlan plan, const std::vector<std::string>& pass1_dumps, DrillDown& dd) const;
};

// Each run's options for running it again: a seed drawn at random ("--seed random") is the one it
// drew, so that the run repeats.
Runner::Adjust repeat_seeds(const std::vector<std::string>& pass1_dumps, const std::vector<int>& indices,
                            std::function<void(RunOptions&)> more) {
  std::map<int, std::pair<std::string, std::string>> drawn;
  for (int i : indices) {
    DumpReader r(pass1_dumps[static_cast<size_t>(i)]);
    drawn[i] = {r.attribute(attr::kSeed), r.attribute(attr::kDataSeed)};
  }
  return [drawn, more](RunOptions& r, int index) {
    more(r);
    auto it = drawn.find(index);
    if (it == drawn.end()) return;
    const auto& [seed, data_seed] = it->second;
    if (r.seed == "random" && !seed.empty()) r.seed = seed;
    if (r.data_seed == "random" && !data_seed.empty()) r.data_seed = data_seed;
  };
}

// Pass 2: the reference and the runs that differed, in full, through the step of each one's first
// difference (the latest of them: every pair's first divergence is captured again); with a
// tolerance, through the last step where hashes differ, to judge them all.
Comparison Check::second_pass(Comparison c1, const std::vector<std::string>& pass1_dumps) const {
  int last_step = -1;
  std::vector<int> differing;  // pair positions (run numbers) that differed
  for (const auto& p : c1.pairs) {
    if (!p.has_divergence()) continue;
    differing.push_back(p.other_run);
    if (judged_by_tolerance(c1)) {
      for (const auto& d : p.diffs)
        if (is_divergent(d.status)) last_step = std::max(last_step, d.ref.step);
    } else {
      last_step = std::max(last_step, p.diffs[*p.first].ref.step);
    }
  }
  const int steps = std::max(1, last_step + 1);
  // Runner indices: with a golden, pair position k is runner run k - 1.
  std::vector<int> indices;
  if (!golden) indices.push_back(0);
  for (int r : differing) indices.push_back(golden ? r - 1 : r);
  auto dumps2 = runner.rerun(indices,
                             repeat_seeds(pass1_dumps, indices,
                                          [steps](RunOptions& r) {
                                            r.hashes_only = false;
                                            r.steps = steps;
                                          }),
                             progress);
  std::vector<std::string> list2, pass2_paths;
  for (int i : indices) pass2_paths.push_back(dumps2[static_cast<size_t>(i)]);
  list2 = with_reference(pass2_paths);
  CompareOptions compare2 = compare;
  compare2.max_step = steps - 1;
  Comparison merged = merge_passes(std::move(c1), compare_dumps(list2, compare2), differing, steps - 1);
  merged.capture.pass2_runs = indices;
  if (golden)
    for (int& r : merged.capture.pass2_runs) r += 1;
  merged.capture.pass2_bytes = file_bytes(pass2_paths);
  return merged;
}

// Pass 3: the reference and the headline's run again through the step of the first divergence,
// every op of it captured (within the plan's scope), and the first op that differs. A scoped
// capture that finds nothing is widened to the whole step once.
void Check::third_pass(Comparison& c, const std::vector<std::string>& pass1_dumps) const {
  auto plan = golden ? std::nullopt : plan_drill(c, o.drill);
  if (!plan) return;
  const auto start = std::chrono::steady_clock::now();
  DrillDown dd;
  dd.mode = o.drill;
  dd.step = plan->step;
  dd.scope = plan->scope;
  dd.other_run = plan->other_run;
  dd.why = plan->why;
  try {
    drill_runs(*plan, pass1_dumps, dd);
  } catch (const Error& e) {
    // The verdict stands without it.
    dd.found = false;
    dd.note = fmt::format("pass 3 could not run: {}", first_line(e.what()));
  }
  dd.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  c.drill = std::move(dd);
}

void Check::drill_runs(DrillPlan plan, const std::vector<std::string>& pass1_dumps, DrillDown& dd) const {
  const std::vector<int> indices = {0, plan.other_run};
  // At most once widened, and at most twice run again for a difference that did not come back or
  // came earlier.
  constexpr int kAttempts = 3;
  bool widened = false;
  std::string moved;  // why pass 3 drilled into another step or module than the headline's
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto dumps = runner.rerun(indices,
                              repeat_seeds(pass1_dumps, indices,
                                           [&plan](RunOptions& r) {
                                             r.hashes_only = false;
                                             r.steps = plan.step + 1;
                                             r.drill_step = plan.step;
                                             r.drill_scope = plan.scope;
                                           }),
                              progress);
    CompareOptions compare3 = compare;
    compare3.max_step = plan.step;
    Comparison c3 = compare_dumps({dumps[0], dumps[static_cast<size_t>(plan.other_run)]}, compare3);
    c3.pairs[0].other_run = plan.other_run;
    dd = read_drill(c3, plan, o.drill);
    dd.passes = attempt + 1;
    if (dd.earlier) {
      // The runs took another course this time (an op that adds in arrival order raced at an
      // earlier step): drill where they diverged first, or, for a record without ops, run again.
      if (auto again = plan_for(*dd.earlier, plan.other_run, o.drill)) {
        moved = fmt::format(
            "when run again the runs diverged earlier, at {}: an intermittent difference, drilled there", again->why);
        plan = *again;
        plan.why = dd.why;
      }
      continue;
    }
    if (dd.found || dd.ops_captured == 0) break;
    // Not reproduced (an op that adds in arrival order may agree by chance): once more, as it was.
    if (!c3.pairs[0].has_divergence()) continue;
    if (plan.scope.empty() || widened) break;
    plan.scope.clear();  // a scoped capture that found nothing: every op of the step
    widened = true;
  }
  if (dd.found && !moved.empty()) dd.note = moved;
}

}  // namespace

CheckResult run_check(Runner& runner, const CheckOptions& o, const ProgressFn& progress) {
  Check check{runner, o, progress, o.compare};
  check.golden = !o.baseline.empty();
  check.compare.allow_other_model = check.golden;
  // The runs' dumps were written by this check into its private folder: they need no isolated
  // verification pass (every tensor read is still checked against its hash). A golden is the
  // user's file: it is verified in a child process first, like any dump given to diff.
  check.compare.verify_data = false;
  if (check.golden) {
    if (o.compare.verify_data) DumpReader::check_isolated(o.baseline, check.compare.read_timeout_s);
    check.golden_hashes_only = DumpReader(o.baseline).hashes_only();
  }
  if (o.keep && !o.full && !o.hashes_only)
    throw UsageError("--keep keeps whole runs: it needs --full or --hashes-only");
  CheckResult result;
  // One pass, full (--full), or pass 1: hashes only.
  result.dumps = runner.run(progress, [full = o.full](RunOptions& r, int) { r.hashes_only = !full; });
  if (o.keep) keep_dumps(runner, result);
  Comparison c1 = compare_dumps(check.with_reference(result.dumps), check.compare);
  c1.capture.pass1_bytes = file_bytes(result.dumps);
  if (o.full) {
    c1.capture.mode = check.golden_hashes_only ? CaptureMode::hashes : CaptureMode::full;
    if (c1.divergent()) check.third_pass(c1, result.dumps);
    return check.finish(std::move(result), std::move(c1));
  }
  c1.capture.mode = o.hashes_only ? CaptureMode::hashes : CaptureMode::ladder;
  if (o.hashes_only || !c1.divergent() || (check.golden && check.golden_hashes_only)) {
    if (check.golden && check.golden_hashes_only && !o.hashes_only) c1.capture.mode = CaptureMode::hashes;
    return check.finish(std::move(result), std::move(c1));
  }
  Comparison merged = check.second_pass(std::move(c1), result.dumps);
  check.third_pass(merged, result.dumps);
  return check.finish(std::move(result), std::move(merged));
}

}  // namespace reprocheck
