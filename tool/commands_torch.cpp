// The commands that need LibTorch, run by `reprocheck-torch` (the `reprocheck` command hands them
// over: commands_front.cpp): record, info, --version.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>
#include <memory>
#include <optional>

#include "cli.h"
#include "commands.h"
#include "reprocheck/build_info.h"
#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/model.h"
#include "reprocheck/record.h"
#include "reprocheck/subprocess.h"

namespace reprocheck::cli {

int cmd_record(const std::vector<std::string>& args) {
  CLI::App app("Run seeded training steps once and dump every captured tensor to HDF5", "reprocheck record");
  OptionFlags flags(app, kRecordCommand, /*model=*/false);
  std::string model, out, replay, replay_keys, run_options;
  bool force = false, plain = false;
  app.add_option("model", model, "TorchScript model file (.pt)");
  app.add_option("--run-options", run_options,
                 "every run option as JSON (how a check hands a run its options; flags given as well override it)");
  app.add_option("-o,--out", out, "dump file to write (HDF5)");
  app.add_flag("--force", force, "overwrite the output if it exists");
  app.add_flag("--plain", plain, "run the same steps without capture and without a dump (for timing)");
  app.add_option("--replay", replay, "reference dump whose values replace the tensors named by --replay-keys");
  app.add_option("--replay-keys", replay_keys, "file of tensor keys to replay, one per line (used by --isolate)");
  if (int code = parse(app, args); code >= 0) return code;
  if (out.empty() && !plain) throw UsageError("record needs -o RUN.h5 (or --plain for a run without a dump)");
  if (!out.empty() && plain) throw UsageError("--plain writes no dump: drop -o or --plain");
  if (!run_options.empty()) flags.settings().run = from_json(run_options);
  if (!model.empty()) flags.settings().run.model = model;
  if (flags.settings().run.model.empty())
    throw UsageError("record needs the model: reprocheck record MODEL.pt -o RUN.h5");
  const RunOptions& o = flags.finish().run;
  install_interrupt_handler();
  // A long forward pass cannot stop at a tap: end within a second anyway, leaving no partial dump.
  start_interrupt_watchdog(1.0);
  RecordTarget target{out, force, !plain, "", {}};
  if (!replay_keys.empty()) {
    std::ifstream in(replay_keys);
    if (!in) throw InputError(fmt::format("cannot read --replay-keys '{}'; check the path", replay_keys));
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) target.replay_keys.push_back(line);
    target.replay_dump = replay;
  }
  auto r = record_run(o, target);
  if (plain)
    fmt::print("ran {} step(s) of {} without capture in {:.3f} s (seed {}, {})\n", o.steps, o.model, r.seconds, r.seed,
               r.device);
  else
    fmt::print("wrote {}: {} tensors, {}, {} step(s) in {:.3f} s (seed {}, data seed {}, {})\n", out, r.tensors,
               o.hashes_only ? std::string("hashes only") : human_bytes(static_cast<double>(r.bytes)), o.steps,
               r.seconds, r.seed, r.data_seed, r.device);
  return to_int(ExitCode::ok);
}

int cmd_version() {
  auto b = build_info();
  fmt::print("reprocheck {}\nLibTorch   {}\nCUDA       {} ({})\ncuDNN      {}\nHDF5       {}\n", b.reprocheck,
             b.libtorch, b.cuda,
             b.cuda_available ? fmt::format("available, {} device(s)", b.cuda_devices) : "not available", b.cudnn,
             b.hdf5);
  return to_int(ExitCode::ok);
}

int cmd_info(const std::vector<std::string>& args) {
  CLI::App app("List a TorchScript model's modules with path, type and parameter count", "reprocheck info");
  OptionFlags flags(app, kInfoCommand, /*model=*/true);
  if (int code = parse(app, args); code >= 0) return code;
  const RunOptions& run = flags.finish().run;
  for (const auto& lib : run.libraries) load_library(lib);
  auto s = inspect_model(run.model);
  fmt::print("model      {}\n", s.path);
  fmt::print("signature  {}\n", s.signature);
  fmt::print("parameters {}\n", group_digits(s.total_params));
  for (const auto& m : s.methods) fmt::print("method     {}\n", m);
  const bool has_method = s.methods.size() > 1;
  const std::string loss = s.meta.loss.value_or(has_method ? "model (its own method)" : "mse");
  if (s.meta.input_shape)
    fmt::print("input      [{}] {} (from reprocheck.json)\n", fmt::join(*s.meta.input_shape, ", "),
               s.meta.dtype.value_or("float32"));
  for (size_t i = 0; i < s.meta.inputs.size(); ++i)
    fmt::print("input {}    {} (from reprocheck.json)\n", i + 1, s.meta.inputs[i]);
  for (size_t i = 0; i < s.meta.targets.size(); ++i)
    fmt::print("target {}   {} (from reprocheck.json)\n", i + 1, s.meta.targets[i]);
  if (!s.meta.input_shape && s.meta.inputs.empty())
    fmt::print(
        "input      unknown (no input spec in a reprocheck.json; pass --input SHAPE:DTYPE per input when running)\n");
  fmt::print("loss       {}{}{}\n", loss, s.meta.output ? fmt::format(", output {}", *s.meta.output) : "",
             s.meta.output_weights ? fmt::format(", output weights {}", *s.meta.output_weights) : "");
  size_t path_width = 4, type_width = 4;
  for (const auto& m : s.modules) {
    path_width = std::max(path_width, m.path.empty() ? 7 : m.path.size());
    type_width = std::max(type_width, m.type.size());
  }
  fmt::print("\n{:<{}}  {:<{}}  {:>10}  {}\n", "PATH", path_width, "TYPE", type_width, "PARAMS", "");
  for (const auto& m : s.modules)
    fmt::print("{:<{}}  {:<{}}  {:>10}  {}\n", m.path.empty() ? "<model>" : m.path, path_width, m.type, type_width,
               group_digits(m.params), m.shares_type ? "shared type" : "");
  return to_int(ExitCode::ok);
}

}  // namespace reprocheck::cli
