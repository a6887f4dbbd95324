#include "report_common.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace reprocheck {

Report make_report(Comparison comparison, std::optional<Isolation> isolation) {
  Report r;
  r.hints = explain(comparison);
  r.comparison = std::move(comparison);
  r.isolation = std::move(isolation);
  return r;
}

namespace report_detail {

std::string model_name(const Comparison& c) {
  return c.ref_attributes.count("model") ? c.ref_attributes.at("model") : "?";
}

std::string describe(const TensorMeta& m) {
  std::string where = m.tensor_name();
  if (!m.layer_type.empty() && !m.is_loop_tensor())
    where += fmt::format(" ({})", short_type_name(m.layer_type));
  if (m.kind == Kind::activation) where += " output";
  if (m.kind == Kind::grad) where += " grad of output";
  std::string step = m.step < 0 ? "before step 0" : fmt::format("step {}", m.step);
  std::string call = m.call > 0 ? fmt::format(" (call {})", m.call + 1) : "";
  return fmt::format("{} · {} · {}{}", step, to_string(m.phase), where, call);
}

std::string provenance_tag(const TensorDiff& d) {
  if (!d.inputs_identical) return "origin unknown";
  if (*d.inputs_identical)
    return d.inputs_basis == "input_hash" ? "source: its inputs were identical"
                                          : "source: everything recorded before it matched";
  return d.inputs_basis == "input_hash" ? "inherited: its inputs already differed"
                                        : "inherited: an earlier tensor already differed";
}

std::string group_digits(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

std::string bits_hex(uint64_t bits, const std::string& dtype) {
  int width = static_cast<int>(dtype_size(dtype)) * 2;
  return fmt::format("0x{:0{}x}", bits, width);
}

std::string value(double v) { return fmt::format("{:.9g}", v); }

std::vector<CascadeRow> cascade(const PairComparison& p) {
  std::vector<CascadeRow> rows;
  std::map<std::pair<int, Phase>, size_t> at;
  for (size_t i = 0; i < p.diffs.size(); ++i) {
    const auto& d = p.diffs[i];
    if (!is_divergent(d.status) || (p.first && i == *p.first)) continue;
    auto key = std::make_pair(d.ref.step, d.ref.phase);
    auto it = at.find(key);
    if (it == at.end()) {
      it = at.emplace(key, rows.size()).first;
      rows.push_back({d.ref.step, d.ref.phase});
    }
    rows[it->second].count++;
    rows[it->second].max_abs = std::max(rows[it->second].max_abs, d.stats.max_abs);
  }
  return rows;
}

std::string knobs(const PairComparison& p) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : p.knob_diffs) parts.push_back(fmt::format("{} ({})", k, v));
  return fmt::format("{}", fmt::join(parts, ", "));
}

std::string steps_of(const Comparison& c) {
  return c.ref_attributes.count("steps") ? c.ref_attributes.at("steps") : "?";
}

std::string cosine_text(double cosine) {
  return std::isnan(cosine) ? "n/a (no finite pair)" : fmt::format("{:.9f}", cosine);
}

std::string data_sentence(const TensorDiff& d) {
  if (d.status != Status::values_differ) return "";
  auto list = [](const std::vector<int64_t>& v) {
    const size_t shown = std::min<size_t>(v.size(), 12);
    return fmt::format("[{}{}]", fmt::join(v.begin(), v.begin() + static_cast<long>(shown), ", "),
                       v.size() > shown ? ", ..." : "");
  };
  if (d.ref.kind == Kind::rng_state) {
    std::string name = d.ref.name == "numpy"    ? "numpy global RNG"
                       : d.ref.name == "random" ? "Python random RNG"
                                                : d.ref.name + " RNG";
    return fmt::format("{} state differed at the start of step {}", name, d.ref.step);
  }
  if (d.ref.kind == Kind::indices) {
    std::string out = fmt::format("batch {} of the DataLoader: {} of {} samples differ", d.ref.call,
                                  group_digits(d.stats.mismatched), group_digits(d.stats.numel));
    if (!d.ref_values.empty()) out += fmt::format(" (indices {} vs {})", list(d.ref_values), list(d.other_values));
    return out;
  }
  return "";
}

}  // namespace report_detail
}  // namespace reprocheck
