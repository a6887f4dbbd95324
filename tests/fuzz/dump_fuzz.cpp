// libFuzzer target for everything that reads a dump: the reader (attributes, index, datasets,
// hashes), the comparison and every report. Any input must give a value or an InputError, never a
// crash, a hang or a memory error (run under ASan and UBSan by ci/fuzz). And a dump that reads is
// compared with itself: it must never diverge (pairing cannot invent a divergence).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "reprocheck/compare.h"
#include "reprocheck/error.h"
#include "reprocheck/report.h"

namespace rc = reprocheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    char name[] = "/tmp/reprocheck-fuzz-XXXXXX";
    int fd = mkstemp(name);
    if (fd >= 0) close(fd);
    return std::string(name);
  }();
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    rc::CompareOptions options;
    options.read_timeout_s = 2;  // a file HDF5 loops on is reported as damaged after 2 s
    auto report = rc::make_report(rc::compare_dumps({path, path}, options));
    if (report.comparison.divergent()) {
      std::fprintf(stderr, "a dump compared with itself diverged\n");
      __builtin_trap();
    }
    (void)rc::render_text(report);
    (void)rc::render_json(report);
    (void)rc::render_junit(report);
    (void)rc::render_markdown(report);
  } catch (const rc::Error&) {
  }
  return 0;
}
