// Pass 3, the drill-down: when it runs and with what scope, what it reads from its two runs, and
// how the hints and every report carry it.
#include "reprocheck/drill.h"

#include <gtest/gtest.h>

#include "reprocheck/hints.h"
#include "reprocheck/protocol.h"
#include "reprocheck/report.h"

namespace rc = reprocheck;

namespace {

rc::TensorMeta meta(int step, rc::Phase phase, const std::string& layer, const std::string& type, rc::Kind kind,
                    const std::string& name = "out", int64_t order = 0) {
  rc::TensorMeta m;
  m.step = step;
  m.phase = phase;
  m.layer = layer;
  m.layer_type = type;
  m.kind = kind;
  m.name = name;
  m.order = order;
  m.dtype = "float32";
  m.shape = {8};
  return m;
}

rc::TensorDiff diff(rc::TensorMeta m, bool source, const std::string& basis = "input_hash") {
  rc::TensorDiff d;
  d.ref = m;
  d.other = m;
  d.status = rc::Status::values_differ;
  d.stats.numel = 8;
  d.stats.mismatched = 4;
  d.stats.max_abs = 0.5;
  d.inputs_identical = source;
  d.inputs_basis = basis;
  return d;
}

rc::Comparison with_first(rc::TensorDiff d, std::vector<std::pair<std::string, std::string>> knobs = {}) {
  rc::Comparison c;
  c.runs = {"a.h5", "b.h5"};
  c.ref_attributes = {{"device", "cpu"}};
  rc::PairComparison p;
  p.diffs.push_back(std::move(d));
  p.first = 0;
  p.knob_diffs = std::move(knobs);
  p.compared = 10;
  c.pairs.push_back(p);
  c.tensors = 10;
  return c;
}

const std::string kConv = "torch.nn.modules.conv.Conv2d";

}  // namespace

TEST(Drill, PlansForLayersGradientsParameterGradientsAndAScriptsUpdate) {
  using rc::Kind;
  using rc::Phase;
  // Records that name their own cause: no pass 3.
  for (auto m : {meta(0, Phase::input, "", "", Kind::indices), meta(0, Phase::rng, "torch", "", Kind::rng_state),
                 meta(-1, Phase::init, "conv", kConv, Kind::param, "weight"),
                 meta(0, Phase::after_step, "conv", kConv, Kind::param, "weight")})
    EXPECT_FALSE(rc::plan_drill(with_first(diff(m, true)), "auto").has_value()) << rc::to_string(m.phase);
  // Already an op: nothing finer to find.
  EXPECT_FALSE(
      rc::plan_drill(
          with_first(diff(meta(0, Phase::forward, "conv:aten::conv2d#0", "aten::conv2d", Kind::activation), true)),
          "auto")
          .has_value());
  // --drill none.
  auto source = with_first(diff(meta(1, Phase::forward, "block.drop", "Dropout", Kind::activation), true));
  EXPECT_FALSE(rc::plan_drill(source, "none").has_value());
  // A layer that is the source: its ops; --drill full: the whole step.
  auto plan = rc::plan_drill(source, "auto");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->step, 1);
  EXPECT_EQ(plan->scope, "block.drop");
  EXPECT_NE(plan->why.find("a source"), std::string::npos);
  EXPECT_EQ(rc::plan_drill(source, "full")->scope, "");
  // Inherited: the source is before it, in no tapped layer: the whole step.
  auto inherited = with_first(diff(meta(0, Phase::forward, "fc", "Linear", Kind::activation), false));
  EXPECT_EQ(rc::plan_drill(inherited, "auto")->scope, "");
  // A parameter gradient: its layer's backward. A rank's layer is its own, without the prefix.
  auto grad = meta(0, Phase::param_grad, "rank1/features.0", kConv, Kind::param_grad, "weight");
  grad.rank = 1;
  auto g = rc::plan_drill(with_first(diff(grad, true, "earlier_tensors")), "auto");
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->scope, "features.0");
  EXPECT_EQ(g->rank, 1);
  // A training script's update runs in Python among the step's ops: a parameter or optimizer state
  // after the step is drilled, every op of its step (the code between backward and the step's end).
  for (auto m : {meta(0, Phase::after_step, "conv", kConv, Kind::param, "weight"),
                 meta(0, Phase::after_step, "conv", kConv, Kind::optim_state, "weight.momentum_buffer")}) {
    auto c = with_first(diff(m, true, "earlier_tensors"));
    c.ref_options.command = {"python", "train.py"};
    auto update = rc::plan_drill(c, "auto");
    ASSERT_TRUE(update.has_value());
    EXPECT_EQ(update->step, 0);
    EXPECT_EQ(update->scope, "");
  }
  // Not a buffer after the step (a layer's forward updates it, e.g. running statistics).
  auto buffer = with_first(diff(meta(0, Phase::after_step, "bn", "BatchNorm2d", Kind::buffer, "running_mean"), true));
  buffer.ref_options.command = {"python", "train.py"};
  EXPECT_FALSE(rc::plan_drill(buffer, "auto").has_value());
}

TEST(Drill, ReadsTheFirstDivergentOpInExecutionOrderWithItsSource) {
  using rc::Kind;
  using rc::Phase;
  rc::DrillPlan plan;
  plan.step = 0;
  plan.scope = "features.0";
  plan.other_run = 1;
  rc::Comparison c3;
  c3.runs = {"a.h5", "b.h5"};
  auto fwd = meta(0, Phase::forward, "features.0:aten::conv2d#0", "aten::conv2d", Kind::activation, "out", 3);
  auto bwd = meta(0, Phase::backward, "features.0:aten::conv2d#0~ConvolutionBackward0", "aten::conv2d", Kind::grad,
                  "grad_weight", 9);
  auto later = meta(0, Phase::forward, "fc:aten::linear#0", "aten::linear", Kind::activation, "out", 12);
  c3.ref_index = {fwd, bwd, later, meta(0, Phase::param_grad, "features.0", kConv, Kind::param_grad, "weight", 10)};
  rc::PairComparison p;
  // Listed out of execution order: the one that ran first is the first divergent op.
  p.diffs = {diff(later, false), diff(bwd, false, "earlier_tensors")};
  p.first = 1;
  c3.pairs.push_back(p);
  c3.ref_attributes[rc::attr::kOpSources] =
      R"({"step": 0, "scope": "features.0", "ops": {"features.0:aten::conv2d#0~ConvolutionBackward0": )"
      R"({"op": "aten::conv2d", "module": "features.0", "phase": "backward", "site": "forward", "file": "model.py",)"
      R"( "line": 42, "stack": ["model.py:42 in forward", "train.py:9 in <module>"], "node": "ConvolutionBackward0"}}})";
  auto dd = rc::read_drill(c3, plan, "auto");
  ASSERT_TRUE(dd.found) << dd.note;
  EXPECT_EQ(dd.op, "aten::conv2d");
  EXPECT_EQ(dd.output, "grad_weight");
  EXPECT_EQ(dd.module, "features.0");
  EXPECT_EQ(dd.source(), "model.py:42");
  EXPECT_TRUE(dd.forward_site);
  EXPECT_EQ(dd.node, "ConvolutionBackward0");
  EXPECT_EQ(dd.stack.size(), 2u);
  EXPECT_EQ(dd.inside(), "");  // no call of another name around it
  dd.within = "torch.nn.functional.conv2d";
  EXPECT_EQ(dd.inside(), "");  // the same op by its Python name
  dd.within = "reprocheck_zoo::racy_scatter_add";
  EXPECT_EQ(dd.inside(), ", inside reprocheck_zoo::racy_scatter_add");
  EXPECT_EQ(dd.ops_captured, 3);
  EXPECT_TRUE(*dd.diff.inputs_identical);
  EXPECT_EQ(dd.series.size(), 2u);
  // A hostile attribute is ignored: the op is still named, without a source.
  c3.ref_attributes[rc::attr::kOpSources] = R"({"ops": {"features.0:aten::conv2d#0~ConvolutionBackward0": )"
                                            R"({"line": 1e300, "file": 7, "stack": "x"}}})";
  auto hostile = rc::read_drill(c3, plan, "auto");
  EXPECT_TRUE(hostile.found);
  EXPECT_EQ(hostile.source(), "");
  EXPECT_EQ(hostile.module, "features.0");  // from the record's name
  // Nothing divergent among the ops: said, not invented.
  c3.pairs[0].diffs.clear();
  c3.pairs[0].first.reset();
  auto none = rc::read_drill(c3, plan, "auto");
  EXPECT_FALSE(none.found);
  EXPECT_NE(none.note.find("did not diverge"), std::string::npos) << none.note;
}

TEST(Drill, AnOpAfterAnEarlierDivergenceIsNotASource) {
  using rc::Kind;
  using rc::Phase;
  rc::DrillPlan plan;
  plan.step = 1;
  plan.other_run = 1;
  rc::Comparison c3;
  c3.runs = {"a.h5", "b.h5"};
  auto weight = meta(0, Phase::after_step, "head", "Linear", Kind::param, "weight", 5);
  auto batch = meta(1, Phase::input, "", "", Kind::batch, "batch[0]", 7);
  auto op = meta(1, Phase::forward, "head:aten::addmm#0", "aten::addmm", Kind::activation, "out", 12);
  auto layer = meta(1, Phase::forward, "head", "Linear", Kind::activation, "out", 13);
  c3.ref_index = {weight, batch, op, layer};
  rc::PairComparison p;
  // The parameter it reads diverged at step 0 this time: the op inherits it.
  p.diffs = {diff(op, false), diff(layer, false), diff(weight, false)};
  p.first = 2;
  c3.pairs.push_back(p);
  auto dd = rc::read_drill(c3, plan, "auto");
  EXPECT_FALSE(dd.found);
  ASSERT_TRUE(dd.earlier.has_value());
  EXPECT_EQ(dd.earlier->ref.key(), weight.key());
  EXPECT_NE(dd.note.find("diverged earlier, at head.weight (step 0, after_step)"), std::string::npos) << dd.note;
  // A record with no ops (a parameter update): nothing to drill into there.
  EXPECT_FALSE(rc::plan_for(*dd.earlier, 1, "auto", false).has_value());
  // The step's batch diverged before its ops: the same.
  c3.pairs[0].diffs = {diff(op, false), diff(batch, false)};
  c3.pairs[0].first = 0;
  dd = rc::read_drill(c3, plan, "auto");
  ASSERT_TRUE(dd.earlier.has_value());
  EXPECT_EQ(dd.earlier->ref.key(), batch.key());
  // A layer at an earlier step: pass 3 moves there, every op of that step.
  auto before = meta(0, Phase::forward, "head", "Linear", Kind::activation, "out", 3);
  c3.pairs[0].diffs = {diff(op, false), diff(before, false)};
  c3.pairs[0].first = 0;
  dd = rc::read_drill(c3, plan, "auto");
  ASSERT_TRUE(dd.earlier.has_value());
  auto again = rc::plan_for(*dd.earlier, 1, "auto", false);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->step, 0);
  EXPECT_EQ(again->scope, "");
  // Only the op and the layer it feeds, in that order: the op is the source.
  c3.pairs[0].diffs = {diff(layer, false), diff(op, false)};
  c3.pairs[0].first = 0;
  dd = rc::read_drill(c3, plan, "auto");
  EXPECT_TRUE(dd.found) << dd.note;
  EXPECT_FALSE(dd.earlier.has_value());
  EXPECT_EQ(dd.op, "aten::addmm");
  // The layer diverged but none of its ops did: code they do not cover, not an earlier divergence.
  c3.pairs[0].diffs = {diff(layer, false)};
  c3.pairs[0].first = 0;
  dd = rc::read_drill(c3, plan, "auto");
  EXPECT_FALSE(dd.earlier.has_value());
  EXPECT_NE(dd.note.find("none of the 1 ops captured diverged"), std::string::npos) << dd.note;
}

TEST(Drill, TheHintUsesTheOpAndEveryReportCarriesIt) {
  using rc::Kind;
  using rc::Phase;
  auto c = with_first(
      diff(meta(0, Phase::param_grad, "features.0", kConv, Kind::param_grad, "weight"), true, "earlier_tensors"),
      {{"threads", "1 vs 2"}});
  rc::DrillDown dd;
  dd.mode = "auto";
  dd.found = true;
  dd.scope = "features.0";
  dd.ops_captured = 2;
  dd.diff = diff(meta(0, Phase::backward, "features.0:aten::conv2d#0~ConvolutionBackward0", "aten::conv2d", Kind::grad,
                      "grad_weight"),
                 true, "earlier_ops");
  dd.op = "aten::conv2d";
  dd.output = "grad_weight";
  dd.module = "features.0";
  dd.file = "model.py";
  dd.line = 42;
  dd.forward_site = true;
  dd.node = "ConvolutionBackward0";
  c.drill = dd;
  auto r = rc::make_report(c);
  ASSERT_FALSE(r.hints.empty());
  EXPECT_EQ(r.hints[0].cause, "thread_reduction");
  EXPECT_NE(r.hints[0].evidence.find("aten::conv2d -> grad_weight in features.0, the backward of the call at "
                                     "model.py:42"),
            std::string::npos)
      << r.hints[0].evidence;
  const std::string text = rc::render_text(r);
  EXPECT_NE(text.find("first divergent op  aten::conv2d -> grad_weight in features.0 (step 0, backward)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("backward of the call at model.py:42 (ConvolutionBackward0)"), std::string::npos);
  // An op of a distributed run names its rank.
  auto ranked = r;
  ranked.comparison.drill->diff.ref.rank = 1;
  EXPECT_NE(rc::render_text(ranked).find("(step 0, backward, rank 1)"), std::string::npos);
  const std::string json = rc::render_json(r);
  for (const char* key : {"\"drill_down\"", "\"op\": \"aten::conv2d\"", "\"output\": \"grad_weight\"",
                          "\"file\": \"model.py\"", "\"line\": 42", "\"autograd_node\": \"ConvolutionBackward0\""})
    EXPECT_NE(json.find(key), std::string::npos) << key;
  EXPECT_NE(rc::render_markdown(r).find("**First divergent op:** aten::conv2d -\\> grad\\_weight"), std::string::npos)
      << rc::render_markdown(r);
  EXPECT_NE(rc::render_junit(r).find("first divergent op: aten::conv2d -&gt; grad_weight"), std::string::npos);
  const std::string html = rc::render_html(r);
  EXPECT_NE(html.find("id=\"drill-down\""), std::string::npos);
  EXPECT_NE(html.find("href=\"#drill-down\""), std::string::npos);
  // Without pass 3 the JSON says so.
  c.drill.reset();
  EXPECT_NE(rc::render_json(rc::make_report(c)).find("\"drill_down\": null"), std::string::npos);
}

TEST(Drill, AnOpWhoseOwnInputsDifferedReadAValueMadeOutsideTheOps) {
  using rc::Kind;
  using rc::Phase;
  rc::DrillPlan plan;
  plan.step = 0;
  plan.other_run = 1;
  auto op = meta(0, Phase::after_step, "aten::add_#3", "aten::add_", Kind::activation, "out", 20);
  auto drill = [&](bool hashed, uint64_t other_hash, const std::string& within) {
    rc::Comparison c3;
    c3.runs = {"a.h5", "b.h5"};
    c3.ref_index = {op};
    auto d = diff(op, false);
    d.ref.has_input_hash = d.other.has_input_hash = hashed;
    d.ref.input_hash = 7;
    d.other.input_hash = other_hash;
    rc::PairComparison p;
    p.diffs = {d};
    p.first = 0;
    c3.pairs.push_back(p);
    c3.ref_attributes[rc::attr::kOpSources] =
        R"({"step": 0, "scope": "", "ops": {"aten::add_#3": {"op": "aten::add_", "module": "", "phase": "after_step",)"
        R"( "file": "train.py", "line": 27, "stack": ["train.py:27 in <module>"])" +
        (within.empty() ? std::string() : R"(, "within": ")" + within + "\"") + "}}}";
    return rc::read_drill(c3, plan, "auto");
  };
  // Every op before it matched, yet its own inputs (hashed as it was called) differed: the op is
  // named, with its line, and not called a source.
  auto dd = drill(true, 8, "");
  ASSERT_TRUE(dd.found);
  EXPECT_EQ(dd.source(), "train.py:27");
  EXPECT_FALSE(*dd.diff.inputs_identical);
  EXPECT_EQ(dd.diff.inputs_basis, "input_hash");
  EXPECT_NE(dd.note.find("made outside torch's ops"), std::string::npos) << dd.note;
  // Equal input hashes, or none (a TorchScript drill): identical, as every op before it matched.
  for (auto [hashed, other] : {std::pair{true, uint64_t{7}}, std::pair{false, uint64_t{8}}}) {
    dd = drill(hashed, other, "");
    EXPECT_TRUE(*dd.diff.inputs_identical);
    EXPECT_EQ(dd.diff.inputs_basis, "earlier_ops");
    EXPECT_EQ(dd.note, "");
  }
  // Inside a custom op, whose C++ code writes its results: made by that op from identical inputs.
  dd = drill(true, 8, "reprocheck_zoo::racy_scatter_add");
  EXPECT_TRUE(*dd.diff.inputs_identical);
  // Inside a torch function the value still came from outside.
  dd = drill(true, 8, "torch.nn.functional.dropout");
  EXPECT_FALSE(*dd.diff.inputs_identical);
}
