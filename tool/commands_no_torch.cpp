// A reprocheck built without LibTorch (REPROCHECK_TORCH=OFF): diff works, the commands that run a
// model say why they cannot.
#include <fmt/format.h>

#include "commands.h"
#include "reprocheck/error.h"
#include "reprocheck/version.h"

namespace reprocheck::cli {

namespace {

[[noreturn]] void needs_torch(const char* what) {
  throw UsageError(fmt::format("{} needs LibTorch, and this reprocheck was built without it "
                               "(REPROCHECK_TORCH=OFF); build it with LibTorch, or use 'reprocheck diff'",
                               what));
}

}  // namespace

int cmd_check(const std::vector<std::string>&) { needs_torch("running a model"); }
int cmd_record(const std::vector<std::string>&) { needs_torch("'reprocheck record'"); }
int cmd_info(const std::vector<std::string>&) { needs_torch("'reprocheck info'"); }

int cmd_version() {
  fmt::print("reprocheck {}\nLibTorch   none (built with REPROCHECK_TORCH=OFF)\nHDF5       {}\n", kVersion,
             hdf5_version());
  return to_int(ExitCode::ok);
}

}  // namespace reprocheck::cli
