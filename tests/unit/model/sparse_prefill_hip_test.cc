// --prefill-attn hip (model/sparse_prefill_hip.h) on crafted queries and keys whose scores are set key by key:
// the halving order of HiP's tree search worked by hand on a 16-candidate case (Lee et al., 2024: k branches,
// halves scored by the 2 keys at their centre as the largest q . k over the block's queries, the k best kept), a
// needle found through attention locality, the always-kept sinks and local blocks, the budget, and the parser.
#include "model/sparse_prefill_hip.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "sparse_prefill_testing.h"

namespace longhaul::model {
namespace {

using namespace sparse_prefill_testing;

constexpr int32_t kDk = 16;

// One query block, 21 (positions 1344 .. 1407), at budget 512: 8 blocks, of them block 0 (sinks) and blocks
// 17 .. 21 (local) always, so k = 2 branches search the 16 candidate blocks 1 .. 16 (candidate c = block c + 1,
// its keys at positions 64 (c + 1) ..). Every key scores 0 but the ones set below (dimension 0 of the keys;
// the queries carry dimension 0 too). Worked by hand with the rule "a half [c0, c1) of candidates is scored by
// the keys at candidate-space cells (64 c0 + 64 c1) / 2 and the one after":
//   start      [0, 8) [8, 16)
//   round 1    halves [0,4) [4,8) [8,12) [12,16): representatives at positions 192, 448, 704, 960
//              scores 4 (key 193: the second key of the pair), 1, 2, 3          -> keep [0,4), [12,16)
//   round 2    halves [0,2) [2,4) [12,14) [14,16): positions 128, 256, 896, 1024
//              scores 1, 5, 2, 6                                                  -> keep [2,4), [14,16)
//   round 3    halves [2,3) [3,4) [14,15) [15,16): positions 224, 288, 992, 1056 (a one-block half: its centre)
//              scores 7, 1, 3, 2                                                  -> keep [2,3), [14,15)
//   result     candidates 2 and 14 = blocks 3 and 15.
// Key 700 (block 11) scores 10, higher than any, but no representative lands on it: HiP does not see it.
CraftedHead hand_worked_head() {
  CraftedHead h(22 * 64, 64, kDk);
  for (int32_t pos = 0; pos < h.n_k; ++pos) h.key(pos)[1] = 1.0f;  // orthogonal to the queries' direction
  const std::vector<std::pair<int32_t, float>> scores = {{193, 4}, {448, 1}, {704, 2}, {960, 3},  {128, 1}, {256, 5},
                                                         {896, 2}, {1024, 6}, {224, 7}, {288, 1}, {992, 3}, {1056, 2},
                                                         {700, 10}};
  for (const auto& [pos, s] : scores) h.key(pos)[0] = s;
  // A representative's score is the largest over the block's queries, not their mean: one query looks for
  // dimension 0, the 63 others away from it (a mean would rank the halves in reverse).
  for (int32_t i = 0; i < h.n_q; ++i) h.query(i)[0] = i == 5 ? 1.0f : -0.5f;
  return h;
}

TEST(SparsePrefillHip, TreeSearchHalvesAsWorkedByHand) {
  CraftedHead h = hand_worked_head();
  HeadSparseKeys keys;
  build_hip(h.view(), 512, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kHip);
  EXPECT_EQ(keys.first_qblock, 21);
  EXPECT_EQ(keys.n_qblocks, 1);
  EXPECT_EQ(selected_blocks(keys, 21), (std::vector<int32_t>{0, 3, 15, 17, 18, 19, 20, 21}));
  EXPECT_TRUE(keys.columns.empty());
}

TEST(SparsePrefillHip, FindsANeedleThroughLocality) {
  // 64 key blocks; the last is the query block. Scores fall off linearly within 1000 positions of key 2388
  // (block 37): HiP's premise, neighbouring keys scoring alike. The search (k = 2 over the 58 candidates 1 .. 58)
  // must end on block 37, the block of the highest-scoring keys.
  CraftedHead h(64 * 64, 64, kDk);
  for (int32_t pos = 0; pos < h.n_k; ++pos) {
    h.key(pos)[1] = 1.0f;
    h.key(pos)[0] = std::max(0.0f, 1.0f - static_cast<float>(std::abs(pos - 2388)) / 1000.0f);
  }
  for (int32_t i = 0; i < h.n_q; ++i) h.query(i)[0] = 4.0f;
  HeadSparseKeys keys;
  build_hip(h.view(), 512, keys);
  const std::vector<int32_t> blocks = selected_blocks(keys, 63);
  EXPECT_EQ(blocks.size(), 8u);
  EXPECT_NE(std::find(blocks.begin(), blocks.end(), 37), blocks.end()) << ::testing::PrintToString(blocks);
}

TEST(SparsePrefillHip, KeepsSinksAndLocalBlocksWithinTheBudget) {
  // Random queries and keys; a 1024-query chunk (query blocks 16 .. 31) over 2048 keys.
  CraftedHead h = random_head(2048, 1024, kDk, 7);
  const HeadQueriesKeys view = h.view();
  for (int32_t budget : {448, 500, 640, 1024, 2048, 4096}) {
    HeadSparseKeys keys;
    build_hip(view, budget, keys);
    ASSERT_EQ(keys.n_qblocks, 16);
    for (int32_t qb = 16; qb < 32; ++qb) {
      const std::vector<int32_t> blocks = selected_blocks(keys, qb);
      // Exactly the budget's blocks (or every causal block when they are fewer), none after the query block.
      EXPECT_EQ(static_cast<int32_t>(blocks.size()), std::min(qb + 1, budget / 64)) << budget << " " << qb;
      EXPECT_LE(blocks.back(), qb);
      for (int32_t kb : {0, qb - 4, qb - 3, qb - 2, qb - 1, qb}) EXPECT_TRUE(keys.block_selected(qb, kb)) << kb;
    }
  }
}

TEST(SparsePrefillHip, CoveringBudgetSelectsEveryCausalKey) {
  CraftedHead h = hand_worked_head();
  HeadSparseKeys keys;
  build_hip(h.view(), 22 * 64, keys);
  expect_every_causal_key(keys, 21 * 64, 22 * 64);
}

TEST(SparsePrefillHip, ParsesAndDescribes) {
  PrefillAttentionOptions o = parsed("hip");
  EXPECT_EQ(o.mode, PrefillAttention::kHip);
  EXPECT_EQ(o.budget, 2048);
  EXPECT_EQ(o.min_context, 4096);
  EXPECT_EQ(describe_prefill_attention(o), "hip(budget=2048, min_context=4096)");
  o = parsed("hip:budget=448:min_context=0");
  EXPECT_EQ(o.budget, 448);
  EXPECT_EQ(o.min_context, 0);
  // Each error names the spec and what is wrong with it.
  const std::vector<std::pair<const char*, const char*>> bad = {
      {"hip:budget=447", "448"},
      {"hip:bits=3", "bits"},
      {"hip:budget=x", "budget"},
      {"hipp", "dense, minference, moa, hip, hyper"}};
  for (const auto& [spec, names] : bad) expect_refused(spec, names);
  EXPECT_NE(prefill_attention_help().find("hip[:budget=N][:min_context=N]"), std::string::npos);
}

}  // namespace
}  // namespace longhaul::model
