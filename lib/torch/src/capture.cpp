#include "capture.h"

#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "async_writer.h"
#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/protocol.h"
#include "torch_dtype.h"

namespace reprocheck::detail {

namespace {}  // namespace

static Session* g_session = nullptr;  // set while a capture is active; the tap kernels do nothing otherwise

class Session {
 public:
  Session(DumpWriter* writer, std::vector<Site> sites, std::map<std::string, at::Tensor> replay, OpCapture ops)
      : pool_(kMaxQueuedBytes),
        writer_(writer, kMaxQueuedBytes, &pool_),
        dump_(writer),
        hashes_only_(writer->hashes_only()),
        sites_(std::move(sites)),
        replay_(std::move(replay)),
        ops_(std::move(ops)) {}

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
  std::exception_ptr write_error() { return writer_.error(); }

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
        p.value = combine_hash(p.value, hx);
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
    if (s.dropout)
      for (const auto& y : ys) dropout_elements_ += y.numel();
    for (size_t slot = 0; slot < ys.size(); ++slot) {
      TensorMeta m = meta(Phase::forward, s.path, s.type, Kind::activation,
                          ys.size() == 1 ? "out" : fmt::format("out.{}", slot), call);
      m.input_hash = input.value;
      m.has_input_hash = has_input_hash;
      substitute(m, ys[slot]);
      write(std::move(m), ys[slot], input.device_parts);
      hook_grad(ys[slot], s.path, s.type, ys.size() == 1 ? "out" : fmt::format("out.{}", slot), call);
    }
  }

  void on_op(const at::Tensor& x, int64_t id, int64_t k) {
    if (!valid(id) || k < 0 || static_cast<size_t>(k) >= sites_[id].op_names.size()) return;
    const Site& s = sites_[id];
    const bool drill = drilling(s.path);
    if (!ops_.always && !drill) return;
    check_interrupt();
    const std::string& op = s.op_names[k];
    std::string layer = s.path.empty() ? fmt::format("{}#{}", op, k) : fmt::format("{}:{}#{}", s.path, op, k);
    int call;
    {
      std::lock_guard<std::mutex> lock(mu_);
      call = op_calls_[{id, k}]++;
    }
    TensorMeta m = meta(Phase::forward, layer, op, Kind::activation, "out", call);
    substitute(m, x);
    write(std::move(m), x, {}, drill);
    hook_grad(x, layer, op, "out", call);
    if (!drill) return;
    const std::string& source = static_cast<size_t>(k) < s.op_sources.size() ? s.op_sources[k] : "";
    note_source(layer, op, s.path, "forward", "call", source, "");
    if (static_cast<size_t>(k) < s.op_grad_names.size())
      hook_node(x, layer, op, s.path, call, source, s.op_grad_names[k]);
  }

  // Pass 3's sources: the dump's op_sources attribute.
  std::string op_sources() const {
    if (ops_.drill_step < 0) return "";
    std::lock_guard<std::mutex> lock(mu_);
    return nlohmann::json({{"step", ops_.drill_step}, {"scope", ops_.drill_scope}, {"ops", sources_}}).dump();
  }

  // Records a parameter gradient; returns its replacement when it is replayed.
  at::Tensor on_param_grad(const std::string& layer, const std::string& type, const std::string& name,
                           const at::Tensor& g) {
    TensorMeta m = meta(Phase::param_grad, layer, type, Kind::param_grad, name, 0);
    at::Tensor r = replacement(m, g);
    write(std::move(m), r.defined() ? r : g);
    return r.defined() ? r : g;
  }

  // Records a tensor of the training loop itself (input, target, output, loss, parameters).
  void record(Phase phase, const std::string& layer, const std::string& type, Kind kind, const std::string& name,
              const at::Tensor& t) {
    TensorMeta m = meta(phase, layer, type, kind, name, 0);
    substitute(m, t);
    write(std::move(m), t);
  }

  void record_all(Phase phase, const std::vector<StateRecord>& records) {
    std::vector<TensorMeta> metas;
    metas.reserve(records.size());
    for (const auto& r : records) {
      metas.push_back(meta(phase, r.layer, r.type, r.kind, r.name, 0));
      substitute(metas.back(), r.t);
    }
    std::vector<std::optional<uint64_t>> hashes(records.size());
    if (hashes_only_) {
      std::vector<at::Tensor> host(records.size());
      for (size_t i = 0; i < records.size(); ++i)
        if (records[i].t.device().is_cpu() && records[i].t.layout() == at::kStrided && !dump_->keeps_data(metas[i]))
          host[i] = records[i].t.detach().contiguous();
      hash_host_tensors(host, hashes);
    }
    for (size_t i = 0; i < records.size(); ++i) {
      if (hashes[i])
        write_hash(std::move(metas[i]), records[i].t, {}, hashes[i]);
      else
        write(std::move(metas[i]), records[i].t);
    }
  }

  // XXH3 of each defined tensor of `host` into `out`, on torch's intra-op threads (hash_spans).
  static void hash_host_tensors(const std::vector<at::Tensor>& host, std::vector<std::optional<uint64_t>>& out) {
    std::vector<size_t> index;
    std::vector<std::pair<const void*, size_t>> spans;
    for (size_t i = 0; i < host.size(); ++i)
      if (host[i].defined()) {
        index.push_back(i);
        spans.emplace_back(host[i].data_ptr(), host[i].nbytes());
      }
    auto on_intra_op_threads = [](size_t workers, const std::function<void()>& work) {
      at::parallel_for(0, static_cast<int64_t>(workers), 1, [&](int64_t, int64_t) { work(); });
    };
    const auto hashes = hash_spans(spans, static_cast<size_t>(at::get_num_threads()), on_intra_op_threads);
    for (size_t k = 0; k < index.size(); ++k) out[index[k]] = hashes[k];
  }

  int step() const { return step_; }
  bool plan_done() const { return plan_done_; }
  double write_seconds() const { return write_seconds_; }
  double hash_seconds() const { return hash_seconds_; }

 private:
  bool valid(int64_t id) const { return id >= 0 && static_cast<size_t>(id) < sites_.size(); }

  bool drilling(const std::string& path) const {
    const std::string& scope = ops_.drill_scope;
    return ops_.drill_step >= 0 && step_ == ops_.drill_step &&
           (scope.empty() || path == scope || path.rfind(scope + ".", 0) == 0);
  }

  void note_source(const std::string& layer, const std::string& op, const std::string& module, const char* phase,
                   const char* site, const std::string& source, const std::string& node) {
    nlohmann::json o = {
        {"op", op}, {"module", module}, {"phase", phase}, {"site", site}, {"stack", nlohmann::json::array()}};
    auto colon = source.rfind(':');
    if (colon != std::string::npos) {
      o["file"] = source.substr(0, colon);
      o["line"] = std::atoi(source.c_str() + colon + 1);
      o["stack"].push_back(source);
    }
    if (!node.empty()) o["node"] = node;
    std::lock_guard<std::mutex> lock(mu_);
    sources_[layer] = std::move(o);
  }

  // The gradients the op's autograd node produces (its backward's outputs: one per differentiable
  // input, named after the op's tensor arguments), recorded as the backward runs.
  void hook_node(const at::Tensor& x, const std::string& layer, const std::string& op, const std::string& module,
                 int call, const std::string& source, const std::vector<std::string>& names) {
    const auto& fn = x.grad_fn();
    if (!fn) return;
    const std::string node = fn->name();
    const std::string grad_layer = fmt::format("{}~{}", layer, node);
    note_source(grad_layer, op, module, "backward", "forward", source, node);
    const int step = step_;
    fn->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, grad_layer, op, call, step, names](const torch::autograd::variable_list& outputs,
                                                  const torch::autograd::variable_list&) {
          if (g_session != this) return outputs;
          for (size_t i = 0; i < outputs.size(); ++i) {
            if (!outputs[i].defined()) continue;
            TensorMeta m = meta(Phase::backward, grad_layer, op, Kind::grad,
                                i < names.size() ? names[i] : fmt::format("grad.{}", i), call);
            m.step = step;
            write(std::move(m), outputs[i], {}, true);
          }
          return outputs;
        }));
  }

  TensorMeta meta(Phase phase, const std::string& layer, const std::string& type, Kind kind, const std::string& name,
                  int call) const {
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
      TensorMeta m = meta(Phase::backward, layer, type, Kind::grad, name, call);
      m.step = step;
      at::Tensor r = replacement(m, g);
      write(std::move(m), r.defined() ? r : g);
      return r.defined() ? r : g;
    });
  }

  // Takes a private host copy of `t` and queues it for the dump. A host tensor is copied into a
  // buffer of the pool (a buffer of an earlier step's tensor of the same size). A device
  // tensor is copied into pinned host memory asynchronously, on the stream that produced it (so
  // the copy sees the value at this point, before any later in-place op), and the writer thread
  // waits for the copy's event: the training thread does not stall on the transfer.
  // `keep_data`: a drill-down op's record, whose data pass 2 keeps.
  void write(TensorMeta m, const at::Tensor& t, const at::Tensor& input_hash_parts = {}, bool keep_data = false) {
    const bool planned = hashes_only_ && dump_->keeps_data(m);
    if (hashes_only_ && !planned && !keep_data) return write_hash(std::move(m), t, input_hash_parts);
    if (planned) {
      std::lock_guard<std::mutex> lock(mu_);
      kept_.insert(m.key());
      plan_done_ = kept_.size() >= dump_->plan_size();
    }
    auto start = Clock::now();
    at::Tensor h, hash_parts;
    std::shared_ptr<c10::Event> ready;
    bool pooled = false;
    {
      at::NoGradGuard no_grad;
      at::Tensor d = t.detach();
      if (d.device().is_cpu() && d.layout() == at::kStrided && !d.is_quantized()) {
        h = pool_.take(d.sizes(), d.scalar_type());
        h.copy_(d);
        pooled = true;
      } else if (d.device().is_cpu()) {
        h = d.clone(at::MemoryFormat::Contiguous);
      } else {
        at::Tensor src = d.contiguous();
        h = pinned_copy(src);
        if (input_hash_parts.defined()) hash_parts = pinned_copy(input_hash_parts);
        ready = event_after_copies(src.device());
      }
    }
    m.dtype = dtype_name_of(h.scalar_type());
    m.shape.assign(h.sizes().begin(), h.sizes().end());
    dtype_size(m.dtype);  // unsupported dtypes fail here with a clear line
    std::lock_guard<std::mutex> lock(mu_);
    writer_.put(std::move(m), std::move(h), std::move(ready), std::move(hash_parts), pooled, keep_data);
    write_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  }

  // Hash-only capture (the ladder's first pass): no copy of the data. A host tensor is hashed
  // (XXH3) in place, now; a device tensor gets hash_words computed on its device, and only those
  // 8 bytes are copied to the host, asynchronously: the forward pass never waits for them.
  // `known`: the XXH3 of a host tensor's bytes, already computed (record_all).
  void write_hash(TensorMeta m, const at::Tensor& t, const at::Tensor& input_hash_parts,
                  std::optional<uint64_t> known = std::nullopt) {
    auto start = Clock::now();
    at::NoGradGuard no_grad;
    at::Tensor d = t.detach();
    m.dtype = dtype_name_of(d.scalar_type());
    m.shape.assign(d.sizes().begin(), d.sizes().end());
    dtype_size(m.dtype);
    uint64_t hash = 0;
    at::Tensor host_hash, hash_parts;
    std::shared_ptr<c10::Event> ready;
    if (known) {
      hash = *known;
    } else if (d.device().is_cpu()) {
      at::Tensor c = d.contiguous();
      hash = hash_bytes(c.data_ptr(), c.nbytes());
    } else {
      host_hash = pinned_copy(device_hash(d).reshape({1}));
      if (input_hash_parts.defined()) hash_parts = pinned_copy(input_hash_parts);
      ready = event_after_copies(d.device());
    }
    std::lock_guard<std::mutex> lock(mu_);
    writer_.put_hash(std::move(m), hash, std::move(host_hash), std::move(ready), std::move(hash_parts));
    write_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  }

  static constexpr size_t kMaxQueuedBytes = size_t{256} << 20;
  BufferPool pool_;  // before writer_: the writer thread gives buffers back until it stops
  AsyncWriter writer_;
  const DumpWriter* dump_;
  bool hashes_only_;
  std::unordered_set<std::string> kept_;  // pass 2: the plan's records written so far
  std::atomic<bool> plan_done_{false};
  std::vector<Site> sites_;

 public:
  std::atomic<int64_t> dropout_elements_{0};

 private:
  std::map<std::string, at::Tensor> replay_;
  mutable std::mutex mu_;
  int step_ = -1;
  std::unordered_map<int64_t, int> calls_;
  std::map<std::pair<int64_t, int64_t>, int> op_calls_;
  std::unordered_map<int64_t, std::vector<PendingHash>> pending_inputs_;
  OpCapture ops_;
  nlohmann::json sources_ = nlohmann::json::object();
  double write_seconds_ = 0;
  double hash_seconds_ = 0;
};

namespace {

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

uint64_t tensor_hash(const at::Tensor& t) {
  at::Tensor h = host_view(t);
  return hash_bytes(h.data_ptr(), h.nbytes());
}

int64_t Capture::dropout_elements() const { return session_->dropout_elements_; }
bool Capture::plan_done() const { return session_->plan_done(); }

Capture::Capture(DumpWriter* writer, std::vector<Site> sites, std::map<std::string, at::Tensor> replay, OpCapture ops)
    : session_(std::make_unique<Session>(writer, std::move(sites), std::move(replay), std::move(ops))) {
  g_session = session_.get();
}

std::string Capture::op_sources() const { return session_->op_sources(); }

Capture::~Capture() {
  if (g_session == session_.get()) g_session = nullptr;
}

void Capture::begin_step(int step) { session_->begin_step(step); }

void Capture::record(Phase phase, const std::string& layer, const std::string& type, Kind kind, const std::string& name,
                     const at::Tensor& t) {
  session_->record(phase, layer, type, kind, name, t);
}

void Capture::record_all(Phase phase, const std::vector<StateRecord>& records) { session_->record_all(phase, records); }

void Capture::hook_param_grad(at::Tensor param, const std::string& layer, const std::string& type,
                              const std::string& name) {
  Session* session = session_.get();
  param.register_hook([session, layer, type, name](const at::Tensor& g) -> at::Tensor {
    if (g_session == session && g.defined()) return session->on_param_grad(layer, type, name, g);
    return g;
  });
}

void Capture::finish() { session_->finish(); }

void Capture::rethrow_write_error() {
  if (auto error = session_->write_error()) std::rethrow_exception(error);
}
double Capture::write_seconds() const { return session_->write_seconds(); }
double Capture::hash_seconds() const { return session_->hash_seconds(); }

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
    at::Tensor v = at::empty(m.shape, at::TensorOptions().dtype(to_scalar_type(dtype_from_name(m.dtype))));
    std::memcpy(v.data_ptr(), bytes.data(), bytes.size());
    out.emplace(m.key(), v);
    wanted.erase(m.key());
  }
  if (!wanted.empty())
    throw InputError(
        fmt::format("--replay '{}' has no tensor '{}'; pass keys of that dump", t.replay_dump, *wanted.begin()));
  return out;
}

}  // namespace reprocheck::detail

TORCH_LIBRARY(reprocheck, m) {
  m.def(torch::schema("reprocheck::tap_in(Tensor[] xs, int id) -> ()", c10::AliasAnalysisKind::CONSERVATIVE));
  m.def(torch::schema("reprocheck::tap_out(Tensor[] ys, int id) -> ()", c10::AliasAnalysisKind::CONSERVATIVE));
  m.def(torch::schema("reprocheck::tap_op(Tensor x, int id, int k) -> ()", c10::AliasAnalysisKind::CONSERVATIVE));
}

TORCH_LIBRARY_IMPL(reprocheck, CompositeImplicitAutograd, m) {
  m.impl("tap_in", &reprocheck::detail::tap_in);
  m.impl("tap_out", &reprocheck::detail::tap_out);
  m.impl("tap_op", &reprocheck::detail::tap_op);
}
