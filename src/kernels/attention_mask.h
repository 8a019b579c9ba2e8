// Which keys each query of one attention_update call may see. The ONE definition of the attention mask: every
// flash-attention kernel (the scalar twin and the SIMD versions) and the model's score pass decide visibility through
// key_visible, or through block_visibility / block_maybe_visible, whose fast paths are derived from it and tested
// against it (tests/unit/kernels/attention_mask_test.cc). No kernel writes the comparison itself, so a new kind of
// mask (a head span's sinks, a speculative tree) is added here once and every kernel follows.
//
// The mask is on positions, not on cells: a key's position is independent of where its cell sits in the KV cache,
// which is what eviction and position re-assignment need (docs/architecture.md).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>

namespace longhaul::kernels {

// Sparse prefill (MInference 1.0, Jiang et al., 2024): the keys one query head computes in a long prompt chunk, on
// top of the positional rule (causality, window and sinks still apply). A key at position k is in the set when its
// 64-position key block is selected or k is one of the columns (vertical lines). A pattern's diagonals (slash
// lines) are given as the key blocks they cross, as MInference's kernel computes them (model/sparse_prefill.h), so a
// set is the same for every query of its 64-token query block. Keys that are nodes of a speculative tree ignore it
// (a tree step is never a sparse prefill).
struct SparseKeys {
  static constexpr int32_t kBlockPositions = 64;  // positions per key block
  const uint64_t* blocks = nullptr;  // [n_block_words] bit b set = positions [64 b, 64 b + 64) selected
  int32_t n_block_words = 0;         // 0 = no block selected
  const int32_t* columns = nullptr;  // [n_columns] ascending key positions
  int32_t n_columns = 0;
};

struct AttentionMask {
  const int32_t* q_pos = nullptr;  // [n_q] query positions
  const int32_t* k_pos = nullptr;  // [n_k] key positions (not necessarily ascending: a tree step's new tokens
                                   // repeat positions)
  int32_t window = 0;  // > 0: query at q sees a key at k only if q - k < window (sliding window / head span window);
                       // <= 0 = no window
  int32_t n_sink = 0;  // keys at positions < n_sink are exempt from `window` (attention sinks of a head span:
                       // StreamingLLM, Xiao et al., 2023); causality still applies; 0 = no sinks
                       // (positions are >= 0)
  // > 0: query at q sees a key at k only if q - k >= min_distance -- the complement of a window: the distant keys
  // a query-aware policy reads in place of what lies beyond its local window (InfLLM's memory, Xiao et al., 2024).
  // Sinks are not exempt. 0 = off.
  int32_t min_distance = 0;
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
  // Sparse prefill: q_sparse[i] is the key set of query i (null entry = every key, dense); null = all dense.
  const SparseKeys* const* q_sparse = nullptr;  // [n_q]
  // Each query's m, l and o must be, bit for bit, what a call of its own gives it (with keys it does not see, as
  // in its future, there or not), whatever the call's other queries: a speculative verification step gives each
  // token what plain decoding gives it. The AVX2 and scalar kernels always do; the AVX-512 one then keeps the row
  // form, in parts, at any query count.
  bool queries_apart = false;
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
  return static_cast<int64_t>(k_pos) <= static_cast<int64_t>(q_pos) - (m.min_distance > 0 ? m.min_distance : 0) &&
         (m.window <= 0 || k_pos < m.n_sink || static_cast<int64_t>(q_pos) - k_pos < m.window);
}

// The last key position query q_pos may see by position: q_pos, or q_pos - min_distance.
inline int64_t last_visible_position(const AttentionMask& m, int64_t q_pos) {
  return q_pos - (m.min_distance > 0 ? m.min_distance : 0);
}

// Index of the first entry of the ascending array a[0 .. n) that is >= x (n when none is).
inline int32_t lower_index(const int32_t* a, int32_t n, int64_t x) {
  int32_t lo = 0, hi = n;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (a[mid] < x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

inline bool sorted_contains(const int32_t* a, int32_t n, int64_t x) {
  const int32_t i = lower_index(a, n, x);
  return i < n && a[i] == x;
}

inline bool sparse_block_selected(const SparseKeys& s, int64_t block) {
  return block >= 0 && block < static_cast<int64_t>(s.n_block_words) * 64 &&
         ((s.blocks[block / 64] >> (block % 64)) & 1u) != 0;
}

// Whether the key at k_pos is in the sparse set.
inline bool sparse_key_selected(const SparseKeys& s, int32_t k_pos) {
  if (k_pos >= 0 && sparse_block_selected(s, k_pos / SparseKeys::kBlockPositions)) return true;
  return sorted_contains(s.columns, s.n_columns, k_pos);
}

// Whether some key at a position in [k_min, k_max] is in the sparse set. Sparse prefill skips a run of cells the
// set does not reach before any kernel call.
inline bool sparse_range_selected(const SparseKeys& s, int32_t k_min, int32_t k_max) {
  constexpr int32_t kB = SparseKeys::kBlockPositions;
  if (k_max >= 0) {
    const int64_t last = std::min<int64_t>(k_max / kB, static_cast<int64_t>(s.n_block_words) * 64 - 1);
    for (int64_t b = k_min < 0 ? 0 : k_min / kB; b <= last; ++b)
      if (sparse_block_selected(s, b)) return true;
  }
  const int32_t c = lower_index(s.columns, s.n_columns, k_min);
  return c < s.n_columns && s.columns[c] <= k_max;
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
  return position_visible(m, m.q_pos[i], m.k_pos[j]) &&
         (m.q_sparse == nullptr || m.q_sparse[i] == nullptr || sparse_key_selected(*m.q_sparse[i], m.k_pos[j]));
}

// Bits j (0 <= j < n <= 32) set when key j0 + j is in query i's sparse set (every bit when the query is dense),
// for keys that are not tree nodes. k_min/k_max: min and max of k_pos[j0 .. j0+n). When the keys span fewer than
// 64 positions (a block of a page), the set is built once over those positions -- the blocks and the columns that
// fall in them, the columns found by one binary search -- and each key reads its bit.
inline uint32_t sparse_visibility(const AttentionMask& m, int32_t i, int32_t j0, int32_t n, int32_t k_min,
                                  int32_t k_max) {
  const uint32_t all = n >= 32 ? ~0u : (1u << n) - 1u;
  const SparseKeys* s = m.q_sparse != nullptr ? m.q_sparse[i] : nullptr;
  if (s == nullptr) return all;
  uint32_t bits = 0;
  if (k_min < 0 || static_cast<int64_t>(k_max) - k_min >= 64) {
    for (int32_t j = 0; j < n; ++j) bits |= static_cast<uint32_t>(sparse_key_selected(*s, m.k_pos[j0 + j])) << j;
    return bits;
  }
  constexpr int32_t kB = SparseKeys::kBlockPositions;
  // Bit p of `selected`: position k_min + p is in the set.
  uint64_t selected = 0;
  for (int32_t b = k_min / kB; b <= k_max / kB; ++b) {
    if (!sparse_block_selected(*s, b)) continue;
    const int32_t lo = std::max(k_min, b * kB) - k_min, hi = std::min(k_max, b * kB + kB - 1) - k_min;
    const uint64_t width_mask = hi - lo + 1 >= 64 ? ~uint64_t{0} : (uint64_t{1} << (hi - lo + 1)) - 1;
    selected |= width_mask << lo;
  }
  for (int32_t c = lower_index(s->columns, s->n_columns, k_min); c < s->n_columns && s->columns[c] <= k_max; ++c)
    selected |= uint64_t{1} << (s->columns[c] - k_min);
  for (int32_t j = 0; j < n; ++j) bits |= static_cast<uint32_t>((selected >> (m.k_pos[j0 + j] - k_min)) & 1u) << j;
  return bits;
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
// blocks test each key with key_visible. A sparse query's bits are then those of sparse_visibility among the
// positionally visible keys. k_min/k_max: min and max of k_pos[j0 .. j0+n).
inline uint32_t block_visibility(const AttentionMask& m, int32_t i, int32_t j0, int32_t n, int32_t k_min,
                                 int32_t k_max) {
  if (!block_has_tree_keys(m, j0, n)) {
    const int64_t q = m.q_pos[i];
    const int64_t last = last_visible_position(m, q);
    if (k_min > last) return 0;  // every key in the query's future (or nearer than min_distance)
    if (k_max <= last) {
      // All causal. With a window, a key is visible iff it is a sink (k < n_sink) or recent (k > q - window): every
      // key of [k_min, k_max] is either when the recent range starts at k_min, the sinks reach past k_max, or the
      // two ranges overlap.
      const int64_t first_recent = q - m.window + 1;
      if (m.window <= 0 || k_min >= first_recent || k_max < m.n_sink || m.n_sink >= first_recent)
        return sparse_visibility(m, i, j0, n, k_min, k_max);
      // None: every key is behind the window and none is a sink.
      if (k_min >= m.n_sink && k_max < first_recent) return 0;
    }
    if (m.q_sparse != nullptr && m.q_sparse[i] != nullptr) {
      uint32_t bits = 0;
      for (int32_t j = 0; j < n; ++j) bits |= static_cast<uint32_t>(position_visible(m, m.q_pos[i], m.k_pos[j0 + j])) << j;
      return bits == 0 ? 0 : bits & sparse_visibility(m, i, j0, n, k_min, k_max);
    }
  }
  uint32_t bits = 0;
  for (int32_t j = 0; j < n; ++j) bits |= static_cast<uint32_t>(key_visible(m, i, j0 + j)) << j;
  return bits;
}

// The mask of queries [i0, ...) of `m`: the per-query arrays start at query i0, the rest is shared. A kernel that
// runs a call's queries in parts gives each part its own.
inline AttentionMask queries_from(const AttentionMask& m, int32_t i0) {
  AttentionMask part = m;
  part.q_pos = m.q_pos + i0;
  if (m.q_node != nullptr) part.q_node = m.q_node + i0;
  if (m.q_sparse != nullptr) part.q_sparse = m.q_sparse + i0;
  return part;
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
  if (k_min > last_visible_position(m, qb.max)) return false;
  if (m.window > 0 && k_min >= m.n_sink && static_cast<int64_t>(qb.min) - k_max >= m.window) return false;
  return true;
}

}  // namespace
}  // namespace longhaul::kernels
