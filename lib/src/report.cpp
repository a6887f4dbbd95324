#include "reprocheck/report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/hints.h"

namespace reprocheck {

namespace {

std::string model_name(const Comparison& c) {
  return c.ref_attributes.count("model") ? c.ref_attributes.at("model") : "?";
}

// "step 0 · backward · features.3 (Conv2d) grad of output", "step 0 · param_grad · features.0.weight (Conv2d)"
std::string describe(const TensorMeta& m) {
  std::string where = m.tensor_name();
  if (!m.layer_type.empty() && m.kind != "input" && m.kind != "target" && m.kind != "loss" && m.kind != "output")
    where += fmt::format(" ({})", short_type_name(m.layer_type));
  if (m.kind == "activation") where += " output";
  if (m.kind == "grad") where += " grad of output";
  if (m.kind == "target") where = "target";
  std::string step = m.step < 0 ? "before step 0" : fmt::format("step {}", m.step);
  std::string call = m.call > 0 ? fmt::format(" (call {})", m.call + 1) : "";
  return fmt::format("{} · {} · {}{}", step, m.phase, where, call);
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

struct CascadeRow {
  int step;
  std::string phase;
  int64_t count = 0;
  double max_abs = 0;
};

// Divergent tensors after the first, grouped by (step, phase), in order of first appearance.
std::vector<CascadeRow> cascade(const PairComparison& p) {
  std::vector<CascadeRow> rows;
  std::map<std::pair<int, std::string>, size_t> at;
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

}  // namespace

std::string render_text(const Comparison& c, const ReportOptions& o) {
  auto paint = [&](const std::string& s, const char* code) {
    return o.color ? fmt::format("\033[{}m{}\033[0m", code, s) : s;
  };
  std::string out;
  out += fmt::format("{}: {} runs of {} step(s), {} tensors each, tolerance {}\n", model_name(c), c.runs.size(),
                     steps_of(c), group_digits(c.tensors), c.tolerance.describe());
  for (const auto& p : c.pairs)
    if (!p.knob_diffs.empty()) out += fmt::format("run {} differs from run 0 in: {}\n", p.other_run, knobs(p));
  for (const auto& n : c.notes) out += fmt::format("note: {}\n", n);
  const PairComparison* h = c.headline();
  if (!h) {
    int64_t close = 0;
    for (const auto& p : c.pairs) close += p.close;
    std::string how = close ? fmt::format("{} within tolerance, the rest bitwise identical", group_digits(close))
                            : "all bitwise identical";
    out += fmt::format("\n{} (every tensor matches across {} runs: {})\n", paint("verdict: REPRODUCIBLE", "1;32"),
                       c.runs.size(), how);
    return out;
  }
  const TensorDiff& d = h->diffs[*h->first];
  out += fmt::format("\n{}  {}\n", paint("first divergence", "1;31"), describe(d.ref));
  out += fmt::format("  {}\n", provenance_tag(d));
  out += fmt::format("  run {} vs run 0   ", h->other_run);
  if (d.status == Status::values_differ) {
    const auto& s = d.stats;
    out += fmt::format("{} of {} elements differ ({:.3g}%)\n", group_digits(s.mismatched), group_digits(s.numel),
                       100.0 * static_cast<double>(s.mismatched) / static_cast<double>(std::max<int64_t>(s.numel, 1)));
    if (s.max_abs_index >= 0)
      out += fmt::format("  max abs diff     {:.4g} at {}: {} ({}) vs {} ({})\n", s.max_abs,
                         unravel_index(s.max_abs_index, d.ref.shape), value(s.a_at_max),
                         bits_hex(s.a_bits, d.ref.dtype), value(s.b_at_max), bits_hex(s.b_bits, d.ref.dtype));
    out += fmt::format("  max rel diff     {:<12.4g} mean abs {:<12.4g} rms {:.4g}\n", s.max_rel, s.mean_abs, s.rms);
    out += fmt::format("  max ulp          {:<12} cosine   {:.9f}\n", s.max_ulp, s.cosine);
    if (s.nan_mismatch || s.inf_mismatch || s.signed_zeros)
      out += fmt::format("  nan mismatches   {:<12} inf mismatches {:<6} signed zeros {}\n", s.nan_mismatch,
                         s.inf_mismatch, s.signed_zeros);
    out += fmt::format("  first mismatch   {}\n", unravel_index(s.first_index, d.ref.shape));
  } else {
    out += fmt::format("{}: {}\n", to_string(d.status), d.detail);
  }
  auto hints = explain(c);
  for (size_t i = 0; i < hints.size(); ++i) {
    const auto& x = hints[i];
    out += fmt::format("\n{}  {}\n", paint(i == 0 ? "likely cause" : "also possible", "1"), x.title);
    out += fmt::format("  evidence   {}\n", x.evidence);
    if (x.fix_python != "-") out += fmt::format("  fix        {}\n", x.fix_python);
    out += fmt::format("  test it    reprocheck ... {}\n", x.fix_flag);
  }
  for (const auto& p : c.pairs) {
    auto rows = cascade(p);
    int64_t after = 0;
    for (const auto& r : rows) after += r.count;
    if (&p != h && p.first) {
      out += fmt::format("\nrun {} vs run 0: first divergence {}\n", p.other_run, describe(p.diffs[*p.first].ref));
    } else if (&p != h) {
      out += fmt::format("\nrun {} vs run 0: identical\n", p.other_run);
      continue;
    }
    out += fmt::format("\nafter it  {} more divergent tensor(s) of {} compared (run {} vs run 0)\n",
                       group_digits(after), group_digits(p.compared), p.other_run);
    if (!rows.empty()) out += fmt::format("  {:<14} {:<11} {:>7}   {}\n", "step", "phase", "tensors", "max abs diff");
    for (size_t i = 0; i < rows.size() && i < o.max_cascade; ++i)
      out += fmt::format("  {:<14} {:<11} {:>7}   {:.3g}\n",
                         rows[i].step < 0 ? "before step 0" : fmt::format("step {}", rows[i].step), rows[i].phase,
                         rows[i].count, rows[i].max_abs);
    if (rows.size() > o.max_cascade) out += fmt::format("  ... {} more groups\n", rows.size() - o.max_cascade);
  }
  out += fmt::format("\n{} (run {} differs from run 0, first at {})\n", paint("verdict: DIVERGENT", "1;31"),
                     h->other_run, describe(d.ref));
  return out;
}

namespace {

nlohmann::json stats_json(const TensorDiff& d) {
  const auto& s = d.stats;
  auto nd = [&](int64_t flat) {
    nlohmann::json a = nlohmann::json::array();
    if (flat < 0) return nlohmann::json(nullptr);
    std::vector<int64_t> idx(d.ref.shape.size());
    for (size_t i = d.ref.shape.size(); i-- > 0;) {
      int64_t dim = std::max<int64_t>(d.ref.shape[i], 1);
      idx[i] = flat % dim;
      flat /= dim;
    }
    return nlohmann::json(idx);
  };
  return {{"numel", s.numel},
          {"mismatched", s.mismatched},
          {"max_abs", s.max_abs},
          {"max_abs_index", s.max_abs_index < 0 ? nlohmann::json(nullptr) : nlohmann::json(s.max_abs_index)},
          {"max_abs_index_nd", nd(s.max_abs_index)},
          {"a_at_max", s.a_at_max},
          {"b_at_max", s.b_at_max},
          {"a_bits", bits_hex(s.a_bits, d.ref.dtype)},
          {"b_bits", bits_hex(s.b_bits, d.ref.dtype)},
          {"max_rel", s.max_rel},
          {"mean_abs", s.mean_abs},
          {"rms", s.rms},
          {"max_ulp", s.max_ulp},
          {"cosine", s.cosine},
          {"nan_mismatch", s.nan_mismatch},
          {"inf_mismatch", s.inf_mismatch},
          {"signed_zeros", s.signed_zeros},
          {"first_index", s.first_index < 0 ? nlohmann::json(nullptr) : nlohmann::json(s.first_index)},
          {"first_index_nd", nd(s.first_index)}};
}

nlohmann::json tensor_json(const TensorDiff& d, int run) {
  nlohmann::json j = {{"run", run},
                      {"order", d.ref.order},
                      {"step", d.ref.step},
                      {"phase", d.ref.phase},
                      {"layer", d.ref.layer},
                      {"layer_type", d.ref.layer_type},
                      {"kind", d.ref.kind},
                      {"name", d.ref.name},
                      {"call", d.ref.call},
                      {"tensor", d.ref.tensor_name()},
                      {"dtype", d.ref.dtype},
                      {"shape", d.ref.shape},
                      {"status", to_string(d.status)},
                      {"detail", d.detail}};
  j["inputs_identical"] = d.inputs_identical ? nlohmann::json(*d.inputs_identical) : nlohmann::json(nullptr);
  j["inputs_basis"] = d.inputs_basis.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.inputs_basis);
  return j;
}

}  // namespace

std::string render_isolation_text(const Isolation& iso, const ReportOptions& o) {
  auto paint = [&](const std::string& s, const char* code) {
    return o.color ? fmt::format("\033[{}m{}\033[0m", code, s) : s;
  };
  std::string out = fmt::format("\n{}  {} independent source(s) in step {}, in execution order:\n",
                                paint("isolation", "1"), iso.sources.size(), iso.step);
  for (size_t i = 0; i < iso.sources.size(); ++i) {
    const auto& d = iso.sources[i];
    out += fmt::format("  {}. {}  ({}; max abs diff {:.3g})\n", i + 1, describe(d.ref), provenance_tag(d),
                       d.stats.max_abs);
  }
  if (iso.agreed)
    out += fmt::format("  with these replayed from run 0, the runs agree through step {}\n", iso.step);
  else
    out += fmt::format("  stopped: {}\n", iso.note);
  return out;
}

namespace {

nlohmann::json isolation_json(const Isolation& iso);

}  // namespace

std::string render_json(const Comparison& c, const Isolation* isolation) {
  nlohmann::json j;
  j["schema"] = "reprocheck-report/1";
  j["verdict"] = c.divergent() ? "divergent" : "reproducible";
  j["model"] = model_name(c);
  j["tolerance"] = c.tolerance.describe();
  j["tensors"] = c.tensors;
  j["notes"] = c.notes;
  nlohmann::json runs = nlohmann::json::array();
  for (size_t i = 0; i < c.runs.size(); ++i) runs.push_back({{"index", i}, {"dump", c.runs[i]}});
  j["runs"] = runs;
  j["first_divergence"] = nullptr;
  if (const auto* h = c.headline()) {
    const auto& d = h->diffs[*h->first];
    auto fd = tensor_json(d, h->other_run);
    fd["stats"] = stats_json(d);
    j["first_divergence"] = fd;
  }
  nlohmann::json pairs = nlohmann::json::array(), divergent = nlohmann::json::array();
  for (const auto& p : c.pairs) {
    nlohmann::json knobs = nlohmann::json::object();
    for (const auto& [k, v] : p.knob_diffs) knobs[k] = v;
    nlohmann::json cas = nlohmann::json::array();
    for (const auto& r : cascade(p))
      cas.push_back({{"step", r.step}, {"phase", r.phase}, {"count", r.count}, {"max_abs", r.max_abs}});
    pairs.push_back({{"run", p.other_run},
                     {"dump", p.other_path},
                     {"compared", p.compared},
                     {"identical", p.identical},
                     {"close", p.close},
                     {"divergent", p.divergent},
                     {"knob_diffs", knobs},
                     {"after_first", cas}});
    for (const auto& d : p.diffs) {
      if (!is_divergent(d.status)) continue;
      auto t = tensor_json(d, p.other_run);
      t["mismatched"] = d.stats.mismatched;
      t["numel"] = d.stats.numel ? d.stats.numel : d.ref.numel;
      t["max_abs"] = d.stats.max_abs;
      divergent.push_back(t);
    }
  }
  j["pairs"] = pairs;
  j["divergent_tensors"] = divergent;
  nlohmann::json hints = nlohmann::json::array();
  for (const auto& x : explain(c))
    hints.push_back({{"cause", x.cause},
                     {"title", x.title},
                     {"evidence", x.evidence},
                     {"fix_python", x.fix_python},
                     {"fix_flag", x.fix_flag}});
  j["hints"] = hints;
  if (isolation) j["isolation"] = isolation_json(*isolation);
  return j.dump(2) + "\n";
}

namespace {

nlohmann::json isolation_json(const Isolation& iso) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& d : iso.sources) {
    auto t = tensor_json(d, 0);
    t.erase("run");
    t["max_abs"] = d.stats.max_abs;
    sources.push_back(t);
  }
  return {{"step", iso.step},
          {"sources", sources},
          {"agreed", iso.agreed},
          {"note", iso.note.empty() ? nlohmann::json(nullptr) : nlohmann::json(iso.note)}};
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20 && ch != '\n' && ch != '\t') continue;  // not allowed in XML 1.0
        out += ch;
    }
  }
  return out;
}

// A tensor group: one layer's records of one phase, across steps and calls (or the input batch,
// the output, the loss).
std::string group_name(const TensorMeta& m) {
  if (m.layer.empty()) return fmt::format("{} {}", m.phase, m.kind);
  return fmt::format("{} {} ({})", m.phase, m.layer, short_type_name(m.layer_type));
}

}  // namespace

std::string render_junit(const Comparison& c) {
  // Groups in order of first appearance in the reference run.
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> failures;
  std::map<std::string, bool> seen;
  for (const auto& p : c.pairs) {
    for (const auto& d : p.diffs)
      if (is_divergent(d.status))
        failures[group_name(d.ref)].push_back(fmt::format(
            "run {} vs run 0: {}: {}", p.other_run, describe(d.ref),
            d.status == Status::values_differ ? fmt::format("{} of {} elements differ, max abs diff {:.4g}",
                                                            d.stats.mismatched, d.stats.numel, d.stats.max_abs)
                                              : fmt::format("{} ({})", to_string(d.status), d.detail)));
  }
  DumpReader ref(c.runs[0]);
  for (const auto& m : ref.index()) {
    auto g = group_name(m);
    if (!seen[g]) {
      seen[g] = true;
      order.push_back(g);
    }
  }
  for (const auto& [g, f] : failures)
    if (!seen[g]) order.push_back(g);
  size_t nfail = 0;
  for (const auto& g : order) nfail += failures.count(g) ? 1 : 0;
  std::string suite = fmt::format("reprocheck {}", model_name(c));
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out +=
      fmt::format("<testsuites name=\"reprocheck\" tests=\"{}\" failures=\"{}\" errors=\"0\">\n", order.size(), nfail);
  out += fmt::format("  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\">\n",
                     xml_escape(suite), order.size(), nfail);
  out += fmt::format(
      "    <properties>\n      <property name=\"tolerance\" value=\"{}\"/>\n      <property name=\"runs\" "
      "value=\"{}\"/>\n    </properties>\n",
      xml_escape(c.tolerance.describe()), c.runs.size());
  for (const auto& g : order) {
    out += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"0\"", xml_escape(suite), xml_escape(g));
    auto it = failures.find(g);
    if (it == failures.end()) {
      out += "/>\n";
      continue;
    }
    out += fmt::format(">\n      <failure type=\"divergence\" message=\"{}\">{}</failure>\n    </testcase>\n",
                       xml_escape(it->second.front()), xml_escape(fmt::format("{}", fmt::join(it->second, "\n"))));
  }
  out += "  </testsuite>\n</testsuites>\n";
  return out;
}

std::string render_markdown(const Comparison& c, const ReportOptions& o, const Isolation* iso) {
  std::string out;
  const PairComparison* h = c.headline();
  out += fmt::format("### reprocheck: {}\n\n", h ? "**divergent**" : "**reproducible**");
  out += fmt::format("Model `{}` · {} runs of {} step(s) · {} tensors per run · tolerance {}\n\n", model_name(c),
                     c.runs.size(), steps_of(c), group_digits(c.tensors), c.tolerance.describe());
  for (const auto& p : c.pairs)
    if (!p.knob_diffs.empty()) out += fmt::format("Run {} differs from run 0 in: {}\n\n", p.other_run, knobs(p));
  for (const auto& n : c.notes) out += fmt::format("Note: {}\n\n", n);
  if (!h) {
    out += "Every tensor matches across all runs.\n";
    return out;
  }
  const auto& d = h->diffs[*h->first];
  out += fmt::format("**First divergence:** {} ({})\n\n", describe(d.ref), provenance_tag(d));
  for (const auto& x : explain(c))
    out += fmt::format("**Likely cause:** {}. {}.{} Test it with `{}`.\n\n", x.title, x.evidence,
                       x.fix_python == "-" ? "" : fmt::format(" Fix: `{}`.", x.fix_python), x.fix_flag);
  if (d.status == Status::values_differ) {
    const auto& s = d.stats;
    out += "| statistic | value |\n|---|---|\n";
    out += fmt::format("| mismatched elements | {} of {} |\n", group_digits(s.mismatched), group_digits(s.numel));
    out += fmt::format("| max abs diff | {:.4g} at {}: `{}` vs `{}` |\n", s.max_abs,
                       unravel_index(s.max_abs_index, d.ref.shape), value(s.a_at_max), value(s.b_at_max));
    out +=
        fmt::format("| max rel diff | {:.4g} |\n| mean abs / rms | {:.4g} / {:.4g} |\n", s.max_rel, s.mean_abs, s.rms);
    out += fmt::format("| max ulp | {} |\n| cosine | {:.9f} |\n", s.max_ulp, s.cosine);
    out += fmt::format("| first mismatch | {} |\n\n", unravel_index(s.first_index, d.ref.shape));
  } else {
    out += fmt::format("`{}`: {}\n\n", to_string(d.status), d.detail);
  }
  if (iso) {
    out += fmt::format("**Independent sources in step {}:**\n\n", iso->step);
    for (size_t i = 0; i < iso->sources.size(); ++i)
      out += fmt::format("{}. {} ({})\n", i + 1, describe(iso->sources[i].ref), provenance_tag(iso->sources[i]));
    out += iso->agreed ? fmt::format("\nWith these replayed, the runs agree through step {}.\n\n", iso->step)
                       : fmt::format("\nStopped: {}.\n\n", iso->note);
  }
  auto rows = cascade(*h);
  if (!rows.empty()) {
    out +=
        "<details><summary>Divergent tensors after it</summary>\n\n| step | phase | tensors | max abs diff "
        "|\n|---|---|---:|---:|\n";
    for (size_t i = 0; i < rows.size() && i < o.max_cascade * 4; ++i)
      out += fmt::format("| {} | {} | {} | {:.3g} |\n", rows[i].step, rows[i].phase, rows[i].count, rows[i].max_abs);
    out += "\n</details>\n";
  }
  return out;
}

void write_report_file(const std::string& path, const std::string& text) {
  std::string dir = files::parent_dir(path);
  if (!files::is_directory(dir))
    throw InputError(fmt::format("cannot write report '{}': folder '{}' does not exist; create it first", path, dir));
  if (files::is_directory(path)) throw InputError(fmt::format("cannot write report '{}': it is a directory", path));
  std::string tmp = fmt::format("{}/.{}.tmp-{}", dir, files::base_name(path), getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    if (!f.flush())
      throw InputError(
          fmt::format("cannot write report '{}': {}; check that the folder is writable", path, std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw InputError(fmt::format("cannot write report '{}': {}", path, std::strerror(errno)));
  }
}

}  // namespace reprocheck
