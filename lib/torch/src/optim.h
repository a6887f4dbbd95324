// The TorchScript front end's optimizers (torch::optim SGD, Adam, AdamW), their state as the dump
// records it, and the gradient scaler of fp16 autocast. Not a public header.
#pragma once

#include <ATen/ATen.h>
#include <torch/optim/optimizer.h>
#include <torch/script.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "reprocheck/run_options.h"

namespace reprocheck::detail {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params, const RunOptions& o);

// The optimizer's state of one parameter, as the dump records it ("exp_avg", ...).
std::vector<std::pair<std::string, at::Tensor>> optimizer_state(torch::optim::Optimizer& optimizer,
                                                                const at::Tensor& p);

// A gradient scaler for fp16 autocast, as torch.amp.GradScaler does it: the loss is scaled before
// backward, the gradients unscaled before the step, and a step with an inf or NaN gradient is
// skipped with the scale halved; 2000 good steps double it.
struct GradScaler {
  double scale = 65536.0;
  int good_steps = 0;
  bool unscale_and_check(const std::vector<at::Tensor>& params) {
    bool finite = true;
    at::NoGradGuard no_grad;
    for (const auto& p : params)
      if (p.grad().defined()) {
        p.grad().mul_(1.0 / scale);
        finite &= at::isfinite(p.grad()).all().item<bool>();
      }
    if (!finite) {
      scale *= 0.5;
      good_steps = 0;
    } else if (++good_steps == 2000) {
      scale *= 2;
      good_steps = 0;
    }
    return finite;
  }
};

}  // namespace reprocheck::detail
