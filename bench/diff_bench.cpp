// Comparison speed and end-to-end cost.
//
//   build/bench/diff_bench [REPEATS=5]
//
// 1. Records resnet_wide64 (about 1 GB per dump for 2 steps) three times: A and B with the same
//    seed (identical), C with another seed (nearly every tensor differs).
// 2. Times compare_dumps from the page cache (one warm-up each): A vs B with the hash short-cut,
//    A vs B reading and comparing every tensor, and A vs C.
// 3. Times `reprocheck MODEL --runs 2` end to end against two `reprocheck record --plain`
//    processes run one after the other, on resnet_mini and resnet_wide64.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/files.h"
#include "reprocheck/record.h"
#include "reprocheck/subprocess.h"

namespace rc = reprocheck;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

template <typename F>
double time_it(F&& f) {
  auto t = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double run_process(const std::vector<std::string>& argv, const std::string& dir) {
  return time_it([&] {
    (void)dir;
    rc::ExitStatus status;
    auto p = rc::run_to_end({argv, {}, ""}, 0, &status);
    if (!status.ok()) fmt::print(stderr, "bench: command failed: {}\n", p->stderr_tail().last_lines(3));
  });
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
  std::string fixtures = REPROCHECK_FIXTURE_DIR;
  std::string bin = REPROCHECK_BINARY;
  std::string dir = rc::files::make_temp_dir("reprocheck-bench-");
  std::string a = dir + "/a.h5", b = dir + "/b.h5", c = dir + "/c.h5";
  rc::RunOptions o;
  o.model = fixtures + "/resnet_wide64.pt";
  o.device = "cpu";
  o.threads = 2;
  rc::record_run(o, {a, true, true});
  rc::record_run(o, {b, true, true});
  o.seed = "1";
  rc::record_run(o, {c, true, true});
  rc::DumpReader ra(a);
  double mb = 0;
  for (const auto& m : ra.index()) mb += static_cast<double>(m.numel * rc::dtype_size(m.dtype)) / 1e6;
  size_t n = ra.index().size();
  fmt::print("comparison of resnet_wide64 dumps: {} tensors, {:.0f} MB each; median of {} from the page cache\n\n", n,
             mb, repeats);
  fmt::print(
      "| comparison | median (ms) | per 1000 tensors (ms) | MB/s (both dumps' data) | verdict "
      "|\n|---|---:|---:|---:|---|\n");
  struct Case {
    const char* name;
    std::string other;
    bool shortcut;
  };
  for (const Case& k : {Case{"identical, hash short-cut", b, true}, Case{"identical, full comparison", b, false},
                        Case{"divergent (other seed)", c, true}}) {
    rc::CompareOptions co;
    co.hash_shortcut = k.shortcut;
    rc::Comparison cmp = rc::compare_dumps({a, k.other}, co);  // warm-up: pages into the cache
    std::vector<double> t;
    for (int i = 0; i < repeats; ++i) t.push_back(time_it([&] { cmp = rc::compare_dumps({a, k.other}, co); }));
    double s = median(t);
    double read_mb = static_cast<double>(cmp.pairs[0].bytes_read) / 1e6;
    fmt::print("| {} | {:.1f} | {:.2f} | {} | {} |\n", k.name, s * 1e3, s * 1e3 / static_cast<double>(n) * 1000,
               read_mb > 0 ? fmt::format("{:.0f}", read_mb / s) : "-", cmp.divergent() ? "divergent" : "reproducible");
  }
  rc::files::remove_tree(a);
  rc::files::remove_tree(b);
  rc::files::remove_tree(c);

  fmt::print("\nend to end: `reprocheck MODEL --runs 2` against two `record --plain` processes (median of {})\n\n",
             repeats);
  fmt::print("| model | 2 plain runs (s) | reprocheck N=2 (s) | ratio |\n|---|---:|---:|---:|\n");
  for (const char* model : {"resnet_mini", "resnet_wide64"}) {
    std::string path = fixtures + "/" + model + ".pt";
    std::vector<double> plain, check;
    for (int i = 0; i < repeats; ++i) {
      plain.push_back(run_process({bin, "record", path, "--plain", "--device", "cpu"}, dir) +
                      run_process({bin, "record", path, "--plain", "--device", "cpu"}, dir));
      check.push_back(run_process({bin, path, "--device", "cpu"}, dir));
    }
    double p = median(plain), k = median(check);
    fmt::print("| {} | {:.2f} | {:.2f} | {:.2f}x |\n", model, p, k, k / p);
  }
  rc::files::remove_tree(dir);
  return 0;
}
