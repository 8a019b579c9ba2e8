// --prefill-attn hyper (model/sparse_prefill_hyper.h) on crafted queries and keys: with two clusters that every
// hyperplane through the origin separates (keys +u and -u), a query block's hashed blocks are the blocks of its
// own cluster, ranked by how many of their keys share its bucket (HyperAttention, Han et al., 2023: the large
// entries are the ones whose query and key collide under the angular hash); the sampled columns are distinct,
// uniform and seeded; the budget holds; a covering budget selects every key; and the parser.
#include "model/sparse_prefill_hyper.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

#include "sparse_prefill_testing.h"

namespace longhaul::model {
namespace {

using namespace sparse_prefill_testing;

constexpr int32_t kDk = 32;

PrefillAttentionOptions hyper_options(int32_t budget, int32_t bits, int32_t samples) {
  PrefillAttentionOptions o;
  o.mode = PrefillAttention::kHyper;
  o.budget = budget;
  o.lsh_bits = bits;
  o.n_samples = samples;
  return o;
}

// 18 key blocks; the chunk is query blocks 16 (its queries point along +u) and 17 (along -u). Keys are +u (cluster
// A) or -u (cluster B): every hyperplane puts +u and -u on opposite sides, so A keys share exactly the bucket of
// the A queries and B keys that of the B queries, whatever the hyperplanes. A keys per block: 64 in block 2, 48 in
// 5, 32 in 9, 16 in 13, 8 in 7; every other key is B.
CraftedHead two_cluster_head() {
  CraftedHead h(18 * 64, 128, kDk);
  const std::vector<std::pair<int32_t, int32_t>> a_keys = {{2, 64}, {5, 48}, {9, 32}, {13, 16}, {7, 8}};
  for (int32_t pos = 0; pos < h.n_k; ++pos) h.key(pos)[0] = -1.0f;
  for (const auto& [kb, n] : a_keys)
    for (int32_t j = 0; j < n; ++j) h.key(kb * 64 + 3 * j % 64)[0] = 1.0f;  // spread over the block
  for (int32_t i = 0; i < 128; ++i) h.query(i)[0] = i < 64 ? 2.0f : -2.0f;
  return h;
}

TEST(SparsePrefillHyper, QueryBlocksTakeTheBlocksOfTheirCluster) {
  CraftedHead h = two_cluster_head();
  const HeadQueriesKeys view = h.view();
  // Budget 320 without samples: 5 blocks, of them block 0 and the own block, so 3 hashed ones.
  for (int32_t bits : {1, 7, 16}) {
    HeadSparseKeys keys;
    build_hyper(view, hyper_options(320, bits, 0), 0, keys);
    EXPECT_EQ(keys.pattern, SparsePattern::kHyper);
    ASSERT_EQ(keys.first_qblock, 16);
    ASSERT_EQ(keys.n_qblocks, 2);
    // Cluster A: the three blocks with the most A keys (64, 48 and 32 of them), not 13 (16) nor 7 (8).
    EXPECT_EQ(selected_blocks(keys, 16), (std::vector<int32_t>{0, 2, 5, 9, 16})) << bits;
    // Cluster B: the all-B blocks tie at 64 B keys each; the nearest ones win (block 16 holds the A queries'
    // positions but B keys).
    EXPECT_EQ(selected_blocks(keys, 17), (std::vector<int32_t>{0, 14, 15, 16, 17})) << bits;
    EXPECT_TRUE(keys.columns.empty());
  }
}

TEST(SparsePrefillHyper, SampledColumnsAreDistinctUniformAndSeeded) {
  CraftedHead h = random_head(4096, 256, kDk, 11);
  const HeadQueriesKeys view = h.view();
  HeadSparseKeys a, b, other;
  build_hyper(view, hyper_options(1024, 7, 256), 3, a);
  build_hyper(view, hyper_options(1024, 7, 256), 3, b);
  build_hyper(view, hyper_options(1024, 7, 256), 4, other);
  ASSERT_EQ(a.columns.size(), 256u);
  EXPECT_TRUE(std::adjacent_find(a.columns.begin(), a.columns.end(), std::greater_equal<int32_t>()) == a.columns.end())
      << "not strictly ascending";
  EXPECT_GE(a.columns.front(), 0);
  EXPECT_LT(a.columns.back(), 4096);
  // Uniform over the context: 64 expected per quarter (standard deviation about 7).
  for (int32_t quarter = 0; quarter < 4; ++quarter) {
    const auto n = std::count_if(a.columns.begin(), a.columns.end(), [&](int32_t c) { return c / 1024 == quarter; });
    EXPECT_GT(n, 40) << quarter;
    EXPECT_LT(n, 90) << quarter;
  }
  // Deterministic for one stream (blocks too); another stream (another head or layer) draws another sample.
  EXPECT_EQ(a.columns, b.columns);
  EXPECT_EQ(a.blocks, b.blocks);
  EXPECT_NE(a.columns, other.columns);
  EXPECT_EQ(a.blocks, other.blocks);  // the hash does not depend on the stream
}

TEST(SparsePrefillHyper, BudgetHolds) {
  CraftedHead h = random_head(2048, 1024, kDk, 5);  // query blocks 16 .. 31
  const HeadQueriesKeys view = h.view();
  const std::vector<std::pair<int32_t, int32_t>> cases = {{192, 0}, {448, 256}, {1000, 100}, {2048, 0}};
  for (const auto& [budget, samples] : cases) {
    HeadSparseKeys keys;
    build_hyper(view, hyper_options(budget, 7, samples), 0, keys);
    EXPECT_EQ(static_cast<int32_t>(keys.columns.size()), samples);
    for (int32_t qb = 16; qb < 32; ++qb) {
      const std::vector<int32_t> blocks = selected_blocks(keys, qb);
      EXPECT_EQ(static_cast<int32_t>(blocks.size()), std::min(qb + 1, (budget - samples) / 64)) << budget << " " << qb;
      EXPECT_TRUE(keys.block_selected(qb, 0));
      EXPECT_TRUE(keys.block_selected(qb, qb));
      EXPECT_LE(blocks.back(), qb);
    }
  }
}

TEST(SparsePrefillHyper, CoveringBudgetSelectsEveryCausalKey) {
  CraftedHead h = random_head(1024, 256, kDk, 9);
  HeadSparseKeys keys;
  build_hyper(h.view(), hyper_options(1024 + 256, 7, 256), 0, keys);
  expect_every_causal_key(keys, 768, 1024);
}

TEST(SparsePrefillHyper, ParsesAndDescribes) {
  PrefillAttentionOptions o = parsed("hyper");
  EXPECT_EQ(o.mode, PrefillAttention::kHyper);
  EXPECT_EQ(o.budget, 2048);
  EXPECT_EQ(o.lsh_bits, 7);
  EXPECT_EQ(o.n_samples, 256);
  EXPECT_EQ(describe_prefill_attention(o), "hyper(budget=2048, min_context=4096, bits=7, samples=256)");
  o = parsed("hyper:budget=320:min_context=0:bits=16:samples=128");
  EXPECT_EQ(o.budget, 320);
  EXPECT_EQ(o.min_context, 0);
  EXPECT_EQ(o.lsh_bits, 16);
  EXPECT_EQ(o.n_samples, 128);
  // Each error names the spec and what is wrong with it: the budget's floor follows the samples (samples + 192).
  const std::vector<std::pair<const char*, const char*>> bad = {{"hyper:bits=0", "bits"},
                                                                {"hyper:bits=17", "16"},
                                                                {"hyper:budget=447", "448"},
                                                                {"hyper:budget=512:samples=400", "592"},
                                                                {"hyper:samples=-1", "samples"},
                                                                {"hyper:window=3", "window"}};
  for (const auto& [spec, names] : bad) expect_refused(spec, names);
  EXPECT_NE(prefill_attention_help().find("hyper[:budget=N][:min_context=N][:bits=N][:samples=N]"), std::string::npos);
}

}  // namespace
}  // namespace longhaul::model
