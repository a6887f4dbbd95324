// A cell's result from its check's JSON report, the regressions against each cell's previous
// result, the cost of determinism, and the view the audit reports render.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "reprocheck/exit_codes.h"
#include "reprocheck/host.h"

namespace reprocheck::audit {

using nlohmann::json;

namespace {

constexpr size_t kMaxChartPoints = 5000;

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

double num(const json& j, const char* key, double fallback = -1) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

// An integer field: the number when it fits `Int`, else `fallback` (a report read back may hold
// anything: 6.7e80 as an order must not become an undefined conversion).
template <typename Int>
Int whole(const json& j, const char* key, Int fallback) {
  const double v = num(j, key, static_cast<double>(fallback));
  if (!std::isfinite(v) || v < static_cast<double>(std::numeric_limits<Int>::min()) ||
      v >= static_cast<double>(std::numeric_limits<Int>::max()))
    return fallback;
  return static_cast<Int>(v);
}

std::map<std::string, std::string> settings_of(const CellResult& r) {
  std::map<std::string, std::string> out;
  try {
    const json j = json::parse(r.settings);
    for (const auto& [k, v] : j.items()) out[k] = v.is_string() ? v.get<std::string>() : v.dump();
  } catch (const json::exception&) {
  }
  return out;
}

}  // namespace

std::string seconds_text(double s) { return s < 10 ? fmt::format("{:.2f} s", s) : fmt::format("{:.1f} s", s); }

bool CellResult::meets_expectation() const {
  if (verdict == "failed") return false;
  if (verdict == "interrupted" || expect == Expect::info) return true;
  return verdict == to_string(expect);
}

std::string CellResult::first_label() const {
  if (verdict != "divergent" || tensor.empty()) return "";
  return fmt::format("{} · {} · {}{}", step < 0 ? "before step 0" : fmt::format("step {}", step), phase, tensor,
                     kind == "activation" || kind == "grad" ? fmt::format(" ({})", kind) : "");
}

void read_check_report(const std::string& json_text, CellResult& out) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("the check's JSON report cannot be read: {}", first_line(e.what())));
  }
  if (!j.is_object() || str(j, "schema") != "reprocheck-report/1")
    throw InputError("the check's JSON report is not a reprocheck-report/1 document");
  out.verdict = str(j, "verdict");
  if (out.verdict != "reproducible" && out.verdict != "divergent")
    throw InputError(fmt::format("the check's JSON report has verdict '{}'", out.verdict));
  out.tensors = whole<int64_t>(j, "tensors", 0);
  if (auto p = j.find("provenance"); p != j.end() && p->is_object()) {
    out.provenance.reprocheck = str(*p, "reprocheck_version");
    out.provenance.libtorch = str(*p, "libtorch_version");
    out.provenance.cuda = str(*p, "cuda_version");
    out.provenance.cudnn = str(*p, "cudnn_version");
    out.provenance.device = str(*p, "device_name");
    if (std::string d = str(*p, "device"); !d.empty() && d != "cpu")
      out.provenance.device = out.provenance.device.empty() ? d : d + " " + out.provenance.device;
    out.provenance.host = str(*p, "host");
  }
  auto fd = j.find("first_divergence");
  if (fd == j.end() || !fd->is_object()) return;
  out.step = whole<int>(*fd, "step", 0);
  out.tensor = str(*fd, "tensor");
  out.layer = str(*fd, "layer");
  out.layer_type = str(*fd, "layer_type");
  out.phase = str(*fd, "phase");
  out.kind = str(*fd, "kind");
  auto ii = fd->find("inputs_identical");
  out.origin = ii == fd->end() || !ii->is_boolean() ? "unknown" : (ii->get<bool>() ? "source" : "inherited");
  out.hash_only = fd->value("hash_only", false);
  if (auto st = fd->find("stats"); st != fd->end() && st->is_object()) {
    out.max_abs = num(*st, "max_abs");
    out.max_rel = num(*st, "max_rel");
    out.mismatched = whole<int64_t>(*st, "mismatched", 0);
    out.numel = whole<int64_t>(*st, "numel", 0);
  }
  if (auto h = j.find("hints"); h != j.end() && h->is_array() && !h->empty()) {
    out.cause = str((*h)[0], "cause");
    out.cause_title = str((*h)[0], "title");
    out.fix = str((*h)[0], "fix_python");
    if (out.fix == "-") out.fix.clear();
    out.evidence = str((*h)[0], "evidence");
    out.test_it = str((*h)[0], "test_it");
  }
  const int run = whole<int>(*fd, "run", 1);
  json points = json::array();
  if (auto dt = j.find("divergent_tensors"); dt != j.end() && dt->is_array())
    for (const auto& t : *dt) {
      if (whole<int>(t, "run", -1) != run) continue;
      if (points.size() >= kMaxChartPoints) break;
      const int step = whole<int>(t, "step", 0);
      std::string label = fmt::format("{} · {} · {}", step < 0 ? "init" : fmt::format("step {}", step), str(t, "phase"),
                                      str(t, "tensor"));
      auto ma = t.find("max_abs");
      points.push_back(
          {whole<int64_t>(t, "order", 0), step,
           ma != t.end() && ma->is_number() && !t.value("hash_only", false) ? json(ma->get<double>()) : json(nullptr),
           label});
    }
  out.chart = points.dump();
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

bool decided(const std::string& verdict) { return verdict == "reproducible" || verdict == "divergent"; }

// The times of a cell's earlier results with the verdict it has now (a check that diverges runs a
// second capture pass, so its time is compared only with times of the same verdict).
std::vector<double> times_of(const std::vector<CellResult>& past, const std::string& verdict) {
  std::vector<double> out;
  for (const auto& p : past)
    if (p.verdict == verdict && p.seconds > 0) out.push_back(p.seconds);
  return out;
}

std::string audits_words(size_t n) { return n == 1 ? "the previous audit" : fmt::format("the last {} audits", n); }

}  // namespace

namespace {

using Add = std::function<void(const CellResult&, const char*, std::string, bool)>;
using Pasts = std::map<std::string, std::vector<CellResult>>;

// The verdict and the first divergence of a cell against its latest earlier result.
void verdict_regression(const CellResult& r, const CellResult& prev, const Thresholds& th, const Add& add) {
  const bool control = r.expect == Expect::divergent;
  if (prev.verdict == "reproducible" && r.verdict == "divergent") {
    // A negative control that fires again is back to what it should be: listed, not failing.
    if (control)
      add(r, "recovered", fmt::format("the negative control fires again: first divergence {}", r.first_label()), false);
    else
      add(r, "newly_divergent", fmt::format("first divergence {} (reproducible before)", r.first_label()), true);
  } else if (prev.verdict == "divergent" && r.verdict == "reproducible") {
    // For a negative control this means the known source stopped firing; for a cell that
    // expects to be reproducible, it is a fix: listed, not failing.
    if (control)
      add(r, "newly_reproducible",
          fmt::format("the negative control no longer diverges (it diverged at {} before)", prev.first_label()), true);
    else
      add(r, "newly_reproducible", fmt::format("fixed: it diverged at {} before", prev.first_label()), false);
  } else if (r.verdict == "divergent") {
    if (prev.step != r.step || prev.phase != r.phase || prev.tensor != r.tensor || prev.kind != r.kind) {
      add(r, "divergence_moved", fmt::format("{} before, {} now", prev.first_label(), r.first_label()), true);
    } else if (!r.hash_only && !prev.hash_only && prev.max_abs > 0 && r.max_abs > 0 &&
               r.max_abs >= th.magnitude_factor * prev.max_abs) {
      add(r, "magnitude_grew",
          fmt::format("max abs diff of {} grew {:.1f}x: {:.3g} before, {:.3g} now", r.first_label(),
                      r.max_abs / prev.max_abs, prev.max_abs, r.max_abs),
          true);
    }
  }
}

// Time, against the median of the earlier results of the same verdict; not when the verdict just
// changed (a divergent check runs a second capture pass by design).
void time_regression(const CellResult& r, const std::vector<CellResult>& earlier, const Thresholds& th,
                     const Add& add) {
  const auto times = times_of(earlier, r.verdict);
  if (earlier.front().verdict != r.verdict || times.empty()) return;
  const double base = median(times);
  if (r.seconds > base * (1 + th.time_growth) && r.seconds - base > th.time_min_s)
    add(r, "time_grew",
        fmt::format("{:.0f}% longer: {} now, median {} of {}", (r.seconds / base - 1) * 100, seconds_text(r.seconds),
                    seconds_text(base), audits_words(times.size())),
        th.timing_blocking);
}

// The cost of determinism of a pair of cells against its median over the earlier audits that have
// both cells with today's verdicts.
void cost_regression(const DeterminismCost& c, const std::vector<CellResult>& now, Pasts& history, const Thresholds& th,
                     const Add& add) {
  const CellResult *on = nullptr, *off = nullptr;
  for (const auto& r : now) {
    if (r.key == c.with) on = &r;
    if (r.key == c.without) off = &r;
  }
  const auto& on_past = history[c.with];
  const auto& off_past = history[c.without];
  if (!on || !off || on_past.empty() || off_past.empty() || on_past.front().verdict != on->verdict ||
      off_past.front().verdict != off->verdict)
    return;
  std::vector<double> ratios, extras;
  for (const auto& p_on : on_past)
    for (const auto& p_off : off_past)
      if (p_on.audit == p_off.audit && p_on.verdict == on->verdict && p_off.verdict == off->verdict &&
          p_on.seconds > 0 && p_off.seconds > 0) {
        ratios.push_back(p_on.seconds / p_off.seconds);
        extras.push_back(p_on.seconds - p_off.seconds);
      }
  if (ratios.empty()) return;
  const double before = median(ratios), extra = median(extras);
  if (!(c.ratio() > before * (1 + th.time_growth))) return;
  // The extra time determinism costs must have grown by more than noise, too.
  if ((c.on_s - c.off_s) - extra <= th.time_min_s) return;
  add(*on, "determinism_cost_grew",
      fmt::format("deterministic on takes {:.2f}x the time of off (median {:.2f}x over {})", c.ratio(), before,
                  audits_words(ratios.size())),
      th.timing_blocking);
}

}  // namespace

std::vector<Regression> find_regressions(const std::vector<CellResult>& now, const PastResults& past,
                                         const Thresholds& th) {
  std::vector<Regression> out;
  const Add add = [&](const CellResult& r, const char* kind, std::string message, bool blocking) {
    out.push_back({r.key, r.model, r.column, kind, std::move(message), blocking && r.expect != Expect::info});
  };
  Pasts history;
  for (const auto& r : now) history[r.key] = past(r.key);
  for (const auto& r : now) {
    if (!decided(r.verdict)) continue;
    const auto& earlier = history[r.key];
    if (earlier.empty() || !decided(earlier.front().verdict)) continue;
    verdict_regression(r, earlier.front(), th, add);
    time_regression(r, earlier, th, add);
  }
  for (const auto& c : determinism_costs(now, past)) cost_regression(c, now, history, th, add);
  return out;
}

std::vector<DeterminismCost> determinism_costs(const std::vector<CellResult>& now, const PastResults& past) {
  // Cells grouped by model and every setting but `deterministic`, in the cells' order.
  std::vector<std::string> order;
  std::map<std::string, std::map<std::string, const CellResult*>> groups;
  std::map<std::string, std::string> labels;
  for (const auto& r : now) {
    if (!decided(r.verdict)) continue;
    auto s = settings_of(r);
    std::string det = s.count("deterministic") ? s["deterministic"] : "off";
    s.erase("deterministic");
    std::string all;
    for (const auto& [k, v] : s) all += k + "=" + v + ",";
    std::string group = r.model + "|" + r.tolerance + "|" + all;
    if (!groups.count(group)) order.push_back(group);
    groups[group][det] = &r;
    // The label: the cell's matrix values but deterministic.
    std::string label;
    std::istringstream words(r.column);
    for (std::string w; words >> w;)
      if (w.rfind("deterministic=", 0) != 0 && w != "default") label += (label.empty() ? "" : " ") + w;
    labels[group] = label;
  }
  std::vector<DeterminismCost> out;
  for (const auto& group : order) {
    const auto& by = groups[group];
    auto on = by.find("on"), off = by.find("off");
    if (on == by.end() || off == by.end() || off->second->seconds <= 0) continue;
    DeterminismCost c;
    c.model = on->second->model;
    c.with = on->second->key;
    c.without = off->second->key;
    c.label = labels[group];
    c.on_s = on->second->seconds;
    c.off_s = off->second->seconds;
    auto p_on = past(c.with), p_off = past(c.without);
    if (!p_on.empty() && !p_off.empty() && p_off.front().seconds > 0 && p_on.front().seconds > 0)
      c.previous_s = std::make_pair(p_on.front().seconds, p_off.front().seconds);
    out.push_back(c);
  }
  return out;
}

int AuditView::broken() const {
  int n = 0;
  for (const auto& c : cells) n += !c.meets_expectation();
  return n;
}

int AuditView::blocking() const {
  int n = 0;
  for (const auto& r : regressions) n += r.blocking;
  return n;
}

int AuditView::exit_code() const {
  if (info.status == "interrupted") return to_int(ExitCode::interrupted);
  if (info.status == "incomplete") return to_int(ExitCode::run_failed);
  return broken() > 0 || blocking() > 0 ? 1 : 0;
}

AuditView make_view(const History& history, int64_t audit, const std::vector<std::string>& model_order) {
  AuditView v;
  v.info = history.audit(audit);
  v.cells = history.cells(audit);
  v.regressions = history.regressions(audit);
  v.costs = determinism_costs(v.cells, [&](const std::string& key) { return history.recent(key, audit, 1); });
  v.trend = history.trend(audit, 30);
  std::set<std::string> seen_models, seen_columns;
  for (const auto& m : model_order)
    if (seen_models.insert(m).second) v.models.push_back(m);
  for (const auto& c : v.cells) {
    if (seen_models.insert(c.model).second) v.models.push_back(c.model);
    if (seen_columns.insert(c.column).second) v.columns.push_back(c.column);
  }
  if (v.info.status == "interrupted")
    v.notes.push_back(
        fmt::format("the audit was interrupted: {} of {} cells finished", v.cells.size(), v.info.cells_planned));
  else if (v.info.status == "incomplete")
    v.notes.push_back(fmt::format("the audit is incomplete: shard(s) {} are missing from the merge; {} of {} cells ran",
                                  v.info.missing_shards, v.cells.size(), v.info.cells_total));
  else if (v.info.status == "unfinished")
    v.notes.push_back("the audit did not finish (its process ended without recording its end)");
  return v;
}

std::string utc_now() { return reprocheck::utc_now(); }

}  // namespace reprocheck::audit
