// The notes of a comparison (compare_notes.cpp). Not a public header.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"

namespace reprocheck {

using Readers = std::vector<std::unique_ptr<DumpReader>>;

void add_once(std::vector<std::string>& notes, std::string note);
// Runs on different devices are compared with torch's per-dtype tolerances unless a tolerance was
// chosen; either way a note says so. Returns the options to compare with.
CompareOptions device_tolerance(Comparison& c, const Readers& readers, const CompareOptions& options);
// What the runs could not see: notes about the capture and the run options that cannot reach the
// model, so that a REPRODUCIBLE verdict is not read as more than it is.
void add_capture_notes(Comparison& c, const Readers& readers);
// Runs with different seeds whose tensors all matched: a few random elements coincide often.
void add_seed_note(Comparison& c, const Readers& readers);
// The first divergent tensor is a rank's shard of a sharded tensor (FSDP2, tensor parallelism):
// which slice of the full tensor it holds.
void add_shard_note(Comparison& c);

// The facts of where the two runs ran that differ (reprocheck, LibTorch, CUDA, cuDNN, device, CPU,
// BLAS, threads, the deterministic and TF32 flags, Python); facts one dump does not record are left
// out, and so are threads and deterministic when a run option of theirs differs (then they are the
// option's difference).
std::vector<EnvironmentDiff> environment_diffs(const std::map<std::string, std::string>& ref,
                                               const std::map<std::string, std::string>& other,
                                               const std::set<std::string>& knobs_differing);
// How the other run's model differs from the reference's: its signature, or its file.
ModelChange model_change(const std::map<std::string, std::string>& ref,
                         const std::map<std::string, std::string>& other);

}  // namespace reprocheck
