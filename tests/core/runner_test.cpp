// The runner and --isolate with a fake worker (tests/core/fake_worker.cpp): fresh processes,
// progress, failures, timeouts, relayed input errors, --keep, the worker's environment, replay.
#include "reprocheck/runner.h"

#include <gtest/gtest.h>

#include <functional>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/isolate.h"
#include "reprocheck/ladder.h"
#include "reprocheck/report.h"
#include "test_util.h"

namespace rc = reprocheck;

namespace {

class FakeLauncher : public rc::WorkerLauncher {
 public:
  explicit FakeLauncher(std::string behaviour = "ok", int fail_index = -1,
                        std::function<std::vector<std::pair<std::string, std::string>>(int)> env = {})
      : behaviour_(std::move(behaviour)), fail_index_(fail_index), env_(std::move(env)) {}
  rc::Command command(const rc::WorkerJob& job) const override {
    rc::Command c;
    c.argv = {REPROCHECK_FAKE_WORKER,
              "--dump",
              job.dump,
              "--seed",
              job.options.seed,
              "--index",
              std::to_string(job.index),
              "--behaviour",
              behaviour_,
              "--fail-index",
              std::to_string(fail_index_),
              "--options",
              rc::to_json(job.options)};
    if (!job.replay_keys_file.empty())
      c.argv.insert(c.argv.end(), {"--replay", job.replay_dump, "--replay-keys", job.replay_keys_file});
    if (env_) c.env = env_(job.index);
    return c;
  }
  bool can_replay() const override { return true; }

 private:
  std::string behaviour_;
  int fail_index_;
  std::function<std::vector<std::pair<std::string, std::string>>(int)> env_;
};

rc::RunnerOptions options(int runs = 2) {
  rc::RunnerOptions o;
  o.run.model = "fake.pt";
  o.run.steps = 1;
  o.runs = runs;
  return o;
}

struct Events {
  std::vector<rc::WorkerEvent> all;
  rc::ProgressFn fn() {
    return [this](const rc::WorkerEvent& e) { all.push_back(e); };
  }
  int count(rc::WorkerEvent::Kind k) const {
    int n = 0;
    for (const auto& e : all) n += e.kind == k;
    return n;
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rc::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Runner, FreshWorkersWithTheSameSeedAgree) {
  Events events;
  rc::Runner runner(options(3), std::make_shared<FakeLauncher>());
  auto dumps = runner.run(events.fn());
  ASSERT_EQ(dumps.size(), 3u);
  EXPECT_EQ(events.count(rc::WorkerEvent::Kind::started), 3);
  EXPECT_EQ(events.count(rc::WorkerEvent::Kind::finished), 3);
  for (const auto& e : events.all)
    if (e.kind == rc::WorkerEvent::Kind::finished) EXPECT_GT(e.dump_bytes, 0u);
  auto c = rc::compare_dumps(dumps);
  EXPECT_FALSE(c.divergent());
  EXPECT_EQ(c.tensors, 4);
  EXPECT_EQ(c.ref_options.model, "fake.pt");  // the run options travel through the dump
}

TEST(Runner, VaryGivesEachRunItsValueAndTheKnobShowsInTheComparison) {
  auto o = options();
  o.vary = rc::parse_vary("seed=3,4,3", o.run);
  Events events;
  rc::Runner runner(o, std::make_shared<FakeLauncher>());
  EXPECT_EQ(runner.runs(), 3);
  auto c = rc::compare_dumps(runner.run(events.fn()));
  ASSERT_EQ(c.pairs.size(), 2u);
  ASSERT_TRUE(c.pairs[0].has_divergence());
  EXPECT_EQ(c.pairs[0].diffs[*c.pairs[0].first].ref.layer, "layer1");
  EXPECT_FALSE(c.pairs[1].has_divergence());  // run 2 has run 0's seed
  bool seed_named = false;
  for (const auto& [k, v] : c.pairs[0].knob_diffs) seed_named |= k == "seed" && v == "3 vs 4";
  EXPECT_TRUE(seed_named);
  EXPECT_EQ(events.all.front().label, "seed=3");
}

TEST(Runner, ACrashIsARunErrorWithTheRunsLastOutput) {
  rc::Runner runner(options(), std::make_shared<FakeLauncher>("crash", 1));
  Events events;
  try {
    runner.run(events.fn());
    FAIL() << "no error";
  } catch (const rc::RunError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("run 2 of 2 failed: killed by signal 6 (SIGABRT)"), std::string::npos) << m;
    EXPECT_NE(m.find("fake worker: about to crash"), std::string::npos) << m;
    EXPECT_EQ(e.exit_code(), rc::ExitCode::run_failed);
  }
}

TEST(Runner, AnInputErrorIsRelayedFromTheWorkersErrorFileNotItsStderr) {
  rc::Runner runner(options(), std::make_shared<FakeLauncher>("input-error"));
  Events events;
  try {
    runner.run(events.fn());
    FAIL() << "no error";
  } catch (const rc::InputError& e) {
    EXPECT_EQ(std::string(e.what()), "bad input 'x.pt': the fake worker rejects it; pass another");
    EXPECT_EQ(e.exit_code(), rc::ExitCode::usage);
  }
}

TEST(Runner, ATimeoutStopsTheWorker) {
  auto o = options();
  o.timeout_s = 0.5;
  rc::Runner runner(o, std::make_shared<FakeLauncher>("sleep", 0));
  Events events;
  auto start = std::chrono::steady_clock::now();
  std::string m = error_of([&] { runner.run(events.fn()); });
  EXPECT_NE(m.find("run 1 of 2 failed: timed out after 0.5 s (killed)"), std::string::npos) << m;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
}

TEST(Runner, WarningsAreRelayedOnce) {
  rc::Runner runner(options(), std::make_shared<FakeLauncher>("chatty"));
  Events events;
  runner.run(events.fn());
  for (const auto& e : events.all)
    if (e.kind == rc::WorkerEvent::Kind::finished)
      EXPECT_EQ(e.messages, (std::vector<std::string>{"warning: same", "warning: other"}));
}

TEST(Runner, TheLaunchersEnvironmentReachesTheWorker) {
  auto env = [](int index) {
    return std::vector<std::pair<std::string, std::string>>{{"FAKE_B", std::to_string(index)}};
  };
  rc::Runner runner(options(), std::make_shared<FakeLauncher>("ok", -1, env));
  Events events;
  auto c = rc::compare_dumps(runner.run(events.fn()));
  ASSERT_TRUE(c.divergent());
  const auto& first = c.pairs[0].diffs[*c.pairs[0].first];
  EXPECT_EQ(first.ref.layer, "layer2");
  EXPECT_EQ(first.stats.a_at_max, 0);
  EXPECT_EQ(first.stats.b_at_max, 1);
}

TEST(Runner, KeepMovesTheDumpsAndNeverOverwritesUnasked) {
  testutil::TempDir dir;
  auto o = options();
  o.keep_dir = dir.file("kept");
  {
    rc::Runner runner(o, std::make_shared<FakeLauncher>());
    Events events;
    runner.run(events.fn());
    auto kept = runner.keep();
    EXPECT_EQ(kept, (std::vector<std::string>{dir.file("kept/run-0.h5"), dir.file("kept/run-1.h5")}));
    EXPECT_EQ(rc::files::count_entries(dir.file("kept")), 2u);
    EXPECT_FALSE(rc::compare_dumps(kept).divergent());
  }
  EXPECT_NE(error_of([&] { rc::Runner again(o, std::make_shared<FakeLauncher>()); }).find("already holds run-0.h5"),
            std::string::npos);
  o.overwrite = true;
  EXPECT_NO_THROW(rc::Runner again(o, std::make_shared<FakeLauncher>()));
}

TEST(Runner, TheTemporaryFolderGoesWithTheRunner) {
  std::string temp;
  {
    rc::Runner runner(options(), std::make_shared<FakeLauncher>());
    Events events;
    runner.run(events.fn());
    temp = runner.temp_dir();
    EXPECT_TRUE(rc::files::is_directory(temp));
  }
  EXPECT_FALSE(rc::files::exists(temp));
}

TEST(Runner, RejectsBadCounts) {
  auto o = options(1);
  EXPECT_THROW(rc::Runner(o, std::make_shared<FakeLauncher>()), rc::UsageError);
  o = options();
  o.jobs = 0;
  EXPECT_THROW(rc::Runner(o, std::make_shared<FakeLauncher>()), rc::UsageError);
}

TEST(Isolate, ReplaysEachSourceUntilTheRunsAgree) {
  // Two independent sources: layer1 follows the seed, layer2 the run's FAKE_B.
  auto o = options();
  o.vary = rc::parse_vary("seed=0,1", o.run);
  auto env = [](int index) {
    return std::vector<std::pair<std::string, std::string>>{{"FAKE_B", std::to_string(index)}};
  };
  rc::Runner runner(o, std::make_shared<FakeLauncher>("ok", -1, env));
  Events events;
  auto dumps = runner.run(events.fn());
  auto first = rc::compare_dumps(dumps);
  ASSERT_TRUE(first.divergent());
  auto iso = rc::isolate(first, {}, [&](const std::vector<std::string>& keys) {
    return runner.rerun_with_replay(dumps[0], keys, events.fn());
  });
  ASSERT_EQ(iso.sources.size(), 2u);
  EXPECT_EQ(iso.sources[0].ref.layer, "layer1");
  EXPECT_EQ(iso.sources[1].ref.layer, "layer2");
  EXPECT_TRUE(*iso.sources[1].inputs_identical);  // its inputs agree once layer1 is replayed
  EXPECT_TRUE(iso.agreed);
  EXPECT_FALSE(iso.last.divergent());
  EXPECT_EQ(iso.step, 0);
}

TEST(Isolate, StopsWhenAReplayedTensorStillDiffers) {
  // A replay that changes nothing: the same divergence comes back.
  auto o = options();
  o.vary = rc::parse_vary("seed=0,1", o.run);
  rc::Runner runner(o, std::make_shared<FakeLauncher>());
  Events events;
  auto dumps = runner.run(events.fn());
  auto first = rc::compare_dumps(dumps);
  auto iso = rc::isolate(first, {}, [&](const std::vector<std::string>&) { return dumps; });
  EXPECT_FALSE(iso.agreed);
  EXPECT_NE(iso.note.find("layer1 still differs although it was replayed"), std::string::npos) << iso.note;
}

TEST(Runner, AFailedRunLeavesNoKeepFolderAndTwoRunnersNeverShareOne) {
  testutil::TempDir dir;
  auto o = options();
  o.keep_dir = dir.file("kept");
  {
    rc::Runner runner(o, std::make_shared<FakeLauncher>("crash", 1));
    // A second process keeping into the same folder is refused while the first holds it.
    EXPECT_NE(error_of([&] { rc::Runner other(o, std::make_shared<FakeLauncher>()); }).find("another process"),
              std::string::npos);
    Events events;
    EXPECT_THROW(runner.run(events.fn()), rc::RunError);
  }
  EXPECT_FALSE(rc::files::exists(dir.file("kept")));
  EXPECT_EQ(dir.entries(), 0u);  // nor a lock file
  auto bad = options();
  bad.keep_dir = dir.file("no/such/folder");
  EXPECT_THROW(rc::Runner(bad, std::make_shared<FakeLauncher>()), rc::InputError);
}

// The capture ladder.

namespace {

bool has_datasets(const std::string& dump) {
  rc::DumpReader r(dump);
  for (const auto& m : r.index())
    if (m.has_data()) return true;
  return false;
}

rc::RunnerOptions steps(int n, int runs = 2) {
  auto o = options(runs);
  o.run.steps = n;
  o.min_runs = 1;
  return o;
}

}  // namespace

TEST(Ladder, EqualHashesEndTheCheckWithNoTensorDataWritten) {
  rc::Runner runner(steps(3, 3), std::make_shared<FakeLauncher>());
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  EXPECT_FALSE(r.comparison.divergent());
  EXPECT_EQ(r.comparison.capture.mode, rc::CaptureMode::ladder);
  EXPECT_FALSE(r.comparison.capture.pass2);
  EXPECT_EQ(events.count(rc::WorkerEvent::Kind::started), 3);  // no second pass
  ASSERT_EQ(r.dumps.size(), 3u);
  for (const auto& d : r.dumps) {
    rc::DumpReader reader(d);
    EXPECT_EQ(reader.attribute("capture"), "hashes");
    EXPECT_EQ(reader.index().size(), 12u);  // 4 tensors x 3 steps, each with its hash
    EXPECT_FALSE(has_datasets(d)) << d;
  }
}

TEST(Ladder, ADivergenceIsCapturedAgainInFullOnlyThroughItsStep) {
  // Runs 1 and 2 differ from run 0 from step 2 on; the second pass captures runs 0-2, steps 0-2.
  auto o = steps(4, 3);
  rc::Runner runner(o, std::make_shared<FakeLauncher>("late"));
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  const auto& c = r.comparison;
  ASSERT_TRUE(c.divergent());
  EXPECT_TRUE(c.capture.pass2);
  EXPECT_EQ(c.capture.pass2_steps, 3);
  EXPECT_EQ(c.capture.pass2_runs, (std::vector<int>{0, 1, 2}));
  EXPECT_GT(c.capture.pass2_bytes, 0u);
  const auto* h = c.headline();
  ASSERT_NE(h, nullptr);
  const auto& d = h->diffs[*h->first];
  EXPECT_EQ(d.ref.layer, "layer2");
  EXPECT_EQ(d.ref.step, 2);
  EXPECT_FALSE(d.hash_only);
  // Statistics from the full second pass: run 1's b is 1 more than run 0's.
  EXPECT_EQ(d.stats.mismatched, 1);
  EXPECT_DOUBLE_EQ(d.stats.max_abs, 1.0);
  // Step 3 is beyond the second pass: its divergences are counted from the hashes alone.
  int64_t hash_only = 0;
  for (const auto& x : h->diffs) {
    if (x.ref.step == 3) EXPECT_TRUE(x.hash_only) << x.ref.tensor_name();
    hash_only += x.hash_only;
  }
  EXPECT_EQ(hash_only, 2);  // layer2 and the loss of step 3
  EXPECT_EQ(h->compared, 16);
  EXPECT_EQ(h->divergent, 4);  // layer2 and loss of steps 2 and 3
  EXPECT_EQ(h->identical, 12);
  // The same first divergence and statistics as one full pass.
  rc::Runner full_runner(o, std::make_shared<FakeLauncher>("late"));
  rc::CheckOptions full;
  full.full = true;
  auto f = rc::run_check(full_runner, full, events.fn());
  const auto* fh = f.comparison.headline();
  ASSERT_NE(fh, nullptr);
  EXPECT_EQ(fh->diffs[*fh->first].ref.key(), d.ref.key());
  EXPECT_DOUBLE_EQ(fh->diffs[*fh->first].stats.max_abs, d.stats.max_abs);
  EXPECT_EQ(fh->divergent, h->divergent);
  EXPECT_TRUE(has_datasets(f.dumps[0]));
}

TEST(Ladder, OnlyTheRunsThatDifferedAreCapturedAgain) {
  // seed=0,0,1: only run 2 differs.
  auto o = steps(2, 3);
  o.vary = rc::parse_vary("seed=0,0,1", o.run);
  rc::Runner runner(o, std::make_shared<FakeLauncher>());
  Events events;
  rc::CheckOptions check;
  check.drill = "none";
  auto r = rc::run_check(runner, check, events.fn());
  EXPECT_FALSE(r.comparison.drill.has_value());
  EXPECT_EQ(r.comparison.capture.pass2_runs, (std::vector<int>{0, 2}));
  EXPECT_EQ(r.comparison.capture.pass2_steps, 1);  // the seed shows at step 0
  EXPECT_EQ(events.count(rc::WorkerEvent::Kind::started), 5);
  EXPECT_FALSE(r.comparison.pairs[0].has_divergence());
  EXPECT_TRUE(r.comparison.pairs[1].has_divergence());
}

TEST(Ladder, PassThreeRunsTheReferenceAndTheHeadlineRunThroughTheDivergentStep) {
  // seed=0,0,1: run 2 differs at step 0. The fake worker captures no ops: pass 3 runs once (no
  // widening: there is nothing to widen to), says so, and the verdict stands.
  auto o = steps(2, 3);
  o.vary = rc::parse_vary("seed=0,0,1", o.run);
  rc::Runner runner(o, std::make_shared<FakeLauncher>());
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  // 3, then 2 (pass 2, which also captures pass 3's ops: the first divergence calls for a drill-down).
  EXPECT_EQ(events.count(rc::WorkerEvent::Kind::started), 5);
  ASSERT_TRUE(r.comparison.drill.has_value());
  const auto& dd = *r.comparison.drill;
  EXPECT_EQ(dd.step, 0);
  EXPECT_EQ(dd.other_run, 2);
  EXPECT_EQ(dd.passes, 1);
  EXPECT_FALSE(dd.found);
  EXPECT_NE(dd.note.find("no op was captured"), std::string::npos) << dd.note;
  EXPECT_TRUE(r.comparison.divergent());
}

TEST(Ladder, AnIntermittentDivergenceIsNeverAPass) {
  // The runs differ in pass 1 only: pass 2 does not reproduce it.
  rc::Runner runner(steps(2), std::make_shared<FakeLauncher>("flaky"));
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  const auto& c = r.comparison;
  EXPECT_TRUE(c.divergent());
  EXPECT_EQ(c.capture.intermittent, (std::vector<int>{1}));
  const auto* h = c.headline();
  ASSERT_NE(h, nullptr);
  EXPECT_TRUE(h->diffs[*h->first].hash_only);
  auto report = rc::render_text(rc::make_report(c));
  EXPECT_NE(report.find("intermittent: run(s) 1 diverged in pass 1"), std::string::npos) << report;
  EXPECT_NE(report.find("verdict: DIVERGENT"), std::string::npos) << report;
}

TEST(Ladder, HashesOnlyGivesTheVerdictWithoutStatistics) {
  auto o = steps(1);
  o.vary = rc::parse_vary("seed=0,1", o.run);
  rc::Runner runner(o, std::make_shared<FakeLauncher>());
  Events events;
  rc::CheckOptions co;
  co.hashes_only = true;
  auto r = rc::run_check(runner, co, events.fn());
  EXPECT_TRUE(r.comparison.divergent());
  EXPECT_FALSE(r.comparison.capture.pass2);
  EXPECT_EQ(events.count(rc::WorkerEvent::Kind::started), 2);
  const auto* h = r.comparison.headline();
  EXPECT_TRUE(h->diffs[*h->first].hash_only);
  EXPECT_EQ(h->diffs[*h->first].ref.layer, "layer1");
}

TEST(Ladder, WithAToleranceUnequalHashesAreJudgedInTheSecondPass) {
  // b differs by the run index (1): within atol 2 it is close, not divergent.
  auto o = steps(3);
  auto env = [](int index) {
    return std::vector<std::pair<std::string, std::string>>{{"FAKE_B", std::to_string(index)}};
  };
  rc::Runner runner(o, std::make_shared<FakeLauncher>("ok", -1, env));
  Events events;
  rc::CheckOptions co;
  co.compare.tolerance = rc::Tolerance::fixed(2.0, 0.0);
  co.compare.tolerance_explicit = true;
  auto r = rc::run_check(runner, co, events.fn());
  EXPECT_FALSE(r.comparison.divergent());
  EXPECT_TRUE(r.comparison.capture.pass2);
  EXPECT_EQ(r.comparison.capture.pass2_steps, 3);  // every step where hashes differed
  EXPECT_EQ(r.comparison.pairs[0].close, 6);
}

TEST(Ladder, AGoldenMatchesItsOwnSettingAndNamesTheFirstChangedTensorOtherwise) {
  auto tmp = rc::files::make_temp_dir("ladder-golden-");
  const std::string golden = tmp + "/golden.h5", full_golden = tmp + "/full.h5";
  {
    rc::Runner runner(steps(2, 1), std::make_shared<FakeLauncher>());
    Events events;
    auto dumps = runner.run(events.fn(), [](rc::RunOptions& r, int) { r.hashes_only = true; });
    rc::files::copy_file_atomically(dumps[0], golden, "golden");
    auto full = runner.rerun(
        {0}, [](rc::RunOptions& r, int) { r.hashes_only = false; }, events.fn());
    rc::files::copy_file_atomically(full[0], full_golden, "golden");
  }
  EXPECT_FALSE(has_datasets(golden));
  rc::CheckOptions co;
  co.baseline = golden;
  {
    rc::Runner runner(steps(2, 1), std::make_shared<FakeLauncher>());
    Events events;
    auto r = rc::run_check(runner, co, events.fn());
    EXPECT_FALSE(r.comparison.divergent());
    auto text = rc::render_text(rc::make_report(r.comparison));
    EXPECT_NE(text.find("verdict: MATCHES THE GOLDEN"), std::string::npos) << text;
  }
  auto seed1 = steps(2, 1);
  seed1.run.seed = "1";
  {
    rc::Runner runner(seed1, std::make_shared<FakeLauncher>());
    Events events;
    auto r = rc::run_check(runner, co, events.fn());
    ASSERT_TRUE(r.comparison.divergent());
    const auto* h = r.comparison.headline();
    EXPECT_EQ(h->diffs[*h->first].ref.layer, "layer1");
    EXPECT_TRUE(h->diffs[*h->first].hash_only);  // a hash-only golden has no statistics
    EXPECT_EQ(events.count(rc::WorkerEvent::Kind::started), 1);
    auto text = rc::render_text(rc::make_report(r.comparison));
    EXPECT_NE(text.find("verdict: NUMERICS CHANGED"), std::string::npos) << text;
    EXPECT_NE(text.find("record a full golden on the base commit"), std::string::npos) << text;
  }
  co.baseline = full_golden;
  {
    rc::Runner runner(seed1, std::make_shared<FakeLauncher>());
    Events events;
    auto r = rc::run_check(runner, co, events.fn());
    ASSERT_TRUE(r.comparison.divergent());
    const auto* h = r.comparison.headline();
    const auto& d = h->diffs[*h->first];
    EXPECT_EQ(d.ref.layer, "layer1");
    EXPECT_FALSE(d.hash_only);  // a full golden: the second pass gives statistics
    EXPECT_DOUBLE_EQ(d.stats.max_abs, 1.0);
    EXPECT_EQ(r.comparison.capture.pass2_runs, (std::vector<int>{1}));
  }
  rc::files::remove_tree(tmp);
}

TEST(Ladder, PassTwoKeepsTheDataOfItsWindowOnlyAndStopsAfterIt) {
  // "late": runs 1 and 2 differ from step 2 on (layer2, then the loss). Pass 2's window is layer2
  // and the loss of step 2; its runs keep their data and no other record's, and stop right after
  // the window: step 3 never runs.
  auto o = steps(4, 3);
  rc::Runner runner(o, std::make_shared<FakeLauncher>("late"));
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  const auto& c = r.comparison;
  EXPECT_EQ(c.capture.pass2_records, 2);
  EXPECT_EQ(c.capture.pass2_steps, 3);
  std::vector<std::string> pass2;
  for (int i = 0; i < 3; ++i) pass2.push_back(runner.temp_dir() + "/run-" + std::to_string(i) + ".pass-2.h5");
  for (const auto& path : pass2) {
    rc::DumpReader d(path);
    std::vector<std::string> with_data;
    for (const auto& m : d.index())
      if (m.has_data()) with_data.push_back(m.key());
    EXPECT_EQ(with_data, (std::vector<std::string>{"2|forward|layer2|activation|out|0", "2|loss||loss|out|0"})) << path;
    EXPECT_EQ(d.index().size(), 12u) << path;  // steps 0-2 (4 records each) of pass 1's 16
    EXPECT_EQ(d.attribute("capture"), "hashes");
  }
  // The report: statistics for the window's records, hashes for the rest, counts from pass 1.
  const auto& p = c.pairs[0];
  ASSERT_TRUE(p.has_divergence());
  EXPECT_FALSE(p.diffs[*p.first].hash_only);
  EXPECT_EQ(p.divergent, 4);
  EXPECT_EQ(p.identical, 12);
}

TEST(Ladder, EveryPairsFirstDivergenceIsCapturedAgain) {
  // Run 1 differs from step 0 (its seed), run 2 only from step 2: the second pass must reach step 2,
  // or run 2 would look intermittent.
  auto o = steps(4, 3);
  o.vary = rc::parse_vary("seed=0,1,0", o.run);
  rc::Runner runner(o, std::make_shared<FakeLauncher>("late"));
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  const auto& c = r.comparison;
  EXPECT_TRUE(c.capture.intermittent.empty());
  EXPECT_EQ(c.capture.pass2_steps, 3);
  ASSERT_EQ(c.pairs.size(), 2u);
  const auto& late = c.pairs[1];
  ASSERT_TRUE(late.has_divergence());
  const auto& d = late.diffs[*late.first];
  EXPECT_EQ(d.ref.step, 2);
  EXPECT_FALSE(d.hash_only);
  EXPECT_DOUBLE_EQ(d.stats.max_abs, 2.0);
}

TEST(Ladder, PassThreeDrillsWhereItsRunsDivergedFirstNotIntoAnInheritedOp) {
  // "racing": layer2 differs from step 1 on in passes 1 and 2, but from step 0 in pass 3 (an op
  // that adds in arrival order struck a step earlier). The op of step 1 would only inherit that
  // difference: pass 3 drills into step 0 instead, finds the op there, and says so.
  rc::Runner runner(steps(2), std::make_shared<FakeLauncher>("racing"));
  Events events;
  auto r = rc::run_check(runner, {}, events.fn());
  const auto* h = r.comparison.headline();
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->diffs[*h->first].ref.step, 1);
  ASSERT_TRUE(r.comparison.drill.has_value());
  const auto& dd = *r.comparison.drill;
  ASSERT_TRUE(dd.found) << dd.note;
  EXPECT_EQ(dd.step, 0);
  EXPECT_EQ(dd.diff.ref.step, 0);
  EXPECT_EQ(dd.op, "aten::add");
  EXPECT_EQ(dd.passes, 2);
  EXPECT_NE(dd.note.find("diverged earlier, at layer2 at step 0"), std::string::npos) << dd.note;
  auto report = rc::render_text(rc::make_report(r.comparison));
  EXPECT_NE(report.find("drilled there"), std::string::npos) << report;
}
