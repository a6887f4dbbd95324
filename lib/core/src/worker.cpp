#include "reprocheck/worker.h"

#include <dirent.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdlib>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/subprocess.h"

namespace reprocheck {

void WorkerLauncher::collect(const WorkerJob& job) const {
  if (!files::exists(job.dump))
    throw InputError(fmt::format("run {} exited without writing its dump '{}'", job.index + 1, job.dump));
}

Command RecordLauncher::command(const WorkerJob& job) const {
  Command c;
  // One encoding for every worker: the run options as JSON (the Python capture reads the same JSON
  // from its environment).
  c.argv = {executable_, "record", "--run-options", to_json(job.options), "-o", job.dump};
  if (!job.replay_keys_file.empty())
    c.argv.insert(c.argv.end(), {"--replay", job.replay_dump, "--replay-keys", job.replay_keys_file});
  return c;
}

Command ScriptLauncher::command(const WorkerJob& job) const {
  Command c;
  c.argv = job.options.command;
  c.env = {{kCaptureEnv, job.dump}, {kRunOptionsEnv, to_json(job.options)}};
  if (!job.replay_keys_file.empty()) {
    c.env.emplace_back(kReplayEnv, job.replay_dump);
    c.env.emplace_back(kReplayKeysEnv, job.replay_keys_file);
  }
  // Runs side by side (--jobs) must not share torchrun's rendezvous port; a port the user chose wins.
  if (!std::getenv("PET_MASTER_PORT") && !std::getenv("MASTER_PORT"))
    if (int port = free_tcp_port()) c.env.emplace_back("PET_MASTER_PORT", std::to_string(port));
  for (const auto& kv : job.options.env) {
    auto eq = kv.find('=');
    c.env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return c;
}

namespace {

// The dumps "STEM.rankR.h5" next to "STEM.h5", in rank order.
std::vector<std::string> rank_dumps(const std::string& dump) {
  const std::string dir = files::parent_dir(dump);
  std::string stem = files::base_name(dump);
  if (stem.size() > 3 && stem.compare(stem.size() - 3, 3, ".h5") == 0) stem.resize(stem.size() - 3);
  const std::string prefix = stem + ".rank";
  std::vector<std::pair<int, std::string>> found;
  for (const auto& name : files::entries(dir)) {
    if (name.rfind(prefix, 0) != 0 || name.size() < prefix.size() + 4 || name.compare(name.size() - 3, 3, ".h5") != 0)
      continue;
    std::string rank = name.substr(prefix.size(), name.size() - 3 - prefix.size());
    if (rank.empty() || !std::all_of(rank.begin(), rank.end(), ::isdigit) || rank.size() > 6) continue;
    found.emplace_back(std::stoi(rank), dir + "/" + name);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [rank, path] : found) out.push_back(path);
  return out;
}

}  // namespace

void ScriptLauncher::collect(const WorkerJob& job) const {
  if (files::exists(job.dump)) return;
  auto ranks = rank_dumps(job.dump);
  if (!ranks.empty()) {
    merge_rank_dumps(ranks, job.dump);
    return;
  }
  const std::string command = fmt::format("{}", fmt::join(job.options.command, " "));
  if (!files::exists(job.dump + ".started"))
    throw InputError(fmt::format(
        "'{}' never started reprocheck's capture: the Python that runs it does not have the reprocheck package "
        "(or the command runs no Python); install it with: {}",
        command, install_hint_));
  throw InputError(fmt::format(
      "'{}' ran no training step that reprocheck could see: no nn.Module ran forward; reprocheck run checks a "
      "PyTorch training script (a model, a loss, optimizer.step())",
      command));
}

}  // namespace reprocheck
