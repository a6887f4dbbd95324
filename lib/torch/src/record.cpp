// Recording one run: the seeded training loop of the TorchScript front end. The recipe (inputs,
// outputs, loss) is recipe.cpp's, the optimizers optim.cpp's; capture (graph patching, tap ops,
// the dump writer thread) lives in graph_patch.cpp and capture.cpp.
#include "reprocheck/record.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/nn/init.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "capture.h"
#include "graph_patch.h"
#include "optim.h"
#include "provenance.h"
#include "recipe.h"
#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/protocol.h"
#include "torch_dtype.h"
#include "torch_errors.h"
#include "torch_model.h"

namespace reprocheck {

namespace {

using Clock = std::chrono::steady_clock;
using detail::Capture;
using detail::Recipe;
using detail::StepResult;

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
  if (deterministic) setenv("CUBLAS_WORKSPACE_CONFIG", kCublasWorkspaceConfig, /*overwrite=*/0);
  ctx.setDeterministicCuDNN(deterministic);
  ctx.setBenchmarkCuDNN(o.benchmark);
  ctx.setDeterministicAlgorithms(deterministic, o.deterministic == "warn");
  if (o.threads > 0) at::set_num_threads(o.threads);
  if (o.interop_threads > 0) at::set_num_interop_threads(o.interop_threads);
}

// --dtype casts the floating parameters and buffers only: integer buffers (num_batches_tracked)
// and bool ones keep their type.
void cast_floating(torch::jit::Module& module, at::ScalarType type) {
  at::NoGradGuard no_grad;
  for (const auto& p : module.named_parameters(true))
    if (p.value.is_floating_point()) p.value.set_data(p.value.to(type));
  for (const auto& b : module.named_buffers(true))
    if (b.value.is_floating_point()) b.value.set_data(b.value.to(type));
}

// "layer1.0.conv1.weight" -> {"layer1.0.conv1", "weight"}.
std::pair<std::string, std::string> split_name(const std::string& full) {
  auto dot = full.rfind('.');
  return dot == std::string::npos ? std::make_pair(std::string(), full)
                                  : std::make_pair(full.substr(0, dot), full.substr(dot + 1));
}

// One run of the seeded training loop, with capture when its target asks for it.
class TrainingRun {
 public:
  TrainingRun(const RunOptions& options, const RecordTarget& target);
  RecordResult run();

 private:
  void set_up_capture();
  void write_attributes();
  void record_state(Phase phase);
  void draw_batch(std::vector<at::Tensor>& inputs, std::vector<at::Tensor>& targets);
  bool step(int index);  // false: pass 2 has its window and stops
  void fingerprint(const at::Tensor& t) {
    if (target_.fingerprint) result_.fingerprint.push_back(detail::tensor_hash(t));
  }
  template <typename F>
  auto checked(F&& f) {  // a failure underneath may only be the dump's write failing (a full disk)
    try {
      return f();
    } catch (...) {
      if (capture_) capture_->rethrow_write_error();
      throw;
    }
  }

  const RecordTarget& target_;
  RecordResult result_;
  c10::Device device_;
  RunOptions o_;
  ModelMeta meta_;
  torch::jit::Module module_;
  std::vector<ModuleInfo> modules_;
  std::map<std::string, std::string> type_of_;
  Recipe recipe_;
  detail::Instrumented instrumented_;
  std::unique_ptr<DumpWriter> writer_;
  std::unique_ptr<Capture> capture_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  detail::GradScaler scaler_;
  at::Generator data_gen_;
  int64_t ignored_outputs_ = 0;
  std::vector<int> nonfinite_steps_;  // steps whose loss was NaN or Inf
};

TrainingRun::TrainingRun(const RunOptions& options, const RecordTarget& target)
    : target_(target), device_(resolve_device(options.device)) {
  result_.device = device_.str();
  result_.seed = resolve_seed(options.seed);
  result_.data_seed = resolve_seed(options.data_seed);
  module_ = detail::load_module(options.model, device_, &meta_);
  modules_ = detail::describe_modules(module_);
  for (const auto& m : modules_) type_of_[m.path] = m.type;
  o_ = detail::resolve_recipe(options, meta_, module_, &recipe_);
  o_.device = result_.device;
  o_.threads = at::get_num_threads();
  if (recipe_.float_type != at::kFloat) cast_floating(module_, recipe_.float_type);
  module_.train(o_.mode == "train");
  // The graphs are patched before anything runs them: a graph executor plans a method on its first
  // run and would not see later patches. The taps do nothing until the capture starts.
  if (target.capture) instrumented_ = detail::instrument(module_, o_, modules_);
  recipe_.describe = detail::preflight(module_, o_, recipe_, device_, meta_);
  torch::manual_seed(static_cast<uint64_t>(result_.seed));
  if (o_.reinit == "xavier_normal") {
    at::NoGradGuard no_grad;
    for (auto p : module_.parameters())
      if (p.dim() >= 2) torch::nn::init::xavier_normal_(p);
  }
  set_up_capture();
  data_gen_ = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(result_.data_seed));
}

void TrainingRun::set_up_capture() {
  if (!target_.path.empty()) {
    writer_ = std::make_unique<DumpWriter>(target_.path, target_.overwrite, o_.hashes_only);
    if (o_.hashes_only && !o_.capture_plan.empty()) writer_->keep_data_from(o_.capture_plan);
  }
  if (target_.capture && writer_)
    capture_ = std::make_unique<Capture>(writer_.get(), std::move(instrumented_.sites), detail::load_replay(target_),
                                         detail::OpCapture{o_.ops, o_.drill_step, o_.drill_scope});
  for (const auto& p : module_.named_parameters(true)) {
    params_.push_back(p.value);
    if (capture_) {
      auto [layer, name] = split_name(p.name);
      capture_->hook_param_grad(p.value, layer, type_of_[layer], name);
    }
  }
  optimizer_ = detail::make_optimizer(params_, o_);
  if (writer_) write_attributes();
}

void TrainingRun::write_attributes() {
  DumpWriter& w = *writer_;
  detail::RunFacts facts{o_, device_, result_.seed, result_.data_seed};
  detail::write_provenance(w, facts, module_);
  if (instrumented_.uninitialized_ops > 0)
    w.set_attribute(attr::kUninitializedOpsNotRecorded, int64_t{instrumented_.uninitialized_ops});
  if (instrumented_.leaf_fallback) w.set_attribute(attr::kLayerFallback, "leaf");
  w.set_attribute(attr::kLayerCategories, instrumented_.categories.to_json());
  if (!instrumented_.notes.empty()) w.set_attribute(attr::kCaptureNotes, nlohmann::json(instrumented_.notes).dump());
  if (o_.mode == "train")
    if (int frozen = detail::frozen_training_ops(module_); frozen > 0)
      w.set_attribute(attr::kEvalFrozenOps, int64_t{frozen});
  w.set_attribute(attr::kLossRecipe, recipe_.describe);
  // Reports say what the model was trained on when it is more than one output and a built-in loss.
  if (!recipe_.method.empty() || !recipe_.weights.empty() || !o_.output.empty())
    w.set_attribute(attr::kLossRecipeNote, int64_t{1});
}

void TrainingRun::record_state(Phase phase) {
  if (!capture_) return;
  std::vector<detail::StateRecord> state;
  for (const auto& p : module_.named_parameters(true)) {
    auto [layer, name] = split_name(p.name);
    state.push_back({layer, type_of_[layer], Kind::param, name, p.value});
    if (optimizer_ && phase != Phase::init)
      for (const auto& [key, t] : detail::optimizer_state(*optimizer_, p.value))
        state.push_back({layer, type_of_[layer], Kind::optim_state, name + "." + key, t});
  }
  for (const auto& b : module_.named_buffers(true)) {
    auto [layer, name] = split_name(b.name);
    state.push_back({layer, type_of_[layer], Kind::buffer, name, b.value});
  }
  capture_->record_all(phase, state);
}

void TrainingRun::draw_batch(std::vector<at::Tensor>& inputs, std::vector<at::Tensor>& targets) {
  for (size_t i = 0; i < recipe_.inputs.size(); ++i) {
    inputs.push_back(detail::draw(recipe_.inputs[i], data_gen_, device_));
    if (capture_)
      capture_->record(Phase::input, "", "", Kind::input,
                       recipe_.inputs.size() == 1 ? "input" : fmt::format("input.{}", i), inputs.back());
  }
  for (size_t i = 0; i < recipe_.targets.size(); ++i) {
    targets.push_back(detail::draw(recipe_.targets[i], data_gen_, device_));
    if (capture_)
      capture_->record(Phase::input, "", "", Kind::target,
                       recipe_.targets.size() == 1 ? "target" : fmt::format("target.{}", i), targets.back());
  }
}

bool TrainingRun::step(int index) {
  check_interrupt();
  if (capture_) capture_->begin_step(index);
  std::vector<at::Tensor> inputs, targets;
  draw_batch(inputs, targets);
  // Pass 2 stops once its plan's records are written, at the next phase boundary; not when it also
  // drills (the drill-down needs the whole step).
  auto done = [this] { return capture_ && o_.drill_step < 0 && capture_->plan_done(); };
  if (done()) return false;
  StepResult s = checked([&] {
    detail::AutocastGuard autocast(o_.autocast, device_);
    return detail::forward_and_loss(module_, o_, recipe_, inputs, targets, data_gen_, device_, meta_,
                                    &ignored_outputs_);
  });
  if (capture_) {
    for (const auto& [name, t] : s.outputs) capture_->record(Phase::output, "", "", Kind::output, name, t);
    if (s.target.defined()) capture_->record(Phase::input, "", "", Kind::target, "target", s.target);
    capture_->record(Phase::loss, "", "", Kind::loss, "loss", s.loss);
    if (!s.loss.isfinite().all().item<bool>()) nonfinite_steps_.push_back(index);
  }
  for (const auto& [name, t] : s.outputs) fingerprint(t);
  fingerprint(s.loss);
  if (done()) return false;
  // A model without trainable parameters (a frozen one) is run forward only.
  result_.forward_only = !s.loss.requires_grad();
  if (!result_.forward_only) {
    const bool scaled = o_.autocast == "fp16";
    checked([&] { detail::run_backward(scaled ? s.loss * scaler_.scale : s.loss, module_, o_, device_, index); });
    for (const auto& p : params_)
      if (p.grad().defined()) fingerprint(p.grad());
    if (done()) return false;
    if (!scaled || scaler_.unscale_and_check(params_)) optimizer_->step();
    optimizer_->zero_grad();
  }
  record_state(Phase::after_step);
  for (const auto& p : module_.parameters(true)) {
    fingerprint(p);
    for (const auto& [key, t] : detail::optimizer_state(*optimizer_, p)) fingerprint(t);
  }
  for (const auto& b : module_.buffers(true)) fingerprint(b);
  return !done();
}

RecordResult TrainingRun::run() {
  // Whether the model's RNG is drawn from at all (--seed random against a model that draws nothing
  // proves nothing): its state now, against its state after training.
  at::Generator model_gen = at::globalContext().defaultGenerator(device_);
  const at::Tensor rng_before = model_gen.get_state();
  auto start = Clock::now();
  if (capture_) {
    capture_->begin_step(-1);
    record_state(Phase::init);
  }
  // The tap kernels throw Interrupted on Ctrl-C; the TorchScript interpreter may rethrow it as
  // another exception type, so any exception after an interrupt request is reported as one.
  try {
    for (int s = 0; s < o_.steps && step(s); ++s) {
    }
  } catch (...) {
    if (interrupt_requested()) throw Interrupted();
    throw;
  }
  if (capture_) capture_->finish();
  result_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  int64_t dropout_elements = 0;
  std::string op_sources;
  if (capture_) {
    result_.write_seconds = capture_->write_seconds();
    result_.hash_seconds = capture_->hash_seconds();
    dropout_elements = capture_->dropout_elements();
    op_sources = capture_->op_sources();
  }
  capture_.reset();
  if (writer_) {
    writer_->set_attribute(attr::kModelRngDraws, static_cast<int64_t>(!at::equal(rng_before, model_gen.get_state())));
    if (ignored_outputs_ > 0) writer_->set_attribute(attr::kIgnoredOutputs, ignored_outputs_);
    if (!nonfinite_steps_.empty())
      writer_->set_attribute(attr::kNonfiniteLoss, nlohmann::json(nonfinite_steps_).dump());
    if (o_.mode == "train") writer_->set_attribute(attr::kDropoutElements, dropout_elements);
    if (!op_sources.empty()) writer_->set_attribute(attr::kOpSources, op_sources);
    result_.tensors = static_cast<int64_t>(writer_->tensor_count());
    result_.bytes = writer_->bytes_written();
    writer_->commit();
  }
  return result_;
}

}  // namespace

RecordResult record_run(const RunOptions& options, const RecordTarget& target) {
  validate(options);
  for (const auto& lib : options.libraries) load_library(lib);
  apply_knobs(options);
  // TorchScript's graph executor would otherwise profile the graphs and, from a later step on,
  // run JIT autodiff and fusion groups in place of the ops' own autograd formulas: numbers that
  // eager PyTorch training never computes, and that would change with the tap nodes. Running the
  // graphs op by op keeps training as in eager mode, with and without capture.
  torch::jit::GraphOptimizerEnabledGuard no_jit_opt(false);
  return TrainingRun(options, target).run();
}

}  // namespace reprocheck
