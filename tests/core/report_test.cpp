// Reports are pure functions of a Report value: no dump is read, nothing is recomputed.
#include "reprocheck/report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace rc = reprocheck;

namespace {

rc::TensorMeta meta(int64_t order, const std::string& layer, rc::Phase phase = rc::Phase::forward) {
  rc::TensorMeta m;
  m.order = order;
  m.step = 0;
  m.phase = phase;
  m.kind = rc::Kind::activation;
  m.layer = layer;
  m.layer_type = "torch.nn.modules.conv.Conv2d";
  m.name = "out";
  m.dtype = "float32";
  m.shape = {2};
  m.numel = 2;
  return m;
}

// A comparison of dumps that no longer exist: conv1 matched, conv2 diverged.
rc::Comparison divergent_comparison() {
  rc::Comparison c;
  c.runs = {"/gone/run-0.h5", "/gone/run-1.h5"};
  c.ref_attributes = {{"model", "m.pt"}, {"steps", "1"}, {"device", "cpu"}};
  c.ref_index = {meta(0, "conv1"), meta(1, "conv2")};
  c.tensors = 2;
  rc::PairComparison p;
  p.compared = 2;
  p.identical = 1;
  p.divergent = 1;
  rc::TensorDiff d;
  d.ref = d.other = meta(1, "conv2");
  d.status = rc::Status::values_differ;
  d.stats.numel = 2;
  d.stats.mismatched = 1;
  d.stats.max_abs = 0.5;
  d.stats.max_abs_index = 1;
  d.stats.max_rel = 0.25;
  d.stats.first_index = 1;
  d.inputs_identical = true;
  d.inputs_basis = "input_hash";
  p.diffs.push_back(d);
  p.first = 0;
  c.pairs.push_back(p);
  return c;
}

}  // namespace

TEST(Report, JunitNeedsNoDumpAndListsMatchedGroupsToo) {
  auto junit = rc::render_junit(rc::make_report(divergent_comparison()));
  EXPECT_NE(junit.find("name=\"forward conv1 (Conv2d)\" time=\"0\"/>"), std::string::npos) << junit;
  EXPECT_NE(junit.find("name=\"forward conv2 (Conv2d)\" time=\"0\">"), std::string::npos) << junit;
  EXPECT_NE(junit.find("tests=\"2\" failures=\"1\""), std::string::npos) << junit;
}

TEST(Report, HintsComeFromTheReportValue) {
  auto r = rc::make_report(divergent_comparison());
  r.hints = {{"custom_cause", "a cause given by the caller", "evidence text", "the fix", "--flag"}};
  EXPECT_NE(rc::render_text(r).find("likely cause  a cause given by the caller"), std::string::npos);
  EXPECT_NE(rc::render_markdown(r).find("a cause given by the caller"), std::string::npos);
  auto j = nlohmann::json::parse(rc::render_json(r));
  ASSERT_EQ(j["hints"].size(), 1u);
  EXPECT_EQ(j["hints"][0]["cause"], "custom_cause");
}

TEST(Report, IsolationGoesBeforeTheVerdictInEveryFormat) {
  rc::Isolation iso;
  iso.step = 0;
  iso.agreed = true;
  iso.sources.push_back(divergent_comparison().pairs[0].diffs[0]);
  auto r = rc::make_report(divergent_comparison(), iso);
  auto text = rc::render_text(r);
  auto at_iso = text.find("isolation  1 independent source(s) in step 0");
  auto at_verdict = text.find("verdict: DIVERGENT");
  ASSERT_NE(at_iso, std::string::npos) << text;
  ASSERT_NE(at_verdict, std::string::npos);
  EXPECT_LT(at_iso, at_verdict);
  EXPECT_NE(text.find("with these replayed from run 0, the runs agree through step 0"), std::string::npos);
  EXPECT_NE(rc::render_markdown(r).find("**Independent sources in step 0:**"), std::string::npos);
  auto j = nlohmann::json::parse(rc::render_json(r));
  EXPECT_EQ(j["isolation"]["sources"][0]["layer"], "conv2");
  EXPECT_EQ(j["isolation"]["agreed"], true);
}

TEST(Report, SourceAndInheritedAreNamedForWhatTheyAre) {
  auto c = divergent_comparison();
  EXPECT_NE(rc::render_text(rc::make_report(c)).find("source: its inputs were identical"), std::string::npos);
  EXPECT_NE(rc::render_markdown(rc::make_report(c)).find("(source: its inputs were identical)"), std::string::npos);
  c.pairs[0].diffs[0].inputs_identical = false;
  auto text = rc::render_text(rc::make_report(c));
  EXPECT_NE(text.find("inherited: its inputs already differed"), std::string::npos);
  EXPECT_EQ(text.find("source:"), std::string::npos);
  EXPECT_NE(rc::render_markdown(rc::make_report(c)).find("(inherited: its inputs already differed)"),
            std::string::npos);
}

TEST(Report, JsonStatisticsKeepTheirValues) {
  auto j = nlohmann::json::parse(rc::render_json(rc::make_report(divergent_comparison())));
  const auto& s = j["first_divergence"]["stats"];
  EXPECT_EQ(s["max_abs"], 0.5);
  EXPECT_EQ(s["max_rel"], 0.25);
  EXPECT_EQ(s["mismatched"], 1);
  EXPECT_EQ(s["max_abs_index_nd"], nlohmann::json::array({1}));
  EXPECT_EQ(j["first_divergence"]["phase"], "forward");
  EXPECT_EQ(j["first_divergence"]["inputs_identical"], true);
  EXPECT_EQ(j["verdict"], "divergent");
}
