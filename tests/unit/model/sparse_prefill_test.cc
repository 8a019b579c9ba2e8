// The index builders of sparse prefill (model/sparse_prefill.h) on crafted queries and keys, whose attention has a
// known shape: each selects what MInference's rule gives (Jiang et al., 2024: A-shape blocks; the top columns and
// diagonals of the last 64 queries' attention, with the reference implementation's 30 forced columns and 100 forced
// diagonals, taken as the key blocks they cross; the top blocks of mean-pooled Q . K), each selects every causal key when its budget covers them, and
// the run-time choice takes the pattern the crafted head follows. Also the --prefill-attn parser.
#include "model/sparse_prefill.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "tensor/half.h"

namespace longhaul::model {
namespace {

constexpr int32_t kDk = 128;
constexpr int32_t kKeys = 1024;      // 16 key blocks
constexpr int32_t kFirstPos = 768;   // the chunk: queries at 768 .. 1023 (query blocks 12 .. 15)
constexpr int32_t kQueries = kKeys - kFirstPos;

// Random unit-length rows (components N(0, 1/dk)): nearly orthogonal to each other at dk = 128.
std::vector<float> random_rows(int32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(kDk)));
  std::vector<float> v(static_cast<size_t>(n) * kDk);
  for (float& x : v) x = normal(rng);
  return v;
}

// Random unit rows with dimension 0 zero: orthogonal to u below, so that a query's score for a key it looks for is
// exact and the other keys' scores are small noise.
std::vector<float> unit_rows_without_dim0(int32_t n, uint32_t seed) {
  std::vector<float> v = random_rows(n, seed);
  for (int32_t i = 0; i < n; ++i) {
    float* row = v.data() + static_cast<int64_t>(i) * kDk;
    row[0] = 0.0f;
    double norm = 0.0;
    for (int32_t c = 0; c < kDk; ++c) norm += static_cast<double>(row[c]) * row[c];
    for (int32_t c = 0; c < kDk; ++c) row[c] = static_cast<float>(row[c] / std::sqrt(norm));
  }
  return v;
}

// A crafted head: keys and the chunk's queries as floats, given to the builders as f16 keys.
struct Head {
  std::vector<float> q = std::vector<float>(static_cast<size_t>(kQueries) * kDk, 0.0f);  // [kQueries, dk]
  std::vector<float> k = unit_rows_without_dim0(kKeys, 1);                              // [kKeys, dk]
  std::vector<uint16_t> k16;
  // [dk] the direction shared by the keys some queries look for: dimension 0, which no other key uses.
  std::vector<float> u = [] {
    std::vector<float> e(kDk, 0.0f);
    e[0] = 1.0f;
    return e;
  }();

  float* query(int32_t pos) { return q.data() + static_cast<int64_t>(pos - kFirstPos) * kDk; }
  float* key(int32_t pos) { return k.data() + static_cast<int64_t>(pos) * kDk; }
  HeadQueriesKeys view() {
    k16.resize(k.size());
    for (size_t i = 0; i < k.size(); ++i) k16[i] = tensor::f32_to_f16(k[i]);
    return {q.data(), kQueries, kFirstPos, k16.data(), kKeys, kDk};
  }
};

void add_scaled(float* dst, const float* src, float s) {
  for (int32_t c = 0; c < kDk; ++c) dst[c] += s * src[c];
}

// Vertical-slash head: every query looks for keys 200 and 500 (which are u) and for the key 333 positions behind it,
// with equal scores (16): each of the three takes about a third of every row.
Head vertical_slash_head() {
  Head h;
  std::copy(h.u.begin(), h.u.end(), h.key(200));
  std::copy(h.u.begin(), h.u.end(), h.key(500));
  for (int32_t t = kFirstPos; t < kKeys; ++t) {
    add_scaled(h.query(t), h.u.data(), 16.0f);
    add_scaled(h.query(t), h.key(t - 333), 16.0f);
  }
  return h;
}

// Scattered-columns head: eleven keys, each in a key block of its own (70, 134, ..., 710), are u, which every query
// looks for, besides the key 333 positions behind it: block-sparse's blocks cannot hold eleven columns and a
// diagonal at a budget of eight blocks, vertical-slash's columns and the diagonal's blocks can.
Head scattered_columns_head() {
  Head h;
  for (int32_t i = 0; i < 11; ++i) std::copy(h.u.begin(), h.u.end(), h.key(70 + 64 * i));
  for (int32_t t = kFirstPos; t < kKeys; ++t) {
    add_scaled(h.query(t), h.u.data(), 16.0f);
    add_scaled(h.query(t), h.key(t - 333), 16.0f);
  }
  return h;
}

// Block-sparse head: the keys of blocks 3 and 7 all carry u, which every query looks for.
Head block_head() {
  Head h;
  for (int32_t kb : {3, 7})
    for (int32_t j = kb * 64; j < kb * 64 + 64; ++j) add_scaled(h.key(j), h.u.data(), 1.0f);
  const std::vector<float> noise = random_rows(kQueries, 3);
  for (int32_t t = kFirstPos; t < kKeys; ++t) {
    add_scaled(h.query(t), noise.data() + static_cast<int64_t>(t - kFirstPos) * kDk, 1.0f);
    add_scaled(h.query(t), h.u.data(), 12.0f);
  }
  return h;
}

std::vector<int32_t> range(int32_t first, int32_t n) {
  std::vector<int32_t> v;
  for (int32_t i = 0; i < n; ++i) v.push_back(first + i);
  return v;
}

std::vector<int32_t> selected_blocks(const HeadSparseKeys& keys, int32_t qblock) {
  std::vector<int32_t> out;
  for (int32_t kb = 0; kb <= qblock; ++kb)
    if (keys.block_selected(qblock, kb)) out.push_back(kb);
  return out;
}

TEST(SparsePrefill, AShapeIsSinksAndLocalBlocks) {
  Head h;
  HeadSparseKeys keys;
  build_a_shape(h.view(), 1, 3, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kAShape);
  EXPECT_EQ(keys.first_qblock, 12);
  EXPECT_EQ(keys.n_qblocks, 4);
  EXPECT_EQ(selected_blocks(keys, 12), (std::vector<int32_t>{0, 10, 11, 12}));
  EXPECT_EQ(selected_blocks(keys, 15), (std::vector<int32_t>{0, 13, 14, 15}));
  EXPECT_TRUE(keys.columns.empty());
  EXPECT_TRUE(keys.diagonals.empty());
}

TEST(SparsePrefill, VerticalSlashTakesTheTopColumnsAndTheBlocksOfTheTopDiagonals) {
  Head h = vertical_slash_head();
  const HeadQueriesKeys view = h.view();
  std::vector<float> probs;
  last_query_attention(view, 64, probs);
  HeadSparseKeys keys;
  // 30 forced columns + the 2 strongest. The forced diagonals 0 .. 99 cross key blocks qb, qb - 1 and qb - 2 of
  // query block qb; the strongest other diagonal, 333 (320 < 333 < 384), crosses qb - 6 and qb - 5.
  build_vertical_slash(view, probs, 64, 32, 5, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kVerticalSlash);
  std::vector<int32_t> want_columns = range(0, 30);
  want_columns.insert(want_columns.end(), {200, 500});
  EXPECT_EQ(keys.columns, want_columns);
  EXPECT_TRUE(keys.diagonals.empty());
  for (int32_t qb = 12; qb <= 15; ++qb)
    EXPECT_EQ(selected_blocks(keys, qb), (std::vector<int32_t>{qb - 6, qb - 5, qb - 2, qb - 1, qb})) << qb;
  // Those lines hold nearly all of the last queries' attention.
  EXPECT_GT(last_query_recall(view, probs, 64, keys), 0.95);
  // One block fewer: diagonal 333 no longer fits, and a diagonal that crosses one new block takes the place.
  build_vertical_slash(view, probs, 64, 32, 4, keys);
  const std::vector<int32_t> blocks = selected_blocks(keys, 12);
  ASSERT_EQ(blocks.size(), 4u);
  EXPECT_EQ(std::vector<int32_t>(blocks.end() - 3, blocks.end()), (std::vector<int32_t>{10, 11, 12}));
  EXPECT_FALSE(keys.block_selected(12, 6) && keys.block_selected(12, 7));
  EXPECT_LT(last_query_recall(view, probs, 64, keys), 0.8);
}

TEST(SparsePrefill, LastQueryAttentionIsCausalSoftmax) {
  Head h = vertical_slash_head();
  const HeadQueriesKeys view = h.view();
  std::vector<float> probs;
  last_query_attention(view, 4, probs);
  for (int32_t r = 0; r < 4; ++r) {
    const int32_t q = kKeys - 4 + r;
    // Direct softmax in double over keys 0 .. q.
    std::vector<double> s(static_cast<size_t>(q) + 1);
    double mx = -INFINITY, sum = 0.0;
    for (int32_t j = 0; j <= q; ++j) {
      double dot = 0.0;
      for (int32_t c = 0; c < kDk; ++c)
        dot += static_cast<double>(h.query(q)[c]) * tensor::f16_to_f32(view.k[static_cast<int64_t>(j) * kDk + c]);
      s[static_cast<size_t>(j)] = dot;
      mx = std::max(mx, dot);
    }
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (int32_t j = 0; j < kKeys; ++j) {
      const double want = j <= q ? s[static_cast<size_t>(j)] / sum : 0.0;
      ASSERT_NEAR(probs[static_cast<size_t>(r) * kKeys + j], want, 1e-4) << "row " << r << " key " << j;
    }
  }
}

TEST(SparsePrefill, BlockSparseTakesTheTopPooledBlocksAndTheOwnBlock) {
  Head h = block_head();
  HeadSparseKeys keys;
  build_block_sparse(h.view(), 2, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kBlockSparse);
  for (int32_t qb = 12; qb <= 15; ++qb) EXPECT_EQ(selected_blocks(keys, qb), (std::vector<int32_t>{3, 7, qb})) << qb;
}

TEST(SparsePrefill, EveryBuilderWithAFullBudgetSelectsEveryCausalKey) {
  Head h = vertical_slash_head();
  const HeadQueriesKeys view = h.view();
  std::vector<float> probs;
  last_query_attention(view, 64, probs);
  HeadSparseKeys a, vs, bs;
  build_a_shape(view, 1, 16, a);
  build_vertical_slash(view, probs, 64, kKeys, kKeys, vs);
  build_block_sparse(view, 16, bs);
  for (const HeadSparseKeys* keys : {&a, &vs, &bs}) {
    for (int32_t q = kFirstPos; q < kKeys; ++q) {
      const kernels::SparseKeys s = keys->keys(q / 64);
      for (int32_t k = 0; k <= q; ++k)
        ASSERT_TRUE(kernels::sparse_key_selected(s, q, k)) << sparse_pattern_name(keys->pattern) << " " << q << " " << k;
    }
    EXPECT_NEAR(last_query_recall(view, probs, 64, *keys), 1.0, 1e-5) << sparse_pattern_name(keys->pattern);
  }
}

TEST(SparsePrefill, RecallCountsAKeyOnAColumnAndADiagonalOnce) {
  Head h = vertical_slash_head();
  const HeadQueriesKeys view = h.view();
  std::vector<float> probs;
  last_query_attention(view, 64, probs);
  // Every column and every diagonal: each causal key is on both, and the recall must still be 1.
  HeadSparseKeys keys;
  keys.pattern = SparsePattern::kVerticalSlash;
  keys.first_qblock = 12;
  keys.n_qblocks = 4;
  keys.columns = range(0, kKeys);
  keys.diagonals = range(0, kKeys);
  EXPECT_NEAR(last_query_recall(view, probs, 64, keys), 1.0, 1e-5);
}

TEST(SparsePrefill, RunTimeChoiceFollowsTheHeadsShape) {
  PrefillAttentionOptions options;
  options.mode = PrefillAttention::kMInference;
  options.budget = 512;  // 8 blocks, or 64 columns and the blocks of the diagonals: 7
  std::vector<float> probs;
  HeadSparseKeys keys;
  Head vs = scattered_columns_head();
  build_minference(vs.view(), options, probs, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kVerticalSlash) << keys.recall;
  EXPECT_GT(keys.recall, 0.95);
  Head bs = block_head();
  build_minference(bs.view(), options, probs, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kBlockSparse) << keys.recall;
  EXPECT_GT(keys.recall, 0.95);
  // A head that attends to its most recent keys only: the local band of A-shape holds it all, and A-shape wins
  // the tie with the other patterns (the cheapest to run).
  Head local;
  for (int32_t t = kFirstPos; t < kKeys; ++t) add_scaled(local.query(t), local.key(t - 1), 16.0f);
  build_minference(local.view(), options, probs, keys);
  EXPECT_GT(keys.recall, 0.95);
  EXPECT_EQ(keys.pattern, SparsePattern::kAShape) << keys.recall;
}

TEST(SparsePrefill, ParsesPrefillAttention) {
  Result<PrefillAttentionOptions> dense = parse_prefill_attention("dense");
  ASSERT_TRUE(dense.is_ok()) << dense.message();
  EXPECT_EQ(dense->mode, PrefillAttention::kDense);
  EXPECT_EQ(describe_prefill_attention(*dense), "dense");
  Result<PrefillAttentionOptions> m = parse_prefill_attention("minference");
  ASSERT_TRUE(m.is_ok()) << m.message();
  EXPECT_EQ(m->mode, PrefillAttention::kMInference);
  EXPECT_EQ(m->budget, 2048);
  EXPECT_EQ(m->min_context, 4096);
  EXPECT_EQ(describe_prefill_attention(*m), "minference(budget=2048, min_context=4096)");
  m = parse_prefill_attention("minference:budget=512:min_context=0");
  ASSERT_TRUE(m.is_ok()) << m.message();
  EXPECT_EQ(m->budget, 512);
  EXPECT_EQ(m->min_context, 0);
  for (const char* bad : {"sparse", "minference:budget=192", "minference:budget=x", "minference:window=3",
                          "dense:budget=512", "", "minference:min_context=-1"}) {
    Result<PrefillAttentionOptions> r = parse_prefill_attention(bad);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_NE(r.message().find("--prefill-attn"), std::string::npos) << r.message();
  }
}

}  // namespace
}  // namespace longhaul::model
