#include <fmt/format.h>
#include <fmt/ranges.h>

#include <regex>

#include "reprocheck/error.h"
#include "reprocheck/run.h"

namespace reprocheck {

std::vector<std::string> to_args(const RunOptions& o) {
  std::vector<std::string> a{o.model,     "--steps",  std::to_string(o.steps),
                             "--seed",    o.seed,     "--data-seed",
                             o.data_seed, "--device", o.device,
                             "--mode",    o.mode,     "--layers",
                             o.layers};
  auto num = [](double v) { return fmt::format("{}", v); };
  a.insert(a.end(), {"--lr", num(o.lr), "--momentum", num(o.momentum), "--deterministic", o.deterministic});
  if (o.benchmark) a.push_back("--benchmark");
  if (o.threads > 0) a.insert(a.end(), {"--threads", std::to_string(o.threads)});
  if (!o.reinit.empty()) a.insert(a.end(), {"--reinit", o.reinit});
  if (!o.input_shape.empty()) a.insert(a.end(), {"--input-shape", fmt::format("{}", fmt::join(o.input_shape, ","))});
  if (!o.dtype.empty()) a.insert(a.end(), {"--dtype", o.dtype});
  if (!o.loss.empty()) a.insert(a.end(), {"--loss", o.loss});
  for (const auto& l : o.libraries) a.insert(a.end(), {"--load-library", l});
  if (o.ops) a.push_back("--ops");
  return a;
}

void validate(const RunOptions& o) {
  auto one_of = [](const std::string& flag, const std::string& v, std::initializer_list<const char*> ok) {
    for (const char* s : ok)
      if (v == s) return;
    throw UsageError(fmt::format("bad value '{}' for {}: expected one of {}", v, flag, fmt::join(ok, ", ")));
  };
  auto seed_ok = [](const std::string& flag, const std::string& v) {
    if (v != "random" && !std::regex_match(v, std::regex("[0-9]{1,18}")))
      throw UsageError(fmt::format("bad value '{}' for {}: expected a non-negative integer or 'random'", v, flag));
  };
  seed_ok("--seed", o.seed);
  seed_ok("--data-seed", o.data_seed);
  if (o.steps < 1 || o.steps > 100000)
    throw UsageError(fmt::format("bad value {} for --steps: expected 1 or more", o.steps));
  if (o.threads < 0) throw UsageError(fmt::format("bad value {} for --threads: expected 1 or more", o.threads));
  one_of("--deterministic", o.deterministic, {"off", "on", "warn"});
  one_of("--mode", o.mode, {"train", "eval"});
  if (!o.reinit.empty()) one_of("--reinit", o.reinit, {"xavier_normal"});
  if (!o.dtype.empty()) one_of("--dtype", o.dtype, {"float32", "float64", "float16", "bfloat16"});
  if (!o.loss.empty()) one_of("--loss", o.loss, {"mse", "cross_entropy", "sum"});
  if (o.device != "auto" && o.device != "cpu" && !std::regex_match(o.device, std::regex("cuda(:[0-9]+)?")))
    throw UsageError(fmt::format("bad value '{}' for --device: expected cpu, cuda, cuda:N or auto", o.device));
  for (auto d : o.input_shape)
    if (d < 0)
      throw UsageError(fmt::format("bad --input-shape {}: dimensions must be >= 0", fmt::join(o.input_shape, ",")));
  if (o.layers.empty())
    throw UsageError("empty --layers: pass default, all, none, a comma list of kinds, or path:REGEX");
}

}  // namespace reprocheck
