// H2O, TOVA and SnapKV on crafted attention rows: the retained cells are worked out
// by hand from each paper's rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::positions_of;
using testing::step;

// Feeds the same probability row to every layer, as two query heads of kv head 0
// each carrying half (policies sum over heads).
void observe_all(KvPolicy& p, int32_t n_layer, int32_t query_pos, const std::vector<float>& probs) {
  std::vector<float> half(probs);
  for (float& v : half) v *= 0.5f;
  for (int32_t il = 0; il < n_layer; ++il) {
    p.observe_scores(0, il, 0, query_pos, half);
    p.observe_scores(0, il, 1, query_pos, half);
  }
}

StepInfo one_token(const KvCache& cache, SeqId seq, bool starts_feed = true) {
  StepInfo s;
  s.first_position = cache.next_position(seq);
  s.n_tokens = 1;
  s.starts_feed = starts_feed;
  return s;
}

TEST(H2oPolicy, KeepsRecentWindowPlusHeaviestAccumulated) {
  const KvShape shape = testing::tiny_shape();
  auto p = testing::make("h2o:budget=6:recent=2", testing::tiny_context(shape));
  KvCache cache(shape, {4, 6, 1});
  const SeqId seq = *cache.add_sequence();
  step(*p, cache, seq, 1);  // budget/4 = 1 token per step
  for (int i = 0; i < 5; ++i) step(*p, cache, seq, 1);
  observe_all(*p, shape.n_layer, 5, {0.5f, 0.1f, 0.3f, 0.05f, 0.02f, 0.03f});
  // Next token: keep 5 = recent {4, 5} + the 3 heaviest of cells 0..3: 0 (0.5), 2 (0.3), 1 (0.1).
  step(*p, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 1, 2, 4, 5, 6}));
  // Scores travel with their cells: now 0.5, 0.1, 0.3, 0.02, 0.03, 0 for positions 0, 1, 2, 4, 5, 6.
  observe_all(*p, shape.n_layer, 6, {0.0f, 0.0f, 0.0f, 0.9f, 0.0f, 0.1f});
  // Sums: 0.5, 0.1, 0.3, 0.92, 0.03, 0.1. Recent = positions 5, 6; heavy among positions 0, 1, 2, 4:
  // 4 (0.92), 0 (0.5), 2 (0.3).
  step(*p, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 1), (std::vector<int32_t>{0, 2, 4, 5, 6, 7}));
}

// Tags every row of the first n cells with its head and cell index (keys and values), to see which token each
// head's row holds after a per-head retention.
void tag_rows(KvCache& cache, SeqId seq, int32_t n) {
  for (int32_t il = 0; il < cache.shape().n_layer; ++il)
    for (int32_t h = 0; h < cache.shape().n_head_kv; ++h)
      for (int32_t c = 0; c < n; ++c) {
        cache.key(seq, il, h, c)[0] = static_cast<uint16_t>(100 * h + c);
        cache.value(seq, il, h, c)[1] = static_cast<uint16_t>(100 * h + c);
      }
}

// The tags of head h's first n rows of layer il (keys and values must agree).
std::vector<int32_t> row_tags(const KvCache& cache, SeqId seq, int32_t il, int32_t h, int32_t n) {
  std::vector<int32_t> out;
  for (int32_t c = 0; c < n; ++c) {
    EXPECT_EQ(cache.key(seq, il, h, c)[0], cache.value(seq, il, h, c)[1]) << "keys and values move together";
    out.push_back(cache.key(seq, il, h, c)[0] - 100 * h);
  }
  return out;
}

// H2O ranks per KV head: each head keeps its own heavy hitters, and every head the same recent window.
TEST(H2oPolicy, EachHeadKeepsItsOwnHeavyHitters) {
  const KvShape shape = testing::tiny_shape(1);
  auto p = testing::make("h2o:budget=6:recent=2", testing::tiny_context(shape));
  KvCache cache(shape, {4, 6, 1});
  const SeqId seq = *cache.add_sequence();
  for (int i = 0; i < 6; ++i) step(*p, cache, seq, 1);
  tag_rows(cache, seq, 6);
  p->observe_scores(seq, 0, 0, 5, std::vector<float>{0.5f, 0.1f, 0.3f, 0.05f, 0.02f, 0.03f});
  p->observe_scores(seq, 0, 1, 5, std::vector<float>{0.0f, 0.2f, 0.1f, 0.6f, 0.05f, 0.05f});
  // Next token: 5 kept = recent {4, 5} + each head's 3 heaviest of cells 0..3.
  step(*p, cache, seq, 1);
  EXPECT_EQ(row_tags(cache, seq, 0, 0, 5), (std::vector<int32_t>{0, 1, 2, 4, 5}));
  EXPECT_EQ(row_tags(cache, seq, 0, 1, 5), (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{1, 2, 3, 4, 5, 6}));
  // Scores travel with each head's rows: head 1's cell 2 (token 3, 0.6) stays its heaviest.
  p->observe_scores(seq, 0, 0, 6, std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f});
  p->observe_scores(seq, 0, 1, 6, std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f});
  step(*p, cache, seq, 1);
  // Head 0: recent = tokens 5, 6; heaviest 3 of tokens 0, 1, 2, 4 (0.5, 0.1, 0.3, 0.02): 0, 2, 1.
  EXPECT_EQ(row_tags(cache, seq, 0, 0, 3), (std::vector<int32_t>{0, 1, 2}));
  // Head 1: of tokens 1, 2, 3, 4 (0.2, 0.1, 0.6, 0.05): 3, 1, 2.
  EXPECT_EQ(row_tags(cache, seq, 0, 1, 3), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(cache.n_cells(seq, 0), 6);
}

TEST(H2oPolicy, RandomScoresNeverExceedBudgetAndKeepRecent) {
  const KvShape shape = testing::tiny_shape();
  auto p = testing::make("h2o:budget=16:recent=4", testing::tiny_context(shape));
  KvCache cache(shape, {4, 16, 1});
  const SeqId seq = *cache.add_sequence();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int i = 0; i < 200; ++i) {
    step(*p, cache, seq, 1 + i % 4);
    const int32_t n = cache.n_cells(seq, 0);
    ASSERT_LE(n, 16);
    std::vector<float> probs(static_cast<size_t>(n));
    for (float& v : probs) v = u(rng);
    observe_all(*p, shape.n_layer, cache.next_position(seq) - 1, probs);
    for (int32_t il = 0; il < shape.n_layer; ++il) {
      const std::vector<int32_t> pos = positions_of(cache, seq, il);
      ASSERT_TRUE(std::is_sorted(pos.begin(), pos.end()));
      // The last step's tokens and the recent window before them are all there.
      EXPECT_EQ(pos.back(), cache.next_position(seq) - 1);
    }
  }
}

// A2SF vs H2O on the same attention: an early heavy hitter that nobody attends to any
// more fades under the forgetting factor but not under H2O's plain sum.
std::vector<int32_t> kept_after_fading(const std::string& name) {
  const KvShape shape = testing::tiny_shape();
  // h2o has no forgetting factor (it is a2sf with factor 1).
  auto p = testing::make(name + ":budget=4:recent=1" + (name == "a2sf" ? ":forget=0.5" : ""), testing::tiny_context(shape));
  KvCache cache(shape, {4, 4, 1});
  const SeqId seq = *cache.add_sequence();
  for (int i = 0; i < 3; ++i) step(*p, cache, seq, 1);
  observe_all(*p, shape.n_layer, 2, {0.9f, 0.05f, 0.05f});
  step(*p, cache, seq, 1);  // a2sf: scores halve to 0.45, 0.025, 0.025
  observe_all(*p, shape.n_layer, 3, {0.0f, 0.5f, 0.45f, 0.05f});
  // a2sf: 0.45, 0.525, 0.475, 0.05; h2o: 0.9, 0.55, 0.5, 0.05. Keep 3 = recent {3} + best 2 of 0..2.
  step(*p, cache, seq, 1);
  return positions_of(cache, seq, 0);
}

TEST(A2sfPolicy, ForgettingFactorLetsOldHeavyHittersGo) {
  EXPECT_EQ(kept_after_fading("a2sf"), (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(kept_after_fading("h2o"), (std::vector<int32_t>{0, 1, 3, 4}));
}

TEST(TovaPolicy, DropsWhatTheLastQueryIgnores) {
  const KvShape shape = testing::tiny_shape();
  auto p = testing::make("tova:budget=4", testing::tiny_context(shape));
  KvCache cache(shape, {4, 4, 1});
  const SeqId seq = *cache.add_sequence();
  for (int i = 0; i < 4; ++i) step(*p, cache, seq, 1);
  // Only the step's last query (position 3) counts; an earlier row is ignored.
  observe_all(*p, shape.n_layer, 2, {0.0f, 0.0f, 0.0f, 1.0f});
  observe_all(*p, shape.n_layer, 3, {0.4f, 0.1f, 0.2f, 0.3f});
  step(*p, cache, seq, 1);  // drops position 1 (0.1)
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 2, 3, 4}));
  // The new query's row replaces the old one: 0.1, 0.5, 0.15, 0.25 -> drop position 0.
  observe_all(*p, shape.n_layer, 4, {0.1f, 0.5f, 0.15f, 0.25f});
  step(*p, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 1), (std::vector<int32_t>{2, 3, 4, 5}));
}

std::string snapkv_spec(int32_t budget, int32_t observation_window, int32_t pool_kernel) {
  return "snapkv:budget=" + std::to_string(budget) + ":obs=" + std::to_string(observation_window) +
         ":pool=" + std::to_string(pool_kernel);
}

TEST(SnapKvPolicy, WindowVotesOnceAfterThePrompt) {
  const KvShape shape = testing::tiny_shape();
  const std::string o = snapkv_spec(6, 2, 1);
  auto p = testing::make(o, testing::tiny_context(shape));
  KvCache cache(shape, {4, 64, 1});
  const SeqId seq = *cache.add_sequence();
  step(*p, cache, seq, 10);  // the prompt: positions 0..9, voters 8 and 9
  observe_all(*p, shape.n_layer, 5, {0, 0, 0, 0, 0, 1, 0, 0, 0, 0});  // not a voter: ignored
  observe_all(*p, shape.n_layer, 8, {0.3f, 0.0f, 0.1f, 0.0f, 0.2f, 0.0f, 0.05f, 0.15f, 0.2f, 0.0f});
  observe_all(*p, shape.n_layer, 9, {0.2f, 0.0f, 0.0f, 0.1f, 0.2f, 0.0f, 0.0f, 0.1f, 0.2f, 0.2f});
  // Votes over the prefix 0..7: 0.5, 0, 0.1, 0.1, 0.4, 0, 0.05, 0.25 -> best 4: 0, 4, 7, then 2 and 3 tie
  // at 0.1 and the older (2) wins. Kept: {0, 2, 4, 7} + window {8, 9}.
  StepInfo next = one_token(cache, seq);
  EXPECT_TRUE(p->plan_eviction(cache, seq, next).evict);
  step(*p, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 2, 4, 7, 8, 9, 10}));
  // Decode does not compress again: generated tokens are appended.
  observe_all(*p, shape.n_layer, 10, {1, 0, 0, 0, 0, 0, 0});
  for (int i = 0; i < 3; ++i) step(*p, cache, seq, 1);
  EXPECT_EQ(cache.n_cells(seq, 0), 10);
}

TEST(SnapKvPolicy, PoolingKeepsNeighboursOfStrongVotes) {
  const KvShape shape = testing::tiny_shape(1);
  const std::string o = snapkv_spec(4, 1, 3);
  auto p = testing::make(o, testing::tiny_context(shape));
  KvCache cache(shape, {4, 64, 1});
  const SeqId seq = *cache.add_sequence();
  step(*p, cache, seq, 8);  // voter: position 7
  observe_all(*p, shape.n_layer, 7, {0.0f, 0.0f, 0.0f, 0.9f, 0.0f, 0.05f, 0.0f, 0.05f});
  // Prefix 0..6 votes 0, 0, 0, 0.9, 0, 0.05, 0; pooled (k=3, /3): 0, 0, .3, .3, .3167, .0167, .0167.
  // Best 3: 4, 2, 3 (2 and 3 tie, both kept). Without pooling 5 would beat 2 and 4.
  step(*p, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{2, 3, 4, 7, 8}));
}

// Each KV head keeps the positions its own queries vote for (SnapKV's per-head selection); a sliding-window layer,
// whose mask needs exact positions, keeps one set chosen by the votes summed over its heads.
TEST(SnapKvPolicy, EachHeadKeepsItsOwnVotedPositions) {
  const KvShape shape = testing::tiny_shape();  // 2 layers, 2 KV heads
  KvPolicyContext context = testing::tiny_context(shape);
  context.layer_window = {0, 16};  // layer 1 slides
  auto p = testing::make(snapkv_spec(4, 1, 1), context);
  KvCache cache(shape, {4, 64, 1});
  const SeqId seq = *cache.add_sequence();
  step(*p, cache, seq, 6);  // positions 0..5; the voter is 5
  tag_rows(cache, seq, 6);
  const std::vector<float> head0 = {0.4f, 0.3f, 0.2f, 0.0f, 0.1f, 0.0f};
  const std::vector<float> head1 = {0.0f, 0.1f, 0.0f, 0.5f, 0.4f, 0.0f};
  for (int32_t il = 0; il < shape.n_layer; ++il) {
    p->observe_scores(seq, il, 0, 5, head0);
    p->observe_scores(seq, il, 1, 5, head1);
  }
  step(*p, cache, seq, 1);  // compresses to 3 voted + the window (position 5), then appends position 6
  auto rows = [&](int32_t il, int32_t h) { return row_tags(cache, seq, il, h, 4); };
  // Layer 0: head 0's best three of 0..4 are 0, 1, 2; head 1's are 3, 4, 1.
  EXPECT_EQ(rows(0, 0), (std::vector<int32_t>{0, 1, 2, 5}));
  EXPECT_EQ(rows(0, 1), (std::vector<int32_t>{1, 3, 4, 5}));
  // A cell's position is the latest of its heads' tokens: still ascending, still behind every later query.
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{1, 3, 4, 5, 6}));
  // Layer 1 (sliding): summed votes 0.4, 0.4, 0.2, 0.5, 0.5 -> 3, 4, then 0 (ties go to the older cell).
  EXPECT_EQ(rows(1, 0), (std::vector<int32_t>{0, 3, 4, 5}));
  EXPECT_EQ(rows(1, 1), (std::vector<int32_t>{0, 3, 4, 5}));
  EXPECT_EQ(positions_of(cache, seq, 1), (std::vector<int32_t>{0, 3, 4, 5, 6}));
  EXPECT_EQ(cache.n_cells(seq, 0), 5);
}

// A 6-token prompt whose voter (position 5) votes differently per KV head of layer 0, then the plan before the
// next token. Summed over the heads the votes are 0.4, 0.4, 0.2, 0.5, 0.5.
EvictionPlan plan_after_two_head_votes(KvPolicy& p, KvCache& cache, SeqId seq) {
  step(p, cache, seq, 6);
  p.observe_scores(seq, 0, 0, 5, std::vector<float>{0.4f, 0.3f, 0.2f, 0.0f, 0.1f, 0.0f});
  p.observe_scores(seq, 0, 1, 5, std::vector<float>{0.0f, 0.1f, 0.0f, 0.5f, 0.4f, 0.0f});
  return p.plan_eviction(cache, seq, one_token(cache, seq));
}

// select_per_head = false: every head of a layer keeps the cells its summed votes choose (describe says so).
TEST(SnapKvPolicy, LayerSelectionKeepsOneSetPerLayer) {
  const KvShape shape = testing::tiny_shape(1);
  auto p = testing::make(snapkv_spec(4, 1, 1) + ":select=layer", testing::tiny_context(shape));
  EXPECT_NE(p->describe().find("select=layer"), std::string::npos) << p->describe();
  KvCache cache(shape, {4, 64, 1});
  const SeqId seq = *cache.add_sequence();
  const EvictionPlan plan = plan_after_two_head_votes(*p, cache, seq);
  ASSERT_TRUE(plan.evict);
  EXPECT_TRUE(plan.head_keep.empty() || plan.head_keep[0].empty());
  EXPECT_EQ(plan.keep[0], (std::vector<int32_t>{0, 3, 4, 5}));
}

// Quantized storage cannot move one head's cell out of its key group: every layer keeps one set.
TEST(SnapKvPolicy, QuantizedStorageKeepsOneSetPerLayer) {
  const KvShape shape = testing::tiny_shape(1);
  const std::string o = snapkv_spec(4, 1, 1);
  auto p = testing::make(o, testing::tiny_context(shape));
  KvQuantOptions q;
  q.bits = 8;
  q.group = 2;
  q.residual = 2;
  q.f16_prefix = 0;
  KvCache cache(shape, {4, 64, 1}, q);
  const SeqId seq = *cache.add_sequence();
  const EvictionPlan plan = plan_after_two_head_votes(*p, cache, seq);
  ASSERT_TRUE(plan.evict);
  EXPECT_TRUE(plan.head_keep.empty() || plan.head_keep[0].empty());
  // Summed: 0.4, 0.4, 0.2, 0.5, 0.5 -> 3, 4, 0, + the window 5.
  EXPECT_EQ(plan.keep[0], (std::vector<int32_t>{0, 3, 4, 5}));
}

// top_cells keeps the n largest scores of [begin, end), ties to the older cell: checked against a full stable sort
// on random scores drawn from a few values (many ties).
TEST(ScorePolicies, TopCellsMatchesAStableSortWithTiesToTheOlderCell) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> value(0, 5);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> score(40);
    for (float& v : score) v = 0.25f * static_cast<float>(value(rng));
    const int32_t begin = trial % 7, end = 40 - trial % 5, n_keep = trial % 30;
    std::vector<int32_t> want(static_cast<size_t>(end - begin));
    std::iota(want.begin(), want.end(), begin);
    std::stable_sort(want.begin(), want.end(), [&](int32_t a, int32_t b) { return score[a] > score[b]; });
    want.resize(static_cast<size_t>(std::min(n_keep, end - begin)));
    std::sort(want.begin(), want.end());
    EXPECT_EQ(top_cells(score, begin, end, n_keep), want) << "trial " << trial;
  }
}

TEST(ScorePolicies, RejectBadParameters) {
  const KvPolicyContext ctx = testing::tiny_context(testing::tiny_shape());
  EXPECT_FALSE(make_kv_policy("h2o:budget=8:recent=8", ctx).is_ok());
  EXPECT_FALSE(make_kv_policy("snapkv:budget=8:obs=8", ctx).is_ok());
  EXPECT_FALSE(make_kv_policy("snapkv:budget=8:obs=2:pool=4", ctx).is_ok());
  EXPECT_FALSE(make_kv_policy("tova:budget=1", ctx).is_ok());
  EXPECT_FALSE(make_kv_policy("a2sf:budget=8:forget=1.5", ctx).is_ok());
  // The limits that hold together are accepted.
  EXPECT_TRUE(make_kv_policy("h2o:budget=8:recent=7", ctx).is_ok());
  EXPECT_TRUE(make_kv_policy("snapkv:budget=8:obs=7:pool=3", ctx).is_ok());
  EXPECT_TRUE(make_kv_policy("tova:budget=2", ctx).is_ok());
  EXPECT_TRUE(make_kv_policy("a2sf:budget=8:forget=1", ctx).is_ok());
}

}  // namespace
}  // namespace longhaul::kv
