#include "reprocheck/drill.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "reprocheck/protocol.h"

namespace reprocheck {

namespace {

// An op's record: "module.path:aten::op#k" (or "aten::op#k" outside any module).
bool is_op_record(const TensorMeta& m) {
  return m.layer.find('#') != std::string::npos && m.layer_type.find("::") != std::string::npos;
}

bool drillable(const TensorDiff& d, bool update_ops) {
  if (d.status == Status::missing || d.status == Status::extra) return false;  // another path, not other values
  const TensorMeta& m = d.ref;
  switch (m.phase) {
    case Phase::forward:
    case Phase::output:
    case Phase::loss:
    case Phase::backward:
    case Phase::param_grad:
      return true;
    case Phase::after_step:  // the update: a training script's runs in Python, among the step's ops
      return update_ops && (m.kind == Kind::param || m.kind == Kind::optim_state);
    default:
      return false;  // data, RNG states, initial weights: their records say why
  }
}

std::string text(const nlohmann::json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "";
}

// The op's entry in the reference's op_sources attribute.
void read_source(DrillDown& dd, const std::string& attribute, const TensorMeta& m) {
  if (attribute.empty() || !json_depth_within(attribute, kMaxJsonDepth)) return;
  try {
    const auto j = nlohmann::json::parse(attribute);
    if (!j.is_object() || !j.contains("ops") || !j["ops"].is_object()) return;
    const auto& ops = j["ops"];
    auto it = ops.find(layer_in_process(m));
    if (it == ops.end()) it = ops.find(m.layer);
    if (it == ops.end() || !it->is_object()) return;
    const auto& o = *it;
    dd.module = text(o, "module");
    dd.file = text(o, "file");
    if (auto l = o.find("line");
        l != o.end() && l->is_number_integer() && l->get<int64_t>() > 0 && l->get<int64_t>() < (int64_t(1) << 31))
      dd.line = int(l->get<int64_t>());
    dd.generator = text(o, "generator");
    dd.node = text(o, "node");
    dd.within = text(o, "within");
    dd.forward_site = text(o, "site") == "forward";
    if (auto s = o.find("stack"); s != o.end() && s->is_array())
      for (const auto& f : *s)
        if (f.is_string()) dd.stack.push_back(f.get<std::string>());
  } catch (const nlohmann::json::exception&) {
  }
}

}  // namespace

std::string layer_in_process(const TensorMeta& m) {
  if (m.rank < 0) return m.layer;
  auto slash = m.layer.find('/');
  return slash == std::string::npos ? m.layer : m.layer.substr(slash + 1);
}

bool ran_forward(const std::vector<TensorMeta>& index, const DrillPlan& plan) {
  return std::any_of(index.begin(), index.end(), [&plan](const TensorMeta& m) {
    return m.phase == Phase::forward && m.rank == plan.rank && layer_in_process(m) == plan.scope;
  });
}

std::string DrillDown::source() const { return file.empty() ? "" : fmt::format("{}:{}", file, line); }

std::string DrillDown::rank_words() const { return diff.ref.rank >= 0 ? fmt::format(", rank {}", diff.ref.rank) : ""; }

std::string DrillDown::inside() const {
  if (within.empty()) return "";
  // The op's bare name ("aten::bernoulli_" -> "bernoulli"), and the call's last word.
  auto bare = [](std::string s) {
    auto cut = s.find_last_of(":.");
    if (cut != std::string::npos) s = s.substr(cut + 1);
    while (!s.empty() && s.back() == '_') s.pop_back();
    while (!s.empty() && s.front() == '_') s.erase(0, 1);
    return s;
  };
  return bare(within) == bare(op) ? "" : ", inside " + within;
}

// In execution order every op before the first divergent op matched. Where the front end hashed
// the op's own inputs and numbers (a training script's), an input that no captured op made can still
// differ: it came from outside torch's ops (torch.from_numpy, a learning rate from the clock).
// Inside a custom op (a C++ extension's own code writes its results), what differs was made by that
// op from its identical inputs.
static void judge_inputs(DrillDown& dd, const TensorDiff& first) {
  const bool custom = dd.within.find("::") != std::string::npos && dd.within.rfind("aten::", 0) != 0;
  if (!custom && first.ref.has_input_hash && first.other.has_input_hash &&
      first.ref.input_hash != first.other.input_hash) {
    dd.diff.inputs_identical = false;
    dd.diff.inputs_basis = "input_hash";
    dd.note =
        "its inputs already differed, though every op before it matched: a tensor or number made outside "
        "torch's ops (torch.from_numpy, a value computed in Python, a file)";
  } else {
    dd.diff.inputs_identical = true;
    dd.diff.inputs_basis = "earlier_ops";
  }
}

std::optional<DrillPlan> plan_for(const TensorDiff& d, int other_run, const std::string& mode, bool update_ops) {
  if (mode == "none") return std::nullopt;
  if (is_op_record(d.ref) || !drillable(d, update_ops) || d.ref.step < 0) return std::nullopt;
  DrillPlan plan;
  plan.step = d.ref.step;
  plan.other_run = other_run;
  plan.rank = d.ref.rank;
  const bool source = d.inputs_identical.value_or(false);
  plan.why = fmt::format("{} at step {} ({}, {})", d.ref.tensor_name(), d.ref.step, to_string(d.ref.phase),
                         source ? "a source" : "inherited");
  // A layer whose output diverged from identical inputs holds the source; a parameter gradient is
  // written by its layer's backward. Anything else: every op of the step.
  const bool in_layer =
      (d.ref.phase == Phase::forward && d.ref.kind == Kind::activation && source) || d.ref.kind == Kind::param_grad;
  if (mode == "auto" && in_layer) plan.scope = layer_in_process(d.ref);
  return plan;
}

std::optional<DrillPlan> plan_drill(const Comparison& c, const std::string& mode) {
  const PairComparison* h = c.headline();
  if (!h) return std::nullopt;
  return plan_for(h->diffs[*h->first], h->other_run, mode, !c.ref_options.command.empty());
}

DrillDown read_drill(const Comparison& c3, const DrillPlan& plan, const std::string& mode) {
  DrillDown dd;
  dd.mode = mode;
  dd.step = plan.step;
  dd.scope = plan.scope;
  dd.other_run = plan.other_run;
  dd.why = plan.why;
  std::set<std::string> ops;
  for (const auto& m : c3.ref_index)
    if (m.step == plan.step && is_op_record(m)) ops.insert(m.layer);
  dd.ops_captured = static_cast<int64_t>(ops.size());
  const PairComparison* p = c3.pairs.empty() ? nullptr : &c3.pairs[0];
  dd.series_total = static_cast<int64_t>(c3.ref_index.size());
  constexpr size_t kMaxSeries = 5000;
  if (p)
    for (const auto& x : p->diffs)
      if ((is_divergent(x.status) || x.status == Status::close) && x.ref.step == plan.step && is_op_record(x.ref) &&
          dd.series.size() < kMaxSeries)
        dd.series.push_back(x);
  // The first divergent record of the plan's process in execution order, and its first divergent op
  // of the captured step. Every op before that op matched; its other inputs (parameters, the batch,
  // RNG states) are identical only if no record before it diverged.
  const TensorDiff* first = nullptr;
  const TensorDiff* any = nullptr;
  if (p)
    for (const auto& x : p->diffs) {
      if (!is_divergent(x.status) || x.ref.rank != plan.rank) continue;
      if (!any || x.ref.order < any->ref.order) any = &x;
      if (x.ref.step == plan.step && is_op_record(x.ref) && (!first || x.ref.order < first->ref.order)) first = &x;
    }
  const bool before_ops = any && !is_op_record(any->ref) &&
                          (any->ref.step < plan.step || any->ref.phase == Phase::input ||
                           any->ref.phase == Phase::rng || (first && any->ref.order < first->ref.order));
  if (before_ops) {
    // Run again, the runs diverged before the step's ops (an earlier step this time: a difference
    // that comes and goes): an op that differs now is inherited from that, not a source.
    dd.earlier = *any;
    dd.note = fmt::format(
        "when run again the runs diverged earlier, at {} (step {}, {}): an intermittent "
        "difference, so no op of step {} can be named as its source",
        any->ref.tensor_name(), any->ref.step, to_string(any->ref.phase), plan.step);
    return dd;
  }
  if (!first) {
    if (p && !p->has_divergence())
      dd.note = "the runs did not diverge when run again (an intermittent difference)";
    else if (dd.ops_captured == 0)
      dd.note = "no op was captured: the front end could not trace this step's ops";
    else
      dd.note = fmt::format("none of the {} ops captured diverged: the difference came from code they do not cover",
                            dd.ops_captured);
    return dd;
  }
  dd.found = true;
  dd.diff = *first;
  dd.op = first->ref.layer_type;
  dd.output = first->ref.name;
  read_source(dd, c3.attribute(attr::kOpSources), first->ref);
  judge_inputs(dd, *first);
  if (dd.module.empty()) {
    const std::string layer = layer_in_process(first->ref);
    auto colon = layer.find(':');
    dd.module =
        colon == std::string::npos || layer.compare(0, colon, dd.op, 0, colon) == 0 ? "" : layer.substr(0, colon);
  }
  return dd;
}

}  // namespace reprocheck
