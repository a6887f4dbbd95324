// The commands of the TorchScript front end as the `reprocheck` command runs them. This binary
// does not link LibTorch (loading it and its CUDA libraries costs about half a second per process):
// `record`, `info` and `--version` are run by `reprocheck-torch`, next to this executable, and the
// check's runs are `reprocheck-torch record` processes.
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cli.h"
#include "commands.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/model_file.h"
#include "reprocheck/subprocess.h"
#include "reprocheck/version.h"

namespace reprocheck::cli {

namespace {

std::string torch_executable() {
  std::string self = self_executable();
  return files::parent_dir(self) + "/reprocheck-torch";
}

bool have_torch() { return access(torch_executable().c_str(), X_OK) == 0; }

[[noreturn]] void needs_torch(const char* what) {
  throw UsageError(
      fmt::format("{} needs LibTorch, and this reprocheck was built without it "
                  "(REPROCHECK_TORCH=OFF, no reprocheck-torch next to it); build it with LibTorch, or "
                  "use 'reprocheck diff' and 'reprocheck run'",
                  what));
}

// Replaces this process with `reprocheck-torch COMMAND ARGS...`: its output, exit code and signals
// are the command's own.
[[noreturn]] void exec_torch(const char* what, const std::string& command, const std::vector<std::string>& args) {
  if (!have_torch()) needs_torch(what);
  const std::string exe = torch_executable();
  std::vector<std::string> all{exe, command};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  execv(exe.c_str(), argv.data());
  throw RunError(fmt::format("cannot start '{}': {}", exe, std::strerror(errno)));
}

}  // namespace

int cmd_record(const std::vector<std::string>& args) { exec_torch("'reprocheck record'", "record", args); }
int cmd_info(const std::vector<std::string>& args) { exec_torch("'reprocheck info'", "info", args); }

int cmd_version() {
  if (have_torch()) exec_torch("--version", "--version", {});
  fmt::print("reprocheck {}\nLibTorch   none (built with REPROCHECK_TORCH=OFF)\nHDF5       {}\n", kVersion,
             hdf5_version());
  return to_int(ExitCode::ok);
}

int cmd_check(const std::vector<std::string>& args) {
  CLI::App app(
      "Run the seeded training N times in fresh processes, compare the runs in execution order, and "
      "name the first divergent tensor",
      "reprocheck");
  OptionFlags flags(app, kCheckCommand, /*model=*/true);
  if (int code = parse(app, args); code >= 0) return code;
  Settings& s = flags.finish();
  settle(s, flags.given());
  if (!have_torch()) needs_torch("running a model");
  // Fail fast on a file that is not a model, or a library that is not there; the runs load them and
  // relay any other error as one line.
  check_model_file(s.run.model);
  for (const auto& lib : s.run.libraries)
    if (!files::is_regular(lib))
      throw InputError(fmt::format("cannot load library '{}': no such file; pass the path of a shared library", lib));
  return run_and_report(s, flags.given(), std::make_shared<RecordLauncher>(torch_executable()), args);
}

}  // namespace reprocheck::cli
