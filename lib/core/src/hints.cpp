#include "reprocheck/hints.h"

#include <fmt/format.h>

#include <algorithm>

#include "hints_evidence.h"

namespace reprocheck {

using namespace hints_detail;

std::vector<Hint> explain(const Comparison& c) {
  Hints hints;
  const PairComparison* h = c.headline();
  if (!h) return {};
  Evidence e;
  e.pair = h;
  e.first = &h->diffs[*h->first];
  const RunOptions& options = c.ref_options;
  e.device = c.attribute("device");
  e.layers = options.layers;
  e.ops = options.ops;
  for (const auto& [k, v] : h->knob_diffs) e.knobs.insert(k);
  const TensorDiff& d = *e.first;
  const bool seed_differs = e.differs("seed_value") || e.differs("seed");
  auto add = [&](const char* cause, const char* title, std::string evidence, std::string py, std::string flag) {
    // For a training script, the same flag where `reprocheck run` has it.
    std::string run_flag = flag == "--deterministic" ? flag : flag == "--threads N for every run" ? "--threads 1" : "";
    hints.add(cause, title, std::move(evidence), std::move(py), std::move(flag), std::move(run_flag));
  };
  explain_data(c, e, hints);

  if ((d.ref.kind == Kind::input || d.ref.kind == Kind::target) && hints.list.empty()) {
    add("data_pipeline", "data loading is not seeded",
        fmt::format("the {} batch of step {} differs before the model ran{}",
                    to_string(d.ref.kind), d.ref.step,
                    knob_note(e, {"data_seed", "data_seed_value"})),
        "seed the data pipeline: DataLoader(..., generator=torch.Generator().manual_seed(0), "
        "worker_init_fn=seed_worker) with seed_worker seeding numpy and random from torch.initial_seed(), and seed "
        "the augmentation RNGs",
        "--data-seed 0");
  }
  if (d.ref.phase == Phase::init) {
    add("unseeded_init", "weight initialization is not seeded",
        fmt::format("the initial value of {} differs before any training step{}", d.ref.tensor_name(),
                    knob_note(e, {"seed", "seed_value", "reinit"})),
        "call torch.manual_seed(0) before building the model: it seeds nn.init.xavier_normal_ and every default "
        "initializer",
        "--seed 0 (with --reinit xavier_normal to re-initialize under it)");
  }
  if (e.differs("mode")) {
    std::string stats;
    for (const auto& x : h->diffs)
      if (x.ref.phase == Phase::after_step && x.ref.kind == Kind::buffer && is_divergent(x.status) &&
          (x.ref.name == "running_mean" || x.ref.name == "running_var")) {
        stats = fmt::format(
            "; batch-norm running statistics differ after step {} ({}.{}: train mode updates them, "
            "eval mode does not)",
            x.ref.step, x.ref.layer, x.ref.name);
        break;
      }
    add("train_eval_mode", "train/eval mode differs between runs",
        fmt::format("the runs differ in mode ({}); the first divergence is {}{}", e.knob("mode"), where(d), stats),
        "call model.train() or model.eval() the same way in every run: Dropout is active and BatchNorm uses and "
        "updates batch statistics only in train mode",
        "--mode train (or --mode eval) for every run");
  }
  if (d.ref.phase == Phase::forward && is_dropout(d.ref) && e.source()) {
    add("rng_not_seeded", "the RNG is not seeded",
        fmt::format("the first divergence is the output of {}, whose inputs were identical: its random mask "
                    "differs{}",
                    where(d), knob_note(e, {"seed", "seed_value"})),
        "torch.manual_seed(0) (and random.seed(0), numpy.random.seed(0)) before training: dropout masks follow "
        "torch's RNG",
        "--seed 0");
  }
  if (e.cuda() && (e.differs("benchmark") || options.benchmark) && (is_conv(d.ref) || d.ref.layer.empty())) {
    add("cudnn_autotuner", "the cuDNN autotuner picks different algorithms",
        fmt::format("the first divergence is {} on {} with cudnn.benchmark on{}", where(d), e.device,
                    knob_note(e, {"benchmark"})),
        "torch.backends.cudnn.benchmark = False", "drop --benchmark");
  }
  if (e.cuda() && is_conv(d.ref) && e.backward() && options.deterministic == "off") {
    add("cudnn_nondeterministic", "cuDNN chose nondeterministic algorithms",
        fmt::format("the first divergence is the backward of {} on {} with cuDNN deterministic off; convolution "
                    "backward kernels accumulate with atomics",
                    where(d), e.device),
        "torch.backends.cudnn.deterministic = True and torch.backends.cudnn.benchmark = False", "--deterministic");
  }
  if (!e.cuda() && e.differs("threads") && (e.backward() || d.ref.phase == Phase::forward)) {
    add("thread_reduction", "the thread count changes the order of reductions",
        fmt::format("the first divergence is {}{}; on the CPU, kernels that reduce (sums, matrix products, "
                    "normalization statistics, convolution gradients) split the work by thread, and float addition "
                    "depends on the order",
                    where(d), knob_note(e, {"threads"})),
        "torch.set_num_threads(N) with the same N in every run (and the same OMP_NUM_THREADS/MKL_NUM_THREADS)",
        "--threads N for every run");
  }
  if (d.inputs_basis == "input_hash" && d.inputs_identical && !*d.inputs_identical) {
    bool all_layers = e.layers == "all";
    add("untapped_source", "the source is in a layer or op that was not tapped",
        fmt::format("the inputs of {} already differed, yet no tapped layer before it diverged: an untapped layer "
                    "or op between them changed the values{}",
                    where(d), all_layers ? "" : fmt::format(" (layer selection: {})", e.layers)),
        "-",
        e.ops ? "--ops already taps every op: look at functional code outside modules"
              : "--layers all, or --ops for every op");
  }
  if (e.source() && (d.ref.phase == Phase::forward || d.ref.phase == Phase::output) && !is_conv(d.ref) &&
      !is_dropout(d.ref) && !is_bn(d.ref) && !seed_differs && !e.differs("threads") && !e.differs("mode") && !e.differs("data_seed_value")) {
    add(e.cuda() ? "deterministic_algorithms" : "custom_or_atomic_op",
        e.cuda() ? "a CUDA kernel accumulates with atomics" : "a custom or atomic op accumulates in arrival order",
        fmt::format("{} produced different outputs from identical inputs with the same seeds and settings: an op "
                    "that sums in whatever order threads arrive (a custom extension, atomicAdd)",
                    where(d)),
        e.cuda() ? "torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG=:4096:8 (it raises on ops "
                   "such as index_add_ that have no deterministic implementation)"
                 : "make the op reduce in a fixed order; torch.use_deterministic_algorithms(True) flags built-in ops "
                   "without one",
        "--deterministic");
  }
  if (e.cuda() && options.deterministic == "off" && e.source()) {
    add("deterministic_algorithms", "a CUDA kernel accumulates with atomics",
        fmt::format("{} differs from identical inputs on {} with deterministic algorithms off", where(d), e.device),
        "torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG=:4096:8", "--deterministic");
  }
  if (seed_differs && hints.list.empty()) {
    add("rng_not_seeded", "the RNG is not seeded",
        fmt::format("the runs used different seeds ({}); the first divergence is {}", e.knob("seed_value"), where(d)),
        "torch.manual_seed(0) (and random.seed(0), numpy.random.seed(0)) before training", "--seed 0");
  }
  if (hints.list.empty()) {
    add("no_evidence", "no known cause matches",
        fmt::format("the first divergence is {} ({}), with {}; no run option differs that explains it", where(d),
                    d.inputs_identical ? (*d.inputs_identical ? "inputs identical" : "inputs already different")
                                       : "inputs unknown",
                    h->knob_diffs.empty() ? "the same settings in every run" : "the settings shown above"),
        "-", "--layers all or --ops to localize it further");
  }
  // The command that confirms each hint, in the front end's terms.
  const auto& command = c.ref_options.command;
  for (auto& x : hints.list) {
    if (command.empty()) {
      x.test_it = "reprocheck ... " + x.fix_flag;
    } else {
      std::string joined;
      for (const auto& a : command) joined += (joined.empty() ? "" : " ") + a;
      x.test_it = fmt::format("reprocheck run {}-- {}", x.test_it.empty() ? "" : x.test_it + " ", joined);
    }
  }
  return hints.list;
}

}  // namespace reprocheck
