#include "optim.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace reprocheck::detail {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params, const RunOptions& o) {
  if (o.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  if (o.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay));
}

std::vector<std::pair<std::string, at::Tensor>> optimizer_state(torch::optim::Optimizer& optimizer,
                                                                const at::Tensor& p) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto it = optimizer.state().find(p.unsafeGetTensorImpl());
  if (it == optimizer.state().end() || !it->second) return out;
  auto* state = it->second.get();
  if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(state)) {
    if (sgd->momentum_buffer().defined()) out.emplace_back("momentum_buffer", sgd->momentum_buffer());
  } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(state)) {
    out.emplace_back("step", at::scalar_tensor(adam->step(), at::TensorOptions().dtype(at::kLong)));
    out.emplace_back("exp_avg", adam->exp_avg());
    out.emplace_back("exp_avg_sq", adam->exp_avg_sq());
  } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(state)) {
    out.emplace_back("step", at::scalar_tensor(adamw->step(), at::TensorOptions().dtype(at::kLong)));
    out.emplace_back("exp_avg", adamw->exp_avg());
    out.emplace_back("exp_avg_sq", adamw->exp_avg_sq());
  }
  return out;
}

}  // namespace reprocheck::detail
