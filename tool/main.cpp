// The reprocheck command: parses flags, calls the library, prints, and maps results to exit codes.
// Nothing else in the project prints to the terminal or exits.
#include <fmt/format.h>

#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/tensor_meta.h"

namespace rc = reprocheck;

namespace {

constexpr const char* kOverview = R"(reprocheck: proves whether a PyTorch model's training is reproducible.

usage:
  reprocheck MODEL.pt [options]         run the seeded training N times in fresh processes, compare,
                                        and name the first divergent tensor
  reprocheck run [options] -- COMMAND   run your own training script (python train.py) N times with
                                        capture, compare, and name the first divergent tensor
  reprocheck diff A.h5 B.h5 [C.h5...]   compare existing dumps (the first is the reference)
  reprocheck audit AUDIT.toml           run a matrix of checks (models x settings), keep a history in
                                        SQLite, and flag regressions against the previous audit
  reprocheck audit merge --db H S1 S2   merge the databases of an audit's shards (--shard I/N)
  reprocheck record MODEL.pt -o RUN.h5  one seeded training run, every captured tensor dumped to HDF5
  reprocheck info MODEL.pt              list the model's modules with path, type and parameters
  reprocheck --version                  versions of reprocheck, LibTorch, CUDA, cuDNN and HDF5

Run 'reprocheck COMMAND --help' for the options of a command.
Exit codes: 0 reproducible, 1 divergence found, 2 usage or input error, 3 a run failed, 130 interrupted.
)";

int cmd_diff(const std::vector<std::string>& args) {
  CLI::App app("Compare existing dumps in execution order; the first is the reference", "reprocheck diff");
  std::vector<std::string> dumps;
  app.add_option("dumps", dumps, "dumps written by 'reprocheck record' (two or more)")->required();
  rc::cli::OptionFlags flags(app, rc::kDiffCommand, /*model=*/false);
  if (int code = rc::cli::parse(app, args); code >= 0) return code;
  if (dumps.size() < 2) throw rc::UsageError("diff needs at least two dumps: the reference and one to compare");
  rc::Settings& s = flags.finish();
  rc::settle(s, flags.given());
  rc::cli::check_report_destinations(s.check);
  return rc::cli::report(s.check, rc::make_report(rc::compare_dumps(dumps, rc::compare_options(s, flags.given()))));
}

int dispatch(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    fmt::print("{}", kOverview);
    return rc::to_int(args.empty() ? rc::ExitCode::usage : rc::ExitCode::ok);
  }
  if (args[0] == "--version" || args[0] == "version") {
    if (args.size() > 1)
      throw rc::UsageError(fmt::format("{} takes no arguments, got '{}'; run 'reprocheck --version'", args[0],
                                       rc::sanitize_text(args[1])));
    return rc::cli::cmd_version();
  }
  std::string command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "info") return rc::cli::cmd_info(rest);
  if (command == "record") return rc::cli::cmd_record(rest);
  if (command == "diff") return cmd_diff(rest);
  if (command == "run") return rc::cli::cmd_run(rest);
  if (command == "audit") return rc::cli::cmd_audit(rest);
  // Anything else that is not a flag is the model of the main command.
  if (command.rfind("-", 0) != 0 &&
      (command.find('.') != std::string::npos || command.find('/') != std::string::npos || rc::files::exists(command)))
    return rc::cli::cmd_check(args);
  throw rc::UsageError(fmt::format("unknown command '{}'; run 'reprocheck --help' for the commands", command));
}

}  // namespace

int main(int argc, char** argv) {
  return rc::cli::guarded_main([&] { return dispatch(argc, argv); });
}
