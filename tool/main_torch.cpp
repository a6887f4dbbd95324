// reprocheck-torch: the commands that need LibTorch (record, info, --version). `reprocheck` hands
// them over to it, and the runs of a check are `reprocheck-torch record` processes; users call
// `reprocheck`.
#include <fmt/format.h>

#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "reprocheck/error.h"

namespace rc = reprocheck;

int main(int argc, char** argv) {
  return rc::cli::guarded_main([&] {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && (args[0] == "--version" || args[0] == "version")) return rc::cli::cmd_version();
    if (args.empty() || (args[0] != "record" && args[0] != "info"))
      throw rc::UsageError(
          "reprocheck-torch runs 'record', 'info' and '--version' for reprocheck; run "
          "'reprocheck --help'");
    std::vector<std::string> rest(args.begin() + 1, args.end());
    return args[0] == "record" ? rc::cli::cmd_record(rest) : rc::cli::cmd_info(rest);
  });
}
