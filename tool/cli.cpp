#include "cli.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/isolate.h"
#include "reprocheck/ladder.h"
#include "reprocheck/layers.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The app's flag closest to `word` ("--stpes" -> "--steps"), or "" when none is close.
std::string closest_flag(const CLI::App& app, const std::string& word) {
  std::string flag = word.substr(0, word.find('='));
  std::string best;
  size_t best_distance = 3;
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& name : o->get_lnames()) {
      const std::string candidate = "--" + name;
      size_t d = edit_distance(flag, candidate);
      if (d < best_distance) best_distance = d, best = candidate;
    }
  }
  return best;
}

// The one line for arguments the app did not expect: an unknown flag (with the closest one), or
// words that look like a command given to `run` without `--` before it.
std::string unexpected(const CLI::App& app, const std::vector<std::string>& extras) {
  const bool run = app.get_name().rfind("reprocheck run", 0) == 0;
  std::string words;
  for (const auto& w : extras) words += (words.empty() ? "" : " ") + sanitize_text(w);
  // `reprocheck run python train.py --epochs 2`: the command, not flags of reprocheck's.
  if (run && !extras.empty() && extras.front().rfind("-", 0) != 0)
    return fmt::format("put '--' before the command to run: reprocheck run [options] -- {}", words);
  for (const auto& word : extras)
    if (word.rfind("-", 0) == 0) {
      std::string near = closest_flag(app, word);
      return fmt::format("unknown flag '{}'{}", sanitize_text(word),
                         near.empty() ? "" : "; did you mean '" + near + "'?");
    }
  return fmt::format("unexpected argument(s) '{}'", words);
}

}  // namespace

int parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());
  const std::string name = app.get_name().substr(0, app.get_name().find(" ["));
  try {
    app.parse(args);
    return -1;
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return to_int(ExitCode::ok);
  } catch (const CLI::ExtrasError&) {
    fmt::print(stderr, "{}; run '{} --help' for usage\n", error_line(unexpected(app, app.remaining())), name);
    return to_int(ExitCode::usage);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}; run '{} --help' for usage\n", error_line(first_line(e.what())), name);
    return to_int(ExitCode::usage);
  }
}

void RunFlags::add_to(CLI::App& app) {
  RunOptions& o = options;
  // A flag given twice takes its last value, so that a script's defaults can be overridden.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("model", o.model, "TorchScript model file (.pt)")->required();
  app.add_option("--steps", o.steps, "training steps")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the model's RNG (init, dropout): N, or 'random'")->capture_default_str();
  app.add_option("--data-seed", o.data_seed, "seed of the input batches and targets: N, or 'random'")
      ->capture_default_str();
  deterministic = app.add_option("--deterministic", o.deterministic,
                                 "deterministic algorithms (cuDNN deterministic, use_deterministic_algorithms, "
                                 "CUBLAS_WORKSPACE_CONFIG): on (the flag alone), off (default), or warn "
                                 "(warn_only)")
                      ->expected(0, 1);
  app.add_flag("--benchmark", o.benchmark, "turn the cuDNN autotuner on (cudnn.benchmark = True)");
  app.add_option("--threads", o.threads, "intra-op threads (default: LibTorch's)");
  app.add_option("--device", o.device, "cpu, cuda, cuda:N or auto (cuda when available)")->capture_default_str();
  app.add_option("--mode", o.mode, "module mode: train or eval")->capture_default_str();
  app.add_option("--reinit", o.reinit, "re-initialize parameters with dim >= 2 under the seed: xavier_normal");
  app.add_option("--input-shape", input_shape, "input shape, e.g. 4,3,32,32 (default: the model's reprocheck.json)");
  app.add_option("--dtype", o.dtype,
                 "float32, float64, float16 or bfloat16: the model's floating parameters and buffers, and float inputs "
                 "(default: reprocheck.json, float32)");
  app.add_option("--input", o.inputs,
                 "one forward input: SHAPE[:DTYPE[:LOW..HIGH]], e.g. 4,20:int64:0..30522 (token ids below the "
                 "vocabulary size) or 4,3,32,32:float32; repeat it per input (default: reprocheck.json)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--target", o.targets,
                 "a target for the loss, in --input's form; repeat it per target (default: reprocheck.json, else drawn "
                 "to fit the loss and the output)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--loss", o.loss,
                 "mse, cross_entropy, nll, bce_with_logits, sum, or model: the model's training_step or loss method "
                 "(default: reprocheck.json, else the model's method, else mse)");
  app.add_option("--label-smoothing", o.label_smoothing,
                 "label smoothing of cross_entropy (default: reprocheck.json, 0)");
  app.add_option("--output", o.output,
                 "the output the loss trains on: N for a tuple, KEY for a dict (default: a tensor, "
                 "or a tuple's first)");
  app.add_option("--output-weights", o.output_weights,
                 "train on a weighted sum of the outputs' losses: 1,0.3,0.3 (tuple) or logits=1,aux=0.3 (dict), as "
                 "GoogLeNet's auxiliary heads are trained");
  app.add_option("--optimizer", o.optimizer, "sgd, adam or adamw (default: reprocheck.json, sgd)");
  app.add_option("--lr", o.lr, "learning rate")->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  app.add_flag("--nesterov", o.nesterov, "SGD with Nesterov momentum");
  app.add_option("--beta1", o.beta1, "Adam and AdamW beta1")->capture_default_str();
  app.add_option("--beta2", o.beta2, "Adam and AdamW beta2")->capture_default_str();
  app.add_option("--eps", o.eps, "Adam and AdamW epsilon")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "weight decay (default: 0, 0.01 for adamw)");
  app.add_option("--autocast", o.autocast,
                 "run forward and loss under autocast: bf16 (CPU, CUDA) or fp16 (CUDA, with a gradient scaler)");
  app.add_option("--load-library", o.libraries, "shared library with custom ops the model uses (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--layers", o.layers, layer_selection_help())->capture_default_str();
  app.add_flag("--ops", o.ops, "also tap every aten op of the forward graphs (finer localization)");
}

const RunOptions& RunFlags::finish() {
  if (!input_shape.empty()) {
    options.input_shape = parse_shape(input_shape, "--input-shape");
    if (options.input_shape.empty())
      throw UsageError(fmt::format("bad --input-shape '{}': expected dimensions such as 4,3,32,32", input_shape));
  }
  // "--deterministic" alone means on.
  if (deterministic->count() > 0) {
    const auto& r = deterministic->results();
    options.deterministic = r.empty() || r.back().empty() ? "on" : normalize_deterministic(r.back());
  }
  validate(options);
  return options;
}

void CompareFlags::add_to(CLI::App& app) {
  app.add_option("--atol", atol, "absolute tolerance: |a-b| <= atol + rtol*|a| (default: bitwise)");
  app.add_option("--rtol", rtol, "relative tolerance (see --atol)");
  app.add_option("--tolerance", tolerance, "bitwise, or torch (per-dtype presets of torch.testing)")
      ->capture_default_str();
  app.add_option("--json", json, "write the report as JSON (docs/report-json.md)");
  app.add_option("--junit", junit, "write a JUnit XML report (one test case per tensor group)");
  app.add_option("--markdown", markdown, "write a Markdown summary (for a CI step summary)");
  app.add_option("--html", html,
                 "write a self-contained HTML report: the verdict, the first divergence and a per-layer chart");
}

CompareOptions CompareFlags::compare_options(const CLI::App& app) const {
  if (tolerance != "bitwise" && tolerance != "torch")
    throw UsageError(fmt::format("bad value '{}' for --tolerance: expected bitwise or torch", tolerance));
  CompareOptions co;
  for (const char* flag : {"--atol", "--rtol"}) {
    double v = std::string(flag) == "--atol" ? atol : rtol;
    if (app.count(flag) > 0 && !(std::isfinite(v) && v >= 0))
      throw UsageError(fmt::format("bad value {} for {}: expected a tolerance of 0 or more", v, flag));
  }
  if (atol >= 0 || rtol >= 0) {
    if (tolerance == "torch") throw UsageError("--tolerance torch and --atol/--rtol exclude each other: pick one");
    co.tolerance = Tolerance::fixed(std::max(atol, 0.0), std::max(rtol, 0.0));
  } else if (tolerance == "torch") {
    co.tolerance = Tolerance::torch_presets();
  }
  co.tolerance_explicit = app.count("--atol") + app.count("--rtol") + app.count("--tolerance") > 0;
  return co;
}

void CompareFlags::check_destinations() const {
  for (const auto* path : {&json, &junit, &markdown, &html})
    if (!path->empty()) files::check_writable(*path, "report");
}

int CompareFlags::report(const Report& r) const {
  ReportOptions ro;
  ro.color = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
  // The verdict reaches the terminal first, even when a report file then cannot be written.
  fmt::print("{}", render_text(r, ro));
  std::fflush(stdout);
  if (!json.empty()) files::write_file_atomically(json, render_json(r), "report");
  if (!junit.empty()) files::write_file_atomically(junit, render_junit(r), "report");
  if (!markdown.empty()) files::write_file_atomically(markdown, render_markdown(r, ro), "report");
  if (!html.empty()) files::write_file_atomically(html, render_html(r), "report");
  return to_int(exit_code(r));
}

void RunnerFlags::add_to(CLI::App& app) {
  app.add_option("--runs", options.runs, "number of runs (workers)")->capture_default_str();
  app.add_option("--jobs", options.jobs, "runs at a time")->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "seconds a run may take before it is killed (0: no limit)")
      ->capture_default_str();
  app.add_option("--keep", options.keep_dir, "keep the dumps in this folder (run-0.h5, run-1.h5, ...)");
  app.add_flag("--force", options.overwrite, "overwrite dumps already in the --keep folder");
  app.add_flag("--isolate", isolate,
               "find every independent source in the step of the first divergence: replay each source found "
               "in the other runs and run them again, until the runs agree");
  app.add_flag("--full", full,
               "one pass with full dumps (default: hashes first, full capture only of the runs and steps that "
               "differ); --keep and --isolate imply it");
  app.add_flag("--hashes-only", hashes_only,
               "one pass of hashes only: the verdict and the first divergent tensor, no statistics");
  app.add_option("--baseline", baseline,
                 "golden dump (from --save-baseline or record): compare fresh runs with it; exit 1 when the "
                 "numerics changed");
  app.add_option("--save-baseline", save_baseline,
                 "record one run into this golden dump (hashes only unless --full) and stop; --force replaces it");
  app.add_option("--vary", vary,
                 fmt::format("run with different values of one knob, one run each: KNOB=V1,V2,... ({})", knob_list()));
}

void RunnerFlags::finish(const CLI::App& app, const RunOptions& run) {
  options.run = run;
  if (full && hashes_only) throw UsageError("--full and --hashes-only exclude each other: pick one");
  if (!baseline.empty() && !save_baseline.empty())
    throw UsageError("--baseline compares with a golden and --save-baseline records one: pick one");
  if (isolate && hashes_only) throw UsageError("--isolate needs full dumps: drop --hashes-only");
  if (!baseline.empty()) {
    if (!vary.empty()) throw UsageError("--baseline and --vary exclude each other: a golden is one setting");
    if (isolate) throw UsageError("--isolate compares runs with each other: drop --baseline to use it");
    if (app.count("--runs") == 0) options.runs = 1;  // fresh runs against the golden
    options.min_runs = 1;
    if (!files::exists(baseline))
      throw InputError(
          fmt::format("--baseline '{}': no such golden dump; record one with --save-baseline {}", baseline, baseline));
    if (files::is_directory(baseline))
      throw InputError(
          fmt::format("--baseline '{}' is a folder; pass the golden dump file (a .h5 written by "
                      "--save-baseline)",
                      baseline));
    if (!files::is_regular(baseline))
      throw InputError(
          fmt::format("--baseline '{}' is not a regular file (a device or a pipe); pass the golden dump "
                      "file",
                      baseline));
  }
  if (!save_baseline.empty()) {
    if (!vary.empty() || isolate || !options.keep_dir.empty())
      throw UsageError("--save-baseline records one run: drop --vary, --isolate and --keep");
    options.runs = 1;
    options.min_runs = 1;
    files::check_writable(save_baseline, "--save-baseline golden");
    if (files::exists(save_baseline) && !options.overwrite)
      throw InputError(
          fmt::format("--save-baseline '{}' already exists; pass --force to replace the golden, or "
                      "choose another name",
                      save_baseline));
  }
  // --keep keeps whole dumps, and --isolate replays tensors from them: one full pass.
  if ((!options.keep_dir.empty() || isolate) && !hashes_only) full = true;
  if (vary.empty()) return;
  options.vary = parse_vary(vary, run);
  if (app.count("--runs") > 0 && options.runs != static_cast<int>(options.vary.values.size()))
    throw UsageError(fmt::format("--runs {} and --vary with {} values disagree: drop --runs", options.runs,
                                 options.vary.values.size()));
}

int run_and_report(const RunnerFlags& runner_flags, std::shared_ptr<const WorkerLauncher> launcher,
                   const CompareFlags& compare_flags, const CLI::App& app) {
  const CompareOptions compare_options = compare_flags.compare_options(app);
  compare_flags.check_destinations();
  install_interrupt_handler();
  Runner runner(runner_flags.options, std::move(launcher));
  Progress progress;
  auto on_event = [&](const WorkerEvent& e) { progress(e); };
  if (!runner_flags.save_baseline.empty()) {
    const bool hashes = !runner_flags.full;
    auto dumps = runner.run(on_event, [hashes](RunOptions& r, int) { r.hashes_only = hashes; });
    files::copy_file_atomically(dumps[0], runner_flags.save_baseline, "--save-baseline golden",
                                !runner_flags.options.overwrite);
    struct stat st {};
    stat(runner_flags.save_baseline.c_str(), &st);
    fmt::print("wrote golden {} ({}, {}): compare with --baseline {}\n", runner_flags.save_baseline,
               hashes ? "hashes only" : "full", human_bytes(static_cast<double>(st.st_size)),
               runner_flags.save_baseline);
    return to_int(ExitCode::ok);
  }
  CheckOptions check;
  check.compare = compare_options;
  check.full = runner_flags.full;
  check.hashes_only = runner_flags.hashes_only;
  check.baseline = runner_flags.baseline;
  check.keep = !runner_flags.options.keep_dir.empty();
  CheckResult result = run_check(runner, check, on_event);
  const std::vector<std::string>& dumps = result.dumps;
  Comparison comparison = std::move(result.comparison);
  std::optional<Isolation> isolation;
  if (runner_flags.isolate && comparison.divergent())
    isolation = isolate(comparison, compare_options, [&](const std::vector<std::string>& keys) {
      return runner.rerun_with_replay(dumps[0], keys, on_event);
    });
  const int code = compare_flags.report(make_report(std::move(comparison), std::move(isolation)));
  if (result.keep_error.empty()) return code;
  // The verdict stands; the dumps the user asked to keep are not there.
  fmt::print(stderr, "{}\n", error_line(result.keep_error));
  return std::max(code, to_int(ExitCode::usage));
}

Progress::Progress() : tty_(isatty(STDERR_FILENO) != 0) {}
Progress::~Progress() { clear(); }

void Progress::operator()(const WorkerEvent& e) {
  std::string label = e.label.empty() ? "" : fmt::format(" ({})", e.label);
  switch (e.kind) {
    case WorkerEvent::Kind::started:
      if (!tty_) fmt::print(stderr, "run {}/{}{}: started\n", e.index + 1, e.runs, label);
      break;
    case WorkerEvent::Kind::tick:
      if (tty_) {
        fmt::print(stderr, "\r\033[Krun {}/{}{}: running, {:.1f} s", e.index + 1, e.runs, label, e.seconds);
        shown_ = true;
      }
      break;
    case WorkerEvent::Kind::finished:
      clear();
      fmt::print(stderr, "run {}/{}{}: recorded {} in {:.2f} s\n", e.index + 1, e.runs, label,
                 human_bytes(static_cast<double>(e.dump_bytes)), e.seconds);
      for (const auto& m : e.messages) fmt::print(stderr, "  {}\n", m);
      break;
  }
  std::fflush(stderr);
}

void Progress::clear() {
  if (tty_ && shown_) fmt::print(stderr, "\r\033[K");
  shown_ = false;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.1f} {}", b, units[u]);
}

std::string group_digits(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

namespace {
void on_signal(int) { request_interrupt(); }

int fail(const std::string& message, ExitCode code) {
  fmt::print(stderr, "{}\n", error_line(message));
  report_error_to_runner(message);
  return to_int(code);
}
}  // namespace

int guarded_main(const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    return fail(e.what(), e.exit_code());
  } catch (const std::bad_alloc&) {
    return fail("out of memory; use a smaller --input-shape, fewer --steps, or a narrower --layers",
                ExitCode::run_failed);
  } catch (const std::exception& e) {
    return fail(fmt::format("internal error: {}; please report it", first_line(e.what())), ExitCode::run_failed);
  }
}

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = 0;  // a second Ctrl-C repeats the request: cleanup still runs
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace reprocheck::cli
