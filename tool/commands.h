// The commands that need the TorchScript front end (commands_torch.cpp); without LibTorch
// (REPROCHECK_TORCH=OFF) they say so (commands_no_torch.cpp).
#pragma once

#include <string>
#include <vector>

namespace reprocheck::cli {

int cmd_check(const std::vector<std::string>& args);   // reprocheck MODEL.pt
int cmd_record(const std::vector<std::string>& args);  // reprocheck record
int cmd_info(const std::vector<std::string>& args);    // reprocheck info
int cmd_version();                                     // reprocheck --version
int cmd_run(const std::vector<std::string>& args);     // reprocheck run -- COMMAND (command_run.cpp)
int cmd_audit(const std::vector<std::string>& args);   // reprocheck audit (command_audit.cpp)

}  // namespace reprocheck::cli
