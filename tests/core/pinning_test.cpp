// Tests that pin the values a user reads: every report format shows what the JSON shows; the
// ladder's second pass repeats the first (seeds, steps, runs); goldens; each hint rule's evidence
// conditions; exit codes; processes that end whole and say why they failed.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/hints.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/ladder.h"
#include "reprocheck/report.h"
#include "reprocheck/runner.h"
#include "reprocheck/subprocess.h"
#include "test_util.h"

namespace rc = reprocheck;
using nlohmann::json;

namespace {

struct Row {
  std::string phase, layer, kind;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

void write_rows(const std::string& path, const std::vector<Row>& rows) {
  rc::DumpWriter w(path, true);
  w.set_attribute("model", std::string("m.pt"));
  w.set_attribute("model_signature", std::string("sig"));
  w.set_attribute("steps", int64_t{1});
  for (const auto& r : rows) {
    rc::TensorMeta m;
    m.step = 0;
    m.phase = *rc::parse_phase(r.phase);
    m.layer = r.layer;
    m.layer_type = "torch.nn.modules.conv.Conv2d";
    m.kind = *rc::parse_kind(r.kind);
    m.name = r.kind == "param_grad" ? "weight" : r.kind == "loss" ? "loss" : "out";
    m.dtype = "float32";
    m.shape = r.shape;
    w.write(m, r.data.data(), r.data.size() * 4);
  }
  w.commit();
}

std::string g4(double v) { return fmt::format("{:.4g}", v); }

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

TEST(Consistency, EveryFormatShowsWhatTheJsonShows) {
  testutil::TempDir d;
  // The first mismatch ([0, 0]) is not where the largest difference is ([1, 1]); one more
  // tensor diverges after it, one matches.
  write_rows(d.file("a.h5"), {{"forward", "conv", "activation", {2, 2}, {0, 1, 2, 3}},
                              {"forward", "bn", "activation", {2}, {5, 5}},
                              {"loss", "", "loss", {}, {1}}});
  write_rows(d.file("b.h5"), {{"forward", "conv", "activation", {2, 2}, {0.5f, 1, 2, 13}},
                              {"forward", "bn", "activation", {2}, {5, 5}},
                              {"loss", "", "loss", {}, {2}}});
  auto r = rc::make_report(rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}));
  const json j = json::parse(rc::render_json(r));
  ASSERT_EQ(j["verdict"], "divergent");
  const auto& s = j["first_divergence"]["stats"];
  EXPECT_EQ(s["first_index_nd"], json({0, 0}));
  EXPECT_EQ(s["max_abs_index_nd"], json({1, 1}));
  EXPECT_EQ(s["mismatched"], 2);
  EXPECT_EQ(j["pairs"][0]["compared"], 3);
  EXPECT_EQ(j["pairs"][0]["divergent"], 2);
  EXPECT_EQ(j["pairs"][0]["identical"], 1);
  EXPECT_EQ(j["pairs"][0]["after_first"][0]["count"], 1);  // the first divergence is not counted after itself
  const std::string max_abs = g4(s["max_abs"].get<double>()), max_rel = g4(s["max_rel"].get<double>());
  ASSERT_NE(max_abs, max_rel);

  const std::string text = rc::render_text(r);
  EXPECT_TRUE(contains(text, "first divergence  step 0 · forward · conv (Conv2d) output")) << text;
  EXPECT_TRUE(contains(text, "2 of 4 elements differ")) << text;
  EXPECT_TRUE(contains(text, "max abs diff     " + max_abs + " at [1, 1]: 3 (0x40400000) vs 13 (0x41500000)")) << text;
  EXPECT_TRUE(contains(text, "max rel diff     " + max_rel)) << text;
  EXPECT_TRUE(contains(text, "first mismatch   [0, 0]")) << text;
  EXPECT_TRUE(contains(text, "after it  1 more divergent tensor(s) of 3 compared")) << text;
  EXPECT_TRUE(contains(text, "verdict: DIVERGENT")) << text;

  const std::string md = rc::render_markdown(r);
  EXPECT_TRUE(contains(md, "### reprocheck: **divergent**")) << md;
  EXPECT_TRUE(contains(md, "| mismatched elements | 2 of 4 |")) << md;
  EXPECT_TRUE(contains(md, "| max abs diff | " + max_abs + " at [1, 1]: `3` vs `13` |")) << md;
  EXPECT_TRUE(contains(md, "| max rel diff | " + max_rel + " |")) << md;
  EXPECT_TRUE(contains(md, "| first mismatch | [0, 0] |")) << md;
  EXPECT_TRUE(contains(md, "| 0 | loss | 1 |")) << md;

  const std::string junit = rc::render_junit(r);
  EXPECT_TRUE(contains(junit, "tests=\"3\" failures=\"2\"")) << junit;
  EXPECT_TRUE(contains(junit, "2 of 4 elements differ, max abs diff " + max_abs)) << junit;

  const std::string html = rc::render_html(r);
  EXPECT_TRUE(contains(html, "class=\"verdict divergent\"")) << html;
  EXPECT_TRUE(contains(html, "<td class=\"mono\">2 of 4</td>"));
  EXPECT_TRUE(contains(html, "<td class=\"mono\">" + max_abs + " at [1, 1]: 3 vs 13</td>"));
  EXPECT_TRUE(contains(html, "<td class=\"mono\">" + max_rel + "</td>"));
  EXPECT_TRUE(contains(html, "first mismatch</td><td class=\"mono\">[0, 0]</td>"));
}

TEST(Consistency, AShapeMismatchFailsInEveryFormat) {
  testutil::TempDir d;
  write_rows(d.file("a.h5"), {{"forward", "conv", "activation", {4}, {1, 2, 3, 4}}});
  write_rows(d.file("b.h5"), {{"forward", "conv", "activation", {5}, {1, 2, 3, 4, 5}}});
  auto r = rc::make_report(rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}));
  const json j = json::parse(rc::render_json(r));
  EXPECT_EQ(j["verdict"], "divergent");
  EXPECT_EQ(j["first_divergence"]["status"], "shape_mismatch");
  EXPECT_EQ(j["first_divergence"]["detail"], "[4] vs [5]");
  EXPECT_EQ(rc::exit_code(r), rc::ExitCode::divergent);
  EXPECT_TRUE(contains(rc::render_text(r), "shape_mismatch: [4] vs [5]"));
  EXPECT_TRUE(contains(rc::render_markdown(r), "`shape_mismatch`: \\[4\\] vs \\[5\\]")) << rc::render_markdown(r);
  const std::string junit = rc::render_junit(r);
  EXPECT_TRUE(contains(junit, "failures=\"1\"")) << junit;
  EXPECT_TRUE(contains(junit, "shape_mismatch ([4] vs [5])")) << junit;
  EXPECT_TRUE(contains(rc::render_html(r), "class=\"verdict divergent\""));
  EXPECT_TRUE(contains(rc::render_html(r), "<code>shape_mismatch</code>: [4] vs [5]"));
}

TEST(Consistency, AReproducibleReportSaysSoEverywhere) {
  testutil::TempDir d;
  write_rows(d.file("a.h5"), {{"forward", "conv", "activation", {2}, {1, 2}}});
  auto r = rc::make_report(rc::compare_dumps({d.file("a.h5"), d.file("a.h5")}));
  EXPECT_EQ(json::parse(rc::render_json(r))["verdict"], "reproducible");
  EXPECT_EQ(rc::exit_code(r), rc::ExitCode::ok);
  EXPECT_TRUE(contains(rc::render_text(r), "verdict: REPRODUCIBLE"));
  EXPECT_TRUE(contains(rc::render_markdown(r), "**reproducible**"));
  EXPECT_TRUE(contains(rc::render_junit(r), "failures=\"0\" errors=\"0\""));
  EXPECT_TRUE(contains(rc::render_html(r), "class=\"verdict reproducible\""));
}

TEST(ExitCodes, EachErrorAndVerdictHasItsCode) {
  EXPECT_EQ(rc::UsageError("x").exit_code(), rc::ExitCode::usage);
  EXPECT_EQ(rc::InputError("x").exit_code(), rc::ExitCode::usage);
  EXPECT_EQ(rc::CommandError("x").exit_code(), rc::ExitCode::usage);
  EXPECT_EQ(rc::RunError("x").exit_code(), rc::ExitCode::run_failed);
  EXPECT_EQ(rc::Interrupted().exit_code(), rc::ExitCode::interrupted);
  EXPECT_EQ(rc::to_int(rc::ExitCode::divergent), 1);
  EXPECT_EQ(rc::to_int(rc::ExitCode::interrupted), 130);
}

namespace {

class Fake : public rc::WorkerLauncher {
 public:
  explicit Fake(std::string behaviour = "ok", std::vector<std::pair<std::string, std::string>> env = {},
                std::string program = REPROCHECK_FAKE_WORKER)
      : behaviour_(std::move(behaviour)), env_(std::move(env)), program_(std::move(program)) {}
  rc::Command command(const rc::WorkerJob& job) const override {
    rc::Command c;
    c.argv = {program_,
              "--dump",
              job.dump,
              "--seed",
              job.options.seed,
              "--index",
              std::to_string(job.index),
              "--behaviour",
              behaviour_,
              "--options",
              rc::to_json(job.options)};
    c.env = env_;
    return c;
  }
  bool can_replay() const override { return false; }

 private:
  std::string behaviour_;
  std::vector<std::pair<std::string, std::string>> env_;
  std::string program_;
};

rc::RunnerOptions runs(int n, int steps = 1) {
  rc::RunnerOptions o;
  o.run.model = "fake.pt";
  o.run.steps = steps;
  o.runs = n;
  o.jobs = 2;
  return o;
}

void quiet(const rc::WorkerEvent&) {}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rc::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(LadderPass2, TheSeedsDrawnInPassOneAreTheSeedsOfPassTwo) {
  auto o = runs(2);
  o.run.seed = "random";
  rc::Runner runner(o, std::make_shared<Fake>());
  auto r = rc::run_check(runner, {}, quiet);
  ASSERT_TRUE(r.comparison.divergent());
  ASSERT_TRUE(r.comparison.capture.pass2);
  const std::string s0 = rc::DumpReader(r.dumps[0]).attribute("seed");
  const std::string s1 = rc::DumpReader(r.dumps[1]).attribute("seed");
  ASSERT_NE(s0, s1);
  // layer1 holds the seed: pass 2's statistics show pass 1's drawn seeds, not new ones.
  const auto* h = r.comparison.headline();
  const auto& d = h->diffs[*h->first];
  EXPECT_EQ(d.ref.layer, "layer1");
  EXPECT_FALSE(d.hash_only);
  EXPECT_EQ(d.stats.a_at_max, std::stod(s0));
  EXPECT_EQ(d.stats.b_at_max, std::stod(s1));
}

TEST(LadderPass2, OnlyTheDifferingRunsAndStepsAreCapturedAgain) {
  auto o = runs(3, 4);
  rc::Runner runner(o, std::make_shared<Fake>("late"));  // runs 1 and 2 differ from step 2 on
  auto r = rc::run_check(runner, {}, quiet);
  EXPECT_EQ(r.comparison.capture.pass2_runs, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(r.comparison.capture.pass2_steps, 3);
  o = runs(3, 1);
  rc::Runner same(o, std::make_shared<Fake>("ok"));
  auto ok = rc::run_check(same, {}, quiet);
  EXPECT_FALSE(ok.comparison.capture.pass2);  // nothing differed: no second pass
  EXPECT_EQ(ok.comparison.verdict(), rc::Verdict::reproducible);
}

TEST(Goldens, MatchesAndChangedModels) {
  testutil::TempDir d;
  const std::string golden = d.file("golden.h5");
  auto o = runs(1);
  o.min_runs = 1;
  {
    rc::Runner rec(o, std::make_shared<Fake>());
    auto dumps = rec.run(quiet, [](rc::RunOptions& r, int) { r.hashes_only = true; });
    rc::files::copy_file_atomically(dumps[0], golden, "golden");
  }
  rc::CheckOptions check;
  check.baseline = golden;
  {
    rc::Runner runner(o, std::make_shared<Fake>());
    auto r = rc::make_report(rc::run_check(runner, check, quiet).comparison);
    EXPECT_EQ(rc::exit_code(r), rc::ExitCode::ok);
    EXPECT_EQ(json::parse(rc::render_json(r))["baseline"]["matches"], true);
    EXPECT_TRUE(contains(rc::render_text(r), "MATCHES THE GOLDEN"));
  }
  {
    rc::Runner runner(o,
                      std::make_shared<Fake>("ok", std::vector<std::pair<std::string, std::string>>{{"FAKE_B", "5"}}));
    auto r = rc::make_report(rc::run_check(runner, check, quiet).comparison);
    EXPECT_EQ(rc::exit_code(r), rc::ExitCode::divergent);
    EXPECT_EQ(json::parse(rc::render_json(r))["baseline"]["matches"], false);
    EXPECT_TRUE(contains(rc::render_text(r), "NUMERICS CHANGED"));
  }
  {
    // Another model (its signature changed): compared by names, with a note; never refused.
    rc::Runner runner(o, std::make_shared<Fake>(
                             "ok", std::vector<std::pair<std::string, std::string>>{{"FAKE_SIGNATURE", "changed"}}));
    auto c = rc::run_check(runner, check, quiet).comparison;
    EXPECT_EQ(c.verdict(), rc::Verdict::reproducible);
    bool noted = false;
    for (const auto& n : c.notes) noted |= contains(n, "the model changed since");
    EXPECT_TRUE(noted);
  }
}

TEST(Workers, AWorkerThatExitsZeroWithoutADumpFailsSayingSo) {
  rc::Runner runner(runs(2), std::make_shared<Fake>("no-dump"));
  std::string e = error_of([&] { runner.run(quiet); });
  EXPECT_TRUE(contains(e, "exited without writing its dump")) << e;
}

TEST(Workers, AMissingCommandIsTheUsersToFix) {
  rc::Runner runner(
      runs(2), std::make_shared<Fake>("ok", std::vector<std::pair<std::string, std::string>>{}, "/no/such/python"));
  try {
    runner.run(quiet);
    FAIL();
  } catch (const rc::CommandError& e) {
    EXPECT_EQ(e.exit_code(), rc::ExitCode::usage);
    EXPECT_TRUE(contains(e.what(), "cannot run '/no/such/python': No such file or directory")) << e.what();
  }
}

TEST(Workers, ARunEndsWithEveryProcessItStarted) {
  testutil::TempDir d;
  const std::string pid_file = d.file("child.pid");
  rc::Runner runner(runs(2), std::make_shared<Fake>("fork", std::vector<std::pair<std::string, std::string>>{
                                                                {"FAKE_CHILD_PID_FILE", pid_file}}));
  runner.run(quiet);
  std::ifstream in(pid_file);
  pid_t child = 0;
  in >> child;
  ASSERT_GT(child, 0);
  // The forked helper was killed with its run's process group: gone, or a zombie awaiting its reaper.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
  std::string pid, name, state;
  if (stat >> pid >> name >> state) EXPECT_EQ(state, "Z") << "the run's child still runs";
}

TEST(Processes, TheLastOutputIsKeptInMemoryAndBounded) {
  rc::OutputTail tail(64);
  for (int i = 0; i < 100; ++i) {
    std::string line = fmt::format("line {}\n", i);
    tail.append(line.data(), line.size());
  }
  EXPECT_TRUE(tail.truncated());
  EXPECT_LE(tail.text().size(), 128u);
  EXPECT_EQ(tail.last_lines(2), "line 98\nline 99\n");
  rc::ExitStatus status;
  auto p = rc::run_to_end({{"sh", "-c", "echo out; echo 'No space left on device' >&2; exit 3"}, {}, ""}, 10, &status);
  EXPECT_EQ(status.code, 3);
  EXPECT_EQ(p->stdout_tail().text(), "out\n");
  EXPECT_EQ(p->stderr_tail().last_lines(1), "No space left on device\n");
}

TEST(Processes, AChildThatHangsIsStoppedAtItsDeadline) {
  // A child stuck (in HDF5, say) with its message pipe open: the deadline still fires.
  auto start = std::chrono::steady_clock::now();
  auto outcome = rc::run_isolated(
      [] {
        std::this_thread::sleep_for(std::chrono::seconds(30));
        return std::string();
      },
      0.5);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(outcome.kind, rc::IsolatedOutcome::Kind::timed_out);
  EXPECT_LT(took, 5.0);
  outcome = rc::run_isolated([] { return std::string("bad file"); }, 5);
  EXPECT_EQ(outcome.kind, rc::IsolatedOutcome::Kind::failed);
  EXPECT_EQ(outcome.message, "bad file");
  outcome = rc::run_isolated(
      []() -> std::string {
        raise(SIGSEGV);
        return "";
      },
      5);
  EXPECT_EQ(outcome.kind, rc::IsolatedOutcome::Kind::crashed);
  EXPECT_EQ(outcome.signal, SIGSEGV);
  EXPECT_EQ(rc::run_isolated([] { return std::string(); }, 5).kind, rc::IsolatedOutcome::Kind::ok);
}
