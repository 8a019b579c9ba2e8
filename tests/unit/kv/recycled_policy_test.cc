// recycled (Recycled Attention, Xu et al., 2024) on crafted attention: between full steps a KV head reads the
// pages that hold the cells its last full step attended to most (as many as the budget allows), plus the sinks,
// the window and the cells generated since; a full step every `stride` decode steps; truncation and fork.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::make;
using testing::step;
using testing::tiny_context;
using testing::tiny_shape;

constexpr int32_t kPage = 4;

std::vector<int32_t> select(const KvPolicy& policy, const KvCache& cache, SeqId seq, int32_t il, int32_t kv_head,
                            int32_t position) {
  const std::vector<float> q(4, 0.5f);  // recycled does not look at the query
  const int32_t q_pos[1] = {position};
  std::vector<int32_t> pages;
  policy.select_pages({cache, seq, il, kv_head, q.data(), q_pos, 1, 4}, pages);
  return pages;
}

// The paper's rule written out over cells: walk the scored cells from the most attended down and read each one's
// page, until `n_select` pages beyond those always read are taken (the top-K cells for the largest K that fits).
std::vector<int32_t> pages_of_top_cells(const std::vector<float>& scores, const std::set<int32_t>& always,
                                        int32_t n_select) {
  std::vector<int32_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  std::set<int32_t> pages = always;
  int32_t taken = 0;
  for (int32_t cell : order) {
    if (taken == n_select) break;
    if (pages.insert(cell / kPage).second) ++taken;
  }
  return {pages.begin(), pages.end()};
}

struct RecycledFixture {
  KvShape shape = tiny_shape(3);
  KvCache cache{shape, KvCacheOptions{/*page_tokens=*/kPage, /*max_cells=*/0, /*max_sequences=*/4}};
  SeqId seq = *cache.add_sequence();
  std::unique_ptr<KvPolicy> policy =
      make("recycled:budget=8:page=4:sink=2:window=6:stride=3", tiny_context(shape));  // 2 selected pages

  // A prompt of n tokens (a full step) whose last query's attention, for layer 1 head 0, is `probs`; the group's
  // two query heads each report it (as the attention threads do).
  void prompt(int32_t n, const std::vector<float>& probs) {
    step(*policy, cache, seq, n);
    EXPECT_TRUE(policy->wants_scores(n - 1));
    EXPECT_FALSE(policy->wants_scores(n - 2));
    for (int g = 0; g < 2; ++g) policy->observe_scores(seq, 1, 0, n - 1, probs);
  }
};

TEST(RecycledPolicy, ReadsThePagesOfTheMostAttendedCells) {
  RecycledFixture f;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(0.0f, 0.01f);
  std::vector<float> probs(62);
  for (float& p : probs) p = uniform(rng);
  probs[29] = 0.4f;  // page 7
  probs[45] = 0.3f;  // page 11
  probs[46] = 0.2f;  // page 11 again: the next page comes from the small ones
  probs[1] = 0.5f;   // a sink, read anyway
  f.prompt(62, probs);
  step(*f.policy, f.cache, f.seq, 1);  // decode: a recycled step over 63 cells
  EXPECT_FALSE(f.policy->wants_scores(62));
  // Always: page 0 (sinks 0, 1), pages 14 and 15 (window 57..62; cell 62 is also new since the full step).
  const std::vector<int32_t> got = select(*f.policy, f.cache, f.seq, 1, 0, 62);
  EXPECT_EQ(got, pages_of_top_cells(probs, {0, 14, 15}, 2));
  EXPECT_EQ(got.size(), 5u);
  EXPECT_TRUE(std::count(got.begin(), got.end(), 7) == 1 && std::count(got.begin(), got.end(), 11) == 1);
  // A head the full step did not score has no attention to recycle: every cell is new to it, and read.
  EXPECT_EQ(select(*f.policy, f.cache, f.seq, 1, 1, 62).size(), 16u);
  // Queries at several positions read everything.
  const std::vector<float> q(8, 0.5f);
  const int32_t q_pos[2] = {61, 62};
  std::vector<int32_t> pages;
  f.policy->select_pages({f.cache, f.seq, 1, 0, q.data(), q_pos, 2, 4}, pages);
  EXPECT_EQ(pages.size(), 16u);
}

TEST(RecycledPolicy, RandomScoresFollowTheRuleWithinTheBudget) {
  std::mt19937 rng(5);
  std::exponential_distribution<float> heavy(1.0f);
  for (int trial = 0; trial < 20; ++trial) {
    RecycledFixture f;
    std::vector<float> probs(80);
    for (float& p : probs) p = heavy(rng) * heavy(rng);
    f.prompt(80, probs);
    step(*f.policy, f.cache, f.seq, 1);
    // 81 cells: page 0 (sinks), window 75..80: pages 18, 19, 20.
    const std::vector<int32_t> got = select(*f.policy, f.cache, f.seq, 1, 0, 80);
    EXPECT_EQ(got, pages_of_top_cells(probs, {0, 18, 19, 20}, 2)) << "trial " << trial;
    EXPECT_EQ(got.size(), 6u);  // the budget's 2 pages, never more
  }
}

TEST(RecycledPolicy, AttendsFullyEveryStrideSteps) {
  RecycledFixture f;
  std::vector<float> probs(62, 0.01f);
  probs[29] = 0.9f;
  f.prompt(62, probs);
  // stride=3: recycled, recycled, full, recycled, recycled, full.
  for (int32_t i = 0; i < 6; ++i) {
    const int32_t position = 62 + i;
    step(*f.policy, f.cache, f.seq, 1);
    const bool full = i % 3 == 2;
    EXPECT_EQ(f.policy->wants_scores(position), full) << "step " << i;
    const size_t n_pages = static_cast<size_t>(f.cache.n_pages(f.seq, 1));
    EXPECT_EQ(select(*f.policy, f.cache, f.seq, 1, 0, position).size() == n_pages, full) << "step " << i;
    if (full) {
      std::vector<float> fresh(static_cast<size_t>(position) + 1, 0.01f);
      fresh[5] = 0.9f;  // page 1 now
      f.policy->observe_scores(f.seq, 1, 0, position, fresh);
    } else if (i > 2) {
      const std::vector<int32_t> got = select(*f.policy, f.cache, f.seq, 1, 0, position);
      EXPECT_EQ(std::count(got.begin(), got.end(), 1), 1) << "step " << i;
      EXPECT_EQ(std::count(got.begin(), got.end(), 7), 0) << "step " << i;
    }
  }
}

TEST(RecycledPolicy, StrideOneAndACoveringBudgetReadEverything) {
  KvShape shape = tiny_shape(2);
  KvCache cache(shape, KvCacheOptions{kPage, 0, 4});
  const SeqId seq = *cache.add_sequence();
  for (const char* spec : {"recycled:budget=4:page=4:stride=1", "recycled:budget=4096:page=4:stride=4"}) {
    std::unique_ptr<KvPolicy> policy = make(spec, tiny_context(shape));
    cache.clear_sequence(seq);
    step(*policy, cache, seq, 60);
    std::vector<float> probs(60, 0.0f);
    probs[20] = 1.0f;
    policy->observe_scores(seq, 1, 0, 59, probs);
    step(*policy, cache, seq, 1);
    EXPECT_EQ(select(*policy, cache, seq, 1, 0, 60).size(), 16u) << spec;
  }
}

TEST(RecycledPolicy, TruncationIntoTheScoredCellsForcesAFullStepAndForksSelectAlike) {
  RecycledFixture f;
  std::vector<float> probs(62, 0.01f);
  probs[29] = 0.9f;
  f.prompt(62, probs);
  step(*f.policy, f.cache, f.seq, 1);
  const std::vector<int32_t> before = select(*f.policy, f.cache, f.seq, 1, 0, 62);
  std::unique_ptr<KvPolicy> forked = f.policy->fork(f.seq, f.seq);
  ASSERT_NE(forked, nullptr);
  EXPECT_EQ(select(*forked, f.cache, f.seq, 1, 0, 62), before);
  EXPECT_EQ(forked->statistics(), f.policy->statistics());

  // A rejected draft: cut back to the 63 cells the policy has seen, nothing changes.
  const std::vector<double> stats = f.policy->statistics();
  f.policy->truncate(f.cache, f.seq, 63);
  EXPECT_EQ(f.policy->statistics(), stats);
  // A cut into the scored prompt: the next decode step attends fully.
  f.cache.truncate(f.seq, 40);
  f.policy->truncate(f.cache, f.seq, 40);
  step(*f.policy, f.cache, f.seq, 1);
  EXPECT_TRUE(f.policy->wants_scores(40));
  EXPECT_EQ(select(*f.policy, f.cache, f.seq, 1, 0, 40).size(), static_cast<size_t>(f.cache.n_pages(f.seq, 1)));
}

TEST(RecycledPolicy, RejectsABudgetBelowOnePage) {
  Result<BuiltKvPolicy> p = make_kv_policy("recycled:budget=16:page=32", tiny_context(tiny_shape()));
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("budget=16"), std::string::npos) << p.message();
  EXPECT_FALSE(make_kv_policy("recycled:stride=0", tiny_context(tiny_shape())).is_ok());
}

}  // namespace
}  // namespace longhaul::kv
