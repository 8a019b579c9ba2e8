// Number formatting shared by describe() and validate() messages (g++ 12 has no std::format).
#pragma once

#include <cstdio>
#include <string>

namespace longhaul::sampling {

// Shortest "%g" rendering, e.g. 0.95 -> "0.95", 1 -> "1", NaN -> "nan".
inline std::string format_number(double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", value);
  return buf;
}

}  // namespace longhaul::sampling
