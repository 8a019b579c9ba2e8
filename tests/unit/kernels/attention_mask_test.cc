// The attention mask (kernels/attention_mask.h): key_visible against hand-worked cases of each rule (causal, sliding
// window, sinks of a head span, speculative tree, sparse prefill key sets), and the block fast paths
// (block_visibility, block_maybe_visible, sparse_visibility, sparse_range_selected) against key_visible and
// sparse_key_selected key by key on random blocks.
#include "kernels/attention_mask.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <random>
#include <vector>

namespace longhaul::kernels {
namespace {

// One query against one key of the positional rule.
bool visible(int32_t q_pos, int32_t k_pos, int32_t window, int32_t n_sink) {
  AttentionMask m;
  m.q_pos = &q_pos;
  m.k_pos = &k_pos;
  m.window = window;
  m.n_sink = n_sink;
  return key_visible(m, 0, 0);
}

TEST(AttentionMask, CausalWithoutWindow) {
  EXPECT_TRUE(visible(10, 0, 0, 0));
  EXPECT_TRUE(visible(10, 10, 0, 0));  // a query sees its own key
  EXPECT_FALSE(visible(10, 11, 0, 0));
  EXPECT_TRUE(visible(10, 0, -3, 0));  // a negative window is off too
  EXPECT_TRUE(visible(1'000'000, 0, 0, 5));  // sinks change nothing without a window
}

TEST(AttentionMask, SlidingWindowEdges) {
  // Window 4 at query 10: keys 7..10 (q - k = 3..0).
  EXPECT_FALSE(visible(10, 6, 4, 0));
  EXPECT_TRUE(visible(10, 7, 4, 0));
  EXPECT_TRUE(visible(10, 10, 4, 0));
  EXPECT_FALSE(visible(10, 11, 4, 0));
  EXPECT_TRUE(visible(10, 10, 1, 0));  // window 1: only the query's own position
  EXPECT_FALSE(visible(10, 9, 1, 0));
}

TEST(AttentionMask, SinksAreExemptFromTheWindowButCausal) {
  // Head span: sinks 0..3 and a window of 4 at query 20 (keys 17..20).
  EXPECT_TRUE(visible(20, 0, 4, 4));
  EXPECT_TRUE(visible(20, 3, 4, 4));
  EXPECT_FALSE(visible(20, 4, 4, 4));  // the first non-sink is behind the window
  EXPECT_FALSE(visible(20, 16, 4, 4));
  EXPECT_TRUE(visible(20, 17, 4, 4));
  // A sink in the query's future stays hidden.
  EXPECT_FALSE(visible(2, 3, 4, 4));
  EXPECT_TRUE(visible(2, 2, 4, 4));
}

TEST(AttentionMask, WindowDifferenceDoesNotWrap) {
  // INT32_MAX - (-10) overflows int32 to a negative number, which a 32-bit difference would call "inside the window".
  // n_sink = INT32_MIN: no position is a sink (with n_sink = 0 the negative positions would be sinks).
  EXPECT_FALSE(visible(INT32_MAX, -10, 100, INT32_MIN));
  EXPECT_FALSE(visible(INT32_MAX, INT32_MIN, 100, INT32_MIN));
  EXPECT_TRUE(visible(INT32_MAX, INT32_MAX - 99, 100, 0));
  EXPECT_FALSE(visible(INT32_MAX, INT32_MAX - 100, 100, 0));
}

// A tree of 5 nodes: 0 is the root; 1 -> 2 and 3 -> 4 are two branches under it whose nodes share positions
// (1 and 3 at position 11, 2 and 4 at 12). Keys: a cached token at position 9, then the five nodes.
struct TreeFixture {
  std::vector<int32_t> k_pos = {9, 10, 11, 12, 11, 12};  // [6]
  std::vector<int32_t> k_node = {-1, 0, 1, 2, 3, 4};      // [6]
  std::vector<uint64_t> ancestors = {0b00001, 0b00011, 0b00111, 0b01001, 0b11001};  // [5, 1]
  std::vector<int32_t> q_pos = {10, 11, 12, 11, 12, 12};  // [6] nodes 0..4, then a query outside the tree
  std::vector<int32_t> q_node = {0, 1, 2, 3, 4, -1};      // [6]
  AttentionMask mask() const {
    AttentionMask m;
    m.q_pos = q_pos.data();
    m.k_pos = k_pos.data();
    m.k_node = k_node.data();
    m.q_node = q_node.data();
    m.ancestors = ancestors.data();
    m.n_ancestor_words = 1;
    return m;
  }
};

TEST(AttentionMask, MinDistanceShowsOnlyDistantKeys) {
  // InfLLM's memory view: query 100 with min_distance 30 sees keys 0..70, not 71..100 (its local window's keys).
  std::vector<int32_t> k_pos = {0, 69, 70, 71, 100, 101};
  int32_t q_pos = 100;
  AttentionMask m;
  m.q_pos = &q_pos;
  m.k_pos = k_pos.data();
  m.min_distance = 30;
  const std::vector<bool> want = {true, true, true, false, false, false};
  for (size_t j = 0; j < k_pos.size(); ++j) EXPECT_EQ(key_visible(m, 0, static_cast<int32_t>(j)), want[j]) << j;
  // Sinks are not exempt: a key at position 0 nearer than min_distance stays hidden.
  q_pos = 20;
  m.n_sink = 4;
  EXPECT_FALSE(key_visible(m, 0, 0));
  // Block paths: [71, 100] is hidden from query 100 as a whole, [0, 70] visible as a whole.
  q_pos = 100;
  m.n_sink = 0;
  EXPECT_EQ(block_visibility(m, 0, 3, 2, 71, 100), 0u);
  EXPECT_EQ(block_visibility(m, 0, 0, 3, 0, 70), 0x7u);
  const QueryBounds qb{90, 100};
  EXPECT_FALSE(block_maybe_visible(m, qb, 3, 2, 71, 100));
  EXPECT_TRUE(block_maybe_visible(m, qb, 0, 3, 0, 70));
}

TEST(AttentionMask, TreeKeysFollowAncestorsNotPositions) {
  const TreeFixture t;
  const AttentionMask m = t.mask();
  // want[i][j]: query i (node i, last: outside the tree) sees key j (the cached token, then nodes 0..4).
  const bool want[6][6] = {
      {true, true, false, false, false, false},  // root: cached token + itself
      {true, true, true, false, false, false},   // node 1: not its sibling 3 at the same position
      {true, true, true, true, false, false},    // node 2: not node 4 at the same position
      {true, true, false, false, true, false},   // node 3: root + itself, not branch 1 -> 2
      {true, true, false, false, true, true},    // node 4
      {true, false, false, false, false, false}, // outside the tree: cached token only, though positions allow more
  };
  for (int32_t i = 0; i < 6; ++i) {
    for (int32_t j = 0; j < 6; ++j) EXPECT_EQ(key_visible(m, i, j), want[i][j]) << "query " << i << " key " << j;
  }
  // Ancestor bits override positions: node 2's ancestor row claims node 4 as well (a deliberately inconsistent tree)
  // and key 5 becomes visible to query 2, though node 4 is no ancestor in position terms either.
  std::vector<uint64_t> a = t.ancestors;
  a[2] |= 1u << 4;
  AttentionMask m2 = m;
  m2.ancestors = a.data();
  EXPECT_TRUE(key_visible(m2, 2, 5));
  // Cached keys keep the window: with window 2, query node 2 (position 12) no longer sees position 9.
  AttentionMask w = m;
  w.window = 2;
  EXPECT_FALSE(key_visible(w, 2, 0));
  EXPECT_TRUE(key_visible(w, 2, 1));  // tree keys are exempt from the window (root at position 10)
}

TEST(AttentionMask, TreeAncestorRowsSpanSeveralWords) {
  // Nodes 0..69 in two words per row; query node 69 has node 68 (word 1 bit 4) and node 3 (word 0 bit 3) as ancestors.
  std::vector<uint64_t> ancestors(70 * 2, 0);  // [70, 2]
  ancestors[69 * 2 + 1] = (uint64_t{1} << 5) | (uint64_t{1} << 4);  // nodes 69, 68
  ancestors[69 * 2 + 0] = uint64_t{1} << 3;                          // node 3
  const std::vector<int32_t> k_node = {3, 4, 68, 69, 5};
  const std::vector<int32_t> k_pos = {0, 0, 0, 0, 0}, q_pos = {0}, q_node = {69};
  AttentionMask m;
  m.q_pos = q_pos.data();
  m.k_pos = k_pos.data();
  m.k_node = k_node.data();
  m.q_node = q_node.data();
  m.ancestors = ancestors.data();
  m.n_ancestor_words = 2;
  EXPECT_TRUE(key_visible(m, 0, 0));
  EXPECT_FALSE(key_visible(m, 0, 1));
  EXPECT_TRUE(key_visible(m, 0, 2));
  EXPECT_TRUE(key_visible(m, 0, 3));
  EXPECT_FALSE(key_visible(m, 0, 4));
  EXPECT_EQ(block_visibility(m, 0, 0, 5, 0, 0), 0b01101u);
}

// Random blocks of up to 32 keys: sorted runs (a page), runs with equal positions, arbitrary orders, and runs
// holding tree keys; windows and sinks on and off. The fast paths must agree with key_visible bit for bit.
TEST(AttentionMask, BlockFastPathsAgreeWithKeyVisible) {
  std::mt19937 rng(20240611);
  auto uniform = [&](int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(rng); };
  constexpr int32_t kNodes = 8;
  int n_all = 0, n_none = 0, n_mixed = 0, n_skipped = 0;
  for (int iter = 0; iter < 200'000; ++iter) {
    const int32_t n = uniform(1, 32);
    const int32_t j0 = uniform(0, 3);  // the block starts inside the arrays
    std::vector<int32_t> k_pos(static_cast<size_t>(j0 + n)), k_node(k_pos.size(), -1);
    const int32_t base = uniform(0, 120);
    switch (uniform(0, 3)) {
      case 0:  // a page run: consecutive positions
        for (size_t j = 0; j < k_pos.size(); ++j) k_pos[j] = base + static_cast<int32_t>(j);
        break;
      case 1:  // ascending with gaps (evicted cells)
        for (size_t j = 0; j < k_pos.size(); ++j) k_pos[j] = (j == 0 ? base : k_pos[j - 1]) + uniform(0, 5);
        break;
      case 2:  // any order
        for (auto& p : k_pos) p = uniform(0, 150);
        break;
      default:  // one position repeated (a tree step's siblings)
        for (auto& p : k_pos) p = base;
        break;
    }
    const bool tree = uniform(0, 3) == 0;
    std::vector<uint64_t> ancestors(kNodes);  // [kNodes, 1]
    std::vector<int32_t> q_node(1, -1);
    if (tree) {
      for (auto& node : k_node) node = uniform(0, 2) == 0 ? uniform(0, kNodes - 1) : -1;
      for (int32_t r = 0; r < kNodes; ++r) ancestors[r] = (rng() & 0xffu) | (uint64_t{1} << r);
      q_node[0] = uniform(-1, kNodes - 1);
    }
    AttentionMask m;
    std::vector<int32_t> q_pos = {uniform(0, 160)};
    m.q_pos = q_pos.data();
    m.k_pos = k_pos.data();
    m.window = uniform(0, 1) == 0 ? 0 : uniform(1, 60);
    m.n_sink = uniform(0, 1) == 0 ? 0 : uniform(0, 40);
    m.min_distance = uniform(0, 3) == 0 ? uniform(1, 50) : 0;
    if (tree) {
      m.k_node = k_node.data();
      m.q_node = q_node.data();
      m.ancestors = ancestors.data();
      m.n_ancestor_words = 1;
    }
    const int32_t k_min = *std::min_element(k_pos.begin() + j0, k_pos.end());
    const int32_t k_max = *std::max_element(k_pos.begin() + j0, k_pos.end());
    uint32_t want = 0;
    for (int32_t j = 0; j < n; ++j) want |= static_cast<uint32_t>(key_visible(m, 0, j0 + j)) << j;
    ASSERT_EQ(block_visibility(m, 0, j0, n, k_min, k_max), want) << "iteration " << iter;
    const uint32_t all = n == 32 ? ~0u : (1u << n) - 1;
    n_all += want == all;
    n_none += want == 0;
    n_mixed += want != 0 && want != all;
    // Block skip for a set of queries around this one: a skipped block must be invisible to every query.
    std::vector<int32_t> qs = {q_pos[0], q_pos[0] + uniform(0, 20), std::max(0, q_pos[0] - uniform(0, 20))};
    std::vector<int32_t> qn(qs.size(), q_node[0]);
    AttentionMask mq = m;
    mq.q_pos = qs.data();
    mq.q_node = tree ? qn.data() : nullptr;
    const QueryBounds qb = query_bounds(mq, static_cast<int32_t>(qs.size()));
    EXPECT_EQ(qb.min, *std::min_element(qs.begin(), qs.end()));
    EXPECT_EQ(qb.max, *std::max_element(qs.begin(), qs.end()));
    if (!block_maybe_visible(mq, qb, j0, n, k_min, k_max)) {
      ++n_skipped;
      ASSERT_FALSE(tree && std::any_of(k_node.begin() + j0, k_node.end(), [](int32_t x) { return x >= 0; }));
      for (int32_t i = 0; i < static_cast<int32_t>(qs.size()); ++i) {
        for (int32_t j = 0; j < n; ++j) ASSERT_FALSE(key_visible(mq, i, j0 + j)) << "iteration " << iter;
      }
    }
  }
  // Every outcome must occur often, or the agreement above says little.
  EXPECT_GT(n_all, 20'000);
  EXPECT_GT(n_none, 20'000);
  EXPECT_GT(n_mixed, 20'000);
  EXPECT_GT(n_skipped, 10'000);
}

// The fast paths decide from the bounds the caller passes, without reading a key position: bounds that claim the
// whole block is visible (or invisible) give all (or no) bits although the positions in memory say otherwise. This is
// what keeps fully visible blocks free of per-key work in the kernels.
TEST(AttentionMask, BlockVisibilityDecidesFromBoundsAlone) {
  std::vector<int32_t> k_pos(16, 1000);  // [16] all in the query's future
  const int32_t q_pos = 50;
  AttentionMask m;
  m.q_pos = &q_pos;
  m.k_pos = k_pos.data();
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 1000, 1000), 0u);
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 0, 15), 0xffffu);          // bounds say: all in the past
  m.window = 8;
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 43, 50), 0xffffu);         // all within the window
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 0, 42), 0u);               // all behind it
  m.n_sink = 4;
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 0, 3), 0xffffu);           // all sinks
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 4, 42), 0u);               // behind the window, no sink
  m.n_sink = 43;
  EXPECT_EQ(block_visibility(m, 0, 0, 16, 0, 50), 0xffffu);          // sinks and window overlap: all visible
  // n = 32: every bit.
  std::vector<int32_t> k32(32, 0);
  m.k_pos = k32.data();
  m.window = 0;
  EXPECT_EQ(block_visibility(m, 0, 0, 32, 0, 0), ~0u);
}

TEST(AttentionMask, BlockSkipEdges) {
  AttentionMask m;
  const std::vector<int32_t> k_pos(16, 0);  // [16] (not read: no tree keys)
  m.k_pos = k_pos.data();
  const QueryBounds qb{100, 110};
  EXPECT_FALSE(block_maybe_visible(m, qb, 0, 16, 111, 200));  // all in every query's future
  EXPECT_TRUE(block_maybe_visible(m, qb, 0, 16, 110, 200));   // the last query sees key 110
  m.window = 10;
  EXPECT_FALSE(block_maybe_visible(m, qb, 0, 16, 50, 90));    // behind every window: 100 - 90 >= 10
  EXPECT_TRUE(block_maybe_visible(m, qb, 0, 16, 50, 91));     // query 100 sees key 91
  m.n_sink = 51;
  EXPECT_TRUE(block_maybe_visible(m, qb, 0, 16, 50, 90));     // key 50 is a sink
  m.n_sink = 50;
  EXPECT_FALSE(block_maybe_visible(m, qb, 0, 16, 50, 90));
  // A tree key makes the block "maybe visible" whatever the positions say.
  const std::vector<int32_t> k_node = {-1, -1, 0, -1};
  const std::vector<int32_t> q_node = {0};
  const uint64_t ancestors = 1;
  m.k_node = k_node.data();
  m.q_node = q_node.data();
  m.ancestors = &ancestors;
  m.n_ancestor_words = 1;
  EXPECT_TRUE(block_maybe_visible(m, qb, 0, 4, 500, 600));
  EXPECT_FALSE(block_maybe_visible(m, qb, 0, 2, 500, 600));  // keys 0..1 are cached tokens in the future
  EXPECT_FALSE(block_maybe_visible(m, QueryBounds{}, 0, 2, 0, 0));  // no queries at all
}

// A sparse key set held by value (SparseKeys points into it).
struct SparseSet {
  std::vector<uint64_t> blocks;
  std::vector<int32_t> columns;
  SparseKeys keys() const {
    SparseKeys s;
    s.blocks = blocks.data();
    s.n_block_words = static_cast<int32_t>(blocks.size());
    s.columns = columns.data();
    s.n_columns = static_cast<int32_t>(columns.size());
    return s;
  }
};

TEST(AttentionMask, SparseKeysHandWorked) {
  // Key blocks 1 (positions 64..127) and 3 (192..255), columns 5 and 300.
  const SparseSet set{{uint64_t{1} << 1 | uint64_t{1} << 3}, {5, 300}};
  const SparseKeys s = set.keys();
  EXPECT_TRUE(sparse_key_selected(s, 64));
  EXPECT_TRUE(sparse_key_selected(s, 127));
  EXPECT_FALSE(sparse_key_selected(s, 63));
  EXPECT_FALSE(sparse_key_selected(s, 128));
  EXPECT_TRUE(sparse_key_selected(s, 200));
  EXPECT_TRUE(sparse_key_selected(s, 5));
  EXPECT_TRUE(sparse_key_selected(s, 300));
  EXPECT_FALSE(sparse_key_selected(s, 6));
  EXPECT_FALSE(sparse_key_selected(s, 299));
  EXPECT_FALSE(sparse_key_selected(s, -1));
  EXPECT_FALSE(sparse_key_selected(s, 5000 * 64));  // a block past the bitmap
  EXPECT_TRUE(sparse_range_selected(s, 128, 192));
  EXPECT_FALSE(sparse_range_selected(s, 128, 191));
  EXPECT_FALSE(sparse_range_selected(s, 6, 5));  // an empty range
  EXPECT_FALSE(sparse_range_selected(s, 256, 299));
  EXPECT_TRUE(sparse_range_selected(s, 256, 300));
  // The positional rule still applies: column 300 is in the future of query 250, and outside a window of 16.
  const SparseKeys* per_query[1] = {&s};
  int32_t q = 250, k = 300;
  AttentionMask m;
  m.q_pos = &q;
  m.k_pos = &k;
  m.q_sparse = per_query;
  EXPECT_FALSE(key_visible(m, 0, 0));
  q = 350;
  EXPECT_TRUE(key_visible(m, 0, 0));
  m.window = 16;
  EXPECT_FALSE(key_visible(m, 0, 0));
  k = 349;  // inside the window but in no column or block
  EXPECT_FALSE(key_visible(m, 0, 0));
  q = 260;
  k = 255;  // inside the window and in block 3
  EXPECT_TRUE(key_visible(m, 0, 0));
  // A null entry is a dense query.
  const SparseKeys* dense[1] = {nullptr};
  m.q_sparse = dense;
  k = 257;
  EXPECT_TRUE(key_visible(m, 0, 0));
}

// block_visibility with sparse queries, sparse_visibility and sparse_range_selected against the per-key rules on
// random blocks: contiguous positions (a page of a prompt), ascending with gaps, spread wider than 64 positions
// (the per-key path), any order.
TEST(AttentionMask, SparseFastPathsMatchPerKeyRule) {
  std::mt19937 rng(7);
  auto uniform = [&](int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(rng); };
  int64_t n_none = 0, n_all = 0, n_mixed = 0, n_range_false = 0;
  for (int iter = 0; iter < 100'000; ++iter) {
    SparseSet set;
    set.blocks.resize(static_cast<size_t>(uniform(0, 2)));
    for (auto& w : set.blocks) w = (static_cast<uint64_t>(rng()) << 32 | rng()) & (static_cast<uint64_t>(rng()) << 32 | rng());
    for (int32_t c = uniform(0, 6); c > 0; --c) set.columns.push_back(uniform(0, 400));
    std::sort(set.columns.begin(), set.columns.end());
    set.columns.erase(std::unique(set.columns.begin(), set.columns.end()), set.columns.end());
    const SparseKeys s = set.keys();
    const int32_t n = uniform(1, 32);
    std::vector<int32_t> k_pos(static_cast<size_t>(n));
    const int32_t base = uniform(0, 300);
    switch (uniform(0, 3)) {
      case 0:
        for (int32_t j = 0; j < n; ++j) k_pos[j] = base + j;
        break;
      case 1:
        for (int32_t j = 0; j < n; ++j) k_pos[j] = (j == 0 ? base : k_pos[j - 1]) + uniform(0, 3);
        break;
      case 2:
        for (int32_t j = 0; j < n; ++j) k_pos[j] = base + 7 * j;
        break;
      default:
        for (auto& p : k_pos) p = uniform(0, 400);
        break;
    }
    const int32_t k_min = *std::min_element(k_pos.begin(), k_pos.end());
    const int32_t k_max = *std::max_element(k_pos.begin(), k_pos.end());
    std::vector<int32_t> q_pos = {uniform(0, 450)};
    const SparseKeys* per_query[1] = {&s};
    AttentionMask m;
    m.q_pos = q_pos.data();
    m.k_pos = k_pos.data();
    m.window = uniform(0, 1) == 0 ? 0 : uniform(1, 200);
    m.n_sink = uniform(0, 1) == 0 ? 0 : uniform(0, 40);
    m.q_sparse = per_query;
    uint32_t want_sparse = 0, want = 0;
    for (int32_t j = 0; j < n; ++j) {
      want_sparse |= static_cast<uint32_t>(sparse_key_selected(s, k_pos[j])) << j;
      want |= static_cast<uint32_t>(key_visible(m, 0, j)) << j;
    }
    ASSERT_EQ(sparse_visibility(m, 0, 0, n, k_min, k_max), want_sparse) << "iteration " << iter;
    ASSERT_EQ(block_visibility(m, 0, 0, n, k_min, k_max), want) << "iteration " << iter;
    const uint32_t all = n == 32 ? ~0u : (1u << n) - 1;
    n_all += want == all;
    n_none += want == 0;
    n_mixed += want != 0 && want != all;
    // The range test: true exactly when some key position of the range is in the set.
    bool found = false;
    for (int32_t kk = k_min; kk <= k_max && !found; ++kk) found = sparse_key_selected(s, kk);
    ASSERT_EQ(sparse_range_selected(s, k_min, k_max), found) << "iteration " << iter;
    n_range_false += !found;
  }
  EXPECT_GT(n_all, 200);
  EXPECT_GT(n_none, 10'000);
  EXPECT_GT(n_mixed, 5'000);
  EXPECT_GT(n_range_false, 2'000);
}

}  // namespace
}  // namespace longhaul::kernels
