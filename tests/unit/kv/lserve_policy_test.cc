// lserve (LServe, Yang et al., 2025) on crafted keys and queries: the hierarchical rule (a physical page scores the
// largest Quest bound of its logical pages, which can rank pages differently from one bound per page), the budget,
// streaming heads reading only their sinks and window, the reuse of a selection for consecutive positions, and
// truncation and fork.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <vector>

#include "kv/head_profile.h"
#include "kv/policies/page_key_summaries.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::make;
using testing::tiny_context;
using testing::tiny_shape;

constexpr int32_t kDk = 4;

// Quest's bound written out over one logical page's keys: per channel the larger of q * min and q * max.
float bound_of_keys(const std::vector<float>& q, const std::vector<std::vector<float>>& keys) {
  float s = 0;
  for (int32_t c = 0; c < kDk; ++c) {
    float lo = INFINITY, hi = -INFINITY;
    for (const auto& k : keys) {
      lo = std::min(lo, k[c]);
      hi = std::max(hi, k[c]);
    }
    s += std::max(q[c] * lo, q[c] * hi);
  }
  return s;
}

TEST(PageKeyBound, IsTheLargestBoundOfTheLogicalPages) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 50; ++trial) {
    const int32_t n_sub = 1 + trial % 4, n_q = 1 + trial % 3;
    std::vector<float> lo(n_sub * kDk), hi(n_sub * kDk), q(n_q * kDk);
    for (size_t i = 0; i < lo.size(); ++i) {
      const float a = normal(rng), b = normal(rng);
      lo[i] = std::min(a, b);
      hi[i] = std::max(a, b);
    }
    for (float& v : q) v = normal(rng);
    float want = -INFINITY;
    for (int32_t s = 0; s < n_sub; ++s)
      for (int32_t i = 0; i < n_q; ++i) {
        float b = 0;
        for (int32_t c = 0; c < kDk; ++c)
          b += std::max(q[i * kDk + c] * lo[s * kDk + c], q[i * kDk + c] * hi[s * kDk + c]);
        want = std::max(want, b);
      }
    EXPECT_NEAR(page_key_bound(q.data(), n_q, kDk, lo.data(), hi.data(), n_sub), want, 1e-5f) << "trial " << trial;
  }
}

// A cache of n_cells cells in pages of 8, positions 0.., whose head-0 and head-1 keys are key_of(cell) and 0.01.
struct CraftedCache {
  KvShape shape = tiny_shape(3);
  KvCache cache;
  SeqId seq = 0;
  CraftedCache(int32_t n_cells, const std::function<std::vector<float>(int32_t)>& key_of)
      : cache(shape, KvCacheOptions{/*page_tokens=*/8, /*max_cells=*/0, /*max_sequences=*/4}) {
    seq = *cache.add_sequence();
    std::vector<int32_t> pos(static_cast<size_t>(n_cells));
    for (int32_t i = 0; i < n_cells; ++i) pos[static_cast<size_t>(i)] = i;
    EXPECT_TRUE(cache.append_cells(seq, pos).is_ok());
    std::vector<float> keys(static_cast<size_t>(n_cells) * shape.n_head_kv * kDk, 0.01f);
    for (int32_t i = 0; i < n_cells; ++i) {
      const std::vector<float> k = key_of(i);
      std::copy(k.begin(), k.end(), keys.begin() + static_cast<int64_t>(i) * shape.n_head_kv * kDk);
    }
    for (int32_t il = 0; il < shape.n_layer; ++il) cache.write_keys(seq, il, 0, n_cells, keys.data());
  }
};

// The profile makes head 0 of every layer a retrieval head (retrieval=0.5 of 6 heads), head 1 a streaming one.
KvPolicyContext context_with_profile(const KvShape& shape) {
  KvPolicyContext c = tiny_context(shape);
  auto profile = std::make_shared<HeadProfile>(blank_head_profile(shape.n_layer, shape.n_head_kv));
  for (int32_t il = 0; il < shape.n_layer; ++il) profile->heads[static_cast<size_t>(il * shape.n_head_kv)].score = 1;
  c.head_profile = profile;
  return c;
}

std::vector<int32_t> select(const KvPolicy& policy, const KvCache& cache, SeqId seq, int32_t il, int32_t kv_head,
                            const std::vector<float>& q, int32_t position) {
  const int32_t q_pos[1] = {position};
  std::vector<int32_t> pages;
  policy.select_pages({cache, seq, il, kv_head, q.data(), q_pos, 1, kDk}, pages);
  return pages;
}

// Page 1 (cells 8..15): half its keys along channel 0, half along channel 1, each 2: a whole-page bound of 4 for
// q = (1, 1), but no key scores more than 2. Page 3 (cells 24..31): every key (1.5, 1.5), 3 for that query.
std::vector<float> two_halves_and_a_diagonal(int32_t cell) {
  std::vector<float> k(2 * kDk, 0.01f);  // heads 0 and 1
  if (cell >= 8 && cell < 12) k[0] = 2.0f;
  if (cell >= 12 && cell < 16) k[1] = 2.0f;
  if (cell >= 24 && cell < 32) k[0] = k[1] = 1.5f;
  return k;
}

TEST(LServePolicy, HierarchicalSelectionScoresLogicalPages) {
  CraftedCache c(70, two_halves_and_a_diagonal);  // pages 0..8, the last one partial
  const KvPolicyContext context = context_with_profile(c.shape);
  const std::vector<float> q = {1, 1, 0, 0};
  // Logical pages of 4: page 3's bound (3) beats page 1's (max(2, 2)), as the keys' true scores do.
  auto hierarchical = make("lserve:retrieval=0.5:budget=8:page=8:logical=4:sink=2:local=6:reuse=1", context);
  EXPECT_EQ(select(*hierarchical, c.cache, c.seq, 1, 0, q, 69), (std::vector<int32_t>{0, 3, 8}));
  // One logical page per page (Quest's rule): page 1's loose bound (4) wins.
  auto flat = make("lserve:retrieval=0.5:budget=8:page=8:logical=8:sink=2:local=6:reuse=1", context);
  EXPECT_EQ(select(*flat, c.cache, c.seq, 1, 0, q, 69), (std::vector<int32_t>{0, 1, 8}));

  // The rule written out: each candidate page (1..7) scores the largest bound of its logical pages of 4.
  std::vector<std::pair<float, int32_t>> ranked;
  for (int32_t p = 1; p <= 7; ++p) {
    float best = -INFINITY;
    for (int32_t s = 0; s < 2; ++s) {
      std::vector<std::vector<float>> keys;
      for (int32_t i = 8 * p + 4 * s; i < 8 * p + 4 * s + 4; ++i) {
        const std::vector<float> k = two_halves_and_a_diagonal(i);
        keys.emplace_back(k.begin(), k.begin() + kDk);
      }
      best = std::max(best, bound_of_keys(q, keys));
    }
    ranked.emplace_back(-best, p);
  }
  std::sort(ranked.begin(), ranked.end());
  auto two = make("lserve:retrieval=0.5:budget=16:page=8:logical=4:sink=2:local=6:reuse=1", context);
  std::vector<int32_t> want = {0, ranked[0].second, ranked[1].second, 8};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(select(*two, c.cache, c.seq, 1, 0, q, 69), want);
}

TEST(LServePolicy, StreamingHeadsReadTheirSinksAndWindowOnly) {
  CraftedCache c(70, two_halves_and_a_diagonal);
  auto policy = make("lserve:retrieval=0.5:budget=8:page=8:logical=4:sink=2:window=20:local=6", context_with_profile(c.shape));
  EXPECT_TRUE(policy->has_head_spans());
  EXPECT_EQ(policy->head_span(1, 1).window, 20);
  EXPECT_EQ(policy->head_span(1, 1).n_sink, 2);
  EXPECT_EQ(policy->head_span(1, 0).window, 0);  // a retrieval head sees everything it reads
  // Window: cells 50..69, pages 6, 7, 8; sinks: page 0.
  EXPECT_EQ(select(*policy, c.cache, c.seq, 1, 1, {1, 1, 0, 0}, 69), (std::vector<int32_t>{0, 6, 7, 8}));
  // Prefill (queries at several positions) reads every page; the mask keeps the head to its span.
  const std::vector<float> q2 = {1, 1, 0, 0, 1, 1, 0, 0};
  const int32_t q_pos[2] = {68, 69};
  std::vector<int32_t> pages;
  policy->select_pages({c.cache, c.seq, 1, 1, q2.data(), q_pos, 2, kDk}, pages);
  EXPECT_EQ(pages.size(), 9u);
}

TEST(LServePolicy, ReusesASelectionForConsecutivePositions) {
  CraftedCache c(70, two_halves_and_a_diagonal);
  auto policy = make("lserve:retrieval=0.5:budget=8:page=8:logical=4:sink=2:local=6:reuse=3", context_with_profile(c.shape));
  const std::vector<float> toward_page_3 = {1, 1, 0, 0}, toward_page_1 = {3, 0, 0, 0};
  EXPECT_EQ(select(*policy, c.cache, c.seq, 1, 0, toward_page_1, 69), (std::vector<int32_t>{0, 1, 8}));
  // The same position again (a draft rejected and fed anew) selects afresh.
  EXPECT_EQ(select(*policy, c.cache, c.seq, 1, 0, toward_page_3, 69), (std::vector<int32_t>{0, 3, 8}));
  // Positions 70 and 71 reuse the choice made at 69, whatever their query; 72 selects again.
  EXPECT_EQ(select(*policy, c.cache, c.seq, 1, 0, toward_page_1, 70), (std::vector<int32_t>{0, 3, 8}));
  EXPECT_EQ(select(*policy, c.cache, c.seq, 1, 0, toward_page_1, 71), (std::vector<int32_t>{0, 3, 8}));
  // A fork reuses as its parent does.
  std::unique_ptr<KvPolicy> forked = policy->fork(c.seq, c.seq);
  ASSERT_NE(forked, nullptr);
  EXPECT_EQ(forked->statistics(), policy->statistics());
  EXPECT_EQ(select(*policy, c.cache, c.seq, 1, 0, toward_page_1, 72), (std::vector<int32_t>{0, 1, 8}));
  EXPECT_EQ(select(*forked, c.cache, c.seq, 1, 0, toward_page_1, 71), (std::vector<int32_t>{0, 3, 8}));
  // Another head keeps its own selection.
  EXPECT_EQ(select(*policy, c.cache, c.seq, 2, 0, toward_page_3, 70), (std::vector<int32_t>{0, 3, 8}));

  // A cut below the cells a kept selection saw drops it; a rejected draft (a cut to as many cells) does not.
  const std::vector<double> before = policy->statistics();
  policy->truncate(c.cache, c.seq, 70);
  EXPECT_EQ(policy->statistics(), before);
  policy->truncate(c.cache, c.seq, 60);
  EXPECT_NE(policy->statistics(), before);
}

TEST(LServePolicy, NeverReadsMoreThanTheBudget) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  CraftedCache c(200, [&](int32_t) {
    std::vector<float> k(2 * kDk);
    for (float& v : k) v = normal(rng);
    return k;
  });  // pages 0..24, the last one full
  for (int32_t budget : {8, 24, 64}) {
    auto policy = make("lserve:retrieval=0.5:page=8:logical=4:sink=2:local=6:reuse=1:budget=" + std::to_string(budget),
                       context_with_profile(c.shape));
    // Always: page 0 (sinks) and page 24 (the last, which holds the local cells 194..199).
    const std::vector<int32_t> pages = select(*policy, c.cache, c.seq, 2, 0, {0.3f, -0.2f, 0.5f, 0.1f}, 199);
    EXPECT_EQ(pages.size(), 2u + static_cast<size_t>(budget / 8)) << "budget " << budget;
    EXPECT_EQ(pages.front(), 0);
    EXPECT_EQ(pages.back(), 24);
  }
}

TEST(LServePolicy, RejectsBadOptions) {
  const KvShape shape = tiny_shape();
  const KvPolicyContext context = context_with_profile(shape);
  Result<BuiltKvPolicy> p = make_kv_policy("lserve:budget=16:page=32", context);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("budget=16"), std::string::npos) << p.message();
  p = make_kv_policy("lserve:page=16:logical=32", context);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("logical=32"), std::string::npos) << p.message();
  p = make_kv_policy("lserve", tiny_context(shape));  // no head profile
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("lserve: no head profile"), std::string::npos) << p.message();
}

}  // namespace
}  // namespace longhaul::kv
