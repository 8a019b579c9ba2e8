// The index builders of sparse prefill (model/sparse_prefill.h) on crafted queries and keys, whose attention has a
// known shape: each selects what MInference's rule gives (Jiang et al., 2024: A-shape blocks; the top columns and
// diagonals of the last 64 queries' attention, with the reference implementation's 30 forced columns and 100 forced
// diagonals, taken as the key blocks they cross; the top blocks of mean-pooled Q . K), each selects every causal key when its budget covers them, and
// the head's assigned pattern is the one built (at the run-time budget), MoA's span rule in blocks, and a profile
// must fit the model. Also the --prefill-attn parser.
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
}

TEST(SparsePrefill, VerticalSlashTakesTheTopColumnsAndTheBlocksOfTheTopDiagonals) {
  Head h = vertical_slash_head();
  const HeadQueriesKeys view = h.view();
  std::vector<float> probs;
  last_query_attention(view, 64, probs);
  HeadSparseKeys keys;
  // 30 forced columns + the 2 strongest. The forced diagonals 0 .. 99 cross key blocks qb, qb - 1 and qb - 2 of
  // query block qb; the strongest other diagonal, 333 (320 < 333 < 384), crosses qb - 6 and qb - 5.
  build_vertical_slash(view, select_vertical_slash(view, probs, 64, 32, 5), keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kVerticalSlash);
  std::vector<int32_t> want_columns = range(0, 30);
  want_columns.insert(want_columns.end(), {200, 500});
  EXPECT_EQ(keys.columns, want_columns);
  for (int32_t qb = 12; qb <= 15; ++qb)
    EXPECT_EQ(selected_blocks(keys, qb), (std::vector<int32_t>{qb - 6, qb - 5, qb - 2, qb - 1, qb})) << qb;
  // Those lines hold nearly all of the last queries' attention.
  EXPECT_GT(last_query_recall(view, probs, 64, keys), 0.95);
  // One block fewer: diagonal 333 no longer fits, and a diagonal that crosses one new block takes the place.
  build_vertical_slash(view, select_vertical_slash(view, probs, 64, 32, 4), keys);
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
  build_vertical_slash(view, select_vertical_slash(view, probs, 64, kKeys, kKeys), vs);
  build_block_sparse(view, 16, bs);
  for (const HeadSparseKeys* keys : {&a, &vs, &bs}) {
    for (int32_t q = kFirstPos; q < kKeys; ++q) {
      const kernels::SparseKeys s = keys->keys(q / 64);
      for (int32_t k = 0; k <= q; ++k)
        ASSERT_TRUE(kernels::sparse_key_selected(s, k)) << sparse_pattern_name(keys->pattern) << " " << q << " " << k;
    }
    EXPECT_NEAR(last_query_recall(view, probs, 64, *keys), 1.0, 1e-5) << sparse_pattern_name(keys->pattern);
  }
}

TEST(SparsePrefill, RecallCountsAKeyOnAColumnAndInABlockOnce) {
  Head h = vertical_slash_head();
  const HeadQueriesKeys view = h.view();
  std::vector<float> probs;
  last_query_attention(view, 64, probs);
  // Every column and every causal key block: each causal key is in both, and the recall must still be 1.
  HeadSparseKeys keys;
  keys.reset_blocks(view, SparsePattern::kVerticalSlash);
  for (int32_t qb = keys.first_qblock; qb < keys.first_qblock + keys.n_qblocks; ++qb)
    for (int32_t kb = 0; kb <= qb; ++kb) keys.select_block(qb, kb);
  keys.columns = range(0, kKeys);
  EXPECT_NEAR(last_query_recall(view, probs, 64, keys), 1.0, 1e-5);
  // Half the columns and no block: the recall is the mass on those columns alone.
  keys.reset_blocks(view, SparsePattern::kVerticalSlash);
  keys.columns = range(0, kKeys / 2);
  double want = 0.0;
  for (int32_t r = 0; r < 64; ++r)
    for (int32_t k = 0; k < kKeys / 2; ++k) want += probs[static_cast<size_t>(r) * kKeys + k];
  EXPECT_NEAR(last_query_recall(view, probs, 64, keys), want / 64, 1e-5);
}

// A profile of one layer whose heads have the given assignments (head h = assigned[h]).
std::shared_ptr<kv::HeadProfile> one_layer_profile(const std::vector<kv::HeadPrefill>& assigned, int32_t budget) {
  auto p = std::make_shared<kv::HeadProfile>();
  p->model = "tiny.gguf";
  p->n_layer = 1;
  p->n_head = static_cast<int32_t>(assigned.size());
  p->n_head_kv = 1;
  p->prefill = assigned;
  for (kv::HeadPrefill& e : p->prefill) e.listed = true;
  p->prefill_budget = budget;
  p->prefill_density = 0.5f;
  return p;
}

kv::HeadPrefill assigned(SparsePattern pattern, int32_t n_columns = 0) {
  kv::HeadPrefill e;
  e.listed = true;
  e.pattern = pattern;
  e.n_columns = n_columns;
  e.recall = 0.75f;
  return e;
}

TEST(SparsePrefill, AssignedPatternIsTheOnlyOneBuilt) {
  PrefillAttentionOptions options;
  options.mode = PrefillAttention::kMInference;
  options.budget = 192;  // 3 blocks
  options.profile = one_layer_profile({assigned(SparsePattern::kAShape)}, 1024);
  std::vector<float> probs;
  HeadSparseKeys keys;
  // The block head's pooled score would pick blocks 3 and 7; assigned A-shape, it gets the sinks and local band.
  Head bs = block_head();
  build_assigned_pattern(bs.view(), options, assigned(SparsePattern::kAShape), probs, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kAShape);
  EXPECT_EQ(selected_blocks(keys, 12), (std::vector<int32_t>{0, 11, 12}));
  EXPECT_FLOAT_EQ(static_cast<float>(keys.recall), 0.75f);
  build_assigned_pattern(bs.view(), options, assigned(SparsePattern::kBlockSparse), probs, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kBlockSparse);
  EXPECT_EQ(selected_blocks(keys, 13), (std::vector<int32_t>{3, 7, 13}));
  // Vertical-slash: 512 of the profile's 1024 keys were columns, so half of 640 here (320), and the rest the key
  // blocks of 5 diagonal offsets: the forced 0, 1, 2 and diagonal 333's 5 and 6.
  options.budget = 640;
  // the indices still come from the chunk's last 64 queries.
  Head vs = vertical_slash_head();
  build_assigned_pattern(vs.view(), options, assigned(SparsePattern::kVerticalSlash, 512), probs, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kVerticalSlash);
  EXPECT_EQ(keys.columns.size(), 320u);
  EXPECT_TRUE(std::binary_search(keys.columns.begin(), keys.columns.end(), 200));
  EXPECT_TRUE(std::binary_search(keys.columns.begin(), keys.columns.end(), 500));
  EXPECT_EQ(selected_blocks(keys, 12), (std::vector<int32_t>{6, 7, 10, 11, 12}));
  // The split keeps the 30 forced columns and the forced diagonals' 3 blocks.
  EXPECT_EQ(vertical_slash_columns(256, 1, 1024), 30);
  EXPECT_EQ(vertical_slash_columns(256, 1024, 1024), 64);
  EXPECT_EQ(vertical_slash_blocks(256, 64), 3);
  EXPECT_EQ(vertical_slash_blocks(2048, 256), 28);
  EXPECT_EQ(vertical_slash_columns(2048, 256, 2048), 256);
}

TEST(SparsePrefill, HeadBelowMinRecallGetsEveryCausalKey) {
  PrefillAttentionOptions options;
  options.mode = PrefillAttention::kMInference;
  options.budget = 192;  // 3 blocks
  options.min_recall = 0.9f;
  std::vector<float> probs;
  HeadSparseKeys keys;
  Head bs = block_head();
  kv::HeadPrefill low = assigned(SparsePattern::kBlockSparse);
  low.recall = 0.6f;
  EXPECT_TRUE(head_reads_no_rows(options, low));
  // Positions only, as the plan passes them for such a head.
  const HeadQueriesKeys view = bs.view();
  const HeadQueriesKeys positions{nullptr, view.n_q, view.first_pos, nullptr, view.n_k, view.dk};
  build_assigned_pattern(positions, options, low, probs, keys);
  for (int32_t q = view.first_pos; q < view.first_pos + view.n_q; ++q) {
    const kernels::SparseKeys s = keys.keys(q / 64);
    for (int32_t k = 0; k <= q; ++k) ASSERT_TRUE(kernels::sparse_key_selected(s, k)) << q << " " << k;
  }
  EXPECT_FLOAT_EQ(static_cast<float>(keys.recall), 0.6f);
  // At or above the threshold the assigned pattern stands (the top pooled blocks 3 and 7 and the own block).
  kv::HeadPrefill high = assigned(SparsePattern::kBlockSparse);
  high.recall = 0.9f;
  EXPECT_FALSE(head_reads_no_rows(options, high));
  build_assigned_pattern(bs.view(), options, high, probs, keys);
  EXPECT_EQ(selected_blocks(keys, 13), (std::vector<int32_t>{3, 7, 13}));
  EXPECT_TRUE(head_reads_no_rows(options, assigned(SparsePattern::kAShape)));
}

TEST(SparsePrefill, MoaSpanIsAlphaPlusBetaNInBlocks) {
  kv::HeadPrefill e;
  e.moa_alpha = 100.0f;
  e.moa_beta = 0.125f;
  EXPECT_EQ(moa_span(e, 1024), 228);  // 100 + 128
  EXPECT_EQ(moa_span(e, 0), 1);       // at least one token
  e.moa_beta = 1.0f;
  EXPECT_EQ(moa_span(e, 1024), 1024);  // never past the input
  // 228 tokens: ceil(228 / 64) = 4 key blocks up to the query's own, and the sink block.
  e.moa_beta = 0.125f;
  HeadSparseKeys keys;
  const HeadQueriesKeys chunk{nullptr, kQueries, kFirstPos, nullptr, kKeys, kDk};
  build_moa(chunk, e, keys);
  EXPECT_EQ(keys.pattern, SparsePattern::kAShape);
  EXPECT_EQ(selected_blocks(keys, 12), (std::vector<int32_t>{0, 9, 10, 11, 12}));
  EXPECT_EQ(selected_blocks(keys, 15), (std::vector<int32_t>{0, 12, 13, 14, 15}));
  // A span of the whole input selects every causal block.
  e.moa_alpha = 0.0f;
  e.moa_beta = 1.0f;
  build_moa(chunk, e, keys);
  EXPECT_EQ(selected_blocks(keys, 15), range(0, 16));
}

TEST(SparsePrefill, ProfileMustFitTheModel) {
  ModelConfig cfg;
  cfg.n_layer = 1;
  cfg.n_head = 2;
  cfg.n_head_kv = 1;
  PrefillAttentionOptions options;
  EXPECT_TRUE(check_prefill_profile(options, cfg, "tiny.gguf").is_ok());  // dense needs none
  options.mode = PrefillAttention::kMInference;
  Status st = check_prefill_profile(options, cfg, "tiny.gguf");
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("longhaul calibrate-prefill"), std::string::npos) << st.message();
  options.profile = one_layer_profile({assigned(SparsePattern::kAShape), assigned(SparsePattern::kBlockSparse)}, 1024);
  EXPECT_TRUE(check_prefill_profile(options, cfg, "tiny.gguf").is_ok());
  st = check_prefill_profile(options, cfg, "other.gguf");
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("is for tiny.gguf of 1 layers x 2 heads, not other.gguf"), std::string::npos)
      << st.message();
  cfg.n_head = 4;
  cfg.n_head_kv = 2;
  EXPECT_FALSE(check_prefill_profile(options, cfg, "tiny.gguf").is_ok());
  cfg.n_head = 2;
  cfg.n_head_kv = 1;
  auto partial = std::make_shared<kv::HeadProfile>(*options.profile);
  partial->prefill[1].listed = false;
  options.profile = partial;
  st = check_prefill_profile(options, cfg, "tiny.gguf");
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("lacks layer 0 head 1"), std::string::npos) << st.message();
  // A sliding-window layer needs no line.
  cfg.layer_is_local = {1};
  EXPECT_TRUE(check_prefill_profile(options, cfg, "tiny.gguf").is_ok());
  cfg.layer_is_local.clear();
  // moa: the density must be the one the spans were chosen under.
  options.mode = PrefillAttention::kMoA;
  options.profile = one_layer_profile({assigned(SparsePattern::kAShape), assigned(SparsePattern::kAShape)}, 1024);
  options.density = 0.5f;
  EXPECT_TRUE(check_prefill_profile(options, cfg, "tiny.gguf").is_ok());
  options.density = 0.25f;
  st = check_prefill_profile(options, cfg, "tiny.gguf");
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("chosen for density 0.5, not 0.25"), std::string::npos) << st.message();
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
  EXPECT_EQ(m->min_recall, 0.0f);
  m = parse_prefill_attention("minference:min_recall=0.9");
  ASSERT_TRUE(m.is_ok()) << m.message();
  EXPECT_FLOAT_EQ(m->min_recall, 0.9f);
  EXPECT_EQ(describe_prefill_attention(*m), "minference(budget=2048, min_context=4096, min_recall=0.9)");
  Result<PrefillAttentionOptions> moa = parse_prefill_attention("moa");
  ASSERT_TRUE(moa.is_ok()) << moa.message();
  EXPECT_EQ(moa->mode, PrefillAttention::kMoA);
  EXPECT_FLOAT_EQ(moa->density, 0.5f);
  EXPECT_EQ(describe_prefill_attention(*moa), "moa(density=0.5, min_context=4096)");
  moa = parse_prefill_attention("moa:density=0.25:min_context=0");
  ASSERT_TRUE(moa.is_ok()) << moa.message();
  EXPECT_FLOAT_EQ(moa->density, 0.25f);
  EXPECT_EQ(moa->min_context, 0);
  for (const char* bad :
       {"sparse", "minference:budget=192", "minference:budget=x", "minference:window=3", "dense:budget=512", "",
        "minference:min_context=-1", "moa:density=0", "moa:density=1.5", "moa:budget=512", "minference:density=0.5",
        "minference:min_recall=1.5", "minference:min_recall=-0.1", "hip:min_recall=0.5"}) {
    Result<PrefillAttentionOptions> r = parse_prefill_attention(bad);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_NE(r.message().find("--prefill-attn"), std::string::npos) << r.message();
  }
}

}  // namespace
}  // namespace longhaul::model
