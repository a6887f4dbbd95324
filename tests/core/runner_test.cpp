// The runner and --isolate with a fake worker (tests/core/fake_worker.cpp): fresh processes,
// progress, failures, timeouts, relayed input errors, --keep, the worker's environment, replay.
#include "reprocheck/runner.h"

#include <gtest/gtest.h>

#include <functional>

#include "reprocheck/compare.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/isolate.h"
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
    c.argv = {REPROCHECK_FAKE_WORKER, "--dump", job.dump, "--seed", job.options.seed, "--index",
              std::to_string(job.index), "--behaviour", behaviour_, "--fail-index", std::to_string(fail_index_),
              "--options", rc::to_json(job.options)};
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
  auto env = [](int index) { return std::vector<std::pair<std::string, std::string>>{{"FAKE_B", std::to_string(index)}}; };
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
  auto env = [](int index) { return std::vector<std::pair<std::string, std::string>>{{"FAKE_B", std::to_string(index)}}; };
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
