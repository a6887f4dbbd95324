// One seeded training run: its options, and recording it (the worker side of reprocheck).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reprocheck {

// Everything that determines a run. Defaults match the command line's.
struct RunOptions {
  std::string model;
  int steps = 2;
  std::string seed = "0";             // an integer, or "random" (the negative control)
  std::string data_seed = "0";        // seed of the input batches and targets, independent of `seed`
  std::string deterministic = "off";  // off | on | warn
  bool benchmark = false;             // cuDNN autotuner
  int threads = 0;                    // intra-op threads; 0 keeps LibTorch's default
  std::string device = "auto";        // cpu | cuda | cuda:N | auto
  std::string mode = "train";         // train | eval
  std::string reinit;                 // "" or "xavier_normal"
  std::vector<int64_t> input_shape;   // empty: from the model's reprocheck.json
  std::string dtype;                  // "": from reprocheck.json, else float32
  std::string loss;                   // "": from reprocheck.json, else mse
  double lr = 0.01;
  double momentum = 0.9;
  std::vector<std::string> libraries;
  std::string layers = "default";  // see docs/capture.md
  bool ops = false;                // also tap every aten op inside the forward graphs
};

// The command-line arguments of `reprocheck record` that reproduce `o` (model first).
std::vector<std::string> to_args(const RunOptions& o);

// Checks values that do not need the model (throws UsageError).
void validate(const RunOptions& o);

struct RecordTarget {
  std::string path;        // dump to write; "" runs without a dump
  bool overwrite = false;  // --force
  bool capture = true;     // false: no instrumentation at all (the plain run)
  // Replay (used by --isolate): the tensors with these keys (TensorMeta::key()) take the values
  // they have in `replay_dump` as soon as they are produced: inputs and targets, initial
  // parameters, layer and op outputs, gradients of outputs and parameter gradients.
  std::string replay_dump;
  std::vector<std::string> replay_keys;
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
  // Per step: XXH3 of the model output, the loss, every parameter gradient and every parameter
  // and buffer after the step, computed from the live tensors (not from the dump). Equal
  // fingerprints mean bitwise-equal training.
  std::vector<uint64_t> fingerprint;
};

// Runs `o.steps` seeded training steps in this process and writes the dump (see
// docs/dump-format.md). Throws InputError (bad model, shape, output) or RunError.
RecordResult record_run(const RunOptions& o, const RecordTarget& target);

// The selectable layer categories, for help texts.
std::string layer_categories_help();

}  // namespace reprocheck
