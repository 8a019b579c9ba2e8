// Which keys each query of one attention_update call may see. The ONE definition of the attention mask: every
// flash-attention kernel (the scalar twin and the SIMD versions) and the model's score pass decide visibility through
// key_visible, or through block_visibility / block_maybe_visible, whose fast paths are derived from it and tested
// against it (tests/unit/kernels/attention_mask_test.cc). No kernel writes the comparison itself, so a new kind of
// mask (a head span's sinks, a speculative tree) is added here once and every kernel follows.
//
// The mask is on positions, not on cells: a key's position is independent of where its cell sits in the KV cache,
// which is what eviction and position re-assignment need (docs/architecture.md).
#pragma once

#include <climits>
#include <cstdint>

namespace longhaul::kernels {

struct AttentionMask {
  const int32_t* q_pos = nullptr;  // [n_q] query positions
  const int32_t* k_pos = nullptr;  // [n_k] key positions (not necessarily ascending: a tree step's new tokens
                                   // repeat positions)
  int32_t window = 0;  // > 0: query at q sees a key at k only if q - k < window (sliding window / head span window);
                       // <= 0 = no window
  int32_t n_sink = 0;  // keys at positions < n_sink are exempt from `window` (attention sinks of a head span:
                       // StreamingLLM, Xiao et al., 2023); causality still applies; 0 = no sinks
                       // (positions are >= 0)
  // Tree verification (speculative decoding): the step's own new tokens form a tree. When k_node is non-null, key j
  // with k_node[j] >= 0 is node k_node[j] of the step's tree and query i (node q_node[i] >= 0) sees it iff bit
  // k_node[j] is set in query node q_node[i]'s ancestor row (a node is its own ancestor) -- position causality is NOT
  // used for such keys, since sibling branches share positions. Keys with k_node[j] < 0 (cached tokens) follow the
  // positional rule. A query with q_node[i] < 0 is not part of the tree and sees no tree key.
  const int32_t* k_node = nullptr;      // [n_k] or null = no tree among these keys
  const int32_t* q_node = nullptr;      // [n_q] (needed when k_node is non-null)
  const uint64_t* ancestors = nullptr;  // [n_nodes, n_ancestor_words] bit rows: bit b of row r set = node b is an
                                        // ancestor of node r (or r itself)
  int32_t n_ancestor_words = 0;         // 64-bit words per ancestor row: node numbers are < 64 * n_ancestor_words
};

// The range of the query positions of a call, for block_maybe_visible.
struct QueryBounds {
  int32_t min = INT32_MAX;
  int32_t max = INT32_MIN;
};

// The functions have internal linkage (anonymous namespace): this header is compiled into the AVX2 and AVX-512
// translation units as well as generic ones, and an inline function with external linkage that one of them emits out
// of line (built with its ISA flags) could be the copy the linker keeps for every caller -- an AVX-512 instruction in
// the generic path. Each unit keeps its own copy, as kernels/x86/avx2_math.h does.
namespace {

// The positional rule alone (keys that are not tree nodes): causal, and within the window unless the key is a sink.
// The difference is taken in 64 bits: positions near INT32_MAX / INT32_MIN must not wrap into "inside the window".
inline bool position_visible(const AttentionMask& m, int32_t q_pos, int32_t k_pos) {
  return k_pos <= q_pos &&
         (m.window <= 0 || k_pos < m.n_sink || static_cast<int64_t>(q_pos) - k_pos < m.window);
}

// Whether key j is a node of the step's tree.
inline bool is_tree_key(const AttentionMask& m, int32_t j) { return m.k_node != nullptr && m.k_node[j] >= 0; }

// The rule, once: whether query i sees key j.
inline bool key_visible(const AttentionMask& m, int32_t i, int32_t j) {
  if (is_tree_key(m, j)) {
    const int32_t qn = m.q_node[i];
    if (qn < 0) return false;
    const auto kn = static_cast<uint32_t>(m.k_node[j]);
    return ((m.ancestors[static_cast<int64_t>(qn) * m.n_ancestor_words + kn / 64] >> (kn % 64)) & 1u) != 0;
  }
  return position_visible(m, m.q_pos[i], m.k_pos[j]);
}

// Whether any key of [j0, j0 + n) is a node of the step's tree (then position bounds decide nothing about it).
inline bool block_has_tree_keys(const AttentionMask& m, int32_t j0, int32_t n) {
  if (m.k_node == nullptr) return false;
  bool any = false;
  for (int32_t j = j0; j < j0 + n; ++j) any |= m.k_node[j] >= 0;  // branch-free: at most 32 entries
  return any;
}

// Bits j (0 <= j < n <= 32) set when key j0 + j is visible to query i. Fast paths: decide whole blocks from the
// block's minimum / maximum key position (all visible / none visible) when no tree key is in the block; only mixed
// blocks test each key with key_visible. k_min/k_max: min and max of k_pos[j0 .. j0+n).
inline uint32_t block_visibility(const AttentionMask& m, int32_t i, int32_t j0, int32_t n, int32_t k_min,
                                 int32_t k_max) {
  const uint32_t all = n >= 32 ? ~0u : (1u << n) - 1u;
  if (!block_has_tree_keys(m, j0, n)) {
    const int64_t q = m.q_pos[i];
    if (k_min > q) return 0;  // every key in the query's future
    if (k_max <= q) {
      // All causal. With a window, a key is visible iff it is a sink (k < n_sink) or recent (k > q - window): every
      // key of [k_min, k_max] is either when the recent range starts at k_min, the sinks reach past k_max, or the
      // two ranges overlap.
      const int64_t first_recent = q - m.window + 1;
      if (m.window <= 0 || k_min >= first_recent || k_max < m.n_sink || m.n_sink >= first_recent) return all;
      // None: every key is behind the window and none is a sink.
      if (k_min >= m.n_sink && k_max < first_recent) return 0;
    }
  }
  uint32_t bits = 0;
  for (int32_t j = 0; j < n; ++j) bits |= static_cast<uint32_t>(key_visible(m, i, j0 + j)) << j;
  return bits;
}

// The range of the query positions of [0, n_q).
inline QueryBounds query_bounds(const AttentionMask& m, int32_t n_q) {
  QueryBounds b;
  for (int32_t i = 0; i < n_q; ++i) {
    b.min = m.q_pos[i] < b.min ? m.q_pos[i] : b.min;
    b.max = m.q_pos[i] > b.max ? m.q_pos[i] : b.max;
  }
  return b;
}

// Whether any query (positions within `qb`) can see any key of [j0, j0 + n), whose positions lie in [k_min, k_max]:
// false when every key is in the future of every query, or behind every query's window and not a sink. The SIMD
// kernels skip such a block before converting it from f16, which is how long sliding-window layers skip most of the
// cache. Conservative: a block holding a tree key is always "maybe visible".
inline bool block_maybe_visible(const AttentionMask& m, const QueryBounds& qb, int32_t j0, int32_t n, int32_t k_min,
                                int32_t k_max) {
  if (block_has_tree_keys(m, j0, n)) return true;
  if (k_min > qb.max) return false;
  if (m.window > 0 && k_min >= m.n_sink && static_cast<int64_t>(qb.min) - k_max >= m.window) return false;
  return true;
}

}  // namespace
}  // namespace longhaul::kernels
