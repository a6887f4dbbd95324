// Regressions against the previous audit, the cost of determinism, a check's JSON report read into
// a cell, and the audit's reports.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"

namespace audit = reprocheck::audit;
using nlohmann::json;

namespace {

audit::CellResult make(const std::string& model, const std::string& det, const std::string& verdict, double seconds,
                       audit::Expect expect = audit::Expect::reproducible) {
  audit::CellResult r;
  r.model = model;
  r.column = "deterministic=" + det;
  r.key = model + "[deterministic=" + det + "]";
  r.settings = json({{"deterministic", det}, {"threads", "1"}}).dump();
  r.verdict = verdict;
  r.seconds = seconds;
  r.expect = expect;
  if (verdict == "divergent") {
    r.step = 0;
    r.phase = "param_grad";
    r.tensor = "features.0.weight";
    r.kind = "param_grad";
    r.max_abs = 3e-7;
  }
  return r;
}

// Earlier audits' results: each add is a later audit's (audit ids count up), latest first.
struct Past {
  std::map<std::string, std::vector<audit::CellResult>> cells;
  void add(audit::CellResult r, int64_t audit = 1) {
    r.audit = audit;
    auto& v = cells[r.key];
    v.insert(v.begin(), r);
  }
  audit::PastResults fn() const {
    return [this](const std::string& key) {
      auto it = cells.find(key);
      return it == cells.end() ? std::vector<audit::CellResult>{} : it->second;
    };
  }
};

std::vector<std::string> kinds(const std::vector<audit::Regression>& r) {
  std::vector<std::string> out;
  for (const auto& x : r) out.push_back(x.kind + (x.blocking ? "" : "(listed)"));
  return out;
}

TEST(Regressions, NoneWhenNothingChanged) {
  Past past;
  auto a = make("m", "off", "reproducible", 10), b = make("m", "on", "divergent", 12);
  past.add(a);
  past.add(b);
  EXPECT_TRUE(audit::find_regressions({a, b}, past.fn(), {}).empty());
  // A first audit has nothing to compare with.
  EXPECT_TRUE(audit::find_regressions({a, b}, Past{}.fn(), {}).empty());
}

TEST(Regressions, VerdictChangesMovesAndMagnitude) {
  Past past;
  past.add(make("a", "off", "reproducible", 1));
  past.add(make("b", "off", "divergent", 1));
  past.add(make("c", "off", "divergent", 1, audit::Expect::divergent));
  past.add(make("d", "off", "divergent", 1));
  past.add(make("e", "off", "divergent", 1));
  past.add(make("f", "off", "reproducible", 1, audit::Expect::info));
  auto d = make("d", "off", "divergent", 1);
  d.tensor = "features.3.weight";
  auto e = make("e", "off", "divergent", 1);
  e.max_abs = 3e-6;  // tenfold
  auto r = audit::find_regressions({make("a", "off", "divergent", 1), make("b", "off", "reproducible", 1),
                                    make("c", "off", "reproducible", 1, audit::Expect::divergent), d, e,
                                    make("f", "off", "divergent", 1, audit::Expect::info)},
                                   past.fn(), {});
  EXPECT_EQ(kinds(r), (std::vector<std::string>{"newly_divergent", "newly_reproducible(listed)", "newly_reproducible",
                                                "divergence_moved", "magnitude_grew", "newly_divergent(listed)"}));
  EXPECT_NE(r[2].message.find("negative control"), std::string::npos);
  EXPECT_NE(r[3].message.find("features.3.weight"), std::string::npos);
  // Ninefold is not a regression.
  e.max_abs = 2.7e-6;
  EXPECT_TRUE(audit::find_regressions({e}, past.fn(), {}).empty());
}

TEST(Regressions, TimeGrowthNeedsTheShareAndTheSeconds) {
  Past past;
  past.add(make("a", "off", "reproducible", 10));
  audit::Thresholds th;  // +50 % and +5 s
  EXPECT_EQ(kinds(audit::find_regressions({make("a", "off", "reproducible", 16)}, past.fn(), th)),
            (std::vector<std::string>{"time_grew"}));
  EXPECT_TRUE(audit::find_regressions({make("a", "off", "reproducible", 14.9)}, past.fn(), th).empty());
  th.time_min_s = 10;
  EXPECT_TRUE(audit::find_regressions({make("a", "off", "reproducible", 16)}, past.fn(), th).empty());
  // Failed cells are not compared (they break their expectation instead).
  EXPECT_TRUE(audit::find_regressions({make("a", "off", "failed", 100)}, past.fn(), {}).empty());
}

TEST(Regressions, TheCostOfDeterminismGrew) {
  Past past;
  past.add(make("m", "off", "reproducible", 10));
  past.add(make("m", "on", "reproducible", 12));  // 1.2x
  std::vector<audit::CellResult> now{make("m", "off", "reproducible", 10), make("m", "on", "reproducible", 25)};
  auto costs = audit::determinism_costs(now, past.fn());
  ASSERT_EQ(costs.size(), 1u);
  EXPECT_DOUBLE_EQ(costs[0].ratio(), 2.5);
  ASSERT_TRUE(costs[0].previous_ratio());
  EXPECT_DOUBLE_EQ(*costs[0].previous_ratio(), 1.2);
  audit::Thresholds th;
  th.time_growth = 0.5;
  th.time_min_s = 5;
  auto r = audit::find_regressions(now, past.fn(), th);
  // The deterministic cell's own time grew too; the cost is its own regression.
  EXPECT_EQ(kinds(r), (std::vector<std::string>{"time_grew", "determinism_cost_grew"}));
  // When both got slower together, the cost did not grow.
  std::vector<audit::CellResult> both{make("m", "off", "reproducible", 20), make("m", "on", "reproducible", 24)};
  EXPECT_EQ(kinds(audit::find_regressions(both, past.fn(), th)), (std::vector<std::string>{"time_grew", "time_grew"}));
}

TEST(Regressions, ANegativeControlThatFiresAgainIsRecoveredAndDoesNotFail) {
  Past past;
  past.add(make("ctl", "off", "divergent", 1, audit::Expect::divergent), 1);
  past.add(make("ctl", "off", "reproducible", 1, audit::Expect::divergent), 2);  // the night it stopped firing
  auto r = audit::find_regressions({make("ctl", "off", "divergent", 1, audit::Expect::divergent)}, past.fn(), {});
  EXPECT_EQ(kinds(r), (std::vector<std::string>{"recovered(listed)"}));
  EXPECT_NE(r[0].message.find("fires again"), std::string::npos) << r[0].message;
  audit::AuditView v;
  v.cells = {make("ctl", "off", "divergent", 1, audit::Expect::divergent)};
  v.regressions = r;
  EXPECT_EQ(v.exit_code(), 0);
}

TEST(Regressions, TimeIsComparedWithTheMedianOfTheWindowNotOneFastNight) {
  Past past;
  past.add(make("a", "off", "reproducible", 10), 1);
  past.add(make("a", "off", "reproducible", 11), 2);
  past.add(make("a", "off", "reproducible", 3), 3);  // one fast night on a shared runner
  audit::Thresholds th;
  EXPECT_TRUE(audit::find_regressions({make("a", "off", "reproducible", 10.5)}, past.fn(), th).empty());
  auto r = audit::find_regressions({make("a", "off", "reproducible", 17)}, past.fn(), th);
  ASSERT_EQ(kinds(r), (std::vector<std::string>{"time_grew"}));
  EXPECT_NE(r[0].message.find("median 10.0 s of the last 3 audits"), std::string::npos) << r[0].message;
  // timing = "info": listed, never failing.
  th.timing_blocking = false;
  EXPECT_EQ(kinds(audit::find_regressions({make("a", "off", "reproducible", 17)}, past.fn(), th)),
            (std::vector<std::string>{"time_grew(listed)"}));
}

TEST(Regressions, NoTimingRegressionWhenTheVerdictChanged) {
  Past past;
  past.add(make("a", "off", "reproducible", 10));
  // Divergent now: its check ran a second capture pass, so it takes longer by design.
  EXPECT_EQ(kinds(audit::find_regressions({make("a", "off", "divergent", 40)}, past.fn(), {})),
            (std::vector<std::string>{"newly_divergent"}));
  // Times of the other verdict in the window are not a baseline either.
  Past mixed;
  mixed.add(make("b", "off", "divergent", 40), 1);
  mixed.add(make("b", "off", "reproducible", 10), 2);
  mixed.add(make("b", "off", "divergent", 41), 3);
  EXPECT_TRUE(audit::find_regressions({make("b", "off", "divergent", 42)}, mixed.fn(), {}).empty());
}

TEST(Regressions, TheCostOfDeterminismIsComparedWithItsMedian) {
  Past past;
  for (int64_t a : {1, 2}) {
    past.add(make("m", "off", "reproducible", 10), a);
    past.add(make("m", "on", "reproducible", 12), a);
  }
  past.add(make("m", "off", "reproducible", 10), 3);
  past.add(make("m", "on", "reproducible", 4), 3);  // a fast night: 0.4x
  std::vector<audit::CellResult> now{make("m", "off", "reproducible", 10), make("m", "on", "reproducible", 12)};
  EXPECT_TRUE(audit::find_regressions(now, past.fn(), {}).empty());
}

TEST(AuditReports, AnInterruptedOrIncompleteAuditStatesItsExitCode) {
  audit::AuditView v;
  v.cells = {make("m", "off", "reproducible", 1)};
  v.info.status = "interrupted";
  EXPECT_EQ(v.exit_code(), 130);
  EXPECT_NE(audit::render_text(v).find("(exit 130)"), std::string::npos);
  EXPECT_EQ(json::parse(audit::render_json(v))["exit_code"], 130);
  EXPECT_NE(audit::render_markdown(v).find("(exit 130)"), std::string::npos);
  v.info.status = "incomplete";
  v.info.missing_shards = "2/3";
  EXPECT_EQ(v.exit_code(), 3);
  EXPECT_EQ(json::parse(audit::render_json(v))["exit_code"], 3);
}

constexpr const char* kReport = R"~({
  "schema": "reprocheck-report/1", "verdict": "divergent", "tensors": 40,
  "provenance": {"reprocheck_version": "0.1.0", "libtorch_version": "2.11.0", "cuda_version": "13.0",
                 "cudnn_version": "91900", "device": "cpu", "device_name": "Xeon", "host": "h1"},
  "first_divergence": {"run": 1, "order": 12, "step": 0, "phase": "param_grad", "layer": "features.0",
    "layer_type": "torch.nn.Conv2d", "kind": "param_grad", "tensor": "features.0.weight", "inputs_identical": true,
    "hash_only": false, "stats": {"max_abs": 2.98e-07, "max_rel": 0.001, "mismatched": 403, "numel": 432}},
  "divergent_tensors": [
    {"run": 1, "order": 12, "step": 0, "phase": "param_grad", "tensor": "features.0.weight", "max_abs": 2.98e-07, "hash_only": false},
    {"run": 1, "order": 30, "step": 1, "phase": "forward", "tensor": "features.0", "max_abs": null, "hash_only": true},
    {"run": 2, "order": 5, "step": 0, "phase": "forward", "tensor": "x", "max_abs": 1.0, "hash_only": false}],
  "hints": [{"cause": "thread_reduction", "title": "the thread count changes the order of reductions",
             "fix_python": "torch.set_num_threads(N)"}]
})~";

TEST(CheckReport, IsReadIntoACell) {
  audit::CellResult r;
  audit::read_check_report(kReport, r);
  EXPECT_EQ(r.verdict, "divergent");
  EXPECT_EQ(r.tensor, "features.0.weight");
  EXPECT_EQ(r.origin, "source");
  EXPECT_DOUBLE_EQ(r.max_abs, 2.98e-07);
  EXPECT_EQ(r.mismatched, 403);
  EXPECT_EQ(r.cause, "thread_reduction");
  EXPECT_EQ(r.fix, "torch.set_num_threads(N)");
  EXPECT_EQ(r.provenance.libtorch, "2.11.0");
  EXPECT_EQ(r.provenance.host, "h1");
  auto chart = json::parse(r.chart);
  ASSERT_EQ(chart.size(), 2u);  // run 1's tensors only
  EXPECT_EQ(chart[0][0], 12);
  EXPECT_TRUE(chart[1][2].is_null());
  for (const char* bad :
       {"", "{", "[]", R"({"schema": "other"})", R"({"schema": "reprocheck-report/1", "verdict": "x"})"}) {
    audit::CellResult x;
    EXPECT_THROW(audit::read_check_report(bad, x), reprocheck::InputError) << bad;
  }
}

TEST(CheckReport, NumbersOutOfRangeReadAsTheirDefaults) {
  // Found by audit_fuzz: an order of 6.7e80 was converted to an integer (undefined behaviour).
  std::string report = kReport;
  for (auto [from, to] : {std::pair<std::string, std::string>{R"("order": 30)", R"("order": 6.7e80)"},
                          {R"("step": 1, "phase": "forward", "tensor": "features.0")",
                           R"("step": -1e300, "phase": "forward", "tensor": "features.0")"}}) {
    auto at = report.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    report.replace(at, from.size(), to);
  }
  audit::CellResult r;
  audit::read_check_report(report, r);
  auto chart = json::parse(r.chart);
  ASSERT_EQ(chart.size(), 2u);
  EXPECT_EQ(chart[1][0], 0);  // the defaults: order 0, step 0
  EXPECT_EQ(chart[1][1], 0);
}

audit::AuditView view_with_everything() {
  audit::AuditView v;
  v.info.id = 7;
  v.info.uid = "0123456789abcdef";
  v.info.name = "night <&>";
  v.info.started_at = "2026-11-27T01:00:00Z";
  v.models = {"m", "ctl"};
  v.columns = {"deterministic=off", "deterministic=on"};
  auto a = make("m", "off", "reproducible", 1.5);
  auto b = make("m", "on", "divergent", 2.5);
  b.chart = R"([[3,0,3e-07,"step 0 · param_grad · features.0.weight"],[9,1,null,"step 1 · forward · fc"]])";
  b.tensors = 12;
  b.cause = "thread_reduction";
  b.cause_title = "the thread count changes the order of reductions";
  b.evidence = "threads differ";
  b.fix = "torch.set_num_threads(1)";
  b.test_it = "reprocheck m.pt --threads 1";
  auto c = make("ctl", "off", "divergent", 1, audit::Expect::divergent);
  auto d = make("ctl", "on", "failed", 0.5, audit::Expect::divergent);
  d.error = "cannot load library 'x.so'";
  v.cells = {a, b, c, d};
  v.regressions = {{b.key, "m", b.column, "newly_divergent", "newly divergent: first divergence ...", true}};
  v.trend = {{6, "2026-11-26T01:00:00Z", "complete", 3, 1, 0, 0, 0},
             {7, "2026-11-27T01:00:00Z", "complete", 1, 2, 1, 0, 2, 1, 1}};
  return v;
}

TEST(AuditReports, ExitCodeCountsBrokenCellsAndBlockingRegressions) {
  auto v = view_with_everything();
  EXPECT_EQ(v.broken(), 2);  // m on (divergent) and the failed control
  EXPECT_EQ(v.blocking(), 1);
  EXPECT_EQ(v.exit_code(), 1);
  audit::AuditView fine;
  fine.cells = {make("m", "off", "reproducible", 1), make("c", "off", "divergent", 1, audit::Expect::divergent)};
  fine.regressions = {{"k", "m", "x", "newly_reproducible", "fixed", false}};
  EXPECT_EQ(fine.exit_code(), 0);
  // A blocking regression with every cell as expected still fails the audit.
  fine.regressions.push_back({"k", "m", "x", "time_grew", "slower", true});
  EXPECT_EQ(fine.broken(), 0);
  EXPECT_EQ(fine.exit_code(), 1);
}

TEST(AuditReports, JsonJunitMarkdownAndTextAgree) {
  auto v = view_with_everything();
  auto j = json::parse(audit::render_json(v));
  EXPECT_EQ(j["schema"], "reprocheck-audit/1");
  ASSERT_EQ(j["cells"].size(), 4u);
  EXPECT_EQ(j["cells"][1]["first_divergence"]["tensor"], "features.0.weight");
  EXPECT_EQ(j["cells"][3]["error"], "cannot load library 'x.so'");
  EXPECT_EQ(j["regressions"][0]["kind"], "newly_divergent");
  EXPECT_EQ(j["exit_code"], 1);
  const std::string junit = audit::render_junit(v);
  EXPECT_NE(junit.find("tests=\"4\" failures=\"1\" errors=\"1\""), std::string::npos) << junit;
  EXPECT_NE(junit.find("night &lt;&amp;&gt;"), std::string::npos);
  size_t cases = 0;
  for (size_t p = junit.find("<testcase"); p != std::string::npos; p = junit.find("<testcase", p + 1)) ++cases;
  EXPECT_EQ(cases, 4u);
  const std::string md = audit::render_markdown(v);
  EXPECT_NE(md.find("| model | deterministic=off | deterministic=on |"), std::string::npos) << md;
  EXPECT_NE(md.find("**divergent** at features.0.weight ✗ expected reproducible"), std::string::npos) << md;
  const std::string text = audit::render_text(v);
  EXPECT_NE(text.find("FAIL m"), std::string::npos) << text;
  EXPECT_NE(text.find("(exit 1)"), std::string::npos) << text;
}

TEST(AuditReports, HtmlHasTheHeatmapChartsAndTrendAndNoScript) {
  auto v = view_with_everything();
  const std::string html = audit::render_html(v);
  size_t cells = 0;
  for (size_t p = html.find("<td class=\"cell "); p != std::string::npos; p = html.find("<td class=\"cell ", p + 1))
    ++cells;
  EXPECT_EQ(cells, 4u);
  EXPECT_NE(html.find("data-verdict=\"failed\""), std::string::npos);
  // Outlined for breaking its expectation and for its blocking regression; the control's expected
  // divergence has its own class (colour).
  EXPECT_NE(html.find("class=\"cell divergent broken regressed\""), std::string::npos);
  EXPECT_NE(html.find("data-regressions=\"newly_divergent\""), std::string::npos);
  EXPECT_NE(html.find("class=\"cell divergent control\""), std::string::npos);
  EXPECT_NE(html.find("regression-mark\" data-audit=\"7\" data-count=\"1\""), std::string::npos);
  EXPECT_NE(html.find("<div class=\"evidence\"><span class=\"muted\">evidence</span> threads differ"),
            std::string::npos);
  EXPECT_NE(html.find("<code>reprocheck m.pt --threads 1</code>"), std::string::npos);
  EXPECT_NE(html.find("<svg class=\"layer-chart\" data-points=\"2\""), std::string::npos);
  EXPECT_NE(html.find("<svg class=\"trend\" data-audits=\"2\""), std::string::npos);
  EXPECT_NE(html.find("night &lt;&amp;&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html.find("href=\"http"), std::string::npos);
}

}  // namespace
