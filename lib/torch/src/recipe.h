// The TorchScript front end's training recipe: what a run feeds the model, what it trains on
// (its outputs, the loss, the targets), and one step's forward and loss under it. Not a public
// header.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/script.h>

#include <string>
#include <utility>
#include <vector>

#include "reprocheck/model.h"
#include "reprocheck/run_options.h"

namespace reprocheck::detail {

// The training recipe as the run uses it: inputs, targets, loss, outputs, optimizer.
struct Recipe {
  std::vector<TensorSpec> inputs;   // one per forward argument (training_step: its leading arguments)
  std::vector<TensorSpec> targets;  // empty: derived from the loss and the output
  std::string method;               // "training_step" or "loss" when the model's method gives the loss
  std::vector<std::pair<std::string, double>> weights;  // weighted outputs ("" key: the default output)
  at::ScalarType float_type = at::kFloat;
  std::string describe;  // the objective in words, for the report
};

// The outputs the loss trains on: (label, tensor, weight).
struct Selected {
  std::string label;
  at::Tensor tensor;
  double weight = 1;
};

// One step's forward and loss under the recipe.
struct StepResult {
  std::vector<std::pair<std::string, at::Tensor>> outputs;  // for the dump
  at::Tensor target;                                        // a derived target ("" when given or none)
  at::Tensor loss;
  std::vector<Selected> selected;
};

// Autocast for the forward and the loss, as torch.autocast(device_type, dtype) does it.
class AutocastGuard {
 public:
  AutocastGuard(const std::string& mode, const c10::Device& device) : on_(!mode.empty()), type_(device.type()) {
    if (!on_) return;
    was_enabled_ = at::autocast::is_autocast_enabled(type_);
    was_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, mode == "fp16" ? at::kHalf : at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, was_enabled_);
    at::autocast::set_autocast_dtype(type_, was_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool on_;
  c10::DeviceType type_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

// The options as the run will use them, from the flags, then the model's reprocheck.json, then
// the model's own methods. Throws UsageError or InputError before anything runs.
RunOptions resolve_recipe(const RunOptions& o, const ModelMeta& meta, const torch::jit::Module& module, Recipe* recipe);

// One tensor drawn from a spec: uniform integers in [low, high), bools, uniform floats in
// [low, high), or standard normal floats.
at::Tensor draw(const TensorSpec& s, at::Generator& gen, const c10::Device& device);

StepResult forward_and_loss(torch::jit::Module& module, const RunOptions& o, const Recipe& recipe,
                            const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& targets,
                            at::Generator& data_gen, const c10::Device& device, const ModelMeta& meta,
                            int64_t* ignored_outputs);

// Backward of the loss; a deterministic-algorithms refusal is one InputError naming the op.
void run_backward(const at::Tensor& loss, torch::jit::Module& module, const RunOptions& o, const c10::Device& device,
                  int step);

// Everything about the recipe that can fail, found before the first step: the methods' arguments,
// one forward and loss on inputs drawn from their own generator, without gradients, the buffers
// (batch-norm statistics) put back afterwards, before the model's RNG is seeded. Returns the
// objective in words.
std::string preflight(torch::jit::Module& module, const RunOptions& o, const Recipe& recipe, const c10::Device& device,
                      const ModelMeta& meta);

}  // namespace reprocheck::detail
