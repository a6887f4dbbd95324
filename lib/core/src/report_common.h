// Pieces shared by the report formats. Not a public header.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "reprocheck/report.h"

namespace reprocheck::report_detail {

std::string model_name(const Comparison& c);
// "step 0 · backward · features.3 (Conv2d) grad of output", "step 0 · param_grad · features.0.weight (Conv2d)"
std::string describe(const TensorMeta& m);
std::string provenance_tag(const TensorDiff& d);
std::string group_digits(int64_t n);
// The attributes of the run that was checked: a golden check's fresh run, else the reference's.
const std::map<std::string, std::string>& checked_attributes(const Comparison& c);
std::string checked_attribute(const Comparison& c, const std::string& key);
// The tensors of each checked run (a golden check's fresh run may record more or fewer than it).
int64_t tensors_per_run(const Comparison& c);
// "the golden 'g.h5' (m.pt, 406 tensors, recorded 2026-11-30T10:20:00Z on ci-7)"; "" without one.
std::string golden_words(const Comparison& c);
std::string bits_hex(uint64_t bits, const std::string& dtype);
std::string value(double v);
// "0.999999881", or "n/a (no finite pair)" when the cosine is undefined.
std::string cosine_text(double cosine);

struct CascadeRow {
  int step;
  Phase phase;
  int64_t count = 0;
  double max_abs = 0;
  int64_t hash_only = 0;   // of `count`, divergent by their hashes alone (no statistics)
  int64_t with_stats = 0;  // of `count`, with statistics (max_abs is theirs)
};
// Divergent tensors after the first, grouped by (step, phase), in order of first appearance (in
// a run of several ranks, in logical time: by step, then phase).
std::vector<CascadeRow> cascade(const PairComparison& p);
std::string knobs(const PairComparison& p);
// A training script's data and RNG records in the user's terms ("batch 0 of the DataLoader: 5 of 8
// samples differ (indices [...] vs [...])", "numpy global RNG state differed at the start of step
// 0"); "" for other tensors, which get statistics.
std::string data_sentence(const TensorDiff& d);
std::string steps_of(const Comparison& c);
// The verdict in words: "REPRODUCIBLE" / "DIVERGENT", or against a golden "MATCHES THE GOLDEN" /
// "NUMERICS CHANGED".
std::string verdict_word(const Comparison& c);
// What the runs are compared with: "run 0", or "the golden".
std::string reference_name(const Comparison& c);
// "2 runs of 2 step(s)", or "1 fresh run of 2 step(s) against the golden".
std::string runs_phrase(const Comparison& c);
// Where the figures come from, a sentence per fact (the capture ladder); empty for a full capture.
std::vector<std::string> capture_sentences(const Comparison& c);
// The max abs diff of a cascade row, or "hashes only" when no tensor of it has statistics.
std::string cascade_max(const CascadeRow& row);
// Pass 3 in one sentence: the first divergent op, its module and source line, by how much, and what
// was captured; or why it found none.
std::string drill_summary(const DrillDown& dd);

}  // namespace reprocheck::report_detail
