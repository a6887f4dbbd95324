// What a dump records about its run besides the tensors: versions, device, host, time, seeds and
// the run options. Not a public header.
#pragma once

#include <torch/script.h>

#include <string>

#include "reprocheck/dump.h"
#include "reprocheck/run_options.h"

namespace reprocheck::detail {

struct RunFacts {
  RunOptions options;  // as run: resolved device, thread count, input shape, dtype and loss
  c10::Device device = c10::Device(c10::kCPU);
  int64_t seed = 0, data_seed = 0;  // the seeds used (drawn ones included)
};

// Writes the dump's root attributes (docs/dump-format.md) for a run of `module`.
void write_provenance(DumpWriter& writer, const RunFacts& facts, const torch::jit::Module& module);

}  // namespace reprocheck::detail
