// reprocheck run -- COMMAND: the Python front end. The user's own training script runs N times,
// each in a fresh process with the capture package switched on through the environment.
#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "cli.h"
#include "commands.h"
#include "reprocheck/error.h"
#include "reprocheck/layers.h"

namespace reprocheck::cli {

int cmd_run(const std::vector<std::string>& args) {
  auto dash = std::find(args.begin(), args.end(), "--");
  std::vector<std::string> own(args.begin(), dash);
  std::vector<std::string> command(dash == args.end() ? dash : dash + 1, args.end());
  CLI::App app(
      "Run your own training script N times, each in a fresh process with capture on, compare the runs in "
      "execution order, and name the first divergent tensor",
      "reprocheck run [options] -- COMMAND [ARGS...]");
  RunOptions run;
  RunnerFlags runner_flags;
  CompareFlags compare_flags;
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--steps", run.steps, "optimizer steps to record; the script ends after them")->capture_default_str();
  app.add_option("--layers", run.layers, layer_selection_help())->capture_default_str();
  app.add_flag("--ops", run.ops, "also tap every torch function call inside the model's forward");
  app.add_option("--threads", run.threads, "intra-op threads (torch.set_num_threads before the script runs)");
  CLI::Option* deterministic =
      app.add_option("--deterministic", run.deterministic,
                     "torch.use_deterministic_algorithms and cudnn.deterministic before the script runs: on (the "
                     "flag alone), off, or warn")
          ->expected(0, 1);
  app.add_flag("--benchmark", run.benchmark, "cudnn.benchmark = True before the script runs");
  std::vector<std::string> env;
  app.add_option("--env", env, "NAME=VALUE set for every run (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  runner_flags.add_to(app);
  compare_flags.add_to(app);
  if (int code = parse(app, own); code >= 0) return code;
  if (command.empty()) throw UsageError("run needs the command after '--', e.g. reprocheck run -- python train.py");
  if (deterministic->count() > 0) {
    const auto& r = deterministic->results();
    run.deterministic = r.empty() || r.back().empty() ? "on" : normalize_deterministic(r.back());
  }
  // The script names the run in reports: the first argument ending in .py, else the command.
  auto script = std::find_if(command.begin(), command.end(), [](const std::string& a) {
    return a.size() > 3 && a.compare(a.size() - 3, 3, ".py") == 0;
  });
  run.model = script != command.end() ? *script : command[0];
  run.command = command;
  run.env = env;
  validate(run);
  runner_flags.finish(app, run);
  compare_flags.compare_options(app);
  const std::string hint = fmt::format(
      "{0}/.venv/bin/python -m pip install {0}/python (or pip install "
      "{0}/python into the Python that runs the script)",
      REPROCHECK_SOURCE_DIR);
  return run_and_report(runner_flags, std::make_shared<ScriptLauncher>(hint), compare_flags, app);
}

}  // namespace reprocheck::cli
