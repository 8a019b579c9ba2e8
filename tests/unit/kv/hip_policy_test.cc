// hip (HiP attention, Lee et al., 2024): the tree search on a case worked by hand, its budget, and the policy over
// a real cache (f16 and int8 cells): the pages always read plus exactly the tree search's pages, whatever the
// budget, dense layers and prefill reading everything, forks and truncation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "kv/policies/hip.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::tiny_context;
using testing::select_for_decode;
using testing::tiny_shape;

std::vector<int32_t> pages_of(const std::vector<HipBranch>& branches) {
  std::vector<int32_t> out;
  for (const HipBranch& b : branches) {
    EXPECT_EQ(b.end, b.first + 1) << "a chosen branch is one page";
    out.push_back(b.first);
  }
  return out;
}

// 16 pages of 4 cells, k = 2. Worked by hand (cell c of page p is cell 4p + c of the 64):
//   start:  [0, 8) and [8, 16)
//   iter 1: halves [0,4) [4,8) [8,12) [12,16); middles: cells 8, 24, 40, 56 = (page, cell) (2,0) (6,0) (10,0) (14,0)
//           scores 1, 5, 2, 4                         -> keep [4,8) and [12,16)
//   iter 2: halves [4,6) [6,8) [12,14) [14,16); middles: cells 20, 28, 52, 60 = (5,0) (7,0) (13,0) (15,0)
//           scores 3, 6, 7, -1                        -> keep [6,8) and [12,14)
//   iter 3: halves [6,7) [7,8) [12,13) [13,14); middles: cells 26, 30, 50, 54 = (6,2) (7,2) (12,2) (13,2)
//           scores 0.5, 8, 9, 1                       -> pages 7 and 12, every branch one page: done.
// Page 1 holds the best key of all (100 at (1,1)); no representative lands on it, so HiP does not see it.
TEST(HipTreeSearch, WorkedExampleSixteenPagesTwoBranches) {
  const std::map<std::pair<int32_t, int32_t>, float> score = {
      {{2, 0}, 1}, {{6, 0}, 5}, {{10, 0}, 2}, {{14, 0}, 4},  {{5, 0}, 3},  {{7, 0}, 6},
      {{13, 0}, 7}, {{15, 0}, -1}, {{6, 2}, 0.5f}, {{7, 2}, 8}, {{12, 2}, 9}, {{13, 2}, 1}, {{1, 1}, 100}};
  std::vector<std::pair<int32_t, int32_t>> scored;
  auto score_cell = [&](int32_t page, int32_t cell) {
    scored.emplace_back(page, cell);
    const auto it = score.find({page, cell});
    return it == score.end() ? 0.0f : it->second;
  };
  const std::vector<int32_t> cells(16, 4);
  const std::vector<HipBranch> chosen = hip_tree_search(cells, 2, score_cell);
  EXPECT_EQ(pages_of(chosen), (std::vector<int32_t>{7, 12}));
  ASSERT_EQ(chosen.size(), 2u);
  EXPECT_EQ(chosen[0].score, 8.0f);
  EXPECT_EQ(chosen[1].score, 9.0f);
  const std::vector<std::pair<int32_t, int32_t>> want = {{2, 0}, {6, 0},  {10, 0}, {14, 0}, {5, 0}, {7, 0},
                                                         {13, 0}, {15, 0}, {6, 2},  {7, 2},  {12, 2}, {13, 2}};
  EXPECT_EQ(scored, want);
}

// Pages of unequal size: the representative is the middle of the branch's cells, not of its pages. Pages of
// 1, 1, 1, 9 cells (cells 0, 1, 2, 3..11), k = 1: [0,4) splits into [0,2) (cells 0..1, middle 1 = page 1) and
// [2,4) (cells 2..11, middle 7 = page 3, cell 4).
TEST(HipTreeSearch, RepresentativeIsTheMiddleCell) {
  std::vector<std::pair<int32_t, int32_t>> scored;
  auto score_cell = [&](int32_t page, int32_t cell) {
    scored.emplace_back(page, cell);
    return page == 3 ? 1.0f : 0.0f;
  };
  const std::vector<int32_t> cells = {1, 1, 1, 9};
  EXPECT_EQ(pages_of(hip_tree_search(cells, 1, score_cell)), (std::vector<int32_t>{3}));
  // Then [2,4) splits into pages 2 and 3, each scored by its own middle cell.
  const std::vector<std::pair<int32_t, int32_t>> want = {{1, 0}, {3, 4}, {2, 0}, {3, 4}};
  EXPECT_EQ(scored, want);
}

TEST(HipTreeSearch, ChoosesExactlyTheBudgetInLogarithmicWork) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int32_t> page_cells(1, 6);
  for (int32_t n = 1; n <= 40; ++n) {
    for (int32_t k = 1; k <= 12; ++k) {
      std::vector<int32_t> cells(static_cast<size_t>(n));
      for (int32_t& c : cells) c = page_cells(rng);
      int32_t n_scored = 0;
      auto score_cell = [&](int32_t, int32_t) {
        ++n_scored;
        return uniform(rng);
      };
      const std::vector<int32_t> pages = pages_of(hip_tree_search(cells, k, score_cell));
      ASSERT_EQ(pages.size(), static_cast<size_t>(std::min(n, k))) << n << " " << k;
      for (size_t i = 0; i < pages.size(); ++i) {
        EXPECT_TRUE(pages[i] >= 0 && pages[i] < n);
        if (i > 0) {
          EXPECT_LT(pages[i - 1], pages[i]);
        }
      }
      // Branches start at most ceil(n / k) pages wide and halve each iteration of <= 2k scored halves.
      const int32_t width = (n + k - 1) / k;
      const auto iterations = static_cast<int32_t>(std::ceil(std::log2(static_cast<double>(width))));
      EXPECT_LE(n_scored, n <= k ? n : 2 * k * iterations) << n << " " << k;
    }
  }
}

// A cache of n_cells cells in pages of 4 (f16, or int8 cells with a 4-cell f16 prefix and residual) with random
// keys, identical in every layer.
struct RandomCache {
  KvShape shape = tiny_shape(3);
  KvCache cache;
  SeqId seq = 0;
  RandomCache(int32_t n_cells, int32_t bits, uint32_t seed)
      : cache(shape, KvCacheOptions{/*page_tokens=*/4, /*max_cells=*/0, /*max_sequences=*/4}, storage(bits)) {
    seq = *cache.add_sequence();
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    // Steps of 8 cells, as a model appends them: cells past the residual freeze into int8 at the next append.
    for (int32_t first = 0; first < n_cells; first += 8) {
      const int32_t n = std::min(8, n_cells - first);
      std::vector<int32_t> pos(static_cast<size_t>(n));
      for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = first + i;
      EXPECT_TRUE(cache.append_cells(seq, pos).is_ok());
      std::vector<float> keys(static_cast<size_t>(n) * shape.n_head_kv * shape.head_dim_k);
      for (float& k : keys) k = normal(rng);
      for (int32_t il = 0; il < shape.n_layer; ++il) cache.write_keys(seq, il, first, n, keys.data());
    }
  }
  static KvQuantOptions storage(int32_t bits) {
    KvQuantOptions q;
    q.bits = bits;
    q.group = 4;
    q.residual = 4;
    q.f16_prefix = 4;
    return q;
  }
};

std::unique_ptr<KvPolicy> hip(const KvShape& shape, int32_t budget, int32_t dense = 1) {
  HipOptions o;
  o.budget = budget;
  o.page_tokens = 4;
  o.sink_tokens = 2;
  o.window = 6;
  o.dense_layers = dense;
  Result<std::unique_ptr<KvPolicy>> p = make_hip_policy(tiny_context(shape), o);
  EXPECT_TRUE(p.is_ok()) << p.message();
  return std::move(p).value();
}

// What hip should read, written out from the cache's pages: the pages holding a position < 2 (sinks), one of the
// last 6 cells (window), the last page; then the tree search over the others, each cell scored by the largest
// dot product of the queries [n_q, 4] with its key as read_keys gives it (dequantized to f32).
std::vector<int32_t> expected_pages(const KvCache& cache, SeqId seq, int32_t il, int32_t kv_head,
                                    const std::vector<float>& q, int32_t n_select) {
  const int32_t n_pages = cache.n_pages(seq, il), n_cells = cache.n_cells(seq, il);
  const int32_t n_head_kv = 2, dk = 4, n_q = static_cast<int32_t>(q.size()) / dk;
  std::vector<int32_t> want, candidates, cells;
  for (int32_t ip = 0; ip < n_pages; ++ip) {
    const KvCache::PageSpan span = cache.page_span(seq, il, ip);
    const bool always = ip == n_pages - 1 || span.first_cell < 2 || span.first_cell + span.n_cells > n_cells - 6;
    if (always) {
      want.push_back(ip);
    } else {
      candidates.push_back(ip);
      cells.push_back(span.n_cells);
    }
  }
  auto score_cell = [&](int32_t candidate, int32_t cell) {
    const KvCache::PageSpan span = cache.page_span(seq, il, candidates[static_cast<size_t>(candidate)]);
    std::vector<float> key(static_cast<size_t>(n_head_kv) * dk);
    cache.read_keys(seq, il, span.first_cell + cell, 1, key.data());
    float best = -INFINITY;
    for (int32_t i = 0; i < n_q; ++i) {
      float dot = 0;
      for (int32_t c = 0; c < dk; ++c)
        dot += q[static_cast<size_t>(i * dk + c)] * key[static_cast<size_t>(kv_head * dk + c)];
      best = std::max(best, dot);
    }
    return best;
  };
  for (const HipBranch& b : hip_tree_search(cells, n_select, score_cell))
    want.push_back(candidates[static_cast<size_t>(b.first)]);
  std::sort(want.begin(), want.end());
  return want;
}

class HipPolicyBits : public ::testing::TestWithParam<int32_t> {};

TEST_P(HipPolicyBits, ReadsTheTreeSearchsPagesPlusSinksAndWindow) {
  const int32_t bits = GetParam();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (uint32_t seed : {1u, 2u, 3u}) {
    RandomCache c(/*n_cells=*/202, bits, seed);
    if (bits < 16) {  // int8 pages are read, not only f16 ones
      bool any_quantized = false;
      for (int32_t ip = 0; ip < c.cache.n_pages(c.seq, 1); ++ip)
        any_quantized |= c.cache.page_span(c.seq, 1, ip).quantized;
      ASSERT_TRUE(any_quantized);
    }
    for (int32_t budget : {4, 12, 32}) {
      auto policy = hip(c.shape, budget);
      for (int32_t kv_head : {0, 1}) {
        std::vector<float> q(2 * 4);  // the two query heads of a GQA group
        for (float& v : q) v = normal(rng);
        const std::vector<int32_t> got = select_for_decode(*policy, c.cache, c.seq, 2, kv_head, q, 202);
        EXPECT_EQ(got, expected_pages(c.cache, c.seq, 2, kv_head, q, budget / 4)) << seed << " " << budget;
        // Sinks (page 0), window (cells 196..201: the pages holding them) and the last page always; never more
        // than budget / page others.
        const int32_t n_pages = c.cache.n_pages(c.seq, 2);
        EXPECT_EQ(got.front(), 0);
        EXPECT_EQ(got.back(), n_pages - 1);
        int32_t n_always = 0;
        for (int32_t ip = 0; ip < n_pages; ++ip) {
          const KvCache::PageSpan span = c.cache.page_span(c.seq, 2, ip);
          if (ip == n_pages - 1 || span.first_cell < 2 || span.first_cell + span.n_cells > 196) {
            ++n_always;
            EXPECT_EQ(std::count(got.begin(), got.end(), ip), 1) << ip;
          }
        }
        EXPECT_LE(static_cast<int32_t>(got.size()), n_always + budget / 4);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, HipPolicyBits, ::testing::Values(16, 8));

TEST(HipPolicy, DenseLayersPrefillAndCoveringBudgetsReadEveryPage) {
  RandomCache c(62, 16, 4);  // pages 0..15
  auto policy = hip(c.shape, 4);
  const std::vector<float> q = {1, 0.5f, -0.3f, 0.2f};
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 0, 0, q, 62).size(), 16u);  // dense layer 0
  // Sinks, one selected page, the window (2 pages).
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, q, 62).size(), 4u);
  std::vector<int32_t> q_pos = {60, 61};
  std::vector<float> q2 = {1, 0, 0, 0, 1, 0, 0, 0};
  std::vector<int32_t> pages;
  policy->select_pages({c.cache, c.seq, 1, 0, q2.data(), q_pos.data(), 2, 4}, pages);
  EXPECT_EQ(pages.size(), 16u);  // queries at two positions: a prefill chunk
  // A budget of 16 pages covers the 13 candidates.
  EXPECT_EQ(select_for_decode(*hip(c.shape, 64), c.cache, c.seq, 1, 0, q, 62).size(), 16u);
}

TEST(HipPolicy, ForkAndTruncationSelectFromTheCellsHeldNow) {
  RandomCache c(62, 16, 6);
  auto policy = hip(c.shape, 8);
  const std::vector<float> q = {0.7f, -1, 0.2f, 0.4f};
  const std::vector<int32_t> before = select_for_decode(*policy, c.cache, c.seq, 2, 1, q, 62);
  EXPECT_EQ(before, expected_pages(c.cache, c.seq, 2, 1, q, 2));
  std::unique_ptr<KvPolicy> forked = policy->fork(c.seq, c.seq);
  ASSERT_NE(forked, nullptr);
  EXPECT_EQ(select_for_decode(*forked, c.cache, c.seq, 2, 1, q, 62), before);
  // Cut to 30 cells and grow again with other keys: the selection follows the keys held now.
  c.cache.truncate(c.seq, 30);
  policy->truncate(c.cache, c.seq, 30);
  std::vector<int32_t> pos;
  for (int32_t i = 30; i < 62; ++i) pos.push_back(i);
  ASSERT_TRUE(c.cache.append_cells(c.seq, pos).is_ok());
  std::vector<float> keys(32 * 2 * 4);
  std::mt19937 rng(99);
  std::normal_distribution<float> normal;
  for (float& k : keys) k = normal(rng);
  for (int32_t il = 0; il < c.shape.n_layer; ++il) c.cache.write_keys(c.seq, il, 30, 32, keys.data());
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 1, q, 62), expected_pages(c.cache, c.seq, 2, 1, q, 2));
  EXPECT_EQ(select_for_decode(*forked, c.cache, c.seq, 2, 1, q, 62),
            select_for_decode(*policy, c.cache, c.seq, 2, 1, q, 62));
}

TEST(HipPolicy, RejectsBadOptions) {
  const KvShape shape = tiny_shape();
  HipOptions o;
  o.page_tokens = 32;
  o.budget = 16;
  Result<std::unique_ptr<KvPolicy>> p = make_hip_policy(tiny_context(shape), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("budget=16"), std::string::npos) << p.message();
  Result<BuiltKvPolicy> built = make_kv_policy("hip:budget=8:page=16", tiny_context(shape));
  ASSERT_FALSE(built.is_ok());
  EXPECT_NE(built.message().find("less than one page"), std::string::npos) << built.message();
}

}  // namespace
}  // namespace longhaul::kv
