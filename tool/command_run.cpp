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
  OptionFlags flags(app, kRunCommand, /*model=*/false);
  if (int code = parse(app, own); code >= 0) return code;
  if (command.empty()) throw UsageError("run needs the command after '--', e.g. reprocheck run -- python train.py");
  Settings& s = flags.finish();
  // The script names the run in reports: the first argument ending in .py, else the command.
  auto script = std::find_if(command.begin(), command.end(), [](const std::string& a) {
    return a.size() > 3 && a.compare(a.size() - 3, 3, ".py") == 0;
  });
  s.run.model = script != command.end() ? *script : command[0];
  s.run.command = command;
  validate(s.run);
  settle(s, flags.given());
#ifdef REPROCHECK_WHEEL_TORCH
  // An installed wheel: the capture package is in the environment that holds this reprocheck.
  const std::string hint =
      "pip install the reprocheck wheel into the Python that runs the script (the one on PATH runs 'python')";
#else
  const std::string hint = fmt::format(
      "{0}/.venv/bin/python -m pip install {0}/python (or pip install "
      "{0}/python into the Python that runs the script)",
      REPROCHECK_SOURCE_DIR);
#endif
  return run_and_report(s, flags.given(), std::make_shared<ScriptLauncher>(hint), args);
}

}  // namespace reprocheck::cli
