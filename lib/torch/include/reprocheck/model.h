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
// The model's embedded reprocheck.json (docs/recipe.md): its inputs, targets, loss and output.
struct ModelMeta {
  std::optional<std::vector<int64_t>> input_shape;  // one float input (the original key)
  std::optional<std::string> dtype;                 // "float32", ...
  std::optional<std::string> loss;                  // a --loss value
  std::vector<std::string> inputs;                  // TensorSpec texts (run_options.h), one per input
  std::vector<std::string> targets;                 // TensorSpec texts
  std::optional<std::string> output;                // a tuple index or a dict key
  std::optional<std::string> output_weights;        // as --output-weights
  std::optional<double> label_smoothing;
  std::optional<std::string> optimizer;
};

struct ModelSummary {
  std::string path;
  std::vector<ModuleInfo> modules;  // pre-order, root first
  ModelMeta meta;
  std::string signature;  // hex hash of module paths, types and parameter shapes (not values)
  int64_t total_params = 0;
  std::vector<std::string> methods;  // "forward(x: Tensor, y: Tensor) -> Tensor", training_step, loss
};

// Loads a custom-op library (like torch.ops.load_library). Throws InputError.
void load_library(const std::string& path);

// Loads the model on the CPU and describes it. Throws InputError for a missing, unreadable or
// non-TorchScript file, naming torch.save checkpoints as such.
ModelSummary inspect_model(const std::string& path);

// "__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d" -> "torch.nn.modules.conv.Conv2d".
std::string demangle_type_name(const std::string& qualified);

}  // namespace reprocheck
