#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <caffe2/serialize/inline_container.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>
#include <torch/script.h>
#include <xxhash.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <unordered_map>

#include "reprocheck/build_info.h"
#include "reprocheck/error.h"
#include "reprocheck/model_file.h"
#include "reprocheck/run_options.h"
#include "torch_model.h"

namespace reprocheck {

std::string demangle_type_name(const std::string& qualified) {
  std::string out;
  size_t start = 0;
  while (start <= qualified.size()) {
    size_t dot = qualified.find('.', start);
    if (dot == std::string::npos) dot = qualified.size();
    std::string part = qualified.substr(start, dot - start);
    if (part != "__torch__" && part.rfind("___torch_mangle_", 0) != 0 && !part.empty()) {
      if (!out.empty()) out += '.';
      out += part;
    }
    start = dot + 1;
  }
  return out;
}

void load_library(const std::string& path) {
  if (!dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
    const char* why = dlerror();
    throw InputError(
        fmt::format("cannot load library '{}': {}; pass the path of a shared library "
                    "built against LibTorch {}",
                    path, why ? first_line(why) : "unknown error", TORCH_VERSION));
  }
}

BuildInfo build_info() {
  BuildInfo info;
  info.libtorch = fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
  const auto& hooks = at::detail::getCUDAHooks();
  auto dotted = [](long v, long major_div, long minor_div) {
    return fmt::format("{}.{}.{}", v / major_div, (v % major_div) / minor_div, v % minor_div);
  };
  info.cuda = "none";
  info.cudnn = "none";
  try {
    if (long rt = hooks.versionCUDART(); rt > 0) info.cuda = fmt::format("{}.{}", rt / 1000, (rt % 1000) / 10);
  } catch (const c10::Error&) {
  }
  try {
    if (long v = hooks.versionCuDNN(); v > 0) info.cudnn = dotted(v, 10000, 100);
  } catch (const c10::Error&) {
  }
  info.cuda_available = torch::cuda::is_available();
  info.cuda_devices = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
  info.hdf5 = hdf5_version();
  return info;
}

namespace detail {

std::string shape_string(c10::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

namespace {

// Classifies a file that is not a loadable TorchScript archive; returns the reason, or "" when
// the file looks like a TorchScript archive.
std::string non_torchscript_reason(const std::string& path) {
  if (auto why = model_file_problem(path); !why.empty()) return why;
  std::vector<std::string> records;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    records = reader.getAllRecords();
  } catch (const c10::Error& e) {
    return fmt::format("is a truncated or corrupt archive ({}); export the model again",
                       first_line(e.what_without_backtrace()));
  }
  bool has_code = false, has_data = false;
  for (const auto& r : records) {
    if (r.rfind("code/", 0) == 0) has_code = true;
    if (r == "data.pkl") has_data = true;
  }
  if (!has_code && has_data)
    return fmt::format("is a torch.save checkpoint (a state_dict or a pickled nn.Module), not TorchScript; {}",
                       kExportHint);
  if (!has_code) return fmt::format("is a zip file but not a TorchScript archive; {}", kExportHint);
  return "";
}

// A tensor spec in reprocheck.json: {"shape": [4, 20], "dtype": "int64", "low": 0, "high": 30522},
// a bare shape [4, 20], or the text of --input.
std::string spec_text(const nlohmann::json& j, const std::string& where) {
  auto bad = [&](const std::string& why) { return InputError(fmt::format("{}: {}", where, why)); };
  if (j.is_string()) return j.get<std::string>();
  TensorSpec s;
  const nlohmann::json* shape = &j;
  if (j.is_object()) {
    for (const auto& [k, v] : j.items())
      if (k != "shape" && k != "dtype" && k != "low" && k != "high")
        throw bad(fmt::format("unknown key '{}' (a tensor spec has shape, dtype, low, high)", k));
    if (!j.contains("shape")) throw bad("no shape");
    shape = &j.at("shape");
    if (j.contains("dtype")) {
      if (!j.at("dtype").is_string()) throw bad("dtype must be a string such as \"int64\"");
      s.dtype = j.at("dtype").get<std::string>();
    }
    for (const char* end : {"low", "high"})
      if (j.contains(end)) {
        if (!j.at(end).is_number()) throw bad(fmt::format("{} must be a number", end));
        (std::string(end) == "low" ? s.low : s.high) = j.at(end).get<double>();
      }
  }
  if (!shape->is_array() || shape->empty()) throw bad("the shape must be a list of dimensions such as [4, 20]");
  for (const auto& d : *shape) {
    if (!d.is_number_integer()) throw bad("the shape must be a list of integer dimensions such as [4, 20]");
    s.shape.push_back(d.get<int64_t>());
  }
  return to_string(s);
}

ModelMeta parse_meta(const std::string& path, const std::string& text) {
  ModelMeta meta;
  const std::string where = fmt::format("bad reprocheck.json in model '{}'", path);
  try {
    if (!json_depth_within(text, kMaxJsonDepth)) throw InputError(fmt::format("{}: nested too deeply", where));
    auto j = nlohmann::json::parse(text);
    if (!j.is_object()) throw InputError(fmt::format("{}: expected a JSON object", where));
    auto text_of = [&](const char* key) {
      const auto& v = j.at(key);
      if (v.is_string()) return v.get<std::string>();
      if (v.is_number_integer() && std::string(key) == "output") return std::to_string(v.get<int64_t>());
      throw InputError(fmt::format("{}: \"{}\" must be a string", where, key));
    };
    if (j.contains("input_shape")) {
      const auto& v = j.at("input_shape");
      // A list of shapes is one float input each.
      if (v.is_array() && !v.empty() && v[0].is_array()) {
        for (size_t i = 0; i < v.size(); ++i)
          meta.inputs.push_back(spec_text(v[i], fmt::format("{}: input_shape[{}]", where, i)));
      } else {
        TensorSpec s = parse_tensor_spec(spec_text(v, where + ": input_shape"), "reprocheck.json input_shape");
        meta.input_shape = s.shape;
      }
    }
    for (const char* key : {"inputs", "targets"})
      if (j.contains(key)) {
        const auto& v = j.at(key);
        if (!v.is_array() || v.empty())
          throw InputError(
              fmt::format("{}: \"{}\" must be a list of tensor specs such as [{{\"shape\": [4, 20], "
                          "\"dtype\": \"int64\", \"low\": 0, \"high\": 1000}}]",
                          where, key));
        for (size_t i = 0; i < v.size(); ++i)
          (std::string(key) == "inputs" ? meta.inputs : meta.targets)
              .push_back(spec_text(v[i], fmt::format("{}: {}[{}]", where, key, i)));
      }
    if (j.contains("target")) meta.targets.push_back(spec_text(j.at("target"), where + ": target"));
    if (j.contains("dtype")) meta.dtype = text_of("dtype");
    if (j.contains("loss")) meta.loss = text_of("loss");
    if (j.contains("optimizer")) meta.optimizer = text_of("optimizer");
    if (j.contains("output")) meta.output = text_of("output");
    if (j.contains("label_smoothing")) {
      if (!j.at("label_smoothing").is_number())
        throw InputError(fmt::format("{}: \"label_smoothing\" must be a number", where));
      meta.label_smoothing = j.at("label_smoothing").get<double>();
    }
    if (j.contains("output_weights")) {
      const auto& v = j.at("output_weights");
      std::vector<std::string> parts;
      if (v.is_array()) {
        for (const auto& w : v) {
          if (!w.is_number()) throw InputError(fmt::format("{}: \"output_weights\" must hold numbers", where));
          parts.push_back(fmt::format("{}", w.get<double>()));
        }
      } else if (v.is_object()) {
        for (const auto& [k, w] : v.items()) {
          if (!w.is_number()) throw InputError(fmt::format("{}: \"output_weights\" must hold numbers", where));
          parts.push_back(fmt::format("{}={}", k, w.get<double>()));
        }
      } else {
        throw InputError(
            fmt::format("{}: \"output_weights\" must be a list [1, 0.3] or an object {{\"logits\": 1}}", where));
      }
      meta.output_weights = fmt::format("{}", fmt::join(parts, ","));
    }
    // Checked like the flags they stand for.
    for (size_t i = 0; i < meta.inputs.size(); ++i)
      parse_tensor_spec(meta.inputs[i], fmt::format("reprocheck.json input {}", i + 1));
    for (size_t i = 0; i < meta.targets.size(); ++i)
      parse_tensor_spec(meta.targets[i], fmt::format("reprocheck.json target {}", i + 1));
    if (meta.output_weights) parse_output_weights(*meta.output_weights);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(
        fmt::format("{}: not valid JSON ({}); fix the extra file or pass --input/--loss", where, first_line(e.what())));
  } catch (const UsageError& e) {
    throw InputError(fmt::format("{}: {}", where, e.what()));
  }
  return meta;
}

}  // namespace

// What to do about an archive LibTorch refused, from what its message says: code that does not
// parse (an archive edited by hand, or names torch.jit.save never writes) is not a version problem.
std::string load_advice(const std::string& message) {
  static const std::regex parse_error(
      R"((expected|Expected|but found|unexpected|Unexpected|parse|Unknown type|undefined value|invalid identifier|Lexer|lexer))");
  if (std::regex_search(message, parse_error))
    return "its TorchScript code does not parse: the archive was changed after torch.jit.save wrote it, or holds "
           "names TorchScript does not allow; export it again with torch.jit.script(model).save(path)";
  if (message.find("version") != std::string::npos)
    return fmt::format(
        "it was written by another PyTorch version; export it again with PyTorch {}.{} (reprocheck's "
        "LibTorch)",
        TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR);
  return "export it again with torch.jit.script(model).save(path) (or torch.jit.trace)";
}

torch::jit::Module load_module(const std::string& path, const c10::Device& device, ModelMeta* meta) {
  if (auto why = non_torchscript_reason(path); !why.empty())
    throw InputError(fmt::format("cannot load model '{}': {}", path, why));
  torch::jit::ExtraFilesMap extra{{"reprocheck.json", ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, device, extra);
  } catch (const std::exception& e) {
    // TorchScript that does not parse, an op no library registered, an archive LibTorch cannot
    // make sense of: its first non-empty line, and what to do about it.
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    std::string full = c10_error ? c10_error->what_without_backtrace() : e.what();
    std::string message;
    for (size_t start = 0; start < full.size() && message.empty();) {
      size_t end = std::min(full.find('\n', start), full.size());
      message = first_line(full.substr(start, end - start));
      start = end + 1;
    }
    static const std::regex unknown_op(R"(Unknown builtin op: ([A-Za-z0-9_:.]+))");
    std::smatch m;
    if (std::regex_search(full, m, unknown_op)) {
      std::string op = m[1];
      if (!op.empty() && op.back() == '.') op.pop_back();
      throw InputError(
          fmt::format("cannot load model '{}': it uses the custom op {}, which no loaded library "
                      "defines; pass --load-library LIB.so with the library that registers it",
                      path, op));
    }
    throw InputError(fmt::format("cannot load model '{}': {}; {}", path,
                                 message.empty() ? "LibTorch could not load it" : message, load_advice(full)));
  }
  if (meta) {
    const auto& text = extra["reprocheck.json"];
    *meta = text.empty() ? ModelMeta{} : parse_meta(path, text);
  }
  return module;
}

std::vector<ModuleInfo> describe_modules(const torch::jit::Module& module) {
  std::vector<ModuleInfo> out;
  std::unordered_map<const c10::ClassType*, int> type_count;
  // named_modules() yields the root first, then every submodule in pre-order.
  for (const auto& item : module.named_modules()) {
    ModuleInfo info;
    info.path = item.name;
    auto type = item.value.type();
    info.type = demangle_type_name(type->name() ? type->name()->qualifiedName() : "");
    auto dot = info.type.rfind('.');
    info.kind = dot == std::string::npos ? info.type : info.type.substr(dot + 1);
    for (const auto& p : item.value.parameters(/*recurse=*/true)) info.params += p.numel();
    for (const auto& p : item.value.parameters(/*recurse=*/false)) info.own_params += p.numel();
    type_count[type.get()]++;
    out.push_back(std::move(info));
  }
  size_t i = 0;
  for (const auto& item : module.named_modules()) out[i++].shares_type = type_count[item.value.type().get()] > 1;
  return out;
}

std::string model_signature(const torch::jit::Module& module) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  auto feed = [&](const std::string& s) { XXH3_64bits_update(state, s.data(), s.size() + 1); };
  for (const auto& m : describe_modules(module)) feed(m.path + "|" + m.type);
  for (const auto& p : module.named_parameters(true)) feed(p.name + shape_string(p.value.sizes()));
  for (const auto& b : module.named_buffers(true)) feed(b.name + shape_string(b.value.sizes()));
  auto h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("{:016x}", h);
}

}  // namespace detail

ModelSummary inspect_model(const std::string& path) {
  ModelSummary s;
  s.path = path;
  auto module = detail::load_module(path, c10::Device(c10::kCPU), &s.meta);
  s.modules = detail::describe_modules(module);
  s.signature = detail::model_signature(module);
  s.total_params = s.modules.empty() ? 0 : s.modules.front().params;
  for (const char* name : {"forward", "training_step", "loss"}) {
    auto method = module.find_method(name);
    if (!method) continue;
    const auto& schema = method->function().getSchema();
    std::vector<std::string> args;
    for (size_t i = 1; i < schema.arguments().size(); ++i)
      args.push_back(
          fmt::format("{}: {}", schema.arguments()[i].name(), schema.arguments()[i].type()->annotation_str()));
    std::vector<std::string> returns;
    for (const auto& r : schema.returns()) returns.push_back(r.type()->annotation_str());
    s.methods.push_back(fmt::format("{}({}) -> {}", name, fmt::join(args, ", "), fmt::join(returns, ", ")));
  }
  return s;
}

}  // namespace reprocheck
