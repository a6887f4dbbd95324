// The option table: every option of reprocheck, one row each (options.h says what the columns
// mean). Adding an option is adding its field (RunOptions or CheckSettings) and its row here.

#include "reprocheck/options.h"

namespace reprocheck {

namespace {

using R = RunOptions;
using C = CheckSettings;
using V = ValueCheck;
constexpr unsigned kModel = kCheckCommand | kRecordCommand;  // the TorchScript front end's runs
constexpr unsigned kChecks = kCheckCommand | kRunCommand;    // the commands that run a check
constexpr unsigned kCompares = kChecks | kDiffCommand;       // the commands that compare and report
constexpr unsigned kAll = kModel | kRunCommand;
constexpr unsigned kSetting = kAuditSetting;

// What a run is: its length, seeds, determinism settings, device and mode.
void run_rows(std::vector<OptionDef>& t) {
  // The model and the command: positional, set by the commands themselves.
  t.push_back(OptionDef("model", "", "TorchScript model file (.pt)", 0, &R::model));
  t.push_back(OptionDef("command", "", "the command of a training script (after --)", 0, &R::command));
  t.push_back(OptionDef("steps", "--steps", "training steps", kAll | kSetting, &R::steps)
                  .range(1, kMaxSteps)
                  .in_run("optimizer steps to record; the script ends after them"));
  t.push_back(OptionDef("seed", "--seed", "seed of the model's RNG (init, dropout): N, or 'random'",
                        kModel | kSetting | kVaryKnob, &R::seed)
                  .checked(V::seed)
                  .model_only());
  t.push_back(OptionDef("data_seed", "--data-seed", "seed of the input batches and targets: N, or 'random'",
                        kModel | kSetting | kVaryKnob, &R::data_seed)
                  .checked(V::seed)
                  .model_only());
  t.push_back(OptionDef("deterministic", "--deterministic",
                        "deterministic algorithms (cuDNN deterministic, use_deterministic_algorithms, "
                        "CUBLAS_WORKSPACE_CONFIG): on (the flag alone), off, or warn (warn_only)",
                        kAll | kSetting | kVaryKnob, &R::deterministic)
                  .one_of({"off", "on", "warn"})
                  .implies("on")
                  .in_run("torch.use_deterministic_algorithms and cudnn.deterministic before the script runs: on "
                          "(the flag alone), off, or warn"));
  t.push_back(OptionDef("benchmark", "--benchmark", "turn the cuDNN autotuner on (cudnn.benchmark = True)",
                        kAll | kSetting | kVaryKnob, &R::benchmark)
                  .in_run("cudnn.benchmark = True before the script runs"));
  t.push_back(OptionDef("threads", "--threads", "intra-op threads (default: LibTorch's)", kAll | kSetting | kVaryKnob,
                        &R::threads)
                  .range(0, 4096)
                  .unset_as("0")
                  .in_run("intra-op threads (torch.set_num_threads before the script runs)"));
  t.push_back(OptionDef("interop_threads", "--interop-threads", "inter-op threads (default: LibTorch's)",
                        kAll | kSetting | kVaryKnob, &R::interop_threads)
                  .range(0, 4096)
                  .unset_as("0")
                  .in_run("inter-op threads (torch.set_num_interop_threads before the script runs)"));
  t.push_back(OptionDef("device", "--device", "cpu, cuda, cuda:N or auto (cuda when available)",
                        kModel | kSetting | kVaryKnob, &R::device)
                  .checked(V::device)
                  .model_only());
  t.push_back(OptionDef("mode", "--mode", "module mode: train or eval", kModel | kSetting | kVaryKnob, &R::mode)
                  .one_of({"train", "eval"})
                  .model_only());
  t.push_back(OptionDef("reinit", "--reinit", "re-initialize parameters with dim >= 2 under the seed: xavier_normal",
                        kModel, &R::reinit)
                  .one_of({"", "xavier_normal"}));
}

// The TorchScript front end's training recipe (docs/recipe.md).
void recipe_rows(std::vector<OptionDef>& t) {
  t.push_back(OptionDef("input_shape", "--input-shape",
                        "input shape, e.g. 4,3,32,32 (default: the model's "
                        "reprocheck.json)",
                        kModel, &R::input_shape)
                  .range(1)
                  .checked(V::shape));
  t.push_back(OptionDef("dtype", "--dtype",
                        "float32, float64, float16 or bfloat16: the model's floating parameters and buffers, and "
                        "float inputs (default: reprocheck.json, float32)",
                        kModel | kSetting, &R::dtype)
                  .one_of({"", "float32", "float64", "float16", "bfloat16"})
                  .model_only());
  t.push_back(OptionDef("inputs", "--input",
                        "one forward input: SHAPE[:DTYPE[:LOW..HIGH]], e.g. 4,20:int64:0..30522 (token ids below "
                        "the vocabulary size) or 4,3,32,32:float32; repeat it per input (default: reprocheck.json)",
                        kModel, &R::inputs));
  t.push_back(OptionDef("targets", "--target",
                        "a target for the loss, in --input's form; repeat it per target (default: reprocheck.json, "
                        "else drawn to fit the loss and the output)",
                        kModel, &R::targets));
  t.push_back(OptionDef("loss", "--loss",
                        "mse, cross_entropy, nll, bce_with_logits, sum, or model: the model's training_step or loss "
                        "method (default: reprocheck.json, else the model's method, else mse)",
                        kModel, &R::loss)
                  .one_of({"", "model", "mse", "cross_entropy", "nll", "bce_with_logits", "sum"}));
  t.push_back(OptionDef("label_smoothing", "--label-smoothing",
                        "label smoothing of cross_entropy (default: reprocheck.json, 0)", kModel, &R::label_smoothing)
                  .range(0, 1)
                  .unset_as("-1"));
  t.push_back(OptionDef("output", "--output",
                        "the output the loss trains on: N for a tuple, KEY for a dict (default: a tensor, or a "
                        "tuple's first)",
                        kModel, &R::output));
  t.push_back(OptionDef("output_weights", "--output-weights",
                        "train on a weighted sum of the outputs' losses: 1,0.3,0.3 (tuple) or logits=1,aux=0.3 "
                        "(dict), as GoogLeNet's auxiliary heads are trained",
                        kModel, &R::output_weights));
  t.push_back(OptionDef("optimizer", "--optimizer", "sgd, adam or adamw (default: reprocheck.json, sgd)",
                        kModel | kSetting, &R::optimizer)
                  .one_of({"", "sgd", "adam", "adamw"})
                  .model_only());
  t.push_back(OptionDef("lr", "--lr", "learning rate", kModel, &R::lr).range(0).checked(V::positive));
  t.push_back(OptionDef("momentum", "--momentum", "SGD momentum", kModel, &R::momentum).range(0));
  t.push_back(OptionDef("nesterov", "--nesterov", "SGD with Nesterov momentum", kModel, &R::nesterov));
  t.push_back(
      OptionDef("beta1", "--beta1", "Adam and AdamW beta1", kModel, &R::beta1).range(0, 1).checked(V::unit_open));
  t.push_back(
      OptionDef("beta2", "--beta2", "Adam and AdamW beta2", kModel, &R::beta2).range(0, 1).checked(V::unit_open));
  t.push_back(OptionDef("eps", "--eps", "Adam and AdamW epsilon", kModel, &R::eps).range(0).checked(V::positive));
  t.push_back(
      OptionDef("weight_decay", "--weight-decay", "weight decay (default: 0, 0.01 for adamw)", kModel, &R::weight_decay)
          .range(0)
          .unset_as("-1"));
  t.push_back(OptionDef("autocast", "--autocast",
                        "run forward and loss under autocast: bf16 (CPU, CUDA) or fp16 (CUDA, with a gradient scaler)",
                        kModel | kSetting, &R::autocast)
                  .one_of({"", "bf16", "fp16"})
                  .model_only());
  t.push_back(OptionDef("libraries", "--load-library", "shared library with custom ops the model uses (repeatable)",
                        kModel | kInfoCommand, &R::libraries));
}

// What is captured.
void capture_rows(std::vector<OptionDef>& t) {
  t.push_back(OptionDef("layers", "--layers", "what to tap", kAll | kSetting, &R::layers).checked(V::not_empty));
  t.push_back(OptionDef("ops", "--ops", "also tap every aten op of the forward graphs (finer localization)",
                        kAll | kSetting, &R::ops)
                  .in_run("also tap every torch function call inside the model's forward"));
  t.push_back(OptionDef("drill_step", "", "step whose every op pass 3 captures (-1: none)", 0, &R::drill_step)
                  .range(-1, kMaxSteps));
  t.push_back(OptionDef("drill_scope", "", "module whose ops pass 3 captures (\"\": every op of the step)", 0,
                        &R::drill_scope));
  t.push_back(OptionDef("hashes_only", "--hashes-only",
                        "record each tensor's hash and no data: a golden small enough to commit (compare with "
                        "--baseline)",
                        kRecordCommand, &R::hashes_only));
  t.push_back(
      OptionDef("capture_plan", "", "file of the records whose data pass 2 keeps (\"\": none)", 0, &R::capture_plan));
  t.push_back(OptionDef("model_hash", "", "the model file's hash, computed once by the check", 0, &R::model_hash));
  t.push_back(OptionDef("env", "--env", "NAME=VALUE set for every run (repeatable)", kRunCommand, &R::env));
}

// How a check runs: the number of runs, the capture ladder, the dumps kept, goldens, --vary.
void check_rows(std::vector<OptionDef>& t) {
  t.push_back(OptionDef("runs", "--runs", "number of runs (workers)", kChecks | kSetting, &C::runs).range(1, 1000000));
  t.push_back(OptionDef("jobs", "--jobs", "runs at a time", kChecks | kSetting, &C::jobs).range(1, 1024));
  t.push_back(OptionDef("timeout", "--timeout", "seconds a run may take before it is killed (0: no limit)",
                        kChecks | kSetting, &C::timeout)
                  .range(0));
  t.push_back(
      OptionDef("keep", "--keep", "keep the dumps in this folder (run-0.h5, run-1.h5, ...)", kChecks, &C::keep));
  t.push_back(OptionDef("force", "--force",
                        "overwrite dumps already in the --keep folder, or the --save-baseline golden", kChecks,
                        &C::force));
  t.push_back(OptionDef("isolate", "--isolate",
                        "find every independent source in the step of the first divergence: replay each source "
                        "found in the other runs and run them again, until the runs agree",
                        kChecks, &C::isolate));
  t.push_back(OptionDef("drill", "--drill",
                        "pass 3 after a divergence in a layer, gradient or parameter: run again with every op of "
                        "that step captured, forward and backward, and name the first divergent op and its source "
                        "line: none, auto (only the ops where it can have started) or full (every op of the step)",
                        kChecks | kSetting, &C::drill)
                  .one_of({"none", "auto", "full"}));
  t.push_back(OptionDef("capture", "--capture",
                        "ladder (hashes first, full capture only of the runs and steps that differ), full (one pass "
                        "with full dumps) or hashes (one pass of hashes only)",
                        kChecks | kSetting, &C::capture)
                  .one_of({"ladder", "full", "hashes"}));
  t.push_back(OptionDef("full", "--full", "one pass with full dumps (--capture full); --keep and --isolate imply it",
                        kChecks, &C::capture)
                  .implies("full"));
  t.push_back(OptionDef("hashes", "--hashes-only",
                        "one pass of hashes only (--capture hashes): the verdict and the first divergent tensor, no "
                        "statistics",
                        kChecks, &C::capture)
                  .implies("hashes"));
  t.push_back(OptionDef("baseline", "--baseline",
                        "golden dump (from --save-baseline or record): compare fresh runs with it; exit 1 when the "
                        "numerics changed",
                        kChecks, &C::baseline));
  t.push_back(OptionDef("save_baseline", "--save-baseline",
                        "record one run into this golden dump (hashes only unless --full) and stop; --force replaces "
                        "it",
                        kChecks, &C::save_baseline));
  t.push_back(OptionDef("vary", "--vary", "run with different values of one knob, one run each: KNOB=V1,V2,...",
                        kChecks | kSetting, &C::vary));
}

// The comparison and the reports.
void report_rows(std::vector<OptionDef>& t) {
  t.push_back(OptionDef("tolerance", "--tolerance", "bitwise, or torch (per-dtype presets of torch.testing)", kCompares,
                        &C::tolerance)
                  .one_of({"bitwise", "torch"}));
  t.push_back(OptionDef("atol", "--atol", "absolute tolerance: |a-b| <= atol + rtol*|a| (default: bitwise)", kCompares,
                        &C::atol)
                  .range(0));
  t.push_back(OptionDef("rtol", "--rtol", "relative tolerance (see --atol)", kCompares, &C::rtol).range(0));
  t.push_back(OptionDef("json", "--json", "write the report as JSON (docs/report-json.md)", kCompares, &C::json));
  t.push_back(
      OptionDef("junit", "--junit", "write a JUnit XML report (one test case per tensor group)", kCompares, &C::junit));
  t.push_back(
      OptionDef("markdown", "--markdown", "write a Markdown summary (for a CI step summary)", kCompares, &C::markdown));
  t.push_back(OptionDef("html", "--html",
                        "write a self-contained HTML report: the verdict, the first divergence and a per-layer chart",
                        kCompares, &C::html));
}

}  // namespace

const std::vector<OptionDef>& option_table() {
  static const std::vector<OptionDef> table = [] {
    std::vector<OptionDef> t;
    run_rows(t);
    recipe_rows(t);
    capture_rows(t);
    check_rows(t);
    report_rows(t);
    return t;
  }();
  return table;
}

}  // namespace reprocheck
