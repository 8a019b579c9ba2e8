// A head profile: how much each KV head of a model behaves like a retrieval head, the input of the duo policy
// (DuoAttention, Xiao et al., 2024; RazorAttention, Tang et al., 2024). `longhaul calibrate-heads` measures it
// (eval/head_calibration.h) and writes it as a small text file:
//
//   longhaul-head-profile 1
//   model SmolLM2-135M-Instruct.Q4_1.gguf
//   n_layer 30
//   n_head_kv 3
//   # layer head score needle induction echo
//   0 0 0.0123 0.0101 0.0045 0.0123
//   ...
//
// one line per (layer, head), each exactly once; '#' starts a comment line. score is what duo ranks heads by;
// the three masses it is made of are kept for the reader (head_calibration.h says how they are measured).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace longhaul::kv {

struct HeadScore {
  float score = 0;      // what duo ranks by: max(needle, induction, echo)
  float needle = 0;     // mean attention mass on the needle from the queries that must retrieve it
  float induction = 0;  // mean mass on the token after the previous occurrence of the query's token
  float echo = 0;       // mean mass on the previous occurrence of the query's token
};

struct HeadProfile {
  std::string model;  // file name of the model it was measured on (informational)
  int32_t n_layer = 0;
  int32_t n_head_kv = 0;
  std::vector<HeadScore> heads;  // [n_layer * n_head_kv], layer-major
  std::string source;            // the file it was read from, for messages ("" = made in memory; not saved)

  const HeadScore& at(int32_t il, int32_t kv_head) const {
    return heads[static_cast<size_t>(il) * static_cast<size_t>(n_head_kv) + static_cast<size_t>(kv_head)];
  }
};

// Limits a profile must respect (a hostile file cannot make the parser allocate more).
inline constexpr int32_t kMaxProfileLayers = 4096;
inline constexpr int32_t kMaxProfileHeads = 4096;
inline constexpr int64_t kMaxProfileEntries = 1 << 20;

// A profile of the given shape whose heads all score 0: stands in for a model's profile where only a policy's
// parameters are checked (duo then keeps the earliest heads).
HeadProfile blank_head_profile(int32_t n_layer, int32_t n_head_kv);

// Parses the text format above; fails naming the line and what is wrong (unknown header, a value that is not a
// finite number >= 0, a head out of range or listed twice, a head missing).
Result<HeadProfile> parse_head_profile(std::string_view text);
std::string format_head_profile(const HeadProfile& profile);

// read_text_file + parse, errors prefixed with the path; source = path.
Result<HeadProfile> load_head_profile(const std::string& path);
// Writes the file through a temporary name and a rename, so that a reader never sees half a profile.
Status save_head_profile(const HeadProfile& profile, const std::string& path);

}  // namespace longhaul::kv
