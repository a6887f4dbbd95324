// Recording one run: the seeded training loop of the TorchScript front end. Capture (graph
// patching, tap ops, the dump writer thread) lives in graph_patch.cpp and capture.cpp.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/optim/sgd.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>

#include "capture.h"
#include "graph_patch.h"
#include "provenance.h"
#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/record.h"
#include "torch_dtype.h"
#include "torch_errors.h"
#include "torch_model.h"

namespace reprocheck {

namespace {

using Clock = std::chrono::steady_clock;
using detail::Capture;

int64_t resolve_seed(const std::string& s) {
  if (s != "random") return std::stoll(s);
  std::random_device rd;
  return static_cast<int64_t>(((static_cast<uint64_t>(rd()) << 31) ^ rd()) & 0x7fffffffffffffffULL);
}

c10::Device resolve_device(const std::string& d) {
  if (d == "cpu") return c10::Device(c10::kCPU);
  bool available = torch::cuda::is_available();
  if (d == "auto") return available ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!available)
    throw UsageError(
        fmt::format("--device {}: CUDA is not available on this machine (no GPU or driver); use "
                    "--device cpu or auto",
                    d));
  c10::Device device(d);
  if (device.index() >= static_cast<int>(torch::cuda::device_count()))
    throw UsageError(fmt::format("--device {}: this machine has {} CUDA device(s)", d, torch::cuda::device_count()));
  return device.has_index() ? device : c10::Device(c10::kCUDA, 0);
}

void apply_knobs(const RunOptions& o) {
  auto& ctx = at::globalContext();
  bool deterministic = o.deterministic != "off";
  if (deterministic) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  ctx.setDeterministicCuDNN(deterministic);
  ctx.setBenchmarkCuDNN(o.benchmark);
  ctx.setDeterministicAlgorithms(deterministic, o.deterministic == "warn");
  if (o.threads > 0) at::set_num_threads(o.threads);
}

// The options as the run will use them: the input shape, dtype and loss from the model's
// reprocheck.json where the flags leave them open.
RunOptions resolve_recipe(const RunOptions& o, const ModelMeta& meta) {
  RunOptions r = o;
  if (r.input_shape.empty()) r.input_shape = meta.input_shape.value_or(std::vector<int64_t>{});
  if (r.input_shape.empty())
    throw InputError(
        fmt::format("model '{}' has no input shape: it carries no reprocheck.json; pass --input-shape "
                    "N,C,H,W (or embed one with torch.jit.save(m, path, _extra_files={{'reprocheck.json': "
                    "'{{\"input_shape\": [...]}}'}}))",
                    o.model));
  if (r.dtype.empty()) r.dtype = meta.dtype.value_or("float32");
  if (r.loss.empty()) r.loss = meta.loss.value_or("mse");
  // The model's reprocheck.json gets the checks a flag gets (throws UsageError).
  validate(r);
  if (o.input_shape.empty()) check_input_size(r.input_shape, r.dtype, "the model's reprocheck.json input_shape");
  return r;
}

// The model's output to train on: a tensor, or the first tensor of a tuple.
at::Tensor run_forward(torch::jit::Module& module, const at::Tensor& x, const RunOptions& o, const ModelMeta& meta,
                       const c10::Device& device, int64_t* ignored_outputs) {
  try {
    c10::IValue r = module.forward({x});
    if (r.isTuple() && !r.toTupleRef().elements().empty() && r.toTupleRef().elements()[0].isTensor()) {
      const auto& elements = r.toTupleRef().elements();
      *ignored_outputs = std::count_if(elements.begin() + 1, elements.end(), [](const c10::IValue& v) { return v.isTensor(); });
      return elements[0].toTensor();
    }
    if (r.isTensor()) return r.toTensor();
    throw InputError(
        fmt::format("model '{}' returns {}, not a tensor; reprocheck trains on a tensor output (or "
                    "the first tensor of a tuple)",
                    o.model, r.tagKind()));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string message = detail::torch_message(e);
    if (auto det = detail::deterministic_error(message, module, device); !det.empty()) throw InputError(det);
    std::string expected = meta.input_shape ? fmt::format("; the model's reprocheck.json gives input shape {}",
                                                          detail::shape_string(*meta.input_shape))
                                            : "; check --input-shape";
    throw InputError(fmt::format("forward of model '{}' failed on input {} {}: {}{}", o.model,
                                 detail::shape_string(o.input_shape), o.dtype,
                                 detail::torch_error_summary(message), expected));
  }
}

// A random target for the loss, drawn from the data generator (none for the sum loss).
at::Tensor make_target(const at::Tensor& out, const RunOptions& o, at::Generator& data_gen,
                       const c10::Device& device) {
  if (o.loss == "cross_entropy") {
    if (out.dim() < 2)
      throw InputError(
          fmt::format("--loss cross_entropy needs a model output of shape [N, C, ...], model '{}' "
                      "returns {}; pass --loss mse or --loss sum",
                      o.model, detail::shape_string(out.sizes())));
    std::vector<int64_t> shape(out.sizes().begin(), out.sizes().end());
    shape.erase(shape.begin() + 1);
    return at::randint(0, out.size(1), shape, data_gen, at::TensorOptions().dtype(at::kLong)).to(device);
  }
  if (o.loss == "mse") return at::randn(out.sizes(), data_gen, at::TensorOptions().dtype(out.scalar_type())).to(device);
  return {};
}

at::Tensor compute_loss(const at::Tensor& out, const at::Tensor& target, const RunOptions& o) {
  if (o.loss == "cross_entropy") return torch::nn::functional::cross_entropy(out, target);
  if (o.loss == "mse") return torch::mse_loss(out, target);
  return out.sum();
}

void run_backward(const at::Tensor& loss, torch::jit::Module& module, const RunOptions& o, const c10::Device& device,
                  int step) {
  try {
    loss.backward();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string message = detail::torch_message(e);
    if (auto det = detail::deterministic_error(message, module, device); !det.empty()) throw InputError(det);
    throw RunError(fmt::format("backward of model '{}' failed at step {}: {}", o.model, step,
                               detail::torch_error_summary(message)));
  }
}

// "layer1.0.conv1.weight" -> {"layer1.0.conv1", "weight"}.
std::pair<std::string, std::string> split_name(const std::string& full) {
  auto dot = full.rfind('.');
  return dot == std::string::npos ? std::make_pair(std::string(), full)
                                  : std::make_pair(full.substr(0, dot), full.substr(dot + 1));
}

}  // namespace

RecordResult record_run(const RunOptions& options, const RecordTarget& target) {
  validate(options);
  for (const auto& lib : options.libraries) load_library(lib);
  apply_knobs(options);
  RecordResult result;
  const c10::Device device = resolve_device(options.device);
  result.device = device.str();
  result.seed = resolve_seed(options.seed);
  result.data_seed = resolve_seed(options.data_seed);

  // TorchScript's graph executor would otherwise profile the graphs and, from a later step on,
  // run JIT autodiff and fusion groups in place of the ops' own autograd formulas: numbers that
  // eager PyTorch training never computes, and that would change with the tap nodes. Running the
  // graphs op by op keeps training as in eager mode, with and without capture.
  torch::jit::GraphOptimizerEnabledGuard no_jit_opt(false);

  ModelMeta meta;
  torch::jit::Module module = detail::load_module(options.model, device, &meta);
  const std::vector<ModuleInfo> modules = detail::describe_modules(module);
  RunOptions o = resolve_recipe(options, meta);
  o.device = result.device;
  o.threads = at::get_num_threads();
  const at::ScalarType input_type = detail::to_scalar_type(dtype_from_name(o.dtype));
  if (input_type != at::kFloat) module.to(input_type);
  module.train(o.mode == "train");

  torch::manual_seed(static_cast<uint64_t>(result.seed));
  if (o.reinit == "xavier_normal") {
    at::NoGradGuard no_grad;
    for (auto p : module.parameters())
      if (p.dim() >= 2) torch::nn::init::xavier_normal_(p);
  }

  std::unique_ptr<DumpWriter> writer;
  if (!target.path.empty()) writer = std::make_unique<DumpWriter>(target.path, target.overwrite, o.hashes_only);
  std::unique_ptr<Capture> capture;
  int uninitialized_ops = 0;
  bool leaf_fallback = false;
  if (target.capture) {
    auto sites = detail::instrument(module, o, modules, &uninitialized_ops, &leaf_fallback);
    if (writer) capture = std::make_unique<Capture>(writer.get(), std::move(sites), detail::load_replay(target));
  }

  std::map<std::string, std::string> type_of;
  for (const auto& m : modules) type_of[m.path] = m.type;
  auto record_state = [&](Phase phase) {
    if (!capture) return;
    for (const auto& p : module.named_parameters(true)) {
      auto [layer, name] = split_name(p.name);
      capture->record(phase, layer, type_of[layer], Kind::param, name, p.value);
    }
    for (const auto& b : module.named_buffers(true)) {
      auto [layer, name] = split_name(b.name);
      capture->record(phase, layer, type_of[layer], Kind::buffer, name, b.value);
    }
  };

  std::vector<at::Tensor> params;
  for (const auto& p : module.named_parameters(true)) {
    params.push_back(p.value);
    if (capture) {
      auto [layer, name] = split_name(p.name);
      capture->hook_param_grad(p.value, layer, type_of[layer], name);
    }
  }
  torch::optim::SGD optimizer(params, torch::optim::SGDOptions(o.lr).momentum(o.momentum));

  if (writer) {
    detail::RunFacts facts{o, device, result.seed, result.data_seed};
    detail::write_provenance(*writer, facts, module);
    if (uninitialized_ops > 0) writer->set_attribute("uninitialized_ops_not_recorded", int64_t{uninitialized_ops});
    if (leaf_fallback) writer->set_attribute("layer_fallback", "leaf");
    if (o.mode == "train")
      if (int frozen = detail::frozen_training_ops(module); frozen > 0)
        writer->set_attribute("eval_frozen_ops", int64_t{frozen});
  }

  // Whether the model's RNG is drawn from at all (--seed random against a model that draws nothing
  // proves nothing): its state now, against its state after training.
  at::Generator model_gen = at::globalContext().defaultGenerator(device);
  const at::Tensor rng_before = model_gen.get_state();
  int64_t ignored_outputs = 0;
  auto data_gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(result.data_seed));
  auto start = Clock::now();
  if (capture) {
    capture->begin_step(-1);
    record_state(Phase::init);
  }
  auto fingerprint = [&](const at::Tensor& t) { result.fingerprint.push_back(detail::tensor_hash(t)); };
  // The tap kernels throw Interrupted on Ctrl-C; the TorchScript interpreter may rethrow it as
  // another exception type, so any exception after an interrupt request is reported as one.
  try {
    for (int step = 0; step < o.steps; ++step) {
      check_interrupt();
      if (capture) capture->begin_step(step);
      at::Tensor x = at::randn(o.input_shape, data_gen, at::TensorOptions().dtype(input_type)).to(device);
      if (capture) capture->record(Phase::input, "", "", Kind::input, "input", x);

      at::Tensor out;
      try {
        out = run_forward(module, x, o, meta, device, &ignored_outputs);
      } catch (...) {
        if (capture) capture->rethrow_write_error();
        throw;
      }
      if (capture) capture->record(Phase::output, "", "", Kind::output, "output", out);
      at::Tensor target_batch, loss;
      try {
        target_batch = make_target(out, o, data_gen, device);
        if (capture && target_batch.defined())
          capture->record(Phase::input, "", "", Kind::target, "target", target_batch);
        loss = compute_loss(out, target_batch, o);
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        throw InputError(fmt::format("loss {} failed on the output {} of model '{}': {}; pass another --loss", o.loss,
                                     detail::shape_string(out.sizes()), o.model,
                                     detail::torch_error_summary(detail::torch_message(e))));
      }
      if (capture) capture->record(Phase::loss, "", "", Kind::loss, "loss", loss);
      fingerprint(out);
      fingerprint(loss);

      // A model without trainable parameters (a frozen one) is run forward only.
      result.forward_only = !loss.requires_grad();
      if (!result.forward_only) {
        try {
          run_backward(loss, module, o, device, step);
        } catch (...) {
          if (capture) capture->rethrow_write_error();
          throw;
        }
        for (const auto& p : params)
          if (p.grad().defined()) fingerprint(p.grad());
        optimizer.step();
        optimizer.zero_grad();
      }
      record_state(Phase::after_step);
      for (const auto& p : module.parameters(true)) fingerprint(p);
      for (const auto& b : module.buffers(true)) fingerprint(b);
    }
  } catch (...) {
    if (interrupt_requested()) throw Interrupted();
    throw;
  }
  if (capture) capture->finish();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (capture) {
    result.write_seconds = capture->write_seconds();
    result.hash_seconds = capture->hash_seconds();
  }
  capture.reset();
  if (writer) {
    writer->set_attribute("model_rng_draws", static_cast<int64_t>(!at::equal(rng_before, model_gen.get_state())));
    if (ignored_outputs > 0) writer->set_attribute("ignored_outputs", ignored_outputs);
    result.tensors = static_cast<int64_t>(writer->tensor_count());
    result.bytes = writer->bytes_written();
    writer->commit();
  }
  return result;
}

}  // namespace reprocheck
