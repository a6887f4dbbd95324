#include "reprocheck/isolate.h"

#include <fmt/format.h>

#include <algorithm>

namespace reprocheck {

Isolation isolate(const Comparison& first, const CompareOptions& options, const ReplayFn& replay, int max_sources) {
  Isolation iso;
  iso.last = first;
  const PairComparison* headline = first.headline();
  if (!headline) {
    iso.agreed = true;
    return iso;
  }
  iso.step = headline->diffs[*headline->first].ref.step;
  std::vector<std::string> keys;
  const Comparison* current = &first;
  for (;;) {
    const PairComparison* pair = current->headline();
    if (!pair || pair->diffs[*pair->first].ref.step > iso.step) {
      iso.agreed = true;
      break;
    }
    const TensorDiff& d = pair->diffs[*pair->first];
    if (d.status != Status::values_differ) {
      iso.note = fmt::format("{} is {}, which cannot be replayed", d.ref.tensor_name(), to_string(d.status));
      break;
    }
    if (d.ref.phase == Phase::after_step) {
      iso.note =
          fmt::format("{} differs after the optimizer step only; the step itself is the source", d.ref.tensor_name());
      iso.sources.push_back(d);
      break;
    }
    if (std::find(keys.begin(), keys.end(), d.ref.key()) != keys.end()) {
      iso.note = fmt::format("{} still differs although it was replayed", d.ref.tensor_name());
      break;
    }
    if (static_cast<int>(iso.sources.size()) >= max_sources) {
      iso.note = fmt::format("stopped after {} sources", max_sources);
      break;
    }
    iso.sources.push_back(d);
    keys.push_back(d.ref.key());
    iso.last = compare_dumps(replay(keys), options);
    current = &iso.last;
  }
  return iso;
}

}  // namespace reprocheck
