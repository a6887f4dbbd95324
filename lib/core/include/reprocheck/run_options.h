// Everything that determines a run: the struct, its validation, JSON both ways (how every worker
// gets its options, and the dump's `run_options` attribute), and the knobs `--vary` can change.
// Each field is bound to one row of the option table (options.h), which gives it its flag, JSON
// key, checks and help: a new option is a field here and a row there.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace reprocheck {

// One tensor the TorchScript recipe feeds the model: an input, or a target for the loss.
struct TensorSpec {
  std::vector<int64_t> shape;
  std::string dtype;                // "": the model's float dtype (--dtype)
  std::optional<double> low, high;  // values in [low, high): required for integer dtypes; a float
                                    // without them is drawn from the standard normal
  bool is_integer() const;          // an integer dtype (not bool, not float)
};

// A whole text as a finite number ("2", "0.5", "1e-3"); nullopt for anything else ("", "2x", "nan").
std::optional<double> to_number(const std::string& text);
// A switch's text: on/true/1 or off/false/0; nullopt for anything else.
std::optional<bool> to_switch(const std::string& text);

// Parses dimensions: "4,3,32,32", "4x3x32x32", "[4, 3, 32, 32]". Throws UsageError naming `what`
// for a part that is not an integer (the dimensions' values are checked by the caller).
std::vector<int64_t> parse_shape(const std::string& text, const std::string& what);

// Parses "SHAPE[:DTYPE[:LOW..HIGH]]": "4,20:int64:0..30522", "4,3,32,32", "4,3,32,32:float32",
// "4,20:bool". `what` names the source in errors ("--input 2"). Throws UsageError.
TensorSpec parse_tensor_spec(const std::string& text, const std::string& what);
// The text parse_tensor_spec reads back.
std::string to_string(const TensorSpec& s);
// Checks dims, dtype and range (an integer dtype needs one). Throws UsageError naming `what`.
void check_tensor_spec(const TensorSpec& s, const std::string& what);

struct RunOptions {
  std::string model;
  int steps = 2;
  std::string seed = "0";             // an integer, or "random" (the negative control)
  std::string data_seed = "0";        // seed of the input batches and targets, independent of `seed`
  std::string deterministic = "off";  // off | on | warn
  bool benchmark = false;             // cuDNN autotuner
  int threads = 0;                    // intra-op threads; 0 keeps LibTorch's default
  int interop_threads = 0;            // inter-op threads; 0 keeps LibTorch's default
  std::string device = "auto";        // cpu | cuda | cuda:N | auto
  std::string mode = "train";         // train | eval
  std::string reinit;                 // "" or "xavier_normal"
  std::vector<int64_t> input_shape;   // empty: from the model's reprocheck.json
  std::string dtype;                  // "": from reprocheck.json, else float32 (casts floating parameters only)
  std::vector<std::string> inputs;    // input specs (TensorSpec text), one per forward argument; empty:
                                      // reprocheck.json's inputs, else input_shape with dtype
  std::vector<std::string> targets;   // target specs; empty: reprocheck.json's, else from the loss and output
  std::string loss;                   // "": reprocheck.json, else the model's training_step or loss
                                      // method, else mse; or model (its method), mse, cross_entropy, nll,
                                      // bce_with_logits, sum
  double label_smoothing = -1;        // cross_entropy; -1: reprocheck.json's, else 0
  std::string output;                 // "": a tensor, or a tuple's first tensor; N: a tuple's N-th; KEY: a dict's
  std::string output_weights;         // "1,0.3,0.3" (tuple) or "logits=1,aux=0.3" (dict): the loss is the
                                      // weighted sum of the loss of each output
  std::string optimizer;              // "": reprocheck.json's, else sgd; or adam, adamw
  double lr = 0.01;
  double momentum = 0.9;              // sgd
  bool nesterov = false;              // sgd
  double beta1 = 0.9, beta2 = 0.999;  // adam, adamw
  double eps = 1e-8;                  // adam, adamw
  double weight_decay = -1;           // -1: the optimizer's usual (0 for sgd and adam, 0.01 for adamw)
  std::string autocast;               // "": off; bf16 (CPU and CUDA) or fp16 (CUDA, with a gradient scaler)
  std::vector<std::string> libraries;
  std::string layers = "default";  // see docs/capture.md
  bool ops = false;                // also tap every aten op inside the forward graphs
  // Pass 3, the drill-down: every op of step `drill_step` (-1: none), forward and backward, within the
  // module `drill_scope` and its submodules ("" the whole step), with its source line.
  int drill_step = -1;
  std::string drill_scope;
  bool hashes_only = false;  // record each tensor's hash and no data (the capture ladder's pass 1)
  // The capture ladder's pass 2: a file of record keys (TensorMeta::key(), one per line) whose data
  // a hash-only run keeps; the run stops once it has written them all (docs/capture-ladder.md).
  std::string capture_plan;
  // The model file's hash (16 hex digits), computed once by the check for all its runs; "": the
  // run hashes the file itself.
  std::string model_hash;
  // The Python front end (`reprocheck run -- COMMAND`): the command, and NAME=VALUE variables
  // set for it (`--vary env:NAME=...`).
  std::vector<std::string> command;
  std::vector<std::string> env;
};

inline constexpr int kMaxSteps = 100000;

// Checks values that do not need the model (throws UsageError).
void validate(const RunOptions& o);

// `o` with the optimizer settings a run leaves open filled in as the worker does: optimizer sgd,
// label smoothing 0, weight decay 0 (0.01 for adamw).
RunOptions with_recipe_defaults(RunOptions o);

// Parses --output-weights: tuple weights ("1,0.3,0.3": keys "0", "1", ...) or dict weights
// ("logits=1,aux=0.3"), in order. Throws UsageError.
std::vector<std::pair<std::string, double>> parse_output_weights(const std::string& text);

// Refuses an input shape whose one batch would need more than half the machine's memory, saying how
// many GB it needs (`where` names its source: "--input-shape", "reprocheck.json"). Throws UsageError.
void check_input_size(const std::vector<int64_t>& shape, const std::string& dtype, const std::string& where);

// JSON object with one key per option (the dump's `run_options` attribute).
std::string to_json(const RunOptions& o);
// Whether JSON text nests arrays and objects at most `limit` deep (checked before parsing text from
// files: the parser and the values it builds recurse).
bool json_depth_within(const std::string& text, int limit);
inline constexpr int kMaxJsonDepth = 64;

// Reads what to_json wrote; keys it does not know are ignored, missing keys keep their defaults.
// Throws InputError for text that is not a JSON object or a value of the wrong type.
RunOptions from_json(const std::string& json);
// Each option's value as text, keyed as in JSON ("threads" -> "2", "benchmark" -> "false").
std::map<std::string, std::string> to_strings(const RunOptions& o);

// "--deterministic" values: on/true/1, off/false/0, warn -> "on", "off", "warn". Throws UsageError.
std::string normalize_deterministic(const std::string& value);

// The knobs --vary can change, one run per value ("env:NAME" sets an environment variable).
const std::vector<std::string>& knob_names();
std::string knob_list();  // "threads, device, ..."
// `base` with the knob set to `value`, validated. Throws UsageError for an unknown knob or a bad value.
RunOptions with_knob(const RunOptions& base, const std::string& knob, const std::string& value);

struct Vary {
  std::string knob;
  std::vector<std::string> values;  // one per run
  bool empty() const { return knob.empty(); }
};
// Parses "KNOB=V1,V2,..." and checks every value against `base`. Throws UsageError.
Vary parse_vary(const std::string& spec, const RunOptions& base);

}  // namespace reprocheck
