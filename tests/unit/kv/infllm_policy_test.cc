// infllm (InfLLM, Xiao et al., 2024) on a crafted cache: the local window's pages read in place; the initial
// tokens, the pages just behind the window and the memory blocks with the best representatives placed at the
// window's edge; representatives from the attention cells received inside local windows; the budget; forks and
// truncation. Expected values are computed here from the paper's rules, with RoPE written out independently.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::dot;
using testing::make;
using testing::rotate_pairs;
using testing::tiny_context;
using testing::tiny_shape;

constexpr int32_t kDk = 4;         // tiny_shape's head dim; every dim is rotated (tiny_context)
constexpr int32_t kPage = 4;
constexpr int32_t kCells = 62;     // pages 0..15, the last one partial (cells 60, 61)
constexpr int32_t kWindow = 12;
constexpr int32_t kQueryPos = 62;  // the decode query: window 51..62

struct Fixture : testing::RandomKeyCache {
  std::vector<float> local_score;  // [kCells] what head 0 of layer 1 received inside local windows

  Fixture() : RandomKeyCache(tiny_shape(3), kPage, kCells, 11) {}

  // Every position's query observes random probabilities over the cells before it; returns nothing, fills
  // local_score with the sums of the probabilities inside each query's window.
  void observe(KvPolicy& policy) {
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    local_score.assign(kCells, 0.0f);
    for (int32_t p = 0; p < kCells; ++p) {
      std::vector<float> probs(static_cast<size_t>(p) + 1);
      for (float& x : probs) x = uniform(rng);
      policy.observe_scores(seq, 1, 0, p, probs);
      for (int32_t c = 0; c <= p; ++c)
        if (p - c < kWindow) local_score[static_cast<size_t>(c)] += probs[static_cast<size_t>(c)];
    }
  }
};

struct Selection {
  std::vector<int32_t> pages;
  std::vector<KvPolicy::PagePlacement> placed;
};

Selection select(const KvPolicy& policy, const Fixture& f, int32_t il, const std::vector<float>& q,
                 const std::vector<int32_t>& q_pos) {
  Selection s;
  policy.select_placed_pages({f.cache, f.seq, il, 0, q.data(), q_pos.data(), static_cast<int32_t>(q_pos.size()), kDk},
                             s.pages, s.placed);
  return s;
}

std::vector<int32_t> placed_pages(const Selection& s) {
  std::vector<int32_t> out;
  for (const auto& p : s.placed) out.push_back(p.page);
  return out;
}

TEST(InfllmPolicy, PlacesInitRemainderAndBestRepresentedBlocksAtTheWindowEdge) {
  Fixture f;
  auto policy = make("infllm:window=12:budget=8:page=4:sink=4:repr=2:score=repr", tiny_context(f.shape));
  EXPECT_TRUE(policy->selects_pages() && policy->places_pages() && policy->needs_scores());
  f.observe(*policy);

  // The decode query of head 0 at position 62, two query heads in its group (their mean selects).
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> q(2 * kDk);
  for (float& x : q) x = normal(rng);
  const Selection s = select(*policy, f, 1, q, {kQueryPos, kQueryPos});

  // In place: the pages holding a cell of the window 51..62 (pages 12..15).
  EXPECT_EQ(s.pages, (std::vector<int32_t>{12, 13, 14, 15}));

  // Memory blocks: pages 1..11 (wholly behind the window, past the initial tokens). Each one's representative is
  // the mean of its two cells with the most local attention, without rotation; its score is that against the mean
  // query turned to the window's distance.
  std::vector<float> mean_q(kDk, 0.0f);
  for (int32_t i = 0; i < 2; ++i) {
    const std::vector<float> qi(q.begin() + i * kDk, q.begin() + (i + 1) * kDk);
    const std::vector<float> turned = rotate_pairs(qi, kWindow - kQueryPos);
    for (int32_t c = 0; c < kDk; ++c) mean_q[static_cast<size_t>(c)] += turned[static_cast<size_t>(c)] / 2;
  }
  std::vector<std::pair<float, int32_t>> ranked;
  for (int32_t page = 1; page <= 11; ++page) {
    std::vector<int32_t> cells = {4 * page, 4 * page + 1, 4 * page + 2, 4 * page + 3};
    std::stable_sort(cells.begin(), cells.end(), [&](int32_t a, int32_t b) {
      return f.local_score[static_cast<size_t>(a)] > f.local_score[static_cast<size_t>(b)];
    });
    std::vector<float> repr(kDk, 0.0f);
    for (int32_t r = 0; r < 2; ++r) {
      const int32_t cell = cells[static_cast<size_t>(r)];
      const std::vector<float> k = rotate_pairs(f.key(cell, 0), -cell);
      for (int32_t c = 0; c < kDk; ++c) repr[static_cast<size_t>(c)] += k[static_cast<size_t>(c)] / 2;
    }
    ranked.emplace_back(-dot(mean_q, repr), page);
  }
  std::sort(ranked.begin(), ranked.end());
  // The two best blocks lead their runner-up clearly, so float rounding cannot swap them.
  ASSERT_GT(ranked[2].first - ranked[1].first, 1e-3f);
  std::vector<int32_t> want = {0, ranked[0].second, ranked[1].second, 12};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(placed_pages(s), want);

  // Placement: the last cell of each placed page at the window's edge for the query (distance 12 = position 50),
  // the remainder page 12 (cells 48..51, its far cells already there) unmoved; only keys at distance >= 12 visible.
  for (const auto& p : s.placed) {
    EXPECT_EQ(p.min_distance, kWindow) << p.page;
    EXPECT_EQ(p.shift, p.page == 12 ? 0 : kQueryPos - kWindow - (4 * p.page + 3)) << p.page;
  }
}

TEST(InfllmPolicy, ScoreByBoundRanksBlocksByQuestsBoundWhereTheyArePlaced) {
  Fixture f;
  auto policy = make("infllm:window=12:budget=8:page=4:sink=4:score=bound", tiny_context(f.shape));
  EXPECT_FALSE(policy->needs_scores());  // the bound reads the keys alone: no probability pass
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  std::vector<float> q(2 * kDk);
  for (float& x : q) x = normal(rng);
  const Selection s = select(*policy, f, 1, q, {kQueryPos, kQueryPos});
  // Each block's keys turned back by its last position (as placed, up to the window's distance); the queries turned
  // to the window's distance; the bound sum_c max(q_c min_c, q_c max_c), the larger of the two queries'.
  std::vector<std::pair<float, int32_t>> ranked;
  for (int32_t page = 1; page <= 11; ++page) {
    std::vector<float> lo(kDk, INFINITY), hi(kDk, -INFINITY);
    for (int32_t cell = 4 * page; cell < 4 * page + 4; ++cell) {
      const std::vector<float> k = rotate_pairs(f.key(cell, 0), -(4 * page + 3));
      for (int32_t c = 0; c < kDk; ++c) {
        lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], k[static_cast<size_t>(c)]);
        hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], k[static_cast<size_t>(c)]);
      }
    }
    float bound = -INFINITY;
    for (int32_t i = 0; i < 2; ++i) {
      const std::vector<float> qi = rotate_pairs({q.begin() + i * kDk, q.begin() + (i + 1) * kDk}, kWindow - kQueryPos);
      float b = 0;
      for (int32_t c = 0; c < kDk; ++c)
        b += std::max(qi[static_cast<size_t>(c)] * lo[static_cast<size_t>(c)],
                      qi[static_cast<size_t>(c)] * hi[static_cast<size_t>(c)]);
      bound = std::max(bound, b);
    }
    ranked.emplace_back(-bound, page);
  }
  std::sort(ranked.begin(), ranked.end());
  ASSERT_GT(ranked[2].first - ranked[1].first, 1e-3f);
  std::vector<int32_t> want = {0, ranked[0].second, ranked[1].second, 12};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(placed_pages(s), want);
}

TEST(InfllmPolicy, ReadsEverythingInPlaceWhileTheWindowCoversTheContext) {
  Fixture f;
  auto policy = make("infllm:window=64:budget=8:page=4:sink=4", tiny_context(f.shape));
  const Selection s = select(*policy, f, 1, {1, 0, 0, 0}, {kQueryPos});
  EXPECT_EQ(s.pages.size(), 16u);
  EXPECT_TRUE(s.placed.empty());
  // A prompt chunk: the earliest query's window decides what is read in place, the latest's what is placed.
  auto small = make("infllm:window=12:budget=8:page=4:sink=4", tiny_context(f.shape));
  const Selection chunk = select(*small, f, 1, std::vector<float>(3 * kDk, 0.5f), {40, 41, 50});
  EXPECT_EQ(chunk.pages, (std::vector<int32_t>{7, 8, 9, 10, 11, 12, 13, 14, 15}));  // cells > 40 - 12 = 28
  // Placed: init page 0, remainder pages 7..9 (cells 28..39: near for query 40, some far for query 50, whose
  // window starts at 39), two memory blocks of 1..6.
  const std::vector<int32_t> placed = placed_pages(chunk);
  ASSERT_EQ(placed.size(), 6u);
  EXPECT_EQ(placed.front(), 0);
  EXPECT_EQ(std::vector<int32_t>(placed.end() - 3, placed.end()), (std::vector<int32_t>{7, 8, 9}));
  for (int32_t p : placed) EXPECT_LE(p, 9);
}

TEST(InfllmPolicy, BudgetBoundsTheMemoryBlocks) {
  Fixture f;
  for (int32_t budget : {4, 8, 20, 400}) {
    auto policy = make("infllm:window=12:page=4:sink=4:budget=" + std::to_string(budget), tiny_context(f.shape));
    const Selection s = select(*policy, f, 2, {0.3f, -0.2f, 0.5f, 0.1f}, {kQueryPos});
    // Init page and remainder page always; then budget / 4 of the 11 memory blocks.
    EXPECT_EQ(s.placed.size(), 2u + std::min<size_t>(11, static_cast<size_t>(budget / 4))) << budget;
  }
}

TEST(InfllmPolicy, ForkSelectsAsItsParentAndTruncationDropsScores) {
  Fixture f;
  auto policy = make("infllm:window=12:budget=8:page=4:sink=4:repr=2", tiny_context(f.shape));
  f.observe(*policy);
  const std::vector<float> q = {0.7f, -0.1f, 0.2f, 0.9f};
  std::unique_ptr<KvPolicy> forked = policy->fork(f.seq, f.seq);
  ASSERT_NE(forked, nullptr);
  EXPECT_EQ(placed_pages(select(*forked, f, 1, q, {kQueryPos})), placed_pages(select(*policy, f, 1, q, {kQueryPos})));
  EXPECT_EQ(forked->statistics(), policy->statistics());
  // After a cut to 30 cells, layer 1 head 0 keeps the local attention of cells 0..29 only.
  f.cache.truncate(f.seq, 30);
  policy->truncate(f.cache, f.seq, 30);
  const std::vector<double> stats = policy->statistics();
  // Rows in order (layer, head); layer 1 head 0 is the third row (layer 0's two rows are empty: size 0).
  ASSERT_GE(stats.size(), 3u);
  EXPECT_EQ(stats[0], 0.0);
  EXPECT_EQ(stats[1], 0.0);
  EXPECT_EQ(stats[2], 30.0);
}

TEST(InfllmPolicy, RejectsBadOptions) {
  const KvPolicyContext context = tiny_context(tiny_shape());
  for (const char* spec : {"infllm:budget=64:page=128", "infllm:repr=8:page=4:budget=8", "infllm:window=0"}) {
    Result<BuiltKvPolicy> p = make_kv_policy(spec, context);
    EXPECT_FALSE(p.is_ok()) << spec;
  }
  Result<BuiltKvPolicy> p = make_kv_policy("infllm:budget=64:page=128", context);
  EXPECT_NE(p.message().find("budget=64"), std::string::npos) << p.message();
}

}  // namespace
}  // namespace longhaul::kv
