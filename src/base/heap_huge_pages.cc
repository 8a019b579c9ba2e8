#include "base/heap_huge_pages.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

namespace longhaul {

namespace {

constexpr const char* kTunable = "glibc.malloc.hugetlb";

bool sanitizer_build() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

// The kernel's setting reads like "always [madvise] never", the bracketed one chosen.
bool transparent_huge_pages_off() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string setting;
  std::getline(in, setting);
  return !in || setting.find("[never]") != std::string::npos;
}

}  // namespace

std::string heap_huge_pages_tunables(const char* current) {
  const std::string tunables = current == nullptr ? "" : current;
  size_t from = 0;
  while (from <= tunables.size()) {
    size_t end = tunables.find(':', from);
    if (end == std::string::npos) end = tunables.size();
    const std::string entry = tunables.substr(from, end - from);
    if (entry.compare(0, std::strlen(kTunable), kTunable) == 0 &&
        (entry.size() == std::strlen(kTunable) || entry[std::strlen(kTunable)] == '='))
      return "";
    from = end + 1;
  }
  const std::string added = std::string(kTunable) + "=1";
  return tunables.empty() ? added : tunables + ":" + added;
}

void reexec_with_heap_huge_pages(char** argv) {
  if (sanitizer_build() || argv == nullptr || argv[0] == nullptr) return;
  const char* opt_out = std::getenv("LONGHAUL_HEAP_HUGE_PAGES");
  if (opt_out != nullptr && std::strcmp(opt_out, "0") == 0) return;
  const char* current = std::getenv("GLIBC_TUNABLES");
  const std::string original = current == nullptr ? "" : current;
  const std::string tunables = heap_huge_pages_tunables(current);
  if (tunables.empty() || transparent_huge_pages_off()) return;
  if (setenv("GLIBC_TUNABLES", tunables.c_str(), 1) != 0) return;
  // The binary's own path rather than /proc/self/exe, whose name the process would then carry (`ps`, `top`).
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) {
    path[n] = '\0';
    execv(path, argv);
  }
  // Only reached when the re-execution failed: go on with 4 KiB heap pages, and leave the environment as it was
  // found so that child processes see the user's own setting.
  if (current == nullptr)
    unsetenv("GLIBC_TUNABLES");
  else
    setenv("GLIBC_TUNABLES", original.c_str(), 1);
}

}  // namespace longhaul
