// libFuzzer target for what crosses from a worker (the user's script, or reprocheck-torch) to the
// parent: the one-line error file, the run options `reprocheck run` hands over in the environment
// (and reads back from dumps), and the JSON attributes the capture writes into a dump
// (data_loaders, layer_categories, op_generators, nonfinite_loss) that the hints and notes read.
// The first byte picks which. Any input gives a value or an Error: no crash, hang or memory error,
// and what reaches the terminal is escaped.
#include <cstdint>
#include <cstdio>
#include <string>

#include "reprocheck/compare.h"
#include "reprocheck/error.h"
#include "reprocheck/hints.h"
#include "reprocheck/layers.h"
#include "reprocheck/run_options.h"
#include "reprocheck/tensor_meta.h"

namespace rc = reprocheck;

namespace {

void error_line(const std::string& text) {
  const std::string line = rc::sanitize_text(rc::first_line(text));
  for (unsigned char c : line)
    if (c < 0x20 || c == 0x7f) __builtin_trap();  // a control character would reach the terminal
  if (line.find('\n') != std::string::npos) __builtin_trap();
}

void run_options(const std::string& text) {
  try {
    rc::RunOptions o = rc::from_json(text);
    rc::validate(o);
    const std::string once = rc::to_json(o);
    if (rc::to_json(rc::from_json(once)) != once) __builtin_trap();  // the encoding round-trips
  } catch (const rc::Error&) {
  }
}

void dump_json_attributes(const std::string& text) {
  rc::Comparison c;
  c.runs = {"a.h5", "b.h5"};
  for (const char* name : {"data_loaders", "layer_categories", "op_generators", "nonfinite_loss"})
    c.ref_attributes[name] = text;
  c.ref_options.command = {"python", "train.py"};
  rc::PairComparison p;
  rc::TensorDiff d;
  d.ref.step = 0;
  d.ref.phase = rc::Phase::input;
  d.ref.kind = rc::Kind::indices;
  d.ref.name = "indices";
  d.ref.layer_type = "torch.utils.data.DataLoader";
  d.other = d.ref;
  d.status = rc::Status::values_differ;
  d.inputs_identical = true;
  p.diffs.push_back(d);
  p.first = 0;
  c.pairs.push_back(p);
  (void)rc::explain(c);
  (void)rc::LayerCategories::from_json(text).to_json();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      error_line(text);
      break;
    case 1:
      run_options(text);
      break;
    default:
      dump_json_attributes(text);
      break;
  }
  return 0;
}
