#include "reprocheck/host.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <ctime>
#include <fstream>

namespace reprocheck {

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

HostFacts host_facts() {
  HostFacts f;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) f.host = host;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      f.cpu = line.substr(line.find(':') + 2);
      break;
    }
  if (f.cpu.empty()) {
    utsname u{};
    if (uname(&u) == 0) f.cpu = u.machine;
  }
  f.time = utc_now();
  return f;
}

}  // namespace reprocheck
