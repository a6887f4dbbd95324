// Instrumenting a TorchScript module's graphs with tap ops. Not a public header.
//
// TorchScript modules have no forward hooks, so the forward graph of every module type that holds
// a selected instance is patched once after loading:
//   - every instance of a patched type gets an integer attribute `_reprocheck_id` (its index in
//     named_modules order; types are shared between identical instances, so the graph reads the id
//     to know which instance runs);
//   - `reprocheck::tap_in(Tensor[] inputs, int id)` is inserted at the top of the graph and
//     `reprocheck::tap_out(Tensor[] outputs, int id)` before the return; with --ops,
//     `reprocheck::tap_op(Tensor x, int id, int k)` after every aten op with a tensor output.
// The tap ops have no outputs and are declared with conservative alias analysis, so the JIT keeps
// them as side effects and nothing in the model's data flow changes.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "reprocheck/layers.h"
#include "reprocheck/model.h"
#include "reprocheck/run_options.h"

namespace reprocheck::detail {

// What a tap id stands for: a module instance, and for --ops the ops of its type's graph.
struct Site {
  std::string path, type, kind;
  bool layer = false;                 // selected for layer taps
  bool dropout = false;               // a dropout layer (its outputs count the random elements drawn)
  std::vector<std::string> op_names;  // for --ops: op k's name in this instance's type graph
  // For op taps: op k's source line ("model.py:42", "" when the graph has none), and the names of
  // the gradients its backward produces ("grad_input", "grad_weight", ...: its tensor arguments).
  std::vector<std::string> op_sources;
  std::vector<std::vector<std::string>> op_grad_names;
};

// What instrument() did, for the dump's attributes.
struct Instrumented {
  std::vector<Site> sites;  // indexed by instance id
  // With --ops, the ops whose outputs are uninitialized by contract (aten::empty and kin) are not
  // tapped; their number (per module type graph).
  int uninitialized_ops = 0;
  // With the default selection and no conv, dropout or batch-norm layer, every leaf layer is
  // tapped instead.
  bool leaf_fallback = false;
  LayerCategories categories;  // by what each module type's own forward calls
  std::vector<std::string> notes;
};

// Instruments `module` for the selection in `o` (o.layers, o.ops). A module is a conv, batch norm
// or dropout layer (and so on) when its own forward calls such an op: TorchScript flattens
// classes, so a subclass of nn.Conv2d is known by what it runs. Throws InputError for a selection
// that selects nothing, UsageError for an unknown selector.
Instrumented instrument(torch::jit::Module& module, const RunOptions& o, const std::vector<ModuleInfo>& mods);

// The category of each module type by the ops its own forward calls (its own methods inlined,
// submodules not), by qualified type.
LayerCategories categories_by_ops(const torch::jit::Module& module);

// Dropout and normalization ops whose training flag is a constant false in the graph: a model
// traced in eval mode, on which --mode train cannot act.
int frozen_training_ops(const torch::jit::Module& module);

// For LibTorch's "X does not have a deterministic implementation" errors: one line naming the op
// and the layer that runs it. "" for other errors.
std::string deterministic_error(const std::string& message, const torch::jit::Module& module,
                                const c10::Device& device);

}  // namespace reprocheck::detail
