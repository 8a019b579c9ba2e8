// quest (Tang et al., 2024): the page-selection rule on crafted pages and queries, and the policy over a real
// cache: Quest's bound, the budget, the pages always read, summaries kept across truncation and forks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kv/policies/quest.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::tiny_context;
using testing::NeedleCache;
using testing::select_for_decode;
using testing::tiny_shape;

// Quest's bound written out independently: for each channel, the larger of q * min and q * max.
float quest_bound(const std::vector<float>& q, const std::vector<float>& lo, const std::vector<float>& hi) {
  float s = 0;
  for (size_t c = 0; c < q.size(); ++c) s += q[c] >= 0 ? q[c] * hi[c] : q[c] * lo[c];
  return s;
}

TEST(QuestSelect, PicksTheLargestBoundsPlusThePagesAlwaysRead) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const int32_t dk = 8, n_pages = 40, n_q = 3, n_select = 6;
  std::vector<std::vector<float>> lo(n_pages), hi(n_pages);
  std::vector<QuestPage> pages(n_pages);
  for (int32_t p = 0; p < n_pages; ++p) {
    for (int32_t c = 0; c < dk; ++c) {
      const float a = normal(rng), b = normal(rng);
      lo[p].push_back(std::min(a, b));
      hi[p].push_back(std::max(a, b));
    }
    pages[p].always = p == 0 || p >= n_pages - 2;
    pages[p].key_min = lo[p].data();
    pages[p].key_max = hi[p].data();
  }
  std::vector<float> q(n_q * dk);
  for (float& v : q) v = normal(rng);

  std::vector<int32_t> selected;
  EXPECT_EQ(quest_select_pages(pages, q, n_q, dk, n_select, selected), n_select);

  // Expected: every page always read, plus the n_select candidates with the largest max-over-queries bound.
  std::vector<std::pair<float, int32_t>> ranked;
  for (int32_t p = 1; p < n_pages - 2; ++p) {
    float best = -INFINITY;
    for (int32_t i = 0; i < n_q; ++i)
      best = std::max(best, quest_bound(std::vector<float>(q.begin() + i * dk, q.begin() + (i + 1) * dk), lo[p], hi[p]));
    ranked.emplace_back(best, p);
  }
  std::sort(ranked.begin(), ranked.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<int32_t> expected = {0, n_pages - 2, n_pages - 1};
  for (int32_t i = 0; i < n_select; ++i) expected.push_back(ranked[i].second);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(selected, expected);
}

TEST(QuestSelect, BoundIsAtLeastEveryKeysScore) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int32_t dk = 16;
  std::vector<std::vector<float>> keys(32, std::vector<float>(dk));
  std::vector<float> lo(dk, INFINITY), hi(dk, -INFINITY);
  for (auto& k : keys)
    for (int32_t c = 0; c < dk; ++c) {
      k[c] = normal(rng);
      lo[c] = std::min(lo[c], k[c]);
      hi[c] = std::max(hi[c], k[c]);
    }
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<float> q(dk);
    for (float& v : q) v = normal(rng);
    const float bound = quest_bound(q, lo, hi);
    for (const auto& k : keys) {
      float dot = 0;
      for (int32_t c = 0; c < dk; ++c) dot += q[c] * k[c];
      EXPECT_GE(bound + 1e-4f, dot);
    }
  }
}

TEST(QuestSelect, BudgetAboveTheCandidatesSelectsThemAll) {
  std::vector<float> lo = {0, 0}, hi = {1, 1};
  std::vector<QuestPage> pages(5, QuestPage{false, lo.data(), hi.data()});
  std::vector<float> q = {1, -1};
  std::vector<int32_t> selected;
  EXPECT_EQ(quest_select_pages(pages, q, 1, 2, 100, selected), 5);
  EXPECT_EQ(selected, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(quest_select_pages(pages, q, 1, 2, 0, selected), 0);
  EXPECT_TRUE(selected.empty());
}

std::unique_ptr<KvPolicy> quest(const KvShape& shape, int32_t budget, int32_t dense = 1) {
  QuestOptions o;
  o.budget = budget;
  o.page_tokens = 4;
  o.sink_tokens = 2;
  o.window = 6;
  o.dense_layers = dense;
  Result<std::unique_ptr<KvPolicy>> p = make_quest_policy(tiny_context(shape), o);
  EXPECT_TRUE(p.is_ok()) << p.message();
  return std::move(p).value();
}

TEST(QuestPolicy, ReadsTheNeedlePageTheSinksAndTheWindow) {
  NeedleCache c(/*n_cells=*/62, /*needle_page=*/7);  // pages 0..15, the last one partial (2 cells)
  auto policy = quest(c.shape, /*budget=*/4);        // one selected page
  EXPECT_EQ(policy->page_tokens(), 4);
  // Head 0's query looks along channel 0: the needle page wins. Sinks: page 0; window (last 6 cells, 56..61):
  // pages 14 and 15.
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, {1, 0, 0, 0}, 62), (std::vector<int32_t>{0, 7, 14, 15}));
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 1, {0, 1, 0, 0}, 62), (std::vector<int32_t>{0, 7, 14, 15}));
  // A query looking away from the needle (negative channel 0) ranks it last.
  const std::vector<int32_t> away = select_for_decode(*policy, c.cache, c.seq, 1, 0, {-1, 0, 0, 0}, 62);
  EXPECT_EQ(away.size(), 4u);
  EXPECT_EQ(std::count(away.begin(), away.end(), 7), 0);
  // Dense layers, and queries at several positions (prefill), read every page.
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 0, 0, {1, 0, 0, 0}, 62).size(), 16u);
  std::vector<int32_t> q_pos = {60, 61};
  std::vector<float> q2 = {1, 0, 0, 0, 1, 0, 0, 0};
  std::vector<int32_t> pages;
  policy->select_pages({c.cache, c.seq, 1, 0, q2.data(), q_pos.data(), 2, 4}, pages);
  EXPECT_EQ(pages.size(), 16u);
}

TEST(QuestPolicy, NeverReadsMoreThanTheBudget) {
  NeedleCache c(100, 11);
  for (int32_t budget : {4, 8, 20, 36}) {
    auto policy = quest(c.shape, budget);
    const std::vector<int32_t> pages = select_for_decode(*policy, c.cache, c.seq, 2, 0, {0.3f, -0.2f, 0.5f, 0.1f}, 100);
    // Always: page 0 (sinks), pages 23 and 24 (window 94..99; page 24 is the last, full). Selected: budget / 4.
    EXPECT_EQ(pages.size(), 3u + static_cast<size_t>(budget / 4)) << "budget " << budget;
    EXPECT_TRUE(std::count(pages.begin(), pages.end(), 0) == 1 && std::count(pages.begin(), pages.end(), 23) == 1 &&
                std::count(pages.begin(), pages.end(), 24) == 1);
  }
}

TEST(QuestPolicy, TruncationAndForkKeepSummariesExact) {
  NeedleCache c(62, 7);
  auto policy = quest(c.shape, 4);
  ASSERT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 0, {1, 0, 0, 0}, 62), (std::vector<int32_t>{0, 7, 14, 15}));
  // Roll back to cell 26 (page 7, cells 28..31, goes) and grow again with the needle in page 10: page 7 comes
  // back with the same span but ordinary keys, so a summary kept from before would still pick it.
  c.cache.truncate(c.seq, 26);
  policy->truncate(c.cache, c.seq, 26);
  std::vector<int32_t> pos;
  for (int32_t i = 26; i < 62; ++i) pos.push_back(i);
  ASSERT_TRUE(c.cache.append_cells(c.seq, pos).is_ok());
  const int32_t per_cell = c.shape.n_head_kv * 4;
  std::vector<float> keys(static_cast<size_t>(62 - 26) * per_cell, 0.01f);
  for (int32_t i = 40; i < 44; ++i) keys[static_cast<size_t>(i - 26) * per_cell + 0] = 5.0f;
  for (int32_t il = 0; il < c.shape.n_layer; ++il) c.cache.write_keys(c.seq, il, 26, 62 - 26, keys.data());
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 0, {1, 0, 0, 0}, 62), (std::vector<int32_t>{0, 10, 14, 15}));

  // A fork selects exactly as its parent does.
  std::unique_ptr<KvPolicy> forked = policy->fork(c.seq, c.seq);
  ASSERT_NE(forked, nullptr);
  EXPECT_EQ(select_for_decode(*forked, c.cache, c.seq, 2, 0, {1, 0, 0, 0}, 62),
            select_for_decode(*policy, c.cache, c.seq, 2, 0, {1, 0, 0, 0}, 62));
}

// Page 4 (cells 16..19) holds one key of 4 along channel 0 among zeros; page 7 (cells 28..31) four keys of 2.8.
// For q = (1, 0, 0, 0) min/max scores page 4 by its outlier (4 > 2.8); mean -/+ k std, written out below, scores
// it by its spread.
float outlier_or_steady(int32_t cell) {
  if (cell == 16) return 4.0f;
  if (cell >= 28 && cell < 32) return 2.8f;
  return 0.0f;
}

std::vector<int32_t> select_on_outlier_cache(const QuestOptions& o) {
  const KvShape shape = tiny_shape(3);
  KvCache cache(shape, KvCacheOptions{4, 0, 4});
  const SeqId seq = *cache.add_sequence();
  std::vector<int32_t> pos(62);
  for (int32_t i = 0; i < 62; ++i) pos[static_cast<size_t>(i)] = i;
  EXPECT_TRUE(cache.append_cells(seq, pos).is_ok());
  std::vector<float> keys(62 * 2 * 4, 0.0f);
  for (int32_t i = 0; i < 62; ++i) keys[static_cast<size_t>(i) * 8] = outlier_or_steady(i);
  for (int32_t il = 0; il < shape.n_layer; ++il) cache.write_keys(seq, il, 0, 62, keys.data());
  Result<std::unique_ptr<KvPolicy>> p = make_quest_policy(tiny_context(shape), o);
  EXPECT_TRUE(p.is_ok()) << p.message();
  return select_for_decode(**p, cache, seq, 1, 0, {1, 0, 0, 0}, 62);
}

TEST(QuestPolicy, MeanStdSummaryScoresPagesByTheirSpread) {
  QuestOptions o;
  o.budget = 4;  // one page
  o.page_tokens = 4;
  o.sink_tokens = 2;
  o.window = 6;
  o.dense_layers = 1;
  EXPECT_EQ(select_on_outlier_cache(o), (std::vector<int32_t>{0, 4, 14, 15}));
  for (float k : {1.0f, 2.0f}) {
    o.summary = KeySummary::kMeanStd;
    o.std_scale = k;
    // Channel 0 of each candidate page: mean + k * population std (the other channels are 0).
    std::vector<std::pair<float, int32_t>> ranked;
    for (int32_t page = 1; page <= 13; ++page) {
      double sum = 0, sum_sq = 0;
      for (int32_t i = 4 * page; i < 4 * page + 4; ++i) {
        sum += outlier_or_steady(i);
        sum_sq += outlier_or_steady(i) * outlier_or_steady(i);
      }
      const double mean = sum / 4, spread = std::sqrt(std::max(0.0, sum_sq / 4 - mean * mean));
      ranked.emplace_back(-static_cast<float>(mean + k * spread), page);
    }
    std::sort(ranked.begin(), ranked.end());
    std::vector<int32_t> want = {0, ranked[0].second, 14, 15};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(select_on_outlier_cache(o), want) << "k " << k;
  }
  // k = 1: 1 + 1.73 < 2.8, the steady page wins; k = 2: 1 + 3.46 > 2.8, the outlier's page again.
  o.std_scale = 1.0f;
  EXPECT_EQ(select_on_outlier_cache(o), (std::vector<int32_t>{0, 7, 14, 15}));
  o.std_scale = 2.0f;
  EXPECT_EQ(select_on_outlier_cache(o), (std::vector<int32_t>{0, 4, 14, 15}));
}

TEST(QuestPolicy, RejectsBadOptions) {
  const KvShape shape = tiny_shape();
  QuestOptions o;
  o.page_tokens = 32;
  o.budget = 16;
  Result<std::unique_ptr<KvPolicy>> p = make_quest_policy(tiny_context(shape), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("budget=16"), std::string::npos) << p.message();
  o.budget = 64;
  o.dense_layers = -1;
  EXPECT_FALSE(make_quest_policy(tiny_context(shape), o).is_ok());
}

}  // namespace
}  // namespace longhaul::kv
