#include "base/status.h"

namespace longhaul {

void check_failed(const char* file, int line, const char* expr, const std::string& extra) {
  std::fprintf(stderr, "longhaul: internal check failed at %s:%d: %s%s%s\n", file, line, expr,
               extra.empty() ? "" : ": ", extra.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace longhaul
