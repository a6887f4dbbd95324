// The cause hints: one ordered rule table (the data pipeline's rules, then the model's), each rule
// a pure function of the Evidence gathered from the comparison.
#include "reprocheck/hints.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "hints_evidence.h"
#include "reprocheck/protocol.h"

namespace reprocheck {

using namespace hints_detail;

namespace hints_detail {

namespace {

std::string strip_op(std::string op) {
  if (starts_with(op, "aten::")) op = op.substr(6);
  if (op.size() > 1 && op.back() == '_') op.pop_back();
  return op;
}

bool is_random_op(const std::string& op) {
  static const std::set<std::string> kRandom = {
      "rand",           "randn",        "randint",          "randperm",        "rand_like",
      "randn_like",     "randint_like", "bernoulli",        "normal",          "uniform",
      "multinomial",    "exponential",  "geometric",        "cauchy",          "log_normal",
      "poisson",        "random",       "dropout",          "feature_dropout", "alpha_dropout",
      "native_dropout", "rrelu",        "rrelu_with_noise", "_fused_dropout",  "fused_dropout"};
  return kRandom.count(strip_op(op)) > 0;
}

std::optional<Loader> loader_from_json(const std::string& attr, const std::string& layer) {
  if (attr.empty() || !json_depth_within(attr, kMaxJsonDepth)) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(attr);
    if (!j.is_object() || !j.contains(layer) || !j[layer].is_object()) return std::nullopt;
    const auto& o = j[layer];
    Loader l;
    auto text = [&](const char* k) { return o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : ""; };
    auto flag = [&](const char* k) { return o.contains(k) && o[k].is_boolean() && o[k].get<bool>(); };
    l.name = text("name");
    l.workers = o.contains("workers") && o["workers"].is_number_integer() ? o["workers"].get<int>() : 0;
    l.in_order = !o.contains("in_order") || flag("in_order");
    l.sampler = text("sampler");
    l.batch_sampler = text("batch_sampler");
    l.generator = flag("generator");
    l.sampler_generator = flag("sampler_generator");
    l.replacement = flag("replacement");
    l.subset = flag("subset");
    return l;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// Dumps of older versions: "torch.utils.data.DataLoader[workers=2,in_order=0]".
std::optional<Loader> loader_from_type(const std::string& type) {
  if (!starts_with(type, "torch.utils.data.DataLoader")) return std::nullopt;
  Loader l;
  auto w = type.find("workers=");
  if (w != std::string::npos) l.workers = std::atoi(type.c_str() + w + 8);
  l.in_order = type.find("in_order=0") == std::string::npos;
  return l;
}

// The layer of a loader's records without the rank prefix of a merged distributed dump.
std::string own_layer(const TensorMeta& m) {
  if (m.rank < 0) return m.layer;
  auto slash = m.layer.find('/');
  return slash == std::string::npos ? "" : m.layer.substr(slash + 1);
}

}  // namespace

bool Loader::user_sampler() const {
  auto foreign = [](const std::string& cls) { return !cls.empty() && !starts_with(cls, "torch.utils.data."); };
  return foreign(sampler) || foreign(batch_sampler);
}

std::string Loader::sampler_short() const {
  const std::string& cls = !batch_sampler.empty() ? batch_sampler : sampler;
  return short_type_name(cls);
}

std::string Evidence::knob(const std::string& k) const {
  for (const auto& [name, v] : pair->knob_diffs)
    if (name == k) return v;
  return "";
}

bool Evidence::random_op() const {
  const auto& m = d().ref;
  return (m.kind == Kind::activation || m.kind == Kind::grad) && m.layer.find('#') != std::string::npos &&
         is_random_op(m.layer_type);
}

std::string Evidence::on_rank() const { return d().ref.rank >= 0 ? fmt::format(" on rank {}", d().ref.rank) : ""; }

Evidence gather(const Comparison& c) {
  Evidence e;
  e.c = &c;
  e.pair = c.headline();
  e.first = &e.pair->diffs[*e.pair->first];
  e.headline = e.first;
  e.options = c.ref_options;
  e.device = c.attribute(attr::kDevice);
  e.script = !c.ref_options.command.empty();
  e.categories = LayerCategories::from_json(c.attribute(attr::kLayerCategories));
  for (const auto& [k, v] : e.pair->knob_diffs) e.knobs.insert(k);
  for (const auto& d : e.pair->diffs)
    if (is_divergent(d.status) && d.ref.kind == Kind::rng_state && d.ref.rank == e.first->ref.rank)
      e.rngs.emplace(d.ref.name, d.ref.step);
  if (c.drill && c.drill->found) {
    e.drill = &*c.drill;
    e.first = &c.drill->diff;
  }
  const TensorMeta& m = e.first->ref;
  if (m.kind == Kind::indices || m.kind == Kind::batch || (m.kind == Kind::rng_state && m.phase == Phase::input)) {
    e.loader = loader_from_json(c.attribute(attr::kDataLoaders), own_layer(m));
    if (!e.loader) e.loader = loader_from_type(m.layer_type);
  }
  return e;
}

std::string knob_note(const Evidence& e, std::initializer_list<const char*> keys) {
  std::vector<std::string> parts;
  for (const char* k : keys)
    if (e.differs(k)) parts.push_back(fmt::format("{} ({})", k, e.knob(k)));
  if (parts.empty()) return "";
  std::string out = "; the runs differ in ";
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return out;
}

std::string generator_label(const std::string& name) {
  if (name == "numpy") return "numpy global RNG";
  if (name == "random") return "Python random RNG";
  if (name == "generator") return "the DataLoader's generator";
  if (name == "sampler.generator") return "the sampler's generator";
  return name + " RNG";
}

std::string rng_note(const std::map<std::string, int>& rngs) {
  std::vector<std::string> parts;
  for (const auto& [name, step] : rngs)
    parts.push_back(fmt::format("{} state differed at the start of step {}", generator_label(name), step));
  return parts.empty() ? "; no RNG state differed" : "; " + fmt::format("{}", fmt::join(parts, ", "));
}

namespace {

using P = std::optional<Proposal>;

P data_pipeline(const Evidence& e) {
  const auto& d = e.d();
  if (e.script || (d.ref.kind != Kind::input && d.ref.kind != Kind::target)) return std::nullopt;
  return Proposal{"data_pipeline",
                  "data loading is not seeded",
                  fmt::format("the {} batch of step {} differs before the model ran{}", to_string(d.ref.kind),
                              d.ref.step, knob_note(e, {"data_seed", "data_seed_value"})),
                  "seed the data pipeline: DataLoader(..., generator=torch.Generator().manual_seed(0), "
                  "worker_init_fn=seed_worker) with seed_worker seeding numpy and random from torch.initial_seed(), "
                  "and seed the augmentation RNGs",
                  "--data-seed 0",
                  ""};
}

P unseeded_init(const Evidence& e) {
  const auto& d = e.d();
  if (d.ref.phase != Phase::init) return std::nullopt;
  const bool distributed = d.ref.rank >= 0;
  return Proposal{"unseeded_init",
                  "weight initialization is not seeded",
                  fmt::format("the initial value of {} differs before any training step{}{}", d.ref.tensor_name(),
                              e.on_rank(), knob_note(e, {"seed", "seed_value", "reinit"})),
                  distributed ? "call torch.manual_seed(0) on every rank (not only on rank 0) before the weights are "
                                "initialized: before building the model, and before re-initializing its shards"
                              : "call torch.manual_seed(0) before building the model: it seeds "
                                "nn.init.xavier_normal_ and every default initializer",
                  "--seed 0 (with --reinit xavier_normal to re-initialize under it)",
                  ""};
}

P train_eval_mode(const Evidence& e) {
  if (!e.differs("mode")) return std::nullopt;
  std::string stats;
  for (const auto& x : e.pair->diffs)
    if (x.ref.phase == Phase::after_step && x.ref.kind == Kind::buffer && is_divergent(x.status) &&
        (x.ref.name == "running_mean" || x.ref.name == "running_var")) {
      stats = fmt::format(
          "; batch-norm running statistics differ after step {} ({}.{}: train mode updates them, eval mode does not)",
          x.ref.step, x.ref.layer, x.ref.name);
      break;
    }
  return Proposal{
      "train_eval_mode",
      "train/eval mode differs between runs",
      fmt::format("the runs differ in mode ({}); the first divergence is {}{}", e.knob("mode"), where(e.d()), stats),
      "call model.train() or model.eval() the same way in every run: Dropout is active and BatchNorm "
      "uses and updates batch statistics only in train mode",
      "--mode train (or --mode eval) for every run",
      ""};
}

P dropout_mask(const Evidence& e) {
  const auto& d = e.d();
  if (d.ref.phase != Phase::forward || !e.is(d.ref, LayerCategory::dropout) || !e.source()) return std::nullopt;
  return Proposal{"rng_not_seeded",
                  "the RNG is not seeded",
                  fmt::format("the first divergence is the output of {}, whose inputs were identical: its random "
                              "mask differs{}",
                              where(d), knob_note(e, {"seed", "seed_value"})),
                  "torch.manual_seed(0) (and random.seed(0), numpy.random.seed(0)) before training: dropout masks "
                  "follow torch's RNG",
                  "--seed 0",
                  ""};
}

// A random op found by pass 3 drawing from torch's global generator, whose state at the step's
// start was the same in every run: something reseeded it, or drew from it, during the step.
P reseeded_in_step(const Evidence& e) {
  // torch's state at the step's start matched: a seed recorded as different (torch.initial_seed()
  // at the end) is the reseeding itself.
  if (!e.drill || e.drill->generator != "global" || !e.random_op() || e.rng_differed_by("torch", e.d().ref.step))
    return std::nullopt;
  const auto& d = e.d();
  return Proposal{"rng_reseeded",
                  "torch's RNG is reseeded or drawn from during the step",
                  fmt::format("{} is a random op ({}) drawing from torch's global generator; its draws differ "
                              "although torch's RNG state was the same in every run at the start of step {}: "
                              "between then and this op the generator was reseeded from a varying value "
                              "(torch.seed(), manual_seed from the clock) or drawn from a varying number of times",
                              where(d), strip_op(d.ref.layer_type), d.ref.step),
                  "seed once, at the top of the script, with a fixed value: remove torch.seed() and seeds taken "
                  "from the clock or the OS from the training code",
                  "-",
                  ""};
}

// A random op (op-level capture) whose inputs matched, while the global seed and torch's RNG state
// did not differ: its generator is not the global one, or it was seeded from the OS.
P private_generator(const Evidence& e) {
  if (!e.random_op() || !e.source() || e.seed_differs() || e.rng_differed_by("torch", e.d().ref.step))
    return std::nullopt;
  if (e.drill && e.drill->generator == "global") return std::nullopt;
  const auto& d = e.d();
  std::string private_use;
  auto gens = e.c->attribute(attr::kOpGenerators);
  if (!gens.empty() && json_depth_within(gens, kMaxJsonDepth)) {
    try {
      auto j = nlohmann::json::parse(gens);
      if (j.is_object() && j.contains(d.ref.layer) && j[d.ref.layer] == "private")
        private_use = " It was called with generator= a torch.Generator of the script's own.";
    } catch (const nlohmann::json::exception&) {
    }
  }
  if (e.drill && e.drill->generator == "private")
    private_use = " It was called with generator= a torch.Generator of the script's own.";
  return Proposal{"private_generator",
                  "a random op draws from a generator that is not seeded",
                  fmt::format("{} is a random op ({}) whose inputs were identical and whose draws differ, while the "
                              "global seed and torch's RNG state were the same in every run: it draws from a "
                              "generator of its own, seeded from the OS (torch.Generator().seed(), or a seed from "
                              "the clock).{}",
                              where(d), strip_op(d.ref.layer_type), private_use),
                  "seed that generator once with a fixed value: g = torch.Generator().manual_seed(0) (not g.seed(), "
                  "which draws from the OS), and pass generator=g",
                  "-",
                  ""};
}

P cudnn_autotuner(const Evidence& e) {
  const auto& d = e.d();
  if (!e.cuda() || !(e.differs("benchmark") || e.options.benchmark) ||
      !(e.is(d.ref, LayerCategory::conv) || d.ref.layer.empty()))
    return std::nullopt;
  return Proposal{"cudnn_autotuner",
                  "the cuDNN autotuner picks different algorithms",
                  fmt::format("the first divergence is {} on {} with cudnn.benchmark on{}", where(d), e.device,
                              knob_note(e, {"benchmark"})),
                  "torch.backends.cudnn.benchmark = False",
                  "drop --benchmark",
                  ""};
}

P cudnn_nondeterministic(const Evidence& e) {
  const auto& d = e.d();
  if (!e.cuda() || !e.is(d.ref, LayerCategory::conv) || !e.backward() || e.options.deterministic != "off")
    return std::nullopt;
  return Proposal{"cudnn_nondeterministic",
                  "cuDNN chose nondeterministic algorithms",
                  fmt::format("the first divergence is the backward of {} on {} with cuDNN deterministic off; "
                              "convolution backward kernels accumulate with atomics",
                              where(d), e.device),
                  "torch.backends.cudnn.deterministic = True and torch.backends.cudnn.benchmark = False",
                  "--deterministic",
                  "--deterministic"};
}

P thread_reduction(const Evidence& e) {
  const auto& d = e.d();
  if (e.cuda() || !e.differs("threads") || !(e.backward() || d.ref.phase == Phase::forward)) return std::nullopt;
  // An accumulating index op found by pass 3 has a deterministic CPU path.
  const std::string op = e.drill ? strip_op(e.drill->op) : "";
  if (op == "index_put" || op == "_index_put_impl" || op == "put")
    return Proposal{"thread_reduction",
                    "the thread count changes the order of reductions",
                    fmt::format("the first divergence is {}{}; {} with accumulate=True adds from several threads "
                                "in the order they arrive on the CPU, and float addition depends on the order",
                                where(d), knob_note(e, {"threads"}), e.drill->op),
                    fmt::format("torch.use_deterministic_algorithms(True): {} with accumulate=True then sums in a "
                                "fixed order at any thread count (or torch.set_num_threads(N) with the same N in "
                                "every run)",
                                e.drill->op),
                    "--deterministic",
                    "--deterministic"};
  return Proposal{"thread_reduction",
                  "the thread count changes the order of reductions",
                  fmt::format("the first divergence is {}{}; on the CPU, kernels that reduce (sums, matrix products, "
                              "normalization statistics, convolution gradients) split the work by thread, and float "
                              "addition depends on the order",
                              where(d), knob_note(e, {"threads"})),
                  "torch.set_num_threads(N) with the same N in every run (and the same "
                  "OMP_NUM_THREADS/MKL_NUM_THREADS)",
                  "--threads 1",
                  "--threads 1"};
}

// Whenever the seeds differed, the seed is named, alongside whatever else applies.
P seed_differs(const Evidence& e) {
  if (!e.seed_differs()) return std::nullopt;
  const std::string seeds = e.knob("seed_value").empty() ? e.knob("seed") : e.knob("seed_value");
  return Proposal{"rng_not_seeded",
                  "the RNG is not seeded",
                  fmt::format("the runs used different seeds ({}); the first divergence is {}{}", seeds, where(e.d()),
                              e.script ? ": torch's global seed was not fixed (torch.initial_seed() differed)" : ""),
                  "torch.manual_seed(0) (and random.seed(0), numpy.random.seed(0)) at the top, before the model and "
                  "the data are made",
                  "--seed 0",
                  ""};
}

P untapped_source(const Evidence& e) {
  const auto& d = e.d();
  if (e.drill || d.inputs_basis != "input_hash" || !d.inputs_identical || *d.inputs_identical) return std::nullopt;
  const bool all_layers = e.options.layers == "all";
  // What the check had is not suggested again.
  std::string flag = !all_layers ? "--layers all" : !e.options.ops ? "--ops" : "";
  return Proposal{"untapped_source",
                  "the source is in a layer or op that was not tapped",
                  fmt::format("the inputs of {} already differed, yet no tapped layer before it diverged: an untapped "
                              "layer or op between them changed the values{}",
                              where(d),
                              all_layers ? (e.options.ops ? " (every layer and op was tapped: look at code "
                                                            "outside the model's modules)"
                                                          : "")
                                         : fmt::format(" (layer selection: {})", e.options.layers)),
                  "-",
                  flag.empty() ? "-" : flag,
                  flag};
}

P atomic_op(const Evidence& e) {  // an op of the step's update (pass 3, after backward) is step_update's
  const auto& d = e.d();
  if (!e.source() || d.ref.phase == Phase::after_step ||
      (d.ref.phase != Phase::forward && d.ref.phase != Phase::output && !e.drill) || e.random_op() ||
      e.is(d.ref, LayerCategory::conv) || e.is(d.ref, LayerCategory::dropout) ||
      e.is(d.ref, LayerCategory::batchnorm) || e.seed_differs() || e.differs("threads") || e.differs("mode") ||
      e.differs("data_seed_value"))
    return std::nullopt;
  if (e.cuda())
    return Proposal{"deterministic_algorithms",
                    "a CUDA kernel accumulates with atomics",
                    fmt::format("{} produced different outputs from identical inputs with the same seeds and "
                                "settings: an op that sums in whatever order threads arrive (atomicAdd)",
                                where(d)),
                    "torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG=:4096:8 (it raises on ops "
                    "such as index_add_ that have no deterministic implementation)",
                    "--deterministic",
                    "--deterministic"};
  return Proposal{"custom_or_atomic_op",
                  "a custom or atomic op accumulates in arrival order",
                  fmt::format("{} produced different outputs from identical inputs with the same seeds and settings: "
                              "an op that sums in whatever order threads arrive (a custom extension, atomicAdd)",
                              where(d)),
                  "make the op reduce in a fixed order; torch.use_deterministic_algorithms(True) flags built-in ops "
                  "without one",
                  "--deterministic",
                  "--deterministic"};
}

P cuda_atomics(const Evidence& e) {
  if (!e.cuda() || e.options.deterministic != "off" || !e.source() || e.random_op()) return std::nullopt;
  return Proposal{
      "deterministic_algorithms",
      "a CUDA kernel accumulates with atomics",
      fmt::format("{} differs from identical inputs on {} with deterministic algorithms off", where(e.d()), e.device),
      "torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG=:4096:8",
      "--deterministic",
      "--deterministic"};
}

}  // namespace

const std::vector<RuleRow>& model_rules() {
  static const std::vector<RuleRow> rows = {
      {"data_pipeline", "data", data_pipeline},
      {"unseeded_init", nullptr, unseeded_init},
      {"train_eval_mode", nullptr, train_eval_mode},
      {"rng_reseeded", "seed", reseeded_in_step},
      {"rng_not_seeded", "seed", dropout_mask},
      {"private_generator", nullptr, private_generator},
      {"outside_input", nullptr, outside_input},
      {"cudnn_autotuner", nullptr, cudnn_autotuner},
      {"cudnn_nondeterministic", nullptr, cudnn_nondeterministic},
      {"thread_reduction", nullptr, thread_reduction},
      {"step_update", nullptr, step_update},
      {"rng_not_seeded", "seed", seed_differs},
      {"untapped_source", nullptr, untapped_source},
      {"custom_or_atomic_op", nullptr, atomic_op},
      {"deterministic_algorithms", nullptr, cuda_atomics},
  };
  return rows;
}

}  // namespace hints_detail

namespace {

// The command that confirms a hint, in the front end's terms: the script's command for a training
// script, the model for a TorchScript check. "" when the hint names no test.
std::string test_command(const Comparison& c, const Proposal& p) {
  const auto& command = c.ref_options.command;
  if (!command.empty()) {
    std::string joined;
    for (const auto& a : command) joined += (joined.empty() ? "" : " ") + a;
    return fmt::format("reprocheck run {}-- {}", p.run_flag.empty() ? "" : p.run_flag + " ", joined);
  }
  if (p.fix_flag.empty() || p.fix_flag == "-") return "";
  std::string model = c.attribute(attr::kModel);
  return fmt::format("reprocheck {} {}", model.empty() ? "MODEL.pt" : model, p.fix_flag);
}

// Where pass 3 found the op, for the first hint's evidence.
std::string drill_sentence(const DrillDown& dd) {
  std::string where = dd.module.empty() ? "" : " in " + dd.module;
  std::string line = dd.source().empty() ? ""
                     : dd.forward_site   ? fmt::format(", the backward of the call at {}", dd.source())
                                         : fmt::format(", called at {}", dd.source());
  return fmt::format(
      " (pass 3: the first divergent op is {} -> {}{}{}{}, {})", dd.op, dd.output, where, dd.inside(), line,
      dd.diff.inputs_identical.value_or(true) ? "whose inputs were identical" : "whose inputs already differed");
}

}  // namespace

std::vector<Hint> explain(const Comparison& c) {
  if (!c.headline()) return {};
  // A golden and a fresh run: what differs is a change since it was recorded, not nondeterminism.
  if (!c.capture.baseline.empty()) return explain_change(c);
  const Evidence e = gather(c);
  std::vector<Proposal> chosen;
  std::set<std::string> groups_taken;
  auto consider = [&](const std::vector<RuleRow>& rows) {
    for (const auto& row : rows) {
      if (row.group && groups_taken.count(row.group)) continue;
      auto p = row.rule(e);
      if (!p) continue;
      if (row.group) groups_taken.insert(row.group);
      if (std::none_of(chosen.begin(), chosen.end(), [&](const Proposal& q) { return q.cause == p->cause; }))
        chosen.push_back(std::move(*p));
    }
  };
  consider(data_rules());
  consider(model_rules());
  if (chosen.empty()) {
    const auto& d = e.d();
    chosen.push_back(Proposal{
        "no_evidence", "no known cause matches",
        fmt::format("the first divergence is {} ({}), with {}; no run option differs that explains it", where(d),
                    d.inputs_identical ? (*d.inputs_identical ? "inputs identical" : "inputs already different")
                                       : "inputs unknown",
                    e.pair->knob_diffs.empty() ? "the same settings in every run" : "the settings shown above"),
        "-", e.options.layers == "all" && e.options.ops ? "-" : "--layers all or --ops to localize it further",
        e.options.layers == "all" ? (e.options.ops ? "" : "--ops") : "--layers all"});
  }
  if (e.drill) chosen.front().evidence += drill_sentence(*e.drill);
  std::vector<Hint> out;
  for (const auto& p : chosen)
    out.push_back({p.cause, p.title, p.evidence, p.fix_python, p.fix_flag, test_command(c, p)});
  return out;
}

}  // namespace reprocheck
