// Recording one run: instrumenting a TorchScript module's graphs with tap ops, the seeded
// training loop, and streaming every captured tensor into a DumpWriter.
//
// Capture method. TorchScript modules have no forward hooks, so the forward graph of every module
// type that holds a selected instance is patched once after loading:
//   - every instance of a patched type gets an integer attribute `_reprocheck_id` (its index in
//     named_modules order; types are shared between identical instances, so the graph reads the id
//     to know which instance runs);
//   - `reprocheck::tap_in(Tensor[] inputs, int id)` is inserted at the top of the graph and
//     `reprocheck::tap_out(Tensor[] outputs, int id)` before the return; with --ops,
//     `reprocheck::tap_op(Tensor x, int id, int k)` after every aten op with a tensor output.
// The tap ops have no outputs and are declared with conservative alias analysis, so the JIT keeps
// them as side effects and nothing in the model's data flow changes. For the gradient with respect
// to a tapped output, tap_out registers a tensor hook on it: autograd calls it when that gradient
// is computed, in true backward order. A hook registered before a later in-place op (an in-place
// ReLU after batch norm) stays with the original producer and still receives the gradient with
// respect to the layer's own output. Parameter gradients come from hooks on the parameters.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/library.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/optim/sgd.h>
#include <torch/script.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef REPROCHECK_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#endif

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <thread>
#include <unordered_map>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/run.h"
#include "reprocheck/version.h"
#include "torch_model.h"

namespace reprocheck {

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kIdAttr = "_reprocheck_id";

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kChar:
      return "int8";
    case at::kByte:
      return "uint8";
    case at::kShort:
      return "int16";
    case at::kInt:
      return "int32";
    case at::kLong:
      return "int64";
    case at::kBool:
      return "bool";
    default:
      return c10::toString(t);
  }
}

at::ScalarType scalar_type_any(const std::string& name) {
  if (name == "int8") return at::kChar;
  if (name == "uint8") return at::kByte;
  if (name == "int16") return at::kShort;
  if (name == "int32") return at::kInt;
  if (name == "int64") return at::kLong;
  if (name == "bool") return at::kBool;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float64") return at::kDouble;
  return at::kFloat;
}

at::ScalarType scalar_type(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  if (name == "float16") return at::kHalf;
  if (name == "bfloat16") return at::kBFloat16;
  throw UsageError(fmt::format("bad dtype '{}': expected float32, float64, float16 or bfloat16", name));
}

// The message of a LibTorch error without the TorchScript traceback: the last "Error: ..." line
// when there is one (the interpreter puts the real error last), else the first line.
std::string torch_error_summary(const std::string& msg) {
  static const std::regex re(R"((?:^|\n)\s*(?:RuntimeError|ValueError|TypeError|IndexError): ([^\n]*))");
  std::string best;
  for (auto it = std::sregex_iterator(msg.begin(), msg.end(), re); it != std::sregex_iterator(); ++it) best = (*it)[1];
  return best.empty() ? first_line(msg) : first_line(best);
}

std::string torch_message(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// Contiguous CPU copy (or the tensor itself when it already is one) of a tensor's data.
at::Tensor host_view(const at::Tensor& t) {
  at::NoGradGuard no_grad;
  at::Tensor h = t.detach();
  if (!h.device().is_cpu()) h = h.to(at::kCPU);
  return h.contiguous();
}

uint64_t tensor_hash(const at::Tensor& t) {
  at::Tensor h = host_view(t);
  return hash_bytes(h.data_ptr(), h.nbytes());
}

// ---------------------------------------------------------------------------------------------
// Layer selection

const std::set<std::string> kConv = {
    "Conv1d",     "Conv2d",     "Conv3d",     "ConvTranspose1d",     "ConvTranspose2d",     "ConvTranspose3d",
    "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d"};
const std::set<std::string> kDropout = {"Dropout",   "Dropout1d",    "Dropout2d",
                                        "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"};
const std::set<std::string> kBatchNorm = {"BatchNorm1d",     "BatchNorm2d",     "BatchNorm3d",    "SyncBatchNorm",
                                          "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d"};
const std::set<std::string> kLinear = {"Linear", "Bilinear", "LazyLinear"};
const std::set<std::string> kNorm = {"LayerNorm",      "GroupNorm",         "InstanceNorm1d", "InstanceNorm2d",
                                     "InstanceNorm3d", "LocalResponseNorm", "RMSNorm"};

bool is_torch_nn(const ModuleInfo& m) { return m.type.rfind("torch.nn.modules.", 0) == 0; }

const std::set<std::string>* category(const std::string& word) {
  if (word == "conv") return &kConv;
  if (word == "dropout") return &kDropout;
  if (word == "batchnorm" || word == "bn") return &kBatchNorm;
  if (word == "linear") return &kLinear;
  if (word == "norm") return &kNorm;
  return nullptr;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Which modules (by index in `mods`) a --layers spec selects. The root is never selected by
// kind; "path:REGEX" can select it with "path:^$".
std::vector<bool> select_layers(const std::string& spec, const std::vector<ModuleInfo>& mods) {
  std::vector<bool> sel(mods.size(), false);
  if (spec == "none") return sel;
  std::vector<std::string> words;
  if (spec == "default") {
    words = {"conv", "dropout", "batchnorm"};
  } else {
    size_t start = 0;
    while (start <= spec.size()) {
      // path:REGEX takes the rest of the spec (a regex may contain commas).
      if (spec.compare(start, 5, "path:") == 0) {
        words.push_back(spec.substr(start));
        break;
      }
      size_t comma = spec.find(',', start);
      if (comma == std::string::npos) comma = spec.size();
      if (comma > start) words.push_back(spec.substr(start, comma - start));
      start = comma + 1;
    }
  }
  for (const auto& w : words) {
    if (w == "all") {
      for (size_t i = 1; i < mods.size(); ++i) sel[i] = true;
      continue;
    }
    if (w.rfind("path:", 0) == 0) {
      std::regex re;
      try {
        re = std::regex(w.substr(5));
      } catch (const std::regex_error& e) {
        throw UsageError(fmt::format("bad regular expression '{}' in --layers: {}", w.substr(5), e.what()));
      }
      for (size_t i = 0; i < mods.size(); ++i)
        if (std::regex_search(mods[i].path, re)) sel[i] = true;
      continue;
    }
    const auto* cat = category(lower(w));
    for (size_t i = 1; i < mods.size(); ++i) {
      if (cat ? (is_torch_nn(mods[i]) && cat->count(mods[i].kind)) : lower(mods[i].kind) == lower(w)) sel[i] = true;
    }
  }
  return sel;
}

// ---------------------------------------------------------------------------------------------
// The capture session: what the tap kernels report to.

struct Site {
  std::string path, type, kind;
  bool layer = false;                 // selected for layer taps
  std::vector<std::string> op_names;  // for --ops: op k's name in this instance's type graph
};

// Adds the scope's duration to a counter.
struct Timer {
  explicit Timer(double* acc) : acc_(acc), start_(Clock::now()) {}
  ~Timer() { *acc_ += std::chrono::duration<double>(Clock::now() - start_).count(); }
  double* acc_;
  Clock::time_point start_;
};

// A layer's input hash between its tap_in and tap_out: a value (host inputs) or per-input hashes
// still on the device.
struct PendingHash {
  uint64_t value = 0;
  at::Tensor device_parts;
};

// An exact 64-bit hash of a tensor's bytes computed with integer ops where the tensor lives: the
// bytes as little-endian 32-bit words w_i, hashed as sum_i w_i * (2 * i * K + 1) mod 2^64 plus the
// byte count. Integer addition is associative, so the value does not depend on how the device
// orders the reduction. A 0-dim int64 tensor on the tensor's device.
at::Tensor device_hash(const at::Tensor& t) {
  at::Tensor bytes = t.detach().contiguous().reshape({-1}).view(at::kByte);
  const int64_t n = bytes.numel();
  if (n % 4) bytes = at::cat({bytes, at::zeros({4 - n % 4}, bytes.options())});
  at::Tensor words = bytes.view(at::kInt).to(at::kLong).bitwise_and_(0xffffffffLL);
  at::Tensor odd = at::arange(words.numel(), words.options()).mul_(static_cast<int64_t>(0x3C6EF372FE94F82ALL)).add_(1);
  return words.mul_(odd).sum().add_(n);
}

// Writes captured tensors on a background thread, so that storage writes overlap the training
// computation. Each job owns a private copy of its tensor's data (the live tensor may be changed
// in place later, e.g. by an in-place ReLU). At most `limit` bytes wait at a time; beyond that
// the producer waits. All HDF5 calls during a run happen on this thread.
class AsyncWriter {
 public:
  AsyncWriter(DumpWriter* writer, size_t limit) : writer_(writer), limit_(limit), thread_([this] { loop(); }) {}
  ~AsyncWriter() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // `ready`, when given, is an event recorded after the asynchronous device-to-host copy that
  // fills `data`; the writer thread waits for it before reading the data.
  // `input_hash_parts`, when defined, holds per-input device hashes copied with the data: the
  // writer thread folds them into meta.input_hash once the event has completed.
  void put(TensorMeta meta, at::Tensor data, std::shared_ptr<c10::Event> ready = nullptr,
           at::Tensor input_hash_parts = {}) {
    size_t n = data.nbytes();
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queued_bytes_ == 0 || queued_bytes_ + n <= limit_ || error_; });
    if (error_) std::rethrow_exception(error_);
    queued_bytes_ += n;
    queue_.push_back({std::move(meta), std::move(data), std::move(ready), std::move(input_hash_parts)});
    cv_.notify_one();
  }

  // Waits until every queued tensor is written; rethrows a write error.
  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return (queue_.empty() && !busy_) || error_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Job {
    TensorMeta meta;
    at::Tensor data;
    std::shared_ptr<c10::Event> ready;
    at::Tensor input_hash_parts;
  };

  void loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      size_t n = job.data.nbytes();
      std::exception_ptr err;
      try {
        if (job.ready) job.ready->synchronize();
        if (job.input_hash_parts.defined()) {
          const int64_t* parts = job.input_hash_parts.data_ptr<int64_t>();
          uint64_t h = 0;
          for (int64_t k = 0; k < job.input_hash_parts.numel(); ++k) {
            uint64_t hx = static_cast<uint64_t>(parts[k]);
            h = XXH3_64bits_withSeed(&hx, sizeof hx, h);
          }
          job.meta.input_hash = h;
        }
        if (!error_) writer_->write(std::move(job.meta), job.data.data_ptr(), n);
      } catch (...) {
        err = std::current_exception();
      }
      job.data = at::Tensor();
      {
        std::lock_guard<std::mutex> lock(mu_);
        queued_bytes_ -= n;
        busy_ = false;
        if (err && !error_) error_ = err;
      }
      space_.notify_all();
    }
  }

  DumpWriter* writer_;
  size_t limit_;
  std::mutex mu_;
  std::condition_variable cv_, space_;
  std::deque<Job> queue_;
  size_t queued_bytes_ = 0;
  bool busy_ = false, closing_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the members it uses
};

class Session;
Session* g_session = nullptr;  // set while a run is recording; the tap kernels do nothing otherwise

class Session {
 public:
  Session(DumpWriter* writer, std::vector<Site> sites, std::map<std::string, at::Tensor> replay)
      : writer_(writer, kMaxQueuedBytes), sites_(std::move(sites)), replay_(std::move(replay)) {}

  // The reference value for a tensor being replayed (undefined when it is not).
  at::Tensor replacement(const TensorMeta& m, const at::Tensor& like) const {
    if (replay_.empty()) return {};
    auto it = replay_.find(m.key());
    if (it == replay_.end()) return {};
    return it->second.to(like.device(), like.scalar_type()).view(like.sizes());
  }

  // Overwrites `t` with its reference value when it is replayed. The write goes through a
  // tensor that shares the storage but not autograd's version counter: downstream ops and the
  // backward pass see the reference value as if the op had produced it.
  void substitute(const TensorMeta& m, const at::Tensor& t) const {
    at::Tensor r = replacement(m, t);
    if (!r.defined()) return;
    at::NoGradGuard no_grad;
    t.variable_data().copy_(r);
  }

  // Waits for every captured tensor to reach the dump.
  void finish() { writer_.drain(); }

  void begin_step(int step) {
    std::lock_guard<std::mutex> lock(mu_);
    step_ = step;
    calls_.clear();
    op_calls_.clear();
    pending_inputs_.clear();
  }

  // Hashes a tapped layer's inputs. Host tensors: XXH3 of their bytes, now. Device tensors: an
  // integer hash computed on the device (exact, so independent of reduction order), whose value
  // travels to the host with the layer's output copy: no synchronization in the forward pass.
  void on_inputs(at::TensorList xs, int64_t id) {
    if (!valid(id) || !sites_[id].layer) return;
    check_interrupt();
    Timer t(&hash_seconds_);
    PendingHash p;
    bool on_device = false;
    for (const auto& x : xs) on_device |= !x.device().is_cpu();
    if (on_device) {
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> parts;
      for (const auto& x : xs) parts.push_back(device_hash(x.device().is_cpu() ? x.to(xs[0].device()) : x));
      p.device_parts = parts.empty() ? at::Tensor() : at::stack(parts);
    } else {
      for (const auto& x : xs) {
        uint64_t hx = tensor_hash(x);
        p.value = XXH3_64bits_withSeed(&hx, sizeof hx, p.value);
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    pending_inputs_[id].push_back(std::move(p));
  }

  void on_outputs(at::TensorList ys, int64_t id) {
    if (!valid(id) || !sites_[id].layer) return;
    check_interrupt();
    const Site& s = sites_[id];
    int call;
    PendingHash input;
    bool has_input_hash = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      call = calls_[id]++;
      auto& pending = pending_inputs_[id];
      if (!pending.empty()) {
        input = std::move(pending.back());
        has_input_hash = true;
        pending.pop_back();
      }
    }
    for (size_t slot = 0; slot < ys.size(); ++slot) {
      TensorMeta m =
          meta("forward", s.path, s.type, "activation", ys.size() == 1 ? "out" : fmt::format("out.{}", slot), call);
      m.input_hash = input.value;
      m.has_input_hash = has_input_hash;
      substitute(m, ys[slot]);
      write(std::move(m), ys[slot], input.device_parts);
      hook_grad(ys[slot], s.path, s.type, ys.size() == 1 ? "out" : fmt::format("out.{}", slot), call);
    }
  }

  void on_op(const at::Tensor& x, int64_t id, int64_t k) {
    if (!valid(id) || k < 0 || static_cast<size_t>(k) >= sites_[id].op_names.size()) return;
    check_interrupt();
    const Site& s = sites_[id];
    const std::string& op = s.op_names[k];
    std::string layer = s.path.empty() ? fmt::format("{}#{}", op, k) : fmt::format("{}:{}#{}", s.path, op, k);
    int call;
    {
      std::lock_guard<std::mutex> lock(mu_);
      call = op_calls_[{id, k}]++;
    }
    TensorMeta m = meta("forward", layer, op, "activation", "out", call);
    substitute(m, x);
    write(std::move(m), x);
    hook_grad(x, layer, op, "out", call);
  }

  // Records a parameter gradient; returns its replacement when it is replayed.
  at::Tensor on_param_grad(const std::string& layer, const std::string& type, const std::string& name,
                           const at::Tensor& g) {
    TensorMeta m = meta("param_grad", layer, type, "param_grad", name, 0);
    at::Tensor r = replacement(m, g);
    write(std::move(m), r.defined() ? r : g);
    return r.defined() ? r : g;
  }

  // Records a tensor of the training loop itself (input, target, output, loss, parameters).
  void record(const std::string& phase, const std::string& layer, const std::string& type, const std::string& kind,
              const std::string& name, const at::Tensor& t) {
    TensorMeta m = meta(phase, layer, type, kind, name, 0);
    substitute(m, t);
    write(std::move(m), t);
  }

  int step() const { return step_; }
  double write_seconds() const { return write_seconds_; }
  double hash_seconds() const { return hash_seconds_; }

 private:
  bool valid(int64_t id) const { return id >= 0 && static_cast<size_t>(id) < sites_.size(); }

  TensorMeta meta(const std::string& phase, const std::string& layer, const std::string& type, const std::string& kind,
                  const std::string& name, int call) const {
    TensorMeta m;
    m.step = step_;
    m.phase = phase;
    m.layer = layer;
    m.layer_type = type;
    m.kind = kind;
    m.name = name;
    m.call = call;
    return m;
  }

  void hook_grad(const at::Tensor& y, const std::string& layer, const std::string& type, const std::string& name,
                 int call) {
    if (!y.requires_grad()) return;
    int step = step_;
    const_cast<at::Tensor&>(y).register_hook([this, layer, type, name, call, step](const at::Tensor& g) -> at::Tensor {
      if (g_session != this || !g.defined()) return g;
      TensorMeta m = meta("backward", layer, type, "grad", name, call);
      m.step = step;
      at::Tensor r = replacement(m, g);
      write(std::move(m), r.defined() ? r : g);
      return r.defined() ? r : g;
    });
  }

  // Takes a private host copy of `t` and queues it for the dump. A host tensor is cloned. A device
  // tensor is copied into pinned host memory asynchronously, on the stream that produced it (so
  // the copy sees the value at this point, before any later in-place op), and the writer thread
  // waits for the copy's event: the training thread does not stall on the transfer.
  void write(TensorMeta m, const at::Tensor& t, const at::Tensor& input_hash_parts = {}) {
    auto start = Clock::now();
    at::Tensor h, hash_parts;
    std::shared_ptr<c10::Event> ready;
    {
      at::NoGradGuard no_grad;
      at::Tensor d = t.detach();
      if (d.device().is_cpu()) {
        h = d.clone(at::MemoryFormat::Contiguous);
      } else {
        at::Tensor src = d.contiguous();
        h = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(true));
        h.copy_(src, /*non_blocking=*/true);
        if (input_hash_parts.defined()) {
          hash_parts =
              at::empty(input_hash_parts.sizes(), input_hash_parts.options().device(at::kCPU).pinned_memory(true));
          hash_parts.copy_(input_hash_parts, /*non_blocking=*/true);
        }
        const auto* impl = c10::impl::getDeviceGuardImpl(src.device().type());
        ready = std::make_shared<c10::Event>(src.device().type());
        ready->record(impl->getStream(src.device()));
      }
    }
    m.dtype = dtype_name(h.scalar_type());
    m.shape.assign(h.sizes().begin(), h.sizes().end());
    dtype_size(m.dtype);  // unsupported dtypes fail here with a clear line
    std::lock_guard<std::mutex> lock(mu_);
    writer_.put(std::move(m), std::move(h), std::move(ready), std::move(hash_parts));
    write_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  }

  static constexpr size_t kMaxQueuedBytes = size_t{256} << 20;
  AsyncWriter writer_;
  std::vector<Site> sites_;
  std::map<std::string, at::Tensor> replay_;
  std::mutex mu_;
  int step_ = -1;
  std::unordered_map<int64_t, int> calls_;
  std::map<std::pair<int64_t, int64_t>, int> op_calls_;
  std::unordered_map<int64_t, std::vector<PendingHash>> pending_inputs_;
  double write_seconds_ = 0;
  double hash_seconds_ = 0;
};

void tap_in(at::TensorList xs, int64_t id) {
  if (g_session) g_session->on_inputs(xs, id);
}
void tap_out(at::TensorList ys, int64_t id) {
  if (g_session) g_session->on_outputs(ys, id);
}
void tap_op(const at::Tensor& x, int64_t id, int64_t k) {
  if (g_session) g_session->on_op(x, id, k);
}

}  // namespace
}  // namespace reprocheck

TORCH_LIBRARY(reprocheck, m) {
  m.def(torch::schema("reprocheck::tap_in(Tensor[] xs, int id) -> ()", c10::AliasAnalysisKind::CONSERVATIVE));
  m.def(torch::schema("reprocheck::tap_out(Tensor[] ys, int id) -> ()", c10::AliasAnalysisKind::CONSERVATIVE));
  m.def(torch::schema("reprocheck::tap_op(Tensor x, int id, int k) -> ()", c10::AliasAnalysisKind::CONSERVATIVE));
}

TORCH_LIBRARY_IMPL(reprocheck, CompositeImplicitAutograd, m) {
  m.impl("tap_in", &reprocheck::tap_in);
  m.impl("tap_out", &reprocheck::tap_out);
  m.impl("tap_op", &reprocheck::tap_op);
}

namespace reprocheck {

std::string layer_categories_help() {
  return "default (conv, dropout, batchnorm), all, none, a comma list of kinds (conv, dropout, batchnorm, linear, "
         "norm, or a module class name such as ReLU or BasicBlock), or path:REGEX";
}

namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

bool is_tensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

Node* insert_tap(Graph& g, const char* op, std::vector<Value*> inputs) {
  Node* n = g.create(c10::Symbol::fromQualString(op), inputs, 0);
  return g.insertNode(n);
}

// The tensors of a value: itself, or the tensor elements of a tuple (unpacked in the graph).
std::vector<Value*> tensors_of(Graph& g, Value* v) {
  if (is_tensor(v)) return {v};
  std::vector<Value*> out;
  if (v->type()->kind() == c10::TypeKind::TupleType) {
    Node* unpack = g.insertNode(g.createTupleUnpack(v));
    for (Value* e : unpack->outputs())
      if (is_tensor(e)) out.push_back(e);
  }
  return out;
}

// Ops with one tensor output: aten ops and custom ops (torch.ops.NS.op), not the interpreter's
// prim nodes nor reprocheck's own taps.
void collect_ops(torch::jit::Block* b, std::vector<Node*>& out) {
  for (Node* n : b->nodes()) {
    for (auto* sub : n->blocks()) collect_ops(sub, out);
    const std::string ns = n->kind().ns().toUnqualString();
    if (ns == "prim" || ns == "reprocheck" || ns == "attr" || ns == "scope" || ns == "namespaces") continue;
    if (n->outputs().size() == 1 && is_tensor(n->output())) out.push_back(n);
  }
}

// Inlines the calls a module's forward makes to free functions and to its own methods (Conv2d's
// forward calls self._conv_forward), so that op taps reach the ops those run. Calls to submodules
// stay calls: each submodule's ops are tapped in its own graph, under its own path.
void inline_local_calls(Graph& g) {
  Value* self = g.inputs()[0];
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<Node*> calls;
    std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* b) {
      for (Node* n : b->nodes()) {
        for (auto* sub : n->blocks()) walk(sub);
        bool local =
            n->kind() == c10::prim::CallFunction || (n->kind() == c10::prim::CallMethod && n->input(0) == self);
        if (local && torch::jit::tryToGraphFunction(n)) calls.push_back(n);
      }
    };
    walk(g.block());
    for (Node* n : calls) {
      torch::jit::GraphFunction* fn = torch::jit::tryToGraphFunction(n);
      if (n->kind() == c10::prim::CallFunction) n->removeInput(0);  // the function constant
      torch::jit::inlineCallTo(n, fn);
      changed = true;
    }
  }
}

// Patches one module type's forward graph. Returns the op names tapped (for --ops), in order.
std::vector<std::string> patch_graph(Graph& g, bool layer_taps, bool op_taps) {
  Value* self = g.inputs()[0];
  std::vector<std::string> op_names;
  if (op_taps) {
    inline_local_calls(g);
    std::vector<Node*> ops;
    collect_ops(g.block(), ops);
    for (size_t k = 0; k < ops.size(); ++k) {
      Node* n = ops[k];
      op_names.push_back(n->kind().toQualString());
      torch::jit::WithInsertPoint guard(n->next());
      Value* id = g.insertGetAttr(self, kIdAttr);
      insert_tap(g, "reprocheck::tap_op", {n->output(), id, g.insertConstant(static_cast<int64_t>(k))});
    }
  }
  if (layer_taps) {
    {
      Node* first = g.block()->nodes().front();
      torch::jit::WithInsertPoint guard(first);
      std::vector<Value*> ins;
      for (size_t i = 1; i < g.inputs().size(); ++i)
        if (is_tensor(g.inputs()[i])) ins.push_back(g.inputs()[i]);
      Value* list = g.insertNode(g.createList(c10::TensorType::get(), ins))->output();
      insert_tap(g, "reprocheck::tap_in", {list, g.insertGetAttr(self, kIdAttr)});
    }
    torch::jit::WithInsertPoint guard(g.return_node());
    std::vector<Value*> outs = tensors_of(g, g.outputs()[0]);
    Value* list = g.insertNode(g.createList(c10::TensorType::get(), outs))->output();
    insert_tap(g, "reprocheck::tap_out", {list, g.insertGetAttr(self, kIdAttr)});
  }
  return op_names;
}

std::string layer_types_of(const std::vector<ModuleInfo>& mods) {
  std::set<std::string> kinds;
  for (size_t i = 1; i < mods.size(); ++i) kinds.insert(mods[i].kind);
  return fmt::format("{}", fmt::join(kinds, ", "));
}

// Instruments `module` for the selection in `o`; returns the sites indexed by instance id.
std::vector<Site> instrument(torch::jit::Module& module, const RunOptions& o, const std::vector<ModuleInfo>& mods) {
  std::vector<bool> sel = select_layers(o.layers, mods);
  size_t n_sel = std::count(sel.begin(), sel.end(), true);
  if (n_sel == 0 && !o.ops && o.layers != "none") {
    if (mods.size() <= 1)
      throw InputError(
          fmt::format("--layers {} selects nothing in model '{}': it has no submodules (a frozen or "
                      "fully inlined model); use --ops to tap the ops of its forward graph",
                      o.layers, o.model));
    throw InputError(
        fmt::format("--layers {} selects nothing in model '{}'; its layer types are: {}; pass one of "
                    "them, 'all', or --ops",
                    o.layers, o.model, layer_types_of(mods)));
  }
  std::vector<Site> sites(mods.size());
  std::vector<torch::jit::Module> instances;
  for (const auto& item : module.named_modules()) instances.push_back(item.value);
  // Types to patch: those of selected instances, or every type for --ops.
  std::map<c10::ClassType*, std::vector<size_t>> type_instances;
  for (size_t i = 0; i < instances.size(); ++i) type_instances[instances[i].type().get()].push_back(i);
  for (auto& [type, idx] : type_instances) {
    bool any_layer = false;
    for (size_t i : idx) any_layer |= static_cast<bool>(sel[i]);
    if (!any_layer && !o.ops) continue;
    torch::jit::Function* fn = type->findMethod("forward");
    if (!fn) continue;
    type->addOrCheckAttribute(kIdAttr, c10::IntType::get());
    auto names = patch_graph(*torch::jit::toGraphFunction(*fn).graph(), any_layer, o.ops);
    for (size_t i : idx) {
      instances[i]._ivalue()->setAttr(kIdAttr, c10::IValue(static_cast<int64_t>(i)));
      sites[i].op_names = names;
    }
  }
  for (size_t i = 0; i < mods.size(); ++i) {
    sites[i].path = mods[i].path;
    sites[i].type = mods[i].type;
    sites[i].kind = mods[i].kind;
    sites[i].layer = sel[i];
  }
  return sites;
}

// The layers whose forward graph (with its own methods and functions inlined) runs an op named
// `base` ("upsample_bilinear2d", "put_"), as "path (Type)".
std::vector<std::string> layers_running(const torch::jit::Module& module, const std::string& base) {
  std::vector<std::string> out;
  std::set<const c10::ClassType*> seen;
  for (const auto& item : module.named_modules()) {
    auto type = item.value.type();
    torch::jit::Function* fn = type->findMethod("forward");
    if (!fn || seen.count(type.get())) continue;
    seen.insert(type.get());
    auto g = torch::jit::toGraphFunction(*fn).graph()->copy();
    inline_local_calls(*g);
    std::vector<Node*> ops;
    collect_ops(g->block(), ops);
    for (Node* n : ops) {
      std::string name = n->kind().toUnqualString();
      if (name == base || name == base + "_" || (!base.empty() && base.back() == '_' && name + "_" == base)) {
        std::string path = item.name.empty() ? "<model>" : item.name;
        out.push_back(fmt::format("'{}' ({})", path, demangle_type_name(type->name()->qualifiedName())));
        break;
      }
    }
  }
  return out;
}

// For LibTorch's "X does not have a deterministic implementation" errors: one line naming the op
// and the layer that runs it. "" for other errors.
std::string deterministic_error(const std::string& msg, const torch::jit::Module& module, const c10::Device& device) {
  static const std::regex re(R"(([A-Za-z0-9_]+) does not have a deterministic implementation)");
  std::smatch m;
  if (!std::regex_search(msg, m, re)) return "";
  std::string op = m[1];
  std::string base = op;
  for (const char* suffix : {"_cuda_", "_cuda", "_cpu_", "_cpu", "_out", "_backward"}) {
    std::string sfx = suffix;
    if (base.size() > sfx.size() && base.compare(base.size() - sfx.size(), sfx.size(), sfx) == 0)
      base.erase(base.size() - sfx.size());
  }
  auto layers = layers_running(module, base);
  std::string where = layers.empty()
                          ? ""
                          : fmt::format(" in layer {}{}", layers.front(),
                                        layers.size() > 1 ? fmt::format(" (and {} more)", layers.size() - 1) : "");
  return fmt::format(
      "--deterministic: aten::{}{} has no deterministic implementation on {} (LibTorch raised it for {}); "
      "run with --deterministic=warn to run it anyway with a warning, or replace the op",
      base, where, device.is_cuda() ? "CUDA" : "the CPU", op);
}

// ---------------------------------------------------------------------------------------------
// The run

// The reference values to replay, read before the run starts (HDF5 is not used from two
// threads at once: during the run, only the dump writer's thread calls it).
std::map<std::string, at::Tensor> load_replay(const RecordTarget& t) {
  std::map<std::string, at::Tensor> out;
  if (t.replay_keys.empty()) return out;
  if (t.replay_dump.empty()) throw UsageError("--replay-keys needs --replay REF.h5");
  DumpReader ref(t.replay_dump);
  std::set<std::string> wanted(t.replay_keys.begin(), t.replay_keys.end());
  for (const auto& m : ref.index()) {
    if (!wanted.count(m.key())) continue;
    auto bytes = ref.read(m);
    at::ScalarType st = scalar_type_any(m.dtype);
    at::Tensor v = at::empty(m.shape, at::TensorOptions().dtype(st));
    std::memcpy(v.data_ptr(), bytes.data(), bytes.size());
    out.emplace(m.key(), v);
    wanted.erase(m.key());
  }
  if (!wanted.empty())
    throw InputError(
        fmt::format("--replay '{}' has no tensor '{}'; pass keys of that dump", t.replay_dump, *wanted.begin()));
  return out;
}

int64_t resolve_seed(const std::string& s) {
  if (s != "random") return std::stoll(s);
  std::random_device rd;
  return static_cast<int64_t>(((static_cast<uint64_t>(rd()) << 31) ^ rd()) & 0x7fffffffffffffffULL);
}

c10::Device resolve_device(const std::string& d) {
  if (d == "cpu") return c10::Device(c10::kCPU);
  bool avail = torch::cuda::is_available();
  if (d == "auto") return avail ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!avail)
    throw UsageError(
        fmt::format("--device {}: CUDA is not available on this machine (no GPU or driver); use "
                    "--device cpu or auto",
                    d));
  c10::Device dev(d);
  if (dev.index() >= static_cast<int>(torch::cuda::device_count()))
    throw UsageError(fmt::format("--device {}: this machine has {} CUDA device(s)", d, torch::cuda::device_count()));
  return dev.has_index() ? dev : c10::Device(c10::kCUDA, 0);
}

std::string iso_time_utc() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// GPU name and driver version of a CUDA device ("", "" without CUDA support in this build).
std::pair<std::string, std::string> gpu_name_and_driver(const c10::Device& d) {
#ifdef REPROCHECK_WITH_CUDA
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(d.index());
  int driver = 0;
  cudaDriverGetVersion(&driver);
  return {prop ? prop->name : "cuda", fmt::format("{}.{}", driver / 1000, (driver % 1000) / 10)};
#else
  (void)d;
  return {"cuda", "unknown (reprocheck built without CUDA headers)"};
#endif
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "cpu";
}

uint64_t file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return hash_bytes(data.data(), data.size());
}

void apply_knobs(const RunOptions& o) {
  auto& ctx = at::globalContext();
  bool det = o.deterministic != "off";
  if (det) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  ctx.setDeterministicCuDNN(det);
  ctx.setBenchmarkCuDNN(o.benchmark);
  ctx.setDeterministicAlgorithms(det, o.deterministic == "warn");
  if (o.threads > 0) at::set_num_threads(o.threads);
}

}  // namespace

RecordResult record_run(const RunOptions& o, const RecordTarget& target) {
  validate(o);
  for (const auto& lib : o.libraries) load_library(lib);
  apply_knobs(o);
  RecordResult result;
  const c10::Device device = resolve_device(o.device);
  result.device = device.str();
  result.seed = resolve_seed(o.seed);
  result.data_seed = resolve_seed(o.data_seed);

  // TorchScript's graph executor would otherwise profile the graphs and, from a later step on,
  // run JIT autodiff and fusion groups in place of the ops' own autograd formulas: numbers that
  // eager PyTorch training never computes, and that would change with the tap nodes. Running the
  // graphs op by op keeps training as in eager mode, with and without capture.
  torch::jit::GraphOptimizerEnabledGuard no_jit_opt(false);

  ModelMeta meta;
  torch::jit::Module module = detail::load_module(o.model, device, &meta);
  std::vector<ModuleInfo> mods = detail::describe_modules(module);
  std::vector<int64_t> shape =
      !o.input_shape.empty() ? o.input_shape : meta.input_shape.value_or(std::vector<int64_t>{});
  if (shape.empty())
    throw InputError(
        fmt::format("model '{}' has no input shape: it carries no reprocheck.json; pass --input-shape "
                    "N,C,H,W (or embed one with torch.jit.save(m, path, _extra_files={{'reprocheck.json': "
                    "'{{\"input_shape\": [...]}}'}}))",
                    o.model));
  const std::string dtype = !o.dtype.empty() ? o.dtype : meta.dtype.value_or("float32");
  const std::string loss_name = !o.loss.empty() ? o.loss : meta.loss.value_or("mse");
  const at::ScalarType stype = scalar_type(dtype);
  if (stype != at::kFloat) module.to(stype);
  module.train(o.mode == "train");

  torch::manual_seed(static_cast<uint64_t>(result.seed));
  if (o.reinit == "xavier_normal") {
    at::NoGradGuard no_grad;
    for (auto p : module.parameters())
      if (p.dim() >= 2) torch::nn::init::xavier_normal_(p);
  }

  std::unique_ptr<DumpWriter> writer;
  if (!target.path.empty()) writer = std::make_unique<DumpWriter>(target.path, target.overwrite);
  std::unique_ptr<Session> session;
  if (target.capture) {
    auto sites = instrument(module, o, mods);
    if (writer) session = std::make_unique<Session>(writer.get(), std::move(sites), load_replay(target));
  }
  // The session only reports while it is the current one.
  struct Current {
    explicit Current(Session* s) { g_session = s; }
    ~Current() { g_session = nullptr; }
  } current(session.get());

  std::map<std::string, std::string> type_of;
  for (const auto& m : mods) type_of[m.path] = m.type;
  auto split = [](const std::string& full) {
    auto dot = full.rfind('.');
    return dot == std::string::npos ? std::make_pair(std::string(), full)
                                    : std::make_pair(full.substr(0, dot), full.substr(dot + 1));
  };
  auto record_state = [&](const std::string& phase) {
    if (!g_session) return;
    for (const auto& p : module.named_parameters(true)) {
      auto [layer, name] = split(p.name);
      g_session->record(phase, layer, type_of[layer], "param", name, p.value);
    }
    for (const auto& b : module.named_buffers(true)) {
      auto [layer, name] = split(b.name);
      g_session->record(phase, layer, type_of[layer], "buffer", name, b.value);
    }
  };

  std::vector<at::Tensor> params;
  std::vector<std::string> param_names;
  for (const auto& p : module.named_parameters(true)) {
    params.push_back(p.value);
    param_names.push_back(p.name);
    if (g_session) {
      auto [layer, name] = split(p.name);
      std::string type = type_of[layer];
      at::Tensor(p.value).register_hook([layer, type, name](const at::Tensor& g) -> at::Tensor {
        if (g_session && g.defined()) return g_session->on_param_grad(layer, type, name, g);
        return g;
      });
    }
  }
  torch::optim::SGD opt(params, torch::optim::SGDOptions(o.lr).momentum(o.momentum));

  if (writer) {
    auto b = build_info();
    nlohmann::json opts = {{"model", o.model},
                           {"steps", o.steps},
                           {"seed", o.seed},
                           {"data_seed", o.data_seed},
                           {"deterministic", o.deterministic},
                           {"benchmark", o.benchmark},
                           {"threads", at::get_num_threads()},
                           {"device", result.device},
                           {"mode", o.mode},
                           {"reinit", o.reinit},
                           {"input_shape", shape},
                           {"dtype", dtype},
                           {"loss", loss_name},
                           {"lr", o.lr},
                           {"momentum", o.momentum},
                           {"layers", o.layers},
                           {"ops", o.ops},
                           {"libraries", o.libraries}};
    auto& w = *writer;
    w.set_attribute("run_options", opts.dump());
    w.set_attribute("reprocheck_version", b.reprocheck);
    w.set_attribute("libtorch_version", b.libtorch);
    w.set_attribute("cuda_version", b.cuda);
    w.set_attribute("cudnn_version", b.cudnn);
    w.set_attribute("hdf5_version", b.hdf5);
    w.set_attribute("device", result.device);
    if (device.is_cuda()) {
      auto [name, driver] = gpu_name_and_driver(device);
      w.set_attribute("device_name", name);
      w.set_attribute("cuda_driver_version", driver);
    } else {
      w.set_attribute("device_name", cpu_name());
    }
    auto& ctx = at::globalContext();
    w.set_attribute("tf32_cublas", static_cast<int64_t>(ctx.allowTF32CuBLAS()));
    w.set_attribute("tf32_cudnn", static_cast<int64_t>(ctx.allowTF32CuDNN()));
    w.set_attribute("float32_matmul_precision",
                    ctx.float32MatmulPrecision() == at::Float32MatmulPrecision::HIGHEST ? "highest"
                    : ctx.float32MatmulPrecision() == at::Float32MatmulPrecision::HIGH  ? "high"
                                                                                        : "medium");
    w.set_attribute("host", host_name());
    w.set_attribute("time", iso_time_utc());
    w.set_attribute("seed", result.seed);
    w.set_attribute("seed_mode", o.seed == "random" ? "random" : "fixed");
    w.set_attribute("data_seed", result.data_seed);
    w.set_attribute("data_seed_mode", o.data_seed == "random" ? "random" : "fixed");
    w.set_attribute("deterministic", o.deterministic);
    w.set_attribute("benchmark", static_cast<int64_t>(o.benchmark));
    w.set_attribute("threads", static_cast<int64_t>(at::get_num_threads()));
    w.set_attribute("mode", o.mode);
    w.set_attribute("steps", static_cast<int64_t>(o.steps));
    w.set_attribute("model", o.model);
    w.set_attribute("model_signature", detail::model_signature(module));
    w.set_attribute("model_hash", fmt::format("{:016x}", file_hash(o.model)));
    w.set_attribute("layers", o.layers);
  }

  auto data_gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(result.data_seed));
  auto start = Clock::now();
  if (g_session) {
    g_session->begin_step(-1);
    record_state("init");
  }
  auto fp = [&](const at::Tensor& t) { result.fingerprint.push_back(tensor_hash(t)); };
  // The tap kernels throw Interrupted on Ctrl-C; the TorchScript interpreter may rethrow it as
  // another exception type, so any exception after an interrupt request is reported as one.
  try {
    for (int step = 0; step < o.steps; ++step) {
      check_interrupt();
      if (g_session) g_session->begin_step(step);
      at::Tensor x = at::randn(shape, data_gen, at::TensorOptions().dtype(stype)).to(device);
      if (g_session) g_session->record("input", "", "", "input", "input", x);
      at::Tensor out;
      try {
        c10::IValue r = module.forward({x});
        if (r.isTuple() && !r.toTupleRef().elements().empty() && r.toTupleRef().elements()[0].isTensor())
          out = r.toTupleRef().elements()[0].toTensor();
        else if (r.isTensor())
          out = r.toTensor();
        else
          throw InputError(
              fmt::format("model '{}' returns {}, not a tensor; reprocheck trains on a tensor output (or "
                          "the first tensor of a tuple)",
                          o.model, r.tagKind()));
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        if (auto det = deterministic_error(torch_message(e), module, device); !det.empty()) throw InputError(det);
        std::string expected = meta.input_shape ? fmt::format("; the model's reprocheck.json gives input shape {}",
                                                              detail::shape_string(*meta.input_shape))
                                                : "; check --input-shape";
        throw InputError(fmt::format("forward of model '{}' failed on input {} {}: {}{}", o.model,
                                     detail::shape_string(shape), dtype, torch_error_summary(torch_message(e)),
                                     expected));
      }
      if (g_session) g_session->record("output", "", "", "output", "output", out);
      at::Tensor tgt, loss;
      try {
        if (loss_name == "cross_entropy") {
          if (out.dim() < 2)
            throw InputError(
                fmt::format("--loss cross_entropy needs a model output of shape [N, C, ...], model '{}' "
                            "returns {}; pass --loss mse or --loss sum",
                            o.model, detail::shape_string(out.sizes())));
          std::vector<int64_t> tshape(out.sizes().begin(), out.sizes().end());
          tshape.erase(tshape.begin() + 1);
          tgt = at::randint(0, out.size(1), tshape, data_gen, at::TensorOptions().dtype(at::kLong)).to(device);
        } else if (loss_name == "mse") {
          tgt = at::randn(out.sizes(), data_gen, at::TensorOptions().dtype(out.scalar_type())).to(device);
        }
        if (g_session && tgt.defined()) g_session->record("input", "", "", "target", "target", tgt);
        if (loss_name == "cross_entropy")
          loss = torch::nn::functional::cross_entropy(out, tgt);
        else if (loss_name == "mse")
          loss = torch::mse_loss(out, tgt);
        else
          loss = out.sum();
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        throw InputError(fmt::format("loss {} failed on the output {} of model '{}': {}; pass another --loss",
                                     loss_name, detail::shape_string(out.sizes()), o.model,
                                     torch_error_summary(torch_message(e))));
      }
      if (g_session) g_session->record("loss", "", "", "loss", "loss", loss);
      fp(out);
      fp(loss);
      // A model without trainable parameters (a frozen one) is run forward only.
      result.forward_only = !loss.requires_grad();
      if (!result.forward_only) {
        try {
          loss.backward();
        } catch (const Error&) {
          throw;
        } catch (const std::exception& e) {
          if (auto det = deterministic_error(torch_message(e), module, device); !det.empty()) throw InputError(det);
          throw RunError(fmt::format("backward of model '{}' failed at step {}: {}", o.model, step,
                                     torch_error_summary(torch_message(e))));
        }
        for (size_t i = 0; i < params.size(); ++i)
          if (params[i].grad().defined()) fp(params[i].grad());
        opt.step();
        opt.zero_grad();
      }
      record_state("after_step");
      for (const auto& p : module.parameters(true)) fp(p);
      for (const auto& b : module.buffers(true)) fp(b);
    }
  } catch (...) {
    if (interrupt_requested()) throw Interrupted();
    throw;
  }
  if (session) session->finish();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (session) {
    result.write_seconds = session->write_seconds();
    result.hash_seconds = session->hash_seconds();
  }
  if (writer) {
    result.tensors = static_cast<int64_t>(writer->tensor_count());
    result.bytes = writer->bytes_written();
    writer->commit();
  }
  return result;
}

}  // namespace reprocheck
