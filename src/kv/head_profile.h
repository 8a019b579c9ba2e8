// A head profile: what calibration measured about a model, kept beside it. Two sections, each optional in version 2
// and computed by a command of its own:
//   - head scores: how much each KV head behaves like a retrieval head, the input of the duo and lserve policies
//     (DuoAttention, Xiao et al., 2024; RazorAttention, Tang et al., 2024), from `longhaul calibrate-heads`
//     (eval/head_calibration.h);
//   - the sub-layer removal order: FinerCut's (Zhang et al., 2024) greedy order of the attention and FFN
//     sub-layers whose removal changes the output least, the input of --spec-type self and --prune-sublayers, from
//     `longhaul calibrate-sublayers` (eval/sublayer_calibration.h).
// The text file:
//
//   longhaul-head-profile 2
//   model SmolLM2-135M-Instruct.Q4_1.gguf
//   n_layer 30
//   n_head_kv 3
//   # layer head score needle induction echo
//   0 0 0.0123 0.0101 0.0045 0.0123
//   ...
//   sublayers 1 128
//   # rank sublayer kl agreement
//   sublayer 1 attn.27 0.00123 0.992
//   ...
//
// Head lines: one per (layer, head), each exactly once, or none (a version-1 file must have them all). The
// `sublayers V T` line opens the sub-layer section (V = 1, its format version; T = calibration tokens), followed by
// its entries in rank order 1, 2, ...: the sub-layer removed at that rank (attn.L or ffn.L, each at most once), the
// mean KL divergence of the model with the first `rank` removals from the whole model, and the share of calibration
// tokens whose top token they agree on. '#' starts a comment line. A profile of head scores alone is written as
// version 1, which older readers take.
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

// The residual branches of a decoder layer (model/sublayers.h).
enum class SublayerKind : uint8_t { kAttention = 0, kFeedForward = 1 };
struct Sublayer {
  int32_t layer = 0;
  SublayerKind kind = SublayerKind::kAttention;
  bool operator==(const Sublayer&) const = default;
};
// "attn.3", "ffn.3".
std::string sublayer_name(const Sublayer& s);

// One step of FinerCut's greedy order: the sub-layer removed, and how the model with this and every earlier
// removal compares with the whole model on the calibration tokens.
struct SublayerRemoval {
  Sublayer sublayer;
  float kl = 0;         // mean KL(whole || pruned) of the next-token distributions, in nats
  float agreement = 1;  // share of tokens whose top token the two agree on, in [0, 1]
};

struct HeadProfile {
  std::string model;  // file name of the model it was measured on (informational)
  int32_t n_layer = 0;
  int32_t n_head_kv = 0;
  std::vector<HeadScore> heads;  // [n_layer * n_head_kv], layer-major; empty = no head scores (version 2)
  std::vector<SublayerRemoval> sublayer_order;  // FinerCut's removal order, first removed first; empty = none
  int32_t sublayer_tokens = 0;                  // calibration tokens the order was measured on
  std::string source;            // the file it was read from, for messages ("" = made in memory; not saved)

  bool has_head_scores() const { return !heads.empty(); }

  const HeadScore& at(int32_t il, int32_t kv_head) const {
    return heads[static_cast<size_t>(il) * static_cast<size_t>(n_head_kv) + static_cast<size_t>(kv_head)];
  }
};

// Limits a profile must respect (a hostile file cannot make the parser allocate more).
inline constexpr int32_t kMaxProfileLayers = 4096;
inline constexpr int32_t kMaxProfileHeads = 4096;
inline constexpr int64_t kMaxProfileEntries = 1 << 20;
inline constexpr int32_t kMaxProfileTokens = 1 << 24;

// A profile of the given shape whose heads all score 0: stands in for a model's profile where only a policy's
// parameters are checked (duo then keeps the earliest heads).
HeadProfile blank_head_profile(int32_t n_layer, int32_t n_head_kv);

// Parses the text format above; fails naming the line and what is wrong (unknown header, a value that is not a
// finite number >= 0, a head out of range or listed twice, a head missing, a sub-layer out of range, listed twice
// or out of rank order, an unknown section version).
Result<HeadProfile> parse_head_profile(std::string_view text);
std::string format_head_profile(const HeadProfile& profile);

// read_text_file + parse, errors prefixed with the path; source = path.
Result<HeadProfile> load_head_profile(const std::string& path);
// Writes the file through a temporary name and a rename, so that a reader never sees half a profile.
Status save_head_profile(const HeadProfile& profile, const std::string& path);

}  // namespace longhaul::kv
