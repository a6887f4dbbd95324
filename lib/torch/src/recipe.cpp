// The training recipe of the TorchScript front end (recipe.h).
#include "recipe.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional/loss.h>

#include <algorithm>

#include "graph_patch.h"
#include "reprocheck/error.h"
#include "torch_dtype.h"
#include "torch_errors.h"
#include "torch_model.h"

namespace reprocheck::detail {

namespace {

bool has_method(const torch::jit::Module& m, const char* name) { return m.find_method(name).has_value(); }

}  // namespace

RunOptions resolve_recipe(const RunOptions& o, const ModelMeta& meta, const torch::jit::Module& module,
                          Recipe* recipe) {
  RunOptions r = o;
  if (r.dtype.empty()) r.dtype = meta.dtype.value_or("float32");
  if (r.inputs.empty() && r.input_shape.empty()) {
    if (!meta.inputs.empty())
      r.inputs = meta.inputs;
    else if (meta.input_shape)
      r.input_shape = *meta.input_shape;
  }
  if (r.inputs.empty() && r.input_shape.empty())
    throw InputError(fmt::format(
        "model '{}' has no input spec: it carries no reprocheck.json; pass --input SHAPE[:DTYPE[:LOW..HIGH]] "
        "per input (or --input-shape N,C,H,W), or embed one with torch.jit.save(m, path, "
        "_extra_files={{'reprocheck.json': '{{\"inputs\": [{{\"shape\": [...], \"dtype\": \"float32\"}}]}}'}})",
        o.model));
  if (r.targets.empty()) r.targets = meta.targets;
  if (r.loss.empty()) {
    if (meta.loss)
      r.loss = *meta.loss;
    else if (has_method(module, "training_step") || has_method(module, "loss"))
      r.loss = "model";
    else
      r.loss = "mse";
  }
  if (r.label_smoothing == -1 && meta.label_smoothing) r.label_smoothing = *meta.label_smoothing;
  if (r.output.empty() && r.output_weights.empty()) {
    if (meta.output_weights)
      r.output_weights = *meta.output_weights;
    else if (meta.output)
      r.output = *meta.output;
  }
  if (r.optimizer.empty() && meta.optimizer) r.optimizer = *meta.optimizer;
  r = with_recipe_defaults(r);
  // The model's reprocheck.json gets the checks a flag gets (throws UsageError).
  validate(r);
  if (r.nesterov && (r.optimizer != "sgd" || r.momentum == 0))
    throw UsageError("--nesterov needs --optimizer sgd with a --momentum above 0");
  if (r.label_smoothing > 0 && r.loss != "cross_entropy")
    throw UsageError(fmt::format("--label-smoothing applies to --loss cross_entropy, not {}", r.loss));
  recipe->float_type = detail::to_scalar_type(dtype_from_name(r.dtype));
  if (!r.input_shape.empty()) {
    if (o.input_shape.empty()) check_input_size(r.input_shape, r.dtype, "the model's reprocheck.json input_shape");
    recipe->inputs.push_back(TensorSpec{r.input_shape, r.dtype, std::nullopt, std::nullopt});
  }
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    TensorSpec s = parse_tensor_spec(r.inputs[i], fmt::format("input {}", i + 1));
    if (s.dtype.empty()) s.dtype = r.dtype;
    recipe->inputs.push_back(s);
  }
  for (size_t i = 0; i < r.targets.size(); ++i) {
    TensorSpec s = parse_tensor_spec(r.targets[i], fmt::format("target {}", i + 1));
    if (s.dtype.empty()) s.dtype = r.dtype;
    recipe->targets.push_back(s);
  }
  if (r.loss == "model") {
    if (has_method(module, "training_step"))
      recipe->method = "training_step";
    else if (has_method(module, "loss"))
      recipe->method = "loss";
    else
      throw InputError(
          fmt::format("--loss model: model '{}' has no training_step or loss method; script one "
                      "(@torch.jit.export def loss(self, output, target)), or pass a built-in --loss",
                      o.model));
    if (!r.output_weights.empty())
      throw UsageError("--output-weights weighs built-in losses; the model's own loss method gets the whole output");
  }
  if (!r.output_weights.empty())
    for (const auto& [key, w] : parse_output_weights(r.output_weights)) recipe->weights.emplace_back(key, w);
  return r;
}

namespace {

std::string spec_words(const std::vector<TensorSpec>& specs) {
  std::vector<std::string> parts;
  for (const auto& s : specs)
    parts.push_back(fmt::format("{} {}{}", detail::shape_string(s.shape), s.dtype,
                                s.low ? fmt::format(" in [{}, {})", *s.low, *s.high) : ""));
  return parts.empty() ? "none" : fmt::format("{}", fmt::join(parts, ", "));
}

// Checks the number and types of a method's arguments against the tensors the recipe passes.

void check_arity(const torch::jit::Module& module, const char* name, size_t given, const std::string& what,
                 const std::string& model) {
  const auto& schema = module.get_method(name).function().getSchema();
  const auto& args = schema.arguments();
  std::vector<std::string> words;
  size_t required = 0;
  for (size_t i = 1; i < args.size(); ++i) {
    words.push_back(fmt::format("{}: {}", args[i].name(), args[i].type()->annotation_str()));
    if (!args[i].default_value()) ++required;
  }
  const size_t total = args.size() - 1;
  if (given < required || given > total)
    throw InputError(
        fmt::format("model '{}': {}({}) takes {}{} argument(s) and the recipe gives {} ({}); give one "
                    "spec per argument: --input SHAPE:DTYPE[:LOW..HIGH] (repeatable) and --target, or "
                    "\"inputs\" and \"targets\" in reprocheck.json",
                    model, name, fmt::join(words, ", "), required == total ? "" : fmt::format("{} to ", required),
                    total, given, what));
  for (size_t i = 1; i <= given; ++i) {
    auto type = args[i].type();
    if (auto opt = type->cast<c10::OptionalType>()) type = opt->getElementType();
    if (!type->isSubtypeOf(*c10::TensorType::get()))
      throw InputError(
          fmt::format("model '{}': {}() argument '{}' is {}, and reprocheck passes tensors; wrap the model "
                      "so that its {} takes tensors",
                      model, name, args[i].name(), args[i].type()->annotation_str(), name));
  }
}

}  // namespace

at::Tensor draw(const TensorSpec& s, at::Generator& gen, const c10::Device& device) {
  const at::ScalarType type = detail::to_scalar_type(dtype_from_name(s.dtype));
  at::Tensor t;
  if (s.dtype == "bool")
    t = at::randint(0, 2, s.shape, gen, at::TensorOptions().dtype(at::kLong)).to(at::kBool);
  else if (s.is_integer())
    t = at::randint(static_cast<int64_t>(*s.low), static_cast<int64_t>(*s.high), s.shape, gen,
                    at::TensorOptions().dtype(at::kLong))
            .to(type);
  else if (s.low)
    t = (at::rand(s.shape, gen, at::TensorOptions().dtype(at::kFloat)) * (*s.high - *s.low) + *s.low).to(type);
  else
    t = at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat)).to(type);
  return t.to(device);
}

namespace {

std::vector<Selected> select_outputs(const c10::IValue& r, const RunOptions& o, const Recipe& recipe,
                                     int64_t* ignored_outputs) {
  auto describe_keys = [](const std::vector<std::string>& keys) { return fmt::format("{}", fmt::join(keys, ", ")); };
  // The outputs by key: a tuple by index (and field name, for a named tuple), a dict by key.
  std::vector<std::pair<std::string, c10::IValue>> items;
  std::string kind;
  if (r.isTuple()) {
    kind = "tuple";
    const auto& tuple = r.toTupleRef();
    const auto& elements = tuple.elements();
    std::vector<std::string> names;
    if (auto type = tuple.type(); type && type->schema())
      for (const auto& a : type->schema()->arguments()) names.push_back(a.name());
    for (size_t i = 0; i < elements.size(); ++i) {
      items.emplace_back(std::to_string(i), elements[i]);
      if (i < names.size()) items.emplace_back(names[i], elements[i]);
    }
  } else if (r.isList()) {
    kind = "list";
    auto list = r.toListRef();
    for (size_t i = 0; i < list.size(); ++i) items.emplace_back(std::to_string(i), list[i]);
  } else if (r.isGenericDict()) {
    kind = "dict";
    for (const auto& e : r.toGenericDict())
      if (e.key().isString()) items.emplace_back(e.key().toStringRef(), e.value());
  } else if (!r.isTensor()) {
    throw InputError(fmt::format("model '{}' returns {}; reprocheck trains on a tensor, a tuple or a dict of tensors",
                                 o.model, r.tagKind()));
  }
  std::vector<std::string> keys;
  for (const auto& [k, v] : items)
    if (v.isTensor()) keys.push_back(k);
  auto find = [&](const std::string& key, const char* flag) -> at::Tensor {
    if (r.isTensor())
      throw InputError(fmt::format("model '{}' returns one tensor, not a tuple or a dict: drop {}", o.model, flag));
    for (const auto& [k, v] : items)
      if (k == key) {
        if (!v.isTensor())
          throw InputError(
              fmt::format("model '{}': output '{}' of its {} is {}, not a tensor; choose another with {} "
                          "(tensor outputs: {})",
                          o.model, key, kind, v.tagKind(), flag, describe_keys(keys)));
        return v.toTensor();
      }
    throw InputError(
        fmt::format("model '{}' returns a {} without output '{}'; its tensor outputs are {}: pass one of "
                    "them to {}",
                    o.model, kind, key, describe_keys(keys), flag));
  };
  std::vector<Selected> out;
  if (!recipe.weights.empty()) {
    for (const auto& [key, w] : recipe.weights) out.push_back({key, find(key, "--output-weights"), w});
    return out;
  }
  if (!o.output.empty()) {
    out.push_back({o.output, find(o.output, "--output"), 1});
    return out;
  }
  if (r.isTensor()) return {{"", r.toTensor(), 1}};
  if (kind == "dict")
    throw InputError(
        fmt::format("model '{}' returns a dict with tensor outputs {}: choose the one to train with "
                    "--output KEY, or weigh several with --output-weights KEY=W,...",
                    o.model, describe_keys(keys)));
  if (keys.empty()) throw InputError(fmt::format("model '{}' returns a {} without tensors", o.model, kind));
  // A tuple: its first tensor; the others are counted and reported.
  std::set<const void*> seen;
  int64_t ignored = 0;
  for (const auto& [k, v] : items)
    if (v.isTensor() && seen.insert(v.toTensor().unsafeGetTensorImpl()).second && k != keys[0]) ++ignored;
  *ignored_outputs = ignored;
  return {{keys[0], find(keys[0], "--output"), 1}};
}

// A target for a built-in loss, drawn from the data generator (none for sum).

at::Tensor derive_target(const at::Tensor& out, const RunOptions& o, at::Generator& data_gen,
                         const c10::Device& device) {
  if (o.loss == "cross_entropy" || o.loss == "nll") {
    if (out.dim() < 2)
      throw InputError(
          fmt::format("--loss {} needs a model output of shape [N, C, ...], model '{}' returns {}; pass another "
                      "--loss, or --output for another output",
                      o.loss, o.model, detail::shape_string(out.sizes())));
    std::vector<int64_t> shape(out.sizes().begin(), out.sizes().end());
    shape.erase(shape.begin() + 1);
    return at::randint(0, out.size(1), shape, data_gen, at::TensorOptions().dtype(at::kLong)).to(device);
  }
  const auto type = out.is_floating_point() ? out.scalar_type() : at::kFloat;
  if (o.loss == "mse")
    return at::randn(out.sizes(), data_gen, at::TensorOptions().dtype(at::kFloat)).to(type).to(device);
  if (o.loss == "bce_with_logits")
    return at::rand(out.sizes(), data_gen, at::TensorOptions().dtype(at::kFloat)).to(type).to(device);
  return {};
}

at::Tensor builtin_loss(const at::Tensor& out, const at::Tensor& target, const RunOptions& o) {
  namespace F = torch::nn::functional;
  if (o.loss == "cross_entropy")
    return F::cross_entropy(out, target, F::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
  if (o.loss == "nll") return F::nll_loss(out, target);
  if (o.loss == "mse") return torch::mse_loss(out, target.to(out.scalar_type()));
  if (o.loss == "bce_with_logits") return F::binary_cross_entropy_with_logits(out, target.to(out.scalar_type()));
  return out.sum();
}

std::string describe_recipe(const RunOptions& o, const Recipe& recipe, const std::vector<Selected>& outputs) {
  std::string inputs = spec_words(recipe.inputs);
  if (recipe.method == "training_step") return fmt::format("loss = the model's training_step (inputs {})", inputs);
  if (recipe.method == "loss") return fmt::format("loss = the model's loss method on its output (inputs {})", inputs);
  std::string loss = o.loss + (o.label_smoothing > 0 ? fmt::format(" with label smoothing {}", o.label_smoothing) : "");
  std::vector<std::string> terms;
  for (const auto& s : outputs) {
    std::string which = s.label.empty() ? "the output" : fmt::format("output {}", s.label);
    terms.push_back(recipe.weights.empty() ? fmt::format("{}({})", loss, which)
                                           : fmt::format("{}*{}({})", s.weight, loss, which));
  }
  return fmt::format("loss = {} (inputs {})", fmt::join(terms, " + "), inputs);
}

}  // namespace

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

namespace {

// The loss a model method returned: a scalar tensor, a dict with "loss", or a tuple's first.

at::Tensor loss_of(const c10::IValue& v, const char* method, const std::string& model) {
  c10::IValue x = v;
  if (x.isGenericDict()) {
    for (const auto& e : x.toGenericDict())
      if (e.key().isString() && e.key().toStringRef() == "loss") x = e.value();
  } else if (x.isTuple() && !x.toTupleRef().elements().empty()) {
    x = x.toTupleRef().elements()[0];
  }
  if (!x.isTensor() || x.toTensor().numel() != 1 || !x.toTensor().is_floating_point())
    throw InputError(fmt::format(
        "model '{}': {} must return the loss as a float scalar tensor (or a dict with "
        "\"loss\"), not {}",
        model, method,
        x.isTensor()
            ? detail::shape_string(x.toTensor().sizes()) + " " + std::string(c10::toString(x.toTensor().scalar_type()))
            : std::string(x.tagKind())));
  return x.toTensor().reshape({});
}

// Every tensor of a model's output, named as the dump records it: "output", or "output.KEY".

std::vector<std::pair<std::string, at::Tensor>> output_tensors(const c10::IValue& r) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (r.isTensor()) return {{"output", r.toTensor()}};
  if (r.isTuple()) {
    const auto& e = r.toTupleRef().elements();
    for (size_t i = 0; i < e.size(); ++i)
      if (e[i].isTensor()) out.emplace_back(fmt::format("output.{}", i), e[i].toTensor());
  } else if (r.isList()) {
    auto list = r.toListRef();
    for (size_t i = 0; i < list.size(); ++i)
      if (list[i].isTensor()) out.emplace_back(fmt::format("output.{}", i), list[i].toTensor());
  } else if (r.isGenericDict()) {
    for (const auto& e : r.toGenericDict())
      if (e.key().isString() && e.value().isTensor())
        out.emplace_back("output." + e.key().toStringRef(), e.value().toTensor());
  }
  return out;
}

}  // namespace

StepResult forward_and_loss(torch::jit::Module& module, const RunOptions& o, const Recipe& recipe,
                            const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& targets,
                            at::Generator& data_gen, const c10::Device& device, const ModelMeta& meta,
                            int64_t* ignored_outputs) {
  StepResult s;
  const char* method = recipe.method == "training_step" ? "training_step" : "forward";
  c10::IValue r;
  try {
    std::vector<c10::IValue> args(inputs.begin(), inputs.end());
    if (recipe.method == "training_step") args.insert(args.end(), targets.begin(), targets.end());
    r = module.get_method(method)(std::move(args));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string message = detail::torch_message(e);
    if (auto det = detail::deterministic_error(message, module, device); !det.empty()) throw InputError(det);
    std::vector<TensorSpec> embedded;
    if (meta.input_shape) embedded.push_back(TensorSpec{*meta.input_shape, meta.dtype.value_or("float32"), {}, {}});
    for (const auto& text : meta.inputs) embedded.push_back(parse_tensor_spec(text, "reprocheck.json input"));
    const bool from_flags = !o.inputs.empty() || !o.input_shape.empty();
    std::string source = from_flags && !embedded.empty()
                             ? fmt::format("the model's reprocheck.json gives inputs {}", spec_words(embedded))
                         : from_flags ? "check --input"
                                      : "check the model's reprocheck.json inputs, or pass --input";
    throw InputError(fmt::format("{} of model '{}' failed on inputs {}: {}; {}", method, o.model,
                                 spec_words(recipe.inputs), detail::torch_error_summary(message), source));
  }
  if (recipe.method == "training_step") {
    s.loss = loss_of(r, "training_step", o.model);
    return s;
  }
  s.outputs = output_tensors(r);
  try {
    if (recipe.method == "loss") {
      std::vector<c10::IValue> args{r};
      args.insert(args.end(), targets.begin(), targets.end());
      s.loss = loss_of(module.get_method("loss")(std::move(args)), "loss", o.model);
      return s;
    }
    s.selected = select_outputs(r, o, recipe, ignored_outputs);
    at::Tensor target = targets.empty() ? derive_target(s.selected[0].tensor, o, data_gen, device) : targets[0];
    if (targets.empty()) s.target = target;
    for (const auto& sel : s.selected) {
      at::Tensor l = builtin_loss(sel.tensor, target, o);
      if (!recipe.weights.empty()) l = l * sel.weight;
      s.loss = s.loss.defined() ? s.loss + l : l;
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string shapes;
    for (const auto& [name, t] : s.outputs)
      shapes += fmt::format("{}{} {}", shapes.empty() ? "" : ", ", name, detail::shape_string(t.sizes()));
    throw InputError(
        fmt::format("loss {} failed on the output of model '{}' ({}): {}; pass another --loss, --output or "
                    "--target",
                    recipe.method == "loss" ? "method" : o.loss, o.model, shapes,
                    detail::torch_error_summary(detail::torch_message(e))));
  }
  return s;
}

std::string preflight(torch::jit::Module& module, const RunOptions& o, const Recipe& recipe, const c10::Device& device,
                      const ModelMeta& meta) {
  const size_t n_targets = recipe.targets.size();
  if (recipe.method == "training_step") {
    check_arity(module, "training_step", recipe.inputs.size() + n_targets,
                fmt::format("inputs {}, targets {}", spec_words(recipe.inputs), spec_words(recipe.targets)), o.model);
  } else {
    check_arity(module, "forward", recipe.inputs.size(), "inputs " + spec_words(recipe.inputs), o.model);
    if (recipe.method == "loss")
      check_arity(module, "loss", 1 + n_targets, fmt::format("the output and targets {}", spec_words(recipe.targets)),
                  o.model);
    else if (n_targets > 1)
      throw InputError(fmt::format("--loss {} takes one target, and the recipe gives {} ({})", o.loss, n_targets,
                                   spec_words(recipe.targets)));
  }
  if (o.autocast == "fp16" && device.is_cpu())
    throw UsageError("--autocast fp16 needs a CUDA device; on the CPU use --autocast bf16");
  std::vector<at::Tensor> saved;
  {
    at::NoGradGuard no_grad;
    for (const auto& b : module.named_buffers(true)) saved.push_back(b.value.clone());
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0x5eedf00dULL);
  std::vector<at::Tensor> inputs, targets;
  for (const auto& spec : recipe.inputs) inputs.push_back(draw(spec, gen, device));
  for (const auto& spec : recipe.targets) targets.push_back(draw(spec, gen, device));
  int64_t ignored = 0;
  StepResult s;
  {
    at::NoGradGuard no_grad;
    AutocastGuard autocast(o.autocast, device);
    s = forward_and_loss(module, o, recipe, inputs, targets, gen, device, meta, &ignored);
  }
  {
    at::NoGradGuard no_grad;
    size_t i = 0;
    for (const auto& b : module.named_buffers(true)) b.value.copy_(saved[i++]);
  }
  return describe_recipe(o, recipe, s.selected);
}

}  // namespace reprocheck::detail
