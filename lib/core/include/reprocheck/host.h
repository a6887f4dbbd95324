// Where a process runs, said the same way by every front end and the audit: the host name, the
// CPU model, the UTC time. The Python capture gets them through reprocheck._core.
#pragma once

#include <string>

namespace reprocheck {

struct HostFacts {
  std::string host;  // gethostname
  std::string cpu;   // "AMD EPYC 7B13" (/proc/cpuinfo's model name; the machine type when absent)
  std::string time;  // UTC, ISO 8601: "2026-11-27T11:24:29Z"
};
HostFacts host_facts();
std::string utc_now();

}  // namespace reprocheck
