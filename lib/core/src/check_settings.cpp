#include "reprocheck/check_settings.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "reprocheck/error.h"
#include "reprocheck/files.h"

namespace reprocheck {

namespace {

void check_golden(const std::string& baseline) {
  if (!files::exists(baseline))
    throw InputError(
        fmt::format("--baseline '{}': no such golden dump; record one with --save-baseline {}", baseline, baseline));
  if (files::is_directory(baseline))
    throw InputError(fmt::format(
        "--baseline '{}' is a folder; pass the golden dump file (a .h5 written by --save-baseline)", baseline));
  if (!files::is_regular(baseline))
    throw InputError(
        fmt::format("--baseline '{}' is not a regular file (a device or a pipe); pass the golden dump file", baseline));
}

}  // namespace

void settle(Settings& s, const Given& given) {
  CheckSettings& c = s.check;
  if (!c.baseline.empty() && !c.save_baseline.empty())
    throw UsageError("--baseline compares with a golden and --save-baseline records one: pick one");
  if (c.isolate && c.capture == "hashes") throw UsageError("--isolate needs full dumps: drop --hashes-only");
  if (!c.baseline.empty()) {
    if (!c.vary.empty()) throw UsageError("--baseline and --vary exclude each other: a golden is one setting");
    if (c.isolate) throw UsageError("--isolate compares runs with each other: drop --baseline to use it");
    if (!given.runs) c.runs = 1;  // fresh runs against the golden
    check_golden(c.baseline);
  }
  if (!c.save_baseline.empty()) {
    if (!c.vary.empty() || c.isolate || !c.keep.empty())
      throw UsageError("--save-baseline records one run: drop --vary, --isolate and --keep");
    files::check_writable(c.save_baseline, "--save-baseline golden");
    if (files::exists(c.save_baseline) && !c.force)
      throw InputError(
          fmt::format("--save-baseline '{}' already exists; pass --force to replace the golden, or choose another name",
                      c.save_baseline));
  }
  // --keep keeps whole dumps, and --isolate replays tensors from them: one full pass.
  if ((!c.keep.empty() || c.isolate) && c.capture != "hashes") c.capture = "full";
  if (c.atol || c.rtol) {
    if (c.tolerance == "torch") throw UsageError("--tolerance torch and --atol/--rtol exclude each other: pick one");
  }
  if (!c.vary.empty() && !s.run.command.empty()) {
    // A training script sets its own seeds, device and mode: only the knobs `run` has flags for.
    const std::string knob = c.vary.substr(0, c.vary.find('='));
    const OptionDef* def = find_flag("--" + knob, kCheckCommand);
    if (def && def->takes(kVaryKnob) && !def->takes(kRunCommand)) {
      std::vector<std::string> knobs;
      for (const auto& name : knob_names()) {
        const OptionDef* k = find_flag("--" + name, kRunCommand);
        if (name.rfind("env:", 0) == 0 || (k && k->takes(kVaryKnob))) knobs.push_back(name);
      }
      throw UsageError(fmt::format("--vary {}: a training script sets its own {}; knobs for scripts: {}", knob, knob,
                                   fmt::join(knobs, ", ")));
    }
  }
  if (!c.vary.empty() && given.runs) {
    const Vary vary = parse_vary(c.vary, s.run);
    if (c.runs != static_cast<int>(vary.values.size()))
      throw UsageError(
          fmt::format("--runs {} and --vary with {} values disagree: drop --runs", c.runs, vary.values.size()));
  }
}

RunnerOptions runner_options(const Settings& s) {
  RunnerOptions o;
  o.run = s.run;
  o.runs = s.check.runs;
  o.jobs = s.check.jobs;
  o.timeout_s = s.check.timeout;
  o.keep_dir = s.check.keep;
  o.overwrite = s.check.force;
  o.min_runs = s.check.baseline.empty() && s.check.save_baseline.empty() ? 2 : 1;
  if (!s.check.vary.empty()) o.vary = parse_vary(s.check.vary, s.run);
  return o;
}

CheckOptions check_options(const Settings& s) {
  CheckOptions o;
  o.full = s.check.capture == "full";
  o.hashes_only = s.check.capture == "hashes";
  o.baseline = s.check.baseline;
  o.keep = !s.check.keep.empty();
  o.drill = s.check.drill;
  return o;
}

CompareOptions compare_options(const Settings& s, const Given& given) {
  CompareOptions co;
  const CheckSettings& c = s.check;
  if (c.atol || c.rtol)
    co.tolerance = Tolerance::fixed(c.atol.value_or(0), c.rtol.value_or(0));
  else if (c.tolerance == "torch")
    co.tolerance = Tolerance::torch_presets();
  co.tolerance_explicit = given.tolerance;
  return co;
}

}  // namespace reprocheck
