// The reprocheck command: parses flags, calls the library, prints, and maps results to exit codes.
// Nothing else in the project prints to the terminal or exits.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/model.h"
#include "reprocheck/report.h"
#include "reprocheck/run.h"
#include "reprocheck/runner.h"
#include "reprocheck/version.h"

namespace rc = reprocheck;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;

std::string group_digits(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

constexpr const char* kOverview = R"(reprocheck: proves whether a PyTorch model's training is reproducible.

usage:
  reprocheck MODEL.pt [options]         run the seeded training N times in fresh processes, compare,
                                        and name the first divergent tensor
  reprocheck diff A.h5 B.h5 [C.h5...]   compare existing dumps (the first is the reference)
  reprocheck record MODEL.pt -o RUN.h5  one seeded training run, every captured tensor dumped to HDF5
  reprocheck info MODEL.pt              list the model's modules with path, type and parameters
  reprocheck --version                  versions of reprocheck, LibTorch, CUDA, cuDNN and HDF5

Run 'reprocheck COMMAND --help' for the options of a command.
Exit codes: 0 reproducible, 1 divergence found, 2 usage or input error, 3 a run failed, 130 interrupted.
)";

// Parses `args` into `app`. Returns -1 to go on, else the exit code: 0 after --help, 2 for a bad
// command line (one line on stderr).
int parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
    return -1;
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "reprocheck: error: {}; run '{} --help' for usage\n", rc::first_line(e.what()), app.get_name());
    return kExitUsage;
  }
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> dims;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',' || c == 'x' || c == ' ') {
      if (cur.empty()) continue;
      try {
        dims.push_back(std::stoll(cur));
      } catch (const std::exception&) {
        throw rc::UsageError(fmt::format("bad --input-shape '{}': expected dimensions such as 4,3,32,32", text));
      }
      cur.clear();
    } else if (c == '[' || c == ']') {
      continue;
    } else {
      cur += c;
    }
  }
  if (dims.empty())
    throw rc::UsageError(fmt::format("bad --input-shape '{}': expected dimensions such as 4,3,32,32", text));
  return dims;
}

// The options every command that runs a model shares (record, and the runner's workers).
struct RunFlags {
  rc::RunOptions o;
  std::string input_shape;
  CLI::Option* deterministic_ = nullptr;
  void add_to(CLI::App& app) {
    // A flag given twice takes its last value, so that a script's defaults can be overridden.
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_option("model", o.model, "TorchScript model file (.pt)")->required();
    app.add_option("--steps", o.steps, "training steps")->capture_default_str();
    app.add_option("--seed", o.seed, "seed of the model's RNG (init, dropout): N, or 'random'")->capture_default_str();
    app.add_option("--data-seed", o.data_seed, "seed of the input batches and targets: N, or 'random'")
        ->capture_default_str();
    deterministic_ = app.add_option("--deterministic", o.deterministic,
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
    app.add_option("--dtype", o.dtype, "float32, float64, float16 or bfloat16 (default: reprocheck.json, float32)");
    app.add_option("--loss", o.loss, "mse, cross_entropy or sum (default: reprocheck.json, mse)");
    app.add_option("--lr", o.lr, "SGD learning rate")->capture_default_str();
    app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
    app.add_option("--load-library", o.libraries, "shared library with custom ops the model uses (repeatable)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    app.add_option("--layers", o.layers, rc::layer_categories_help())->capture_default_str();
    app.add_flag("--ops", o.ops, "also tap every aten op of the forward graphs (finer localization)");
  }
  const rc::RunOptions& finish() {
    if (!input_shape.empty()) o.input_shape = parse_shape(input_shape);
    // "--deterministic" alone means on.
    if (deterministic_->count() > 0) {
      const auto& r = deterministic_->results();
      if (r.empty() || r.back().empty() || r.back() == "true") o.deterministic = "on";
    }
    rc::validate(o);
    return o;
  }
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.1f} {}", b, units[u]);
}

void on_sigint(int) { rc::request_interrupt(); }

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C ends the process at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int cmd_record(const std::vector<std::string>& args) {
  CLI::App app("Run seeded training steps once and dump every captured tensor to HDF5", "reprocheck record");
  RunFlags flags;
  std::string out;
  bool force = false, plain = false;
  flags.add_to(app);
  app.add_option("-o,--output", out, "dump file to write (HDF5)");
  app.add_flag("--force", force, "overwrite the output if it exists");
  app.add_flag("--plain", plain, "run the same steps without capture and without a dump (for timing)");
  std::string replay, replay_keys;
  app.add_option("--replay", replay, "reference dump whose values replace the tensors named by --replay-keys");
  app.add_option("--replay-keys", replay_keys, "file of tensor keys to replay, one per line (used by --isolate)");
  if (int rc = parse(app, args); rc >= 0) return rc;
  if (out.empty() && !plain) throw rc::UsageError("record needs -o RUN.h5 (or --plain for a run without a dump)");
  if (!out.empty() && plain) throw rc::UsageError("--plain writes no dump: drop -o or --plain");
  const auto& o = flags.finish();
  install_interrupt_handler();
  rc::RecordTarget target{out, force, !plain};
  if (!replay_keys.empty()) {
    std::ifstream in(replay_keys);
    if (!in) throw rc::InputError(fmt::format("cannot read --replay-keys '{}'; check the path", replay_keys));
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) target.replay_keys.push_back(line);
    target.replay_dump = replay;
  }
  auto r = rc::record_run(o, target);
  if (plain) {
    fmt::print("ran {} step(s) of {} without capture in {:.3f} s (seed {}, {})\n", o.steps, o.model, r.seconds, r.seed,
               r.device);
  } else {
    fmt::print("wrote {}: {} tensors, {}, {} step(s) in {:.3f} s (seed {}, data seed {}, {})\n", out, r.tensors,
               human_bytes(static_cast<double>(r.bytes)), o.steps, r.seconds, r.seed, r.data_seed, r.device);
  }
  return kExitOk;
}

constexpr int kExitDivergent = 1;

// Options shared by the commands that compare (check and diff).
struct CompareFlags {
  double atol = -1, rtol = -1;
  std::string tolerance = "bitwise";
  std::string json, junit, markdown;
  void add_to(CLI::App& app) {
    app.add_option("--atol", atol, "absolute tolerance: |a-b| <= atol + rtol*|a| (default: bitwise)");
    app.add_option("--rtol", rtol, "relative tolerance (see --atol)");
    app.add_option("--tolerance", tolerance, "bitwise, or torch (per-dtype presets of torch.testing)")
        ->capture_default_str();
    app.add_option("--json", json, "write the report as JSON (docs/report-json.md)");
    app.add_option("--junit", junit, "write a JUnit XML report (one test case per tensor group)");
    app.add_option("--markdown", markdown, "write a Markdown summary (for a CI step summary)");
  }
  rc::Tolerance tol() const {
    if (tolerance != "bitwise" && tolerance != "torch")
      throw rc::UsageError(fmt::format("bad value '{}' for --tolerance: expected bitwise or torch", tolerance));
    if (atol >= 0 || rtol >= 0) {
      if (tolerance == "torch")
        throw rc::UsageError("--tolerance torch and --atol/--rtol exclude each other: pick one");
      return rc::Tolerance::fixed(std::max(atol, 0.0), std::max(rtol, 0.0));
    }
    return tolerance == "torch" ? rc::Tolerance::torch_presets() : rc::Tolerance{};
  }
  bool explicit_tolerance(const CLI::App& app) const {
    return app.count("--atol") + app.count("--rtol") + app.count("--tolerance") > 0;
  }
  // Prints the text report, writes the requested files, returns the exit code.
  int report(const rc::Comparison& c, const rc::Isolation* iso = nullptr) const {
    rc::ReportOptions ro;
    ro.color = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
    if (!json.empty()) rc::write_report_file(json, rc::render_json(c, iso));
    if (!junit.empty()) rc::write_report_file(junit, rc::render_junit(c));
    if (!markdown.empty()) rc::write_report_file(markdown, rc::render_markdown(c, ro, iso));
    std::string text = rc::render_text(c, ro);
    if (iso) {
      // The isolation section goes before the verdict, the report's last line.
      auto at = text.rfind("\n", text.size() - 2);
      text.insert(at == std::string::npos ? 0 : at, rc::render_isolation_text(*iso, ro));
    }
    fmt::print("{}", text);
    return c.divergent() ? kExitDivergent : kExitOk;
  }
};

int cmd_diff(const std::vector<std::string>& args) {
  CLI::App app("Compare existing dumps in execution order; the first is the reference", "reprocheck diff");
  std::vector<std::string> dumps;
  CompareFlags cf;
  app.add_option("dumps", dumps, "dumps written by 'reprocheck record' (two or more)")->required();
  cf.add_to(app);
  if (int rc = parse(app, args); rc >= 0) return rc;
  if (dumps.size() < 2) throw rc::UsageError("diff needs at least two dumps: the reference and one to compare");
  rc::CompareOptions co;
  co.tolerance = cf.tol();
  co.tolerance_explicit = cf.explicit_tolerance(app);
  return cf.report(rc::compare_dumps(dumps, co));
}

// Progress of the workers on stderr: one updating line on a terminal, plain lines otherwise.
class Progress {
 public:
  Progress() : tty_(isatty(STDERR_FILENO) != 0) {}
  ~Progress() { clear(); }
  void operator()(const rc::WorkerEvent& e) {
    std::string label = e.label.empty() ? "" : fmt::format(" ({})", e.label);
    switch (e.kind) {
      case rc::WorkerEvent::Kind::started:
        if (!tty_) fmt::print(stderr, "run {}/{}{}: started\n", e.index + 1, e.runs, label);
        break;
      case rc::WorkerEvent::Kind::tick:
        if (tty_) {
          fmt::print(stderr, "\r\033[Krun {}/{}{}: running, {:.1f} s", e.index + 1, e.runs, label, e.seconds);
          shown_ = true;
        }
        break;
      case rc::WorkerEvent::Kind::finished:
        clear();
        fmt::print(stderr, "run {}/{}{}: recorded {} in {:.2f} s\n", e.index + 1, e.runs, label,
                   human_bytes(static_cast<double>(e.dump_bytes)), e.seconds);
        for (const auto& m : e.messages) fmt::print(stderr, "  {}\n", m);
        break;
    }
    std::fflush(stderr);
  }

 private:
  void clear() {
    if (tty_ && shown_) fmt::print(stderr, "\r\033[K");
    shown_ = false;
  }
  bool tty_;
  bool shown_ = false;
};

int cmd_check(const std::vector<std::string>& args) {
  CLI::App app(
      "Run the seeded training N times in fresh processes, compare the runs in execution order, and "
      "name the first divergent tensor",
      "reprocheck");
  RunFlags flags;
  CompareFlags cf;
  rc::RunnerOptions ro;
  std::string vary;
  flags.add_to(app);
  app.add_option("--runs", ro.runs, "number of runs (workers)")->capture_default_str();
  app.add_option("--jobs", ro.jobs, "runs at a time")->capture_default_str();
  app.add_option("--timeout", ro.timeout_s, "seconds a run may take before it is killed (0: no limit)")
      ->capture_default_str();
  app.add_option("--keep", ro.keep_dir, "keep the dumps in this folder (run-0.h5, run-1.h5, ...)");
  app.add_flag("--force", ro.overwrite, "overwrite dumps already in the --keep folder");
  bool isolate = false;
  app.add_flag("--isolate", isolate,
               "find every independent source in the step of the first divergence: replay each source found "
               "in the other runs and run them again, until the runs agree");
  app.add_option("--vary", vary,
                 "run with different values of one knob, one run each: KNOB=V1,V2,... (threads, "
                 "device, deterministic, benchmark, seed, data-seed, mode)");
  cf.add_to(app);
  if (int rc = parse(app, args); rc >= 0) return rc;
  ro.run = flags.finish();
  auto tol = cf.tol();
  if (!vary.empty()) {
    bool runs_given = app.count("--runs") > 0;
    rc::parse_vary(vary, ro);
    if (runs_given && ro.runs != static_cast<int>(ro.vary_values.size()))
      throw rc::UsageError(
          fmt::format("--runs {} and --vary with {} values disagree: drop --runs", ro.runs, ro.vary_values.size()));
  }
  // Fail fast on a model the workers could not load.
  for (const auto& lib : ro.run.libraries) rc::load_library(lib);
  rc::inspect_model(ro.run.model);
  install_interrupt_handler();
  rc::Runner runner(ro);
  std::vector<std::string> dumps;
  {
    Progress progress;
    dumps = runner.run([&](const rc::WorkerEvent& e) { progress(e); });
  }
  rc::CompareOptions co;
  co.tolerance = tol;
  co.tolerance_explicit = cf.explicit_tolerance(app);
  auto cmp = rc::compare_dumps(dumps, co);
  std::optional<rc::Isolation> iso;
  if (isolate && cmp.divergent()) {
    Progress progress;
    iso = rc::isolate(runner, dumps, cmp, co, [&](const rc::WorkerEvent& e) { progress(e); });
  }
  if (!ro.keep_dir.empty()) {
    auto kept = runner.keep();
    cmp.runs = kept;
    for (size_t i = 0; i < cmp.pairs.size(); ++i) {
      cmp.pairs[i].ref_path = kept[0];
      cmp.pairs[i].other_path = kept[i + 1];
    }
  }
  return cf.report(cmp, iso ? &*iso : nullptr);
}

int cmd_version() {
  auto b = rc::build_info();
  fmt::print("reprocheck {}\nLibTorch   {}\nCUDA       {} ({})\ncuDNN      {}\nHDF5       {}\n", b.reprocheck,
             b.libtorch, b.cuda,
             b.cuda_available ? fmt::format("available, {} device(s)", b.cuda_devices) : "not available", b.cudnn,
             b.hdf5);
  return kExitOk;
}

int cmd_info(const std::vector<std::string>& args) {
  CLI::App app("List a TorchScript model's modules with path, type and parameter count", "reprocheck info");
  std::string model;
  std::vector<std::string> libraries;
  app.add_option("model", model, "TorchScript model file (.pt)")->required();
  app.add_option("--load-library", libraries, "shared library with custom ops the model uses (repeatable)");
  if (int rc = parse(app, args); rc >= 0) return rc;
  for (const auto& lib : libraries) rc::load_library(lib);
  auto s = rc::inspect_model(model);
  fmt::print("model      {}\n", s.path);
  fmt::print("signature  {}\n", s.signature);
  fmt::print("parameters {}\n", group_digits(s.total_params));
  if (s.meta.input_shape)
    fmt::print("input      [{}] {}, loss {} (from reprocheck.json)\n", fmt::join(*s.meta.input_shape, ", "),
               s.meta.dtype.value_or("float32"), s.meta.loss.value_or("mse"));
  else
    fmt::print("input      unknown (no reprocheck.json in the archive; pass --input-shape when running)\n");
  size_t wpath = 4, wtype = 4;
  for (const auto& m : s.modules) {
    wpath = std::max(wpath, m.path.empty() ? 7 : m.path.size());
    wtype = std::max(wtype, m.type.size());
  }
  fmt::print("\n{:<{}}  {:<{}}  {:>10}  {}\n", "PATH", wpath, "TYPE", wtype, "PARAMS", "");
  for (const auto& m : s.modules)
    fmt::print("{:<{}}  {:<{}}  {:>10}  {}\n", m.path.empty() ? "<model>" : m.path, wpath, m.type, wtype,
               group_digits(m.params), m.shares_type ? "shared type" : "");
  return kExitOk;
}

int dispatch(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    fmt::print("{}", kOverview);
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] == "--version" || args[0] == "version") return cmd_version();
  std::string cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "info") return cmd_info(rest);
  if (cmd == "record") return cmd_record(rest);
  if (cmd == "diff") return cmd_diff(rest);
  // Anything else that is not a flag is the model of the main command.
  if (cmd.rfind("-", 0) != 0 &&
      (cmd.find('.') != std::string::npos || cmd.find('/') != std::string::npos || rc::files::exists(cmd)))
    return cmd_check(args);
  throw rc::UsageError(fmt::format("unknown command '{}'; run 'reprocheck --help' for the commands", cmd));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return dispatch(argc, argv);
  } catch (const rc::Error& e) {
    fmt::print(stderr, "reprocheck: error: {}\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    fmt::print(
        stderr,
        "reprocheck: error: out of memory; use a smaller --input-shape, fewer --steps, or a narrower --layers\n");
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "reprocheck: error: internal error: {}; please report it\n", rc::first_line(e.what()));
    return 3;
  }
}
