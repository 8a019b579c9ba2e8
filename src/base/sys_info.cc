#include "base/sys_info.h"

#include <cstdio>
#include <cstring>

namespace longhaul {

namespace {
int64_t read_status_kib(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  int64_t kib = 0;
  const size_t key_len = std::strlen(key);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, key, key_len) == 0) {
      long long v = 0;
      if (std::sscanf(line + key_len, ": %lld", &v) == 1) kib = v;
      break;
    }
  }
  std::fclose(f);
  return kib;
}
}  // namespace

int64_t peak_rss_bytes() { return read_status_kib("VmHWM") * 1024; }
int64_t current_rss_bytes() { return read_status_kib("VmRSS") * 1024; }

}  // namespace longhaul
