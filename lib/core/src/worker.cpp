#include "reprocheck/worker.h"

namespace reprocheck {

Command RecordLauncher::command(const WorkerJob& job) const {
  Command c;
  c.argv = {executable_, "record"};
  auto args = to_args(job.options);
  c.argv.insert(c.argv.end(), args.begin(), args.end());
  c.argv.insert(c.argv.end(), {"-o", job.dump});
  if (!job.replay_keys_file.empty())
    c.argv.insert(c.argv.end(), {"--replay", job.replay_dump, "--replay-keys", job.replay_keys_file});
  return c;
}

}  // namespace reprocheck
