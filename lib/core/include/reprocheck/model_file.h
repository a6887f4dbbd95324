// What can be told about a TorchScript model file without LibTorch: that it exists, is a regular
// readable file, and is a zip archive rather than a pickled checkpoint. The front end checks this
// before any run starts; the runs load the model and check the rest.
#pragma once

#include <string>

namespace reprocheck {

inline constexpr const char* kExportHint =
    "export it with torch.jit.script(model).save(path) (or torch.jit.trace) and pass that file";

// Why `path` cannot be a TorchScript archive, or "" when it may be one.
std::string model_file_problem(const std::string& path);

// Throws InputError ("cannot load model 'PATH': WHY") when model_file_problem finds one.
void check_model_file(const std::string& path);

}  // namespace reprocheck
