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

#ifdef REPROCHECK_WHEEL_TORCH
#define REPROCHECK_WHEEL_TORCH_OR_NONE REPROCHECK_WHEEL_TORCH
// An installed wheel: the worker loads LibTorch from the torch package beside reprocheck in
// site-packages (reprocheck/_bin/ -> ../../torch). Its release must be the build's (major.minor:
// the C++ ABI changes between minor releases); "" when it matches.
std::string torch_mismatch() {
  const std::string site = files::parent_dir(files::parent_dir(files::parent_dir(self_executable())));
  const std::string version_py = site + "/torch/version.py";
  const std::string want = REPROCHECK_WHEEL_TORCH;
  const std::string minor = want.substr(0, want.rfind('.'));
  const std::string text = files::read_text_or_empty(version_py);
  if (text.empty())
    return fmt::format(
        "checking a TorchScript model needs torch {0}, and {1} has no torch package: pip install 'torch=={0}.*' "
        "into this environment",
        minor, site);
  const std::string key = "__version__ = '";
  auto at = text.find(key);
  std::string have = at == std::string::npos ? "?" : text.substr(at + key.size());
  have = have.substr(0, have.find_first_of("'+"));
  if (have.rfind(minor + ".", 0) == 0) return "";
  return fmt::format(
      "this reprocheck was built against torch {0} and the installed torch is {1} ({2}/torch): pip install "
      "'torch=={0}.*', or a reprocheck wheel built for torch {3} ('reprocheck run' works with either)",
      minor, have, site, have.substr(0, have.rfind('.')));
}
#else
#define REPROCHECK_WHEEL_TORCH_OR_NONE "none"
std::string torch_mismatch() { return ""; }
#endif

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
  if (auto m = torch_mismatch(); !m.empty()) throw UsageError(m);
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
  const std::string mismatch = have_torch() ? torch_mismatch() : "";
  if (have_torch() && mismatch.empty()) exec_torch("--version", "--version", {});
  if (!mismatch.empty()) {
    fmt::print("reprocheck {}\nLibTorch   {} expected, not loaded: {}\nHDF5       {}\n", kVersion,
               REPROCHECK_WHEEL_TORCH_OR_NONE, mismatch, hdf5_version());
    return to_int(ExitCode::ok);
  }
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
  if (auto m = torch_mismatch(); !m.empty()) throw UsageError(m);
  // Fail fast on a file that is not a model, or a library that is not there; the runs load them and
  // relay any other error as one line.
  check_model_file(s.run.model);
  for (const auto& lib : s.run.libraries)
    if (!files::is_regular(lib))
      throw InputError(fmt::format("cannot load library '{}': no such file; pass the path of a shared library", lib));
  return run_and_report(s, flags.given(), std::make_shared<RecordLauncher>(torch_executable()), args);
}

}  // namespace reprocheck::cli
