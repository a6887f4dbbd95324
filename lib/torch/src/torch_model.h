// LibTorch-facing part of the model loader, shared by the LibTorch translation units of the
// library. Not a public header: it includes LibTorch.
#pragma once

#include <torch/script.h>

#include <string>

#include "reprocheck/model.h"

namespace reprocheck::detail {

// Checks that `path` is a TorchScript archive and loads it onto `device`, reading the embedded
// reprocheck.json into `meta` when present. Throws InputError.
torch::jit::Module load_module(const std::string& path, const c10::Device& device, ModelMeta* meta);

// The modules of `module` in pre-order (root first, path ""), with demangled types.
std::vector<ModuleInfo> describe_modules(const torch::jit::Module& module);

std::string model_signature(const torch::jit::Module& module);

// "[4, 3, 32, 32]"
std::string shape_string(c10::IntArrayRef shape);

}  // namespace reprocheck::detail
