// Likely causes of a divergence, chosen from evidence in the dumps: the phase, kind and layer type
// of the first divergent tensor, whether its inputs were identical, the device, and the run
// options that differed between the runs.
#pragma once

#include <string>
#include <vector>

#include "reprocheck/compare.h"

namespace reprocheck {

struct Hint {
  std::string cause;       // stable id: rng_not_seeded, unseeded_init, data_pipeline, thread_reduction,
                           // train_eval_mode, cudnn_autotuner, cudnn_nondeterministic,
                           // deterministic_algorithms, custom_or_atomic_op, private_generator,
                           // untapped_source, the data rules (unseeded_shuffle, random_split,
                           // distributed_sampler, weighted_sampler, user_sampler, ...), no_evidence
  std::string title;       // "RNG not seeded"
  std::string evidence;    // what in the dumps points there
  std::string fix_python;  // the PyTorch setting, or the line of code to add
  std::string fix_flag;    // the reprocheck flag that tests it ("-": none)
  std::string test_it;     // the command that would confirm it ("" when none): "reprocheck m.pt --threads 1",
                           // "reprocheck run --vary env:PYTHONHASHSEED=0,1 -- python train.py"
};

// The likely causes of the headline divergence, most likely first; empty when reproducible.
std::vector<Hint> explain(const Comparison& c);

}  // namespace reprocheck
