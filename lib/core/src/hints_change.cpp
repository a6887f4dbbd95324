// The hints of a check against a golden: a fresh run that differs from a golden recorded before
// is a change, not nondeterminism. The model's structure, its initial weights, a run option, the
// environment (reprocheck, LibTorch, CUDA, device, CPU, BLAS, threads, numeric flags), or else the
// code, the data or a dependency; each hint names both values and what to run next, in the terms
// of the front end that recorded it (`reprocheck MODEL.pt` or `reprocheck run -- COMMAND`).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "hints_evidence.h"
#include "reprocheck/error.h"
#include "reprocheck/options.h"
#include "reprocheck/protocol.h"

namespace reprocheck {

namespace hints_detail {

namespace {

std::string attribute(const std::map<std::string, std::string>& m, const char* key) {
  auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

std::string quoted(const std::string& a) { return a.find_first_of(" \"'$") == std::string::npos ? a : "'" + a + "'"; }

// The command of a run option's value: ["python", "train.py"] -> "python train.py".
std::string command_text(const std::string& json_list) {
  try {
    auto j = nlohmann::json::parse(json_list);
    if (!j.is_array()) return json_list;
    std::vector<std::string> words;
    for (const auto& w : j) words.push_back(quoted(w.is_string() ? w.get<std::string>() : w.dump()));
    return fmt::format("{}", fmt::join(words, " "));
  } catch (const nlohmann::json::exception&) {
    return json_list;
  }
}

// The flags of a check that are about where its reports and dumps go, or about the golden: left
// out of the commands the hints suggest (which add their own).
bool output_flag(const std::string& flag) {
  static const std::set<std::string> kOutput = {"--baseline", "--save-baseline", "--json",  "--markdown", "--junit",
                                                "--html",     "--keep",          "--force", "--drill"};
  return kOutput.count(flag.substr(0, flag.find('='))) > 0;
}

// The check being run: its front end, its own arguments, and the golden.
struct Checked {
  bool script = false;
  std::string model;              // a TorchScript model's path
  std::string command;            // a training script's command
  std::vector<std::string> args;  // the check's own arguments ("" when unknown), the command after "--"
  std::string golden;
  // This check's command line with `flags` added, and `with` options set to other values.
  std::string check(const std::vector<std::string>& flags, const std::map<std::string, std::string>& with = {},
                    const std::string& command_override = "") const {
    std::vector<std::string> own, tail;
    auto dash = std::find(args.begin(), args.end(), "--");
    for (auto it = args.begin(); it != dash; ++it) {
      if (!output_flag(*it)) {
        own.push_back(*it);
        continue;
      }
      const bool valued = it->find('=') == std::string::npos && *it != "--force";
      if (valued && it + 1 != dash && (it + 1)->rfind("--", 0) != 0) ++it;
    }
    if (dash != args.end()) tail.assign(dash + 1, args.end());
    for (const auto& [key, value] : with) {
      const OptionDef* def = find_option(key);
      if (!def || !def->flag || std::string(def->flag).rfind("--", 0) != 0) continue;
      const std::string flag = def->flag;
      // Drop the check's own value of it, then give the golden's.
      for (size_t i = 0; i < own.size();) {
        if (own[i] == flag) {
          const bool valued =
              i + 1 < own.size() && own[i + 1].rfind("--", 0) != 0 && option_args(*def, "x").size() == 2;
          own.erase(own.begin() + static_cast<long>(i), own.begin() + static_cast<long>(i + (valued ? 2 : 1)));
        } else if (own[i].rfind(flag + "=", 0) == 0) {
          own.erase(own.begin() + static_cast<long>(i));
        } else {
          ++i;
        }
      }
      for (const auto& a : option_args(*def, value)) own.push_back(a);
    }
    for (const auto& f : flags) own.push_back(f);
    std::string out = script ? "reprocheck run" : "reprocheck";
    if (!script && args.empty()) out += " " + quoted(model.empty() ? "MODEL.pt" : model);  // args hold the model
    for (const auto& a : own) out += " " + quoted(a);
    if (script) {
      std::string cmd = command_override;
      if (cmd.empty())
        for (const auto& a : tail.empty() ? std::vector<std::string>{command} : tail)
          cmd += (cmd.empty() ? "" : " ") + (tail.empty() ? a : quoted(a));
      out += " -- " + cmd;
    }
    return out;
  }
  std::string record(const std::string& golden_path) const {
    return check({"--save-baseline", golden_path, "--force"});
  }
};

Checked checked(const Comparison& c, const PairComparison& p) {
  Checked k;
  k.golden = c.capture.baseline;
  RunOptions now = c.ref_options;
  try {
    const std::string text = attribute(p.other_attributes, attr::kRunOptions);
    if (!text.empty()) now = from_json(text);
  } catch (const InputError&) {
  }
  k.script = !now.command.empty();
  for (const auto& a : now.command) k.command += (k.command.empty() ? "" : " ") + quoted(a);
  k.model = attribute(p.other_attributes, attr::kModel);
  k.args = c.command_line;
  return k;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return s;
}

// A short name for where a run ran, for a golden per runner kind: "cpu-avx512-torch2.11.0",
// "cuda-nvidia-h200-torch2.11.0".
std::string runner_kind(const std::map<std::string, std::string>& a) {
  std::string device = attribute(a, attr::kDevice), kind;
  if (device.rfind("cuda", 0) == 0) {
    kind = "cuda-" + lower(attribute(a, attr::kDeviceName));
  } else {
    std::string blas = attribute(a, attr::kBlas);
    auto comma = blas.find(", ");
    kind =
        "cpu" +
        (comma == std::string::npos ? "" : "-" + lower(blas.substr(comma + 2, blas.find(' ', comma + 2) - comma - 2)));
    // CPU reductions split by thread: the thread count is part of a CPU runner's kind.
    if (std::string t = attribute(a, attr::kTorchThreads); !t.empty()) kind += "-threads" + t;
  }
  const std::string torch = attribute(a, attr::kLibtorchVersion);
  if (!torch.empty()) kind += "-torch" + torch;
  std::string out;
  for (char ch : kind) out += std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ? ch : '-';
  return out;
}

// "goldens/resnet_mini.cpu-avx512-torch2.11.0.h5" next to the golden used now.
std::string golden_for(const std::string& golden, const std::string& kind) {
  auto slash = golden.rfind('/');
  std::string dir = slash == std::string::npos ? "" : golden.substr(0, slash + 1);
  std::string stem = slash == std::string::npos ? golden : golden.substr(slash + 1);
  if (stem.size() > 3 && stem.compare(stem.size() - 3, 3, ".h5") == 0) stem.erase(stem.size() - 3);
  return fmt::format("{}{}.{}.h5", dir, stem, kind);
}

// The first structural difference: a tensor whose shape or dtype changed, or that one run lacks.
const TensorDiff* structural(const PairComparison& p) {
  for (const auto& d : p.diffs)
    if (d.status == Status::shape_mismatch || d.status == Status::dtype_mismatch || d.status == Status::missing ||
        d.status == Status::extra)
      return &d;
  return nullptr;
}

// The model's change in words, against the golden.
std::string model_words(const ModelChange& m) {
  if (m.what == "signature")
    return fmt::format("the model's signature changed ({} in the golden, {} now)", m.reference, m.other);
  return fmt::format("the model file changed (its hash is {} in the golden, {} now): its code or its weights",
                     m.reference, m.other);
}

struct Change {
  std::string cause, title, evidence, fix, test_it;
};

std::optional<Change> model_changed(const Checked& k, const PairComparison& p) {
  const TensorDiff* d = structural(p);
  const bool signature = p.model_change.what == "signature";
  if (!d && !signature) return std::nullopt;
  std::vector<std::string> facts;
  if (signature) facts.push_back(model_words(p.model_change));
  if (d) {
    const std::string name = d->ref.tensor_name();
    auto pos = d->detail.find(" vs ");
    if ((d->status == Status::shape_mismatch || d->status == Status::dtype_mismatch) && pos != std::string::npos)
      facts.push_back(fmt::format("{} has {} {} now and {} in the golden", name,
                                  d->status == Status::shape_mismatch ? "shape" : "dtype", d->detail.substr(pos + 4),
                                  d->detail.substr(0, pos)));
    else
      facts.push_back(fmt::format("{} is {}", name, d->status == Status::missing ? "in the golden only" : "new"));
  }
  return Change{"model_changed", "the model's structure changed since the golden was recorded",
                fmt::format("{}", fmt::join(facts, "; ")),
                "if the change is intended, record a new golden on this commit; otherwise restore the layer",
                k.record(k.golden)};
}

std::optional<Change> init_changed(const Checked& k, const PairComparison& p, const TensorDiff& first) {
  // A tensor whose shape changed differs for that reason: the structure's hint says so.
  if (first.ref.phase != Phase::init || first.status != Status::values_differ) return std::nullopt;
  std::string why;
  for (const auto& [key, a, b] : p.knob_values)
    if (key == "seed" || key == "seed_value" || key == "reinit")
      why += fmt::format("; {} is {} in the golden, {} now", key, a, b);
  if (why.empty() && p.model_change.what == "file") why = "; " + model_words(p.model_change);
  return Change{"init_changed", "the initial weights changed since the golden was recorded",
                fmt::format("the first difference is {} before step 0 (the weights training starts from){}",
                            first.ref.tensor_name(), why),
                "if the new initialization is intended (another init seed or init function), record a new golden; "
                "otherwise restore the golden's seed and init",
                k.record(k.golden)};
}

std::optional<Change> option_changed(const Checked& k, const PairComparison& p) {
  std::vector<std::string> facts, restore;
  std::map<std::string, std::string> golden_values;
  std::string command;
  for (const auto& [key, a, b] : p.knob_values) {
    if (key == "seed_value" || key == "data_seed_value") continue;  // the drawn seeds: see seed
    if (key == "command") {
      facts.push_back(fmt::format("the command is '{}' in the golden, '{}' now", command_text(a), command_text(b)));
      command = command_text(a);
      continue;
    }
    facts.push_back(fmt::format("{} ({} in the golden, {} now)", key, a, b));
    restore.push_back(fmt::format("{}={}", key, a));
    golden_values[key] = a;
  }
  if (facts.empty()) return std::nullopt;
  return Change{"option_changed", "a run option changed since the golden was recorded",
                fmt::format("the runs differ from the golden in {}", fmt::join(facts, ", ")),
                restore.empty() ? "run the golden's command, or record a new golden if the change is intended"
                                : fmt::format("restore {}, or record a new golden if the change is intended",
                                              fmt::join(restore, ", ")),
                k.check({"--baseline", k.golden}, golden_values, command)};
}

std::optional<Change> environment_changed(const Checked& k, const PairComparison& p, bool alone,
                                          const std::map<std::string, std::string>& now) {
  if (p.environment_diffs.empty()) return std::nullopt;
  std::vector<std::string> facts;
  for (const auto& e : p.environment_diffs) facts.push_back(fmt::format("{} {} -> {}", e.what, e.reference, e.other));
  const std::string mine = golden_for(k.golden.empty() ? "golden.h5" : k.golden, runner_kind(now));
  std::string pin;
  for (const auto& e : p.environment_diffs)
    if (e.what == "threads")
      pin = fmt::format(
          "; or pin the thread count (--threads {0}, or torch.set_num_threads({0}) in the script) so that one "
          "golden holds on runners with other core counts",
          e.reference);
  return Change{
      "environment_changed",
      alone ? "the environment changed: the likely cause (nothing else differs from the golden)"
            : "the environment changed since the golden was recorded",
      fmt::format("the golden was recorded elsewhere: {}", fmt::join(facts, ", ")),
      fmt::format("keep one golden per runner kind, named after it, and pick it by the runner: record '{}' here "
                  "and compare with --baseline {}{}",
                  mine, golden_for(k.golden.empty() ? "golden.h5" : k.golden, "${RUNNER_KIND}"), pin),
      k.record(mine)};
}

Change code_changed(const Checked& k, const PairComparison& p, const TensorDiff& first) {
  const bool file = p.model_change.what == "file";
  return Change{"code_changed",
                file ? "the model file changed since the golden was recorded"
                     : "the code or the data changed since the golden was recorded",
                fmt::format("the first difference is {}; {}", where(first),
                            file ? model_words(p.model_change) + ", with the same run options and environment"
                                 : "the run options, the model and the environment are the golden's, so the training "
                                   "code, the data or a dependency changed, or the training is not deterministic"),
                "if the change is intended, record a new golden; a check without --baseline tells nondeterminism "
                "apart (it compares fresh runs with each other)",
                k.check({})};  // without --baseline: fresh runs compared with each other
}

}  // namespace

std::vector<Hint> explain_change(const Comparison& c) {
  const PairComparison* p = c.headline();
  if (!p || !p->first) return {};
  const TensorDiff& first = p->diffs[*p->first];
  const Checked k = checked(c, *p);
  std::vector<Change> out;
  auto add = [&](std::optional<Change> ch) {
    if (ch) out.push_back(std::move(*ch));
  };
  add(model_changed(k, *p));
  add(init_changed(k, *p, first));
  add(option_changed(k, *p));
  const bool file = p->model_change.what == "file";
  add(environment_changed(k, *p, out.empty() && !file, p->other_attributes));
  if (out.empty() ||
      (file && std::none_of(out.begin(), out.end(), [](const Change& ch) { return ch.cause == "init_changed"; })))
    out.push_back(code_changed(k, *p, first));
  std::vector<Hint> hints;
  for (auto& ch : out) hints.push_back({ch.cause, ch.title, ch.evidence, ch.fix, "-", ch.test_it});
  return hints;
}

}  // namespace hints_detail

}  // namespace reprocheck
