#include "reprocheck/ladder.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
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

void keep_dumps(Runner& runner, CheckResult& result) {
  try {
    result.dumps = runner.keep();
  } catch (const Error& e) {
    result.keep_error = e.what();
  }
}

}  // namespace

Comparison merge_passes(Comparison pass1, const Comparison& pass2, const std::vector<int>& runs,
                        const std::set<std::string>& window, int last_step) {
  // The window's records that pass 2's reference holds with data: the ones pass 2 could judge.
  std::set<std::pair<int32_t, std::string>> judged;
  for (const auto& m : pass2.ref_index)
    if (m.has_data() && window.count(m.key())) judged.emplace(m.rank, m.key());
  for (size_t k = 0; k < pass2.pairs.size() && k < runs.size(); ++k) {
    auto it = std::find_if(pass1.pairs.begin(), pass1.pairs.end(),
                           [&](const PairComparison& p) { return p.other_run == runs[k]; });
    if (it == pass1.pairs.end() || !it->has_divergence()) continue;
    const PairComparison& p2 = pass2.pairs[k];
    std::map<std::pair<int32_t, std::string>, const TensorDiff*> again;
    for (const auto& d : p2.diffs) again.emplace(std::make_pair(d.ref.rank, d.ref.key()), &d);
    auto judged_again = [&](const TensorDiff& d) -> std::optional<const TensorDiff*> {
      auto id = std::make_pair(d.ref.rank, d.ref.key());
      if (!d.hash_only || !judged.count(id)) return std::nullopt;  // pass 2 did not judge it
      auto a = again.find(id);
      if (a == again.end()) return nullptr;  // bitwise equal when captured again
      const TensorDiff& x = *a->second;
      if (x.hash_only || (x.status != Status::values_differ && x.status != Status::close)) return std::nullopt;
      return &x;
    };
    // The first difference did not come back where pass 1 saw it: the verdict stands on pass 1's
    // hashes, and the run is named intermittent.
    if (auto first = judged_again(it->diffs[*it->first]); first && *first == nullptr) {
      pass1.capture.intermittent.push_back(it->other_run);
      continue;
    }
    std::vector<TensorDiff> merged;
    for (auto& d : it->diffs) {
      auto x = judged_again(d);
      if (!x) {
        merged.push_back(std::move(d));
      } else if (*x) {
        TensorDiff m = **x;
        m.when = d.when;
        merged.push_back(std::move(m));
      }
    }
    it->diffs = std::move(merged);
    it->bytes_read += p2.bytes_read;
    classify_again(*it);
  }
  pass1.capture.pass2 = true;
  pass1.capture.pass2_steps = last_step + 1;
  pass1.capture.pass2_records = static_cast<int64_t>(window.size());
  pass1.capture.mode = CaptureMode::ladder;
  for (const auto& n : pass2.notes)
    if (std::find(pass1.notes.begin(), pass1.notes.end(), n) == pass1.notes.end()) pass1.notes.push_back(n);
  return pass1;
}

namespace {

// One check's plan: the options, the golden, and how the lists of dumps to compare are made.
struct Check {
  Check(Runner& r, const CheckOptions& options, const ProgressFn& p)
      : runner(r), o(options), progress(p), compare(options.compare) {}
  Runner& runner;
  const CheckOptions& o;
  const ProgressFn& progress;
  CompareOptions compare;
  bool golden = false, golden_hashes_only = false;
  // The model file's hash, computed once here for every run of every pass (by path: --vary may
  // name several models).
  mutable std::map<std::string, std::string> model_hashes;

  void hash_model(RunOptions& r) const {
    if (r.model.empty() || !r.model_hash.empty()) return;
    auto it = model_hashes.find(r.model);
    if (it == model_hashes.end()) {
      struct stat st {};
      if (stat(r.model.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;  // the run says what is wrong
      it = model_hashes.emplace(r.model, fmt::format("{:016x}", hash_file(r.model))).first;
    }
    r.model_hash = it->second;
  }

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
  // Pass 2 also drilled (pass 3's first capture, in the same runs): with this plan, into these dumps.
  mutable std::optional<DrillPlan> drilled;
  mutable std::vector<std::string> drilled_dumps;

  Comparison second_pass(Comparison c1, const std::vector<std::string>& pass1_dumps) const;
  void third_pass(Comparison& c, const std::vector<std::string>& pass1_dumps) const;
  void drill_runs(DrillPlan plan, const std::vector<std::string>& pass1_dumps, DrillDown& dd,
                  const std::vector<std::string>* first_dumps) const;
};

// Each run's options for running it again: a seed drawn at random ("--seed random") is the one it
// drew, so that the run repeats.
Runner::Adjust repeat_seeds(const std::vector<std::string>& pass1_dumps, const std::vector<int>& indices,
                            std::function<void(RunOptions&)> more) {
  // `more` runs first: the check's own settings for the pass (hashes_only, steps, the model hash).
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

// Pass 2's window: the records whose data it keeps (their keys in the comparison, and as each
// process writes them: a distributed run's merged dump puts "rankR/" before every layer), and the
// last step it must reach.
struct Window {
  std::set<std::string> keys, plan;
  int last_step = -1;
};

std::string process_key(const TensorMeta& m) {
  if (m.rank < 0) return m.key();
  TensorMeta own = m;
  own.layer = layer_in_rank(m.rank, m.layer);
  return own.key();
}

// Records after each stream's first divergence, in its step, that pass 2 keeps the data of (for
// the statistics of the cascade table), and the bytes they may take per pair; the first
// divergence itself is always kept.
constexpr size_t kWindowRecords = 16;
constexpr uint64_t kWindowBytes = uint64_t{64} << 20;

uint64_t data_bytes(const TensorMeta& m) { return static_cast<uint64_t>(m.numel) * dtype_size(m.dtype); }

// The first divergence of each pair (of each rank's stream) and up to kWindowRecords records that
// differ after it in the same step; with a tolerance, every record whose hashes differ (each must
// be judged). Only records that differ by their hashes alone need data.
Window pass2_window(const Comparison& c1) {
  Window w;
  auto take = [&w](const TensorDiff& d) {
    w.keys.insert(d.ref.key());
    w.plan.insert(process_key(d.ref));
    w.last_step = std::max(w.last_step, d.ref.step);
  };
  for (const auto& p : c1.pairs) {
    if (!p.has_divergence()) continue;
    if (judged_by_tolerance(c1)) {
      for (const auto& d : p.diffs)
        if (d.hash_only) take(d);
      continue;
    }
    std::vector<size_t> firsts;
    for (const auto& [rank, i] : p.rank_firsts) firsts.push_back(i);
    if (firsts.empty()) firsts.push_back(*p.first);
    uint64_t bytes = 0;
    for (size_t f : firsts) {
      const TensorDiff& first = p.diffs[f];
      w.last_step = std::max(w.last_step, first.ref.step);
      if (first.hash_only) {
        take(first);
        bytes += data_bytes(first.ref);
      }
      size_t taken = 0;
      for (size_t i = f + 1; i < p.diffs.size() && taken < kWindowRecords; ++i) {
        const TensorDiff& d = p.diffs[i];
        if (d.ref.rank != first.ref.rank || d.ref.step != first.ref.step || !d.hash_only) continue;
        if (bytes + data_bytes(d.ref) > kWindowBytes) break;
        bytes += data_bytes(d.ref);
        take(d);
        ++taken;
      }
    }
  }
  return w;
}

// Pass 2: the reference and the runs that differed again, hashes only except the window's records,
// whose data they keep; each run stops once it has written them (or at the end of the window's
// last step). The statistics come from it; everything else stays pass 1's. When pass 1's first
// divergence already calls for a drill-down (bitwise, no golden), the same runs capture its ops too:
// pass 3's first capture without two more runs.
Comparison Check::second_pass(Comparison c1, const std::vector<std::string>& pass1_dumps) const {
  std::vector<int> differing;  // pair positions (run numbers) that differed
  for (const auto& p : c1.pairs)
    if (p.has_divergence()) differing.push_back(p.other_run);
  const Window window = pass2_window(c1);
  const std::optional<DrillPlan> drill = golden || judged_by_tolerance(c1) ? std::nullopt : plan_drill(c1, o.drill);
  const int steps = std::max({1, window.last_step + 1, drill ? drill->step + 1 : 0});
  const std::string plan = runner.temp_dir() + "/pass2.plan";
  {
    std::ofstream out(plan, std::ios::trunc);
    for (const auto& k : window.plan) out << k << '\n';
    if (!out.flush()) throw RunError(fmt::format("cannot write the capture plan '{}': check free disk space", plan));
  }
  // Runner indices: with a golden, pair position k is runner run k - 1.
  std::vector<int> indices;
  if (!golden) indices.push_back(0);
  for (int r : differing) indices.push_back(golden ? r - 1 : r);
  auto dumps2 = runner.rerun(indices,
                             repeat_seeds(pass1_dumps, indices,
                                          [this, steps, plan, &drill](RunOptions& r) {
                                            hash_model(r);
                                            r.hashes_only = true;
                                            r.capture_plan = plan;
                                            r.steps = steps;
                                            if (drill) {
                                              r.drill_step = drill->step;
                                              r.drill_scope = drill->scope;
                                            }
                                          }),
                             progress);
  if (drill) {
    drilled = drill;
    drilled_dumps = dumps2;
  }
  std::vector<std::string> pass2_paths;
  for (int i : indices) pass2_paths.push_back(dumps2[static_cast<size_t>(i)]);
  CompareOptions compare2 = compare;
  compare2.max_step = steps - 1;
  Comparison c2 = compare_dumps(with_reference(pass2_paths), compare2);
  if (drill) c2.notes.clear();  // the notes of op taps are pass 3's, not the check's
  Comparison merged = merge_passes(std::move(c1), c2, differing, window.keys, steps - 1);
  merged.capture.pass2_runs = indices;
  if (golden)
    for (int& r : merged.capture.pass2_runs) r += 1;
  merged.capture.pass2_bytes = file_bytes(pass2_paths);
  return merged;
}

// Pass 3: the reference and the headline's run again through the step of the first divergence,
// every op of it captured (within the plan's scope), and the first op that differs. A scoped
// capture that finds nothing, or an op whose own inputs differed, is widened to the whole step once.
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
  // Pass 2 drilled with this very plan: its runs are pass 3's first capture.
  const bool reuse = drilled && drilled->step == plan->step && drilled->scope == plan->scope &&
                     drilled->other_run == plan->other_run && drilled->rank == plan->rank;
  try {
    drill_runs(*plan, pass1_dumps, dd, reuse ? &drilled_dumps : nullptr);
  } catch (const Error& e) {
    // The verdict stands without it.
    dd.found = false;
    dd.note = fmt::format("pass 3 could not run: {}", first_line(e.what()));
  }
  dd.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  c.drill = std::move(dd);
}

void Check::drill_runs(DrillPlan plan, const std::vector<std::string>& pass1_dumps, DrillDown& dd,
                       const std::vector<std::string>* first_dumps) const {
  const std::vector<int> indices = {0, plan.other_run};
  // At most once widened, and at most twice run again for a difference that did not come back or
  // came earlier.
  constexpr int kAttempts = 3;
  bool widened = false;
  std::string moved;  // why pass 3 drilled into another step or module than the headline's
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto dumps = attempt == 0 && first_dumps ? *first_dumps
                                             : runner.rerun(indices,
                                                            repeat_seeds(pass1_dumps, indices,
                                                                         [this, &plan](RunOptions& r) {
                                                                           hash_model(r);
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
    dd.in_pass2 = attempt == 0 && first_dumps;
    if (dd.earlier) {
      // The runs took another course this time (an op that adds in arrival order raced at an
      // earlier step): drill where they diverged first, or, for a record without ops, run again.
      if (auto again = plan_for(*dd.earlier, plan.other_run, o.drill, !c3.ref_options.command.empty())) {
        moved = fmt::format(
            "when run again the runs diverged earlier, at {}: an intermittent difference, drilled there", again->why);
        plan = *again;
        plan.why = dd.why;
      }
      continue;
    }
    // A scoped capture's op whose own inputs differed: an op outside the scope may have made them
    // (state another module left behind); every op of the step, once.
    if (dd.found && !dd.diff.inputs_identical.value_or(true) && !plan.scope.empty() && !widened) {
      moved = fmt::format(
          "started in {}, whose first divergent op ({}) read an input made outside it: widened to "
          "every op of the step",
          plan.scope, dd.op);
      plan.scope.clear();
      widened = true;
      continue;
    }
    if (dd.found) break;
    if (dd.ops_captured == 0) {
      // A scope that is no module (a parameter of no model, whose gradient the script's own ops
      // make): every op of the step, once. A module that ran and gave no op: the front end cannot
      // trace, and a wider capture would not either.
      if (plan.scope.empty() || widened || ran_forward(DumpReader(dumps[0]).index(), plan)) break;
      moved = fmt::format("started in {}, which ran no op of its own: widened to every op of the step", plan.scope);
      plan.scope.clear();
      widened = true;
      continue;
    }
    // Not reproduced (an op that adds in arrival order may agree by chance): once more, as it was.
    if (!c3.pairs[0].has_divergence()) continue;
    if (plan.scope.empty() || widened) break;
    plan.scope.clear();  // a scoped capture that found nothing: every op of the step
    widened = true;
  }
  if (dd.found && !moved.empty()) dd.note = dd.note.empty() ? moved : moved + "; " + dd.note;
}

}  // namespace

CheckResult run_check(Runner& runner, const CheckOptions& o, const ProgressFn& progress) {
  Check check(runner, o, progress);
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
  result.dumps = runner.run(progress, [&check, full = o.full](RunOptions& r, int) {
    check.hash_model(r);
    r.hashes_only = !full;
  });
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
