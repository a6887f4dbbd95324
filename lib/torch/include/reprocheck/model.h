// Loading TorchScript models and describing their module tree, without exposing LibTorch types.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace reprocheck {

struct ModuleInfo {
  std::string path;          // "" for the root, else "layer1.0.conv1"
  std::string type;          // demangled qualified type, e.g. "torch.nn.modules.conv.Conv2d"
  std::string kind;          // last component of type, e.g. "Conv2d"
  int64_t params = 0;        // elements in this module's parameters, submodules included
  int64_t own_params = 0;    // elements in the parameters registered on this module itself
  bool shares_type = false;  // another instance in the model has the same TorchScript class type
};

// The example-input description a model may carry as the extra file "reprocheck.json".
struct ModelMeta {
  std::optional<std::vector<int64_t>> input_shape;
  std::optional<std::string> dtype;  // "float32", ...
  std::optional<std::string> loss;   // "mse", "cross_entropy", "sum"
};

struct ModelSummary {
  std::string path;
  std::vector<ModuleInfo> modules;  // pre-order, root first
  ModelMeta meta;
  std::string signature;  // hex hash of module paths, types and parameter shapes (not values)
  int64_t total_params = 0;
};

// Loads a custom-op library (like torch.ops.load_library). Throws InputError.
void load_library(const std::string& path);

// Loads the model on the CPU and describes it. Throws InputError for a missing, unreadable or
// non-TorchScript file, naming torch.save checkpoints as such.
ModelSummary inspect_model(const std::string& path);

// "__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d" -> "torch.nn.modules.conv.Conv2d".
std::string demangle_type_name(const std::string& qualified);

}  // namespace reprocheck
