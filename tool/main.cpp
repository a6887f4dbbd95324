// The reprocheck command: parses flags, calls the library, prints, and maps results to exit codes.
// Nothing else in the project prints to the terminal or exits.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "reprocheck/error.h"
#include "reprocheck/model.h"
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

int cmd_version() {
  auto b = rc::build_info();
  fmt::print("reprocheck {}\nLibTorch   {}\nCUDA       {} ({})\ncuDNN      {}\nHDF5       {}\n", b.reprocheck, b.libtorch,
             b.cuda, b.cuda_available ? fmt::format("available, {} device(s)", b.cuda_devices) : "not available", b.cudnn,
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
  throw rc::UsageError(fmt::format("unknown command '{}'; run 'reprocheck --help' for the commands", cmd));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return dispatch(argc, argv);
  } catch (const rc::Error& e) {
    fmt::print(stderr, "reprocheck: error: {}\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    fmt::print(stderr, "reprocheck: error: internal error: {}; please report it\n", rc::first_line(e.what()));
    return 3;
  }
}
