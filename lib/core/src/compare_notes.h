// The notes of a comparison (compare_notes.cpp). Not a public header.
#pragma once

#include <memory>
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

}  // namespace reprocheck
