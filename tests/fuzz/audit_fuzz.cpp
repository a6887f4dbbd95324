// libFuzzer target for everything the audit reads: audit files (TOML), the checks' JSON reports,
// and history databases. The first byte picks which; any input must give a value or an Error,
// never a crash, a hang or a memory error (run under ASan and UBSan by ci/fuzz).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"

namespace audit = reprocheck::audit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char name[] = "/tmp/reprocheck-audit-fuzz-XXXXXX";
    return std::string(mkdtemp(name) ? name : "/tmp");
  }();
  if (size < 1) return 0;
  const int mode = data[0] % 3;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string path = dir + (mode == 0 ? "/audit.toml" : "/history.sqlite");
  try {
    if (mode == 1) {
      audit::CellResult r;
      audit::read_check_report(body, r);
      audit::AuditView v;
      v.cells.push_back(r);
      v.models = {r.model};
      v.columns = {r.column};
      (void)audit::render_html(v);
      (void)audit::render_junit(v);
      return 0;
    }
    if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
      std::fwrite(body.data(), 1, body.size(), f);
      std::fclose(f);
    }
    if (mode == 0) {
      auto spec = audit::load_spec(path);
      (void)audit::shard_cells(spec.cells, 1, 2);
    } else {
      auto h = audit::History::open(path, false, audit::History::kSchemaVersion, 10);
      for (int64_t id : h->audits()) {
        auto v = audit::make_view(*h, id);
        (void)audit::render_json(v);
        (void)audit::render_html(v);
      }
    }
  } catch (const reprocheck::Error&) {
  }
  return 0;
}
