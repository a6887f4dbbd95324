// The capture session: what the tap ops and the training loop's hooks report to, and how captured
// tensors reach the dump. Not a public header.
//
// For the gradient with respect to a tapped output, tap_out registers a tensor hook on it: autograd
// calls it when that gradient is computed, in true backward order. A hook registered before a
// later in-place op (an in-place ReLU after batch norm) stays with the original producer and still
// receives the gradient with respect to the layer's own output. Parameter gradients come from hooks
// on the parameters.
#pragma once

#include <torch/script.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph_patch.h"
#include "reprocheck/dump.h"
#include "reprocheck/record.h"

namespace reprocheck::detail {

class Session;

// A capture in progress: while it lives, the tap ops report to it and it writes every captured
// tensor to `writer` (on a background thread).
// Which op taps record: every one (--ops), or those of step `drill_step` in module `drill_scope`
// and its submodules ("" all), with the gradients their backward produces (pass 3).
struct OpCapture {
  bool always = false;
  int drill_step = -1;
  std::string drill_scope;
};

// One tensor of a phase's state (a parameter, its optimizer state, a buffer), for Capture::record_all.
struct StateRecord {
  std::string layer, type;
  Kind kind;
  std::string name;
  at::Tensor t;
};

class Capture {
 public:
  Capture(DumpWriter* writer, std::vector<Site> sites, std::map<std::string, at::Tensor> replay, OpCapture ops = {});
  // Pass 3's op_sources attribute (JSON); "" when it did not run.
  std::string op_sources() const;
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  void begin_step(int step);
  // Records a tensor of the training loop itself (input, target, output, loss, parameters),
  // replacing it with its reference value first when it is replayed.
  void record(Phase phase, const std::string& layer, const std::string& type, Kind kind, const std::string& name,
              const at::Tensor& t);
  // record() for each of a phase's state tensors, in order. In a hash-only capture their host
  // tensors are hashed together first, on torch's intra-op threads (largest first).
  void record_all(Phase phase, const std::vector<StateRecord>& records);
  // Records `param`'s gradient when autograd produces it, while this capture is active.
  void hook_param_grad(at::Tensor param, const std::string& layer, const std::string& type, const std::string& name);
  // Waits for every captured tensor to reach the dump; rethrows a write error.
  void finish();
  // Rethrows the dump writer's error, if it met one: a failure inside the model's forward or
  // backward may only be the write failing underneath it (a full disk), and that is what to report.
  void rethrow_write_error();
  double write_seconds() const;  // the training thread's time copying tensors and waiting for the writer
  double hash_seconds() const;   // of which hashing the tapped layers' inputs
  // Elements that passed through tapped dropout layers: how many random numbers their masks drew.
  int64_t dropout_elements() const;
  // Pass 2: every record of the dump's capture plan has been written (its data queued); the run
  // may stop. False without a plan.
  bool plan_done() const;

 private:
  std::unique_ptr<Session> session_;
};

// XXH3 of a tensor's bytes (copied to the host when needed).
uint64_t tensor_hash(const at::Tensor& t);

// The reference values to replay, read before the run starts. Throws InputError.
std::map<std::string, at::Tensor> load_replay(const RecordTarget& target);

}  // namespace reprocheck::detail
