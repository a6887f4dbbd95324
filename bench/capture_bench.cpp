// Capture overhead: K training steps with and without capture (default layer set), on the CPU.
//
//   build/bench/capture_bench [REPEATS] [STEPS] [DEVICE]   (DEVICE: cpu, the default, or cuda)
//
// For each model: the median over REPEATS runs of the steps' wall time without capture (no
// instrumentation, no dump) and with capture into a dump in $TMPDIR (until the last byte is
// written), their ratio, the time the training thread spent copying tensors for the background
// writer (and waiting for it), the time spent hashing layer inputs, the dump's size and the dump
// throughput (dump bytes over the captured run's time).
// Then the same with hash-only capture (the capture ladder's first pass: each tensor's hash, no
// data) and its ratio to the plain run, and the hash-only dump's size.
// Model loading is not timed; each model gets one warm-up run first.
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "reprocheck/files.h"
#include "reprocheck/record.h"

namespace rc = reprocheck;

namespace {

size_t file_size(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = argc > 1 ? std::atoi(argv[1]) : 7;
  int steps = argc > 2 ? std::atoi(argv[2]) : 2;
  std::string device = argc > 3 ? argv[3] : "cpu";
  std::string dir = rc::files::make_temp_dir("reprocheck-bench-");
  std::string dump = dir + "/run.h5";
  fmt::print("capture overhead, {} steps, median of {} runs, device {}\n\n", steps, repeats, device);
  fmt::print(
      "| model | plain (ms) | captured (ms) | ratio | capture copies (ms) | input hashes (ms) | dump (MB) | dump rate "
      "(MB/s) | hashes only (ms) | ratio | hash-only dump (KB) "
      "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const char* name :
       {"seed_convnet", "dropout_mlp", "bn_net", "resnet_mini", "traced_convnet", "resnet18", "resnet_wide64"}) {
    rc::RunOptions o;
    o.model = std::string(REPROCHECK_FIXTURE_DIR) + "/" + name + ".pt";
    o.device = device;
    o.steps = steps;
    rc::record_run(o, {"", false, false});  // warm-up
    rc::RunOptions ho = o;
    ho.hashes_only = true;
    std::vector<double> plain, captured, write_s, hash_s, hashed;
    double bytes = 0, hash_bytes = 0;
    for (int i = 0; i < repeats; ++i) {
      plain.push_back(rc::record_run(o, {"", false, false}).seconds);
      auto r = rc::record_run(o, {dump, true, true});
      captured.push_back(r.seconds);
      write_s.push_back(r.write_seconds);
      hash_s.push_back(r.hash_seconds);
      bytes = static_cast<double>(r.bytes);
      hashed.push_back(rc::record_run(ho, {dump, true, true}).seconds);
      hash_bytes = static_cast<double>(file_size(dump));
    }
    double p = median(plain), c = median(captured), w = median(write_s), h = median(hash_s), x = median(hashed);
    fmt::print("| {} | {:.2f} | {:.2f} | {:.2f}x | {:.2f} | {:.2f} | {:.1f} | {:.0f} | {:.2f} | {:.2f}x | {:.0f} |\n",
               name, p * 1e3, c * 1e3, c / p, w * 1e3, h * 1e3, bytes / 1e6, bytes / 1e6 / c, x * 1e3, x / p,
               hash_bytes / 1e3);
  }
  rc::files::remove_tree(dir);
  return 0;
}
