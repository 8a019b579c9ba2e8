// Small string helpers shared by the parsers of command-line lists and specs.
#pragma once

#include <sstream>
#include <string>
#include <vector>

namespace longhaul {

// The pieces of `s` between `sep` characters, empty pieces included ("a,,b" -> a, "", b; "a," -> a, "").
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

}  // namespace longhaul
