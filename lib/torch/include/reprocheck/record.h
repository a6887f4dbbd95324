// Recording one seeded training run of a TorchScript model (the worker side of `reprocheck
// MODEL.pt`, and `reprocheck record`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "reprocheck/run_options.h"

namespace reprocheck {

struct RecordTarget {
  std::string path;        // dump to write; "" runs without a dump
  bool overwrite = false;  // --force
  bool capture = true;     // false: no instrumentation at all (the plain run)
  // Replay (used by --isolate): the tensors with these keys (TensorMeta::key()) take the values
  // they have in `replay_dump` as soon as they are produced: inputs and targets, initial
  // parameters, layer and op outputs, gradients of outputs and parameter gradients.
  std::string replay_dump;
  std::vector<std::string> replay_keys;
  // Compute RecordResult::fingerprint (the tests' proof that capture changes no number). Off in
  // the tool: it hashes every parameter, gradient and optimizer state of every step.
  bool fingerprint = false;
};

struct RecordResult {
  int64_t seed = 0;
  int64_t data_seed = 0;
  int64_t tensors = 0;
  uint64_t bytes = 0;
  double seconds = 0;        // the training steps, capture and dump writing included
  double write_seconds = 0;  // of which the training thread spent copying tensors and waiting
                             // for the background writer (hashing and HDF5 writes run there)
  double hash_seconds = 0;   // of which spent hashing the tapped layers' inputs
  std::string device;
  bool forward_only = false;  // the model has no trainable parameters: no backward, no step
  // With RecordTarget::fingerprint, per step: XXH3 of the model output, the loss, every parameter gradient and every
  // parameter and buffer after the step, computed from the live tensors (not from the dump). Equal fingerprints mean
  // bitwise-equal training.
  std::vector<uint64_t> fingerprint;
};

// Runs `o.steps` seeded training steps in this process and writes the dump (see
// docs/dump-format.md). Throws InputError (bad model, shape, output) or RunError.
RecordResult record_run(const RunOptions& o, const RecordTarget& target);

}  // namespace reprocheck
