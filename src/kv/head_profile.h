// A head profile: what calibration measured about a model, kept beside it. Three sections, each optional from
// version 2 on and computed by a command of its own:
//   - head scores: how much each KV head behaves like a retrieval head, the input of the duo and lserve policies
//     (DuoAttention, Xiao et al., 2024; RazorAttention, Tang et al., 2024), from `longhaul calibrate-heads`
//     (eval/head_calibration.h);
//   - the sub-layer removal order: FinerCut's (Zhang et al., 2024) greedy order of the attention and FFN
//     sub-layers whose removal changes the output least, the input of --spec-type self and --prune-sublayers, from
//     `longhaul calibrate-sublayers` (eval/sublayer_calibration.h);
//   - the sparse prefill assignment (version 3): per query head of the global layers, the pattern MInference's
//     offline search (Jiang et al., 2024) chose and MoA's elastic span rule (Fu et al., 2024), the input of
//     --prefill-attn minference and moa, from `longhaul calibrate-prefill` (eval/prefill_calibration.h).
// The text file:
//
//   longhaul-head-profile 3
//   model SmolLM2-135M-Instruct.Q4_1.gguf
//   n_layer 30
//   n_head_kv 3
//   n_head 9
//   # layer head score needle induction echo
//   0 0 0.0123 0.0101 0.0045 0.0123
//   ...
//   sublayers 1 128
//   # rank sublayer kl agreement
//   sublayer 1 attn.27 0.00123 0.992
//   ...
//   prefill 1 14336 2048 0.5
//   # layer head pattern columns recall moa_alpha moa_beta
//   prefill-head 0 0 a-shape 0 0.981 128 0.0625
//   ...
//
// Head lines: one per (layer, head), each exactly once, or none (a version-1 file must have them all). The
// `sublayers V T` line opens the sub-layer section (V = 1, its format version; T = calibration tokens), followed by
// its entries in rank order 1, 2, ...: the sub-layer removed at that rank (attn.L or ffn.L, each at most once), the
// mean KL divergence of the model with the first `rank` removals from the whole model, and the share of calibration
// tokens whose top token they agree on. The `prefill V T B D` line (version 3 files only, with `n_head` among the
// header lines) opens the prefill section (V = 1; T = calibration tokens; B = keys per query each pattern was given
// in the search; D = the density MoA's spans were chosen under), followed by one line per (layer, query head) of
// the layers it covers, each at most once: the pattern (a-shape, vertical-slash, block-sparse), the vertical-slash
// columns at budget B (0 for the others), the share of sampled attention mass the pattern kept, and MoA's span = alpha
// + beta * N tokens at input length N. '#' starts a comment line. A profile is written at the lowest version that holds
// its sections, so that older readers take what they can.
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

// The patterns of sparse prefill (model/sparse_prefill.h builds them): MInference's three, which the prefill section
// assigns to heads, and HiP's and HyperAttention's, which need no calibration (a profile never names them).
enum class PrefillPattern : uint8_t { kAShape = 0, kVerticalSlash = 1, kBlockSparse = 2, kHip = 3, kHyper = 4 };
// "a-shape", "vertical-slash", "block-sparse", "hip", "hyper".
const char* prefill_pattern_name(PrefillPattern pattern);

// One query head's sparse prefill assignment (the prefill section).
struct HeadPrefill {
  bool listed = false;  // false = the section has no line for this head (a sliding-window layer's)
  PrefillPattern pattern = PrefillPattern::kAShape;
  int32_t n_columns = 0;  // vertical-slash: key columns at the search's budget (the rest are diagonals); else 0
  float recall = 0;       // share of the sampled queries' attention mass the pattern kept, in [0, 1]
  float moa_alpha = 0;    // MoA: the head's span is moa_alpha + moa_beta * N tokens at input length N
  float moa_beta = 0;
};

struct HeadProfile {
  std::string model;  // file name of the model it was measured on (informational)
  int32_t n_layer = 0;
  int32_t n_head_kv = 0;
  std::vector<HeadScore> heads;  // [n_layer * n_head_kv], layer-major; empty = no head scores (version 2)
  std::vector<SublayerRemoval> sublayer_order;  // FinerCut's removal order, first removed first; empty = none
  int32_t sublayer_tokens = 0;                  // calibration tokens the order was measured on
  int32_t n_head = 0;                           // query heads per layer (the prefill section's); 0 = not given
  std::vector<HeadPrefill> prefill;             // [n_layer * n_head], layer-major; empty = no prefill section
  int32_t prefill_tokens = 0;                   // calibration tokens the prefill section was measured on
  int32_t prefill_budget = 0;                   // keys per query each pattern was given in the search
  float prefill_density = 0;                    // the density MoA's spans were chosen under, in (0, 1]
  std::string source;            // the file it was read from, for messages ("" = made in memory; not saved)

  bool has_head_scores() const { return !heads.empty(); }
  bool has_prefill() const { return !prefill.empty(); }
  const HeadPrefill& prefill_at(int32_t il, int32_t head) const {
    return prefill[static_cast<size_t>(il) * static_cast<size_t>(n_head) + static_cast<size_t>(head)];
  }

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
// or out of rank order, an unknown pattern, an unknown section version).
Result<HeadProfile> parse_head_profile(std::string_view text);
std::string format_head_profile(const HeadProfile& profile);

// read_text_file + parse, errors prefixed with the path; source = path.
Result<HeadProfile> load_head_profile(const std::string& path);
// Writes the file through a temporary name and a rename, so that a reader never sees half a profile.
Status save_head_profile(const HeadProfile& profile, const std::string& path);

}  // namespace longhaul::kv
