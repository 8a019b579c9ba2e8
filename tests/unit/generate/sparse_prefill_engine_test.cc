// Sparse prefill (--prefill-attn minference|moa|hip|hyper, model/sparse_prefill.h) through the engine on the real
// models, with a prefill section made in the test for minference and moa: with a budget (or MoA spans) that covers
// every key the logits are dense prefill's; a small budget or narrow spans move the prompt's logits (the sparse path
// is really taken); below min_context the prefill is dense bit for bit; a sequence whose profile does not fit is
// refused; and the dense tail -- the last 64 queries before a token that returns logits -- is exact: on a one-layer
// copy of SmolLM2, where a token's logits depend only on its own attention row over keys no attention changed, the
// last 64 tokens' logits equal dense prefill's bit for bit.
#include <gtest/gtest.h>

#include "engine_testing.h"
#include "testing/cut_model.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

constexpr int32_t kPrompt = 600;

// A prefill section for `model` made in the test: the global layers' heads take A-shape, vertical-slash (a quarter
// of the budget as columns) and block-sparse in turn, so that every builder runs, and MoA's rule
// span = moa_alpha + moa_beta * N for every head, chosen (as far as the check reads it) under `density`.
std::shared_ptr<kv::HeadProfile> test_profile(const model::Model& model, float moa_alpha, float moa_beta,
                                              float density) {
  const model::ModelConfig& cfg = model.config();
  auto p = std::make_shared<kv::HeadProfile>();
  const std::string& path = model.file().path();
  p->model = path.substr(path.find_last_of('/') + 1);
  p->n_layer = cfg.n_layer;
  p->n_head_kv = cfg.n_head_kv;
  p->n_head = cfg.n_head;
  p->prefill_budget = 2048;
  p->prefill_density = density;
  p->prefill.resize(static_cast<size_t>(cfg.n_layer) * cfg.n_head);
  const kv::PrefillPattern turn[] = {kv::PrefillPattern::kAShape, kv::PrefillPattern::kVerticalSlash,
                                     kv::PrefillPattern::kBlockSparse};
  for (int32_t il = 0; il < cfg.n_layer; ++il)
    for (int32_t h = 0; h < cfg.n_head; ++h) {
      kv::HeadPrefill& e = p->prefill[static_cast<size_t>(il) * cfg.n_head + h];
      e.listed = !cfg.is_local(il);
      e.pattern = turn[(il + h) % 3];
      e.n_columns = e.pattern == kv::PrefillPattern::kVerticalSlash ? 512 : 0;
      e.moa_alpha = moa_alpha;
      e.moa_beta = moa_beta;
    }
  return p;
}

// All logits [n, n_vocab] of feeding `tokens` to a new sequence with prefill attention `prefill` (as written for
// --prefill-attn, with the test's profile: MoA's span moa_alpha + moa_beta * N), in chunks of the engine's n_batch.
std::vector<float> prompt_logits(Engine& engine, const std::string& prefill, const std::vector<int32_t>& tokens,
                                 float moa_alpha = 0.0f, float moa_beta = 1.0f) {
  SequenceOptions so;
  Result<model::PrefillAttentionOptions> parsed = model::parse_prefill_attention(prefill);
  EXPECT_TRUE(parsed.is_ok()) << parsed.message();
  if (!parsed.is_ok()) return {};
  so.prefill_attn = *parsed;
  if (parsed->mode == model::PrefillAttention::kMInference || parsed->mode == model::PrefillAttention::kMoA)
    so.prefill_attn.profile = test_profile(engine.model(), moa_alpha, moa_beta, parsed->density);
  Result<kv::SeqId> seq = engine.add_sequence(so);
  EXPECT_TRUE(seq.is_ok()) << seq.message();
  if (!seq.is_ok()) return {};
  std::vector<float> last, all;
  const Status st = engine.feed(*seq, tokens, &last, &all);
  EXPECT_TRUE(st.is_ok()) << st.message();
  engine.remove(*seq);
  return all;
}

// Rows [first, first + n) of all-logits.
std::span<const float> rows(const std::vector<float>& all, int32_t n_vocab, int32_t first, int32_t n) {
  return std::span<const float>(all).subspan(static_cast<size_t>(first) * n_vocab, static_cast<size_t>(n) * n_vocab);
}

class SparsePrefillEngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const bool smollm = std::string(GetParam()) == "SmolLM2";
    model_ = shared_model(smollm ? longhaul::testing::smollm2_path() : longhaul::testing::gemma3_path());
    if (model_ == nullptr) GTEST_SKIP() << GetParam() << " is not installed";
  }
  const model::Model* model_ = nullptr;
  ThreadPool pool_{2};
};

TEST_P(SparsePrefillEngineTest, CoveringBudgetGivesDenseLogits) {
  // Chunks of 256, 256 and 88 tokens: every chunk past the dense tail's 64 queries takes the sparse path.
  auto engine = make_engine(*model_, pool_, 1024, 256);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> tokens = some_tokens(kPrompt, 3);
  const std::vector<float> dense = prompt_logits(*engine, "dense", tokens);
  // A budget past every key, and MoA spans of the whole input (span = N): every causal key block is selected.
  // And minference at the 256 keys that move the logits (SmallBudgetTakesTheSparsePath) with min_recall=1: every
  // head of the test's profile (recall 0) is kept dense.
  for (const char* spec : {"minference:budget=16777216:min_context=0", "moa:density=1:min_context=0",
                           "hip:budget=16777216:min_context=0", "hyper:budget=16777216:min_context=0",
                           "minference:budget=256:min_context=0:min_recall=1"}) {
    SCOPED_TRACE(spec);
    const std::vector<float> sparse = prompt_logits(*engine, spec, tokens, 0.0f, 1.0f);
    ASSERT_EQ(dense.size(), sparse.size());
    // Every key is selected, so each query sums the same keys in the same kernel blocks: the logits agree far
    // inside the engine's tolerance (in practice bit for bit).
    EXPECT_LE(max_abs_diff(dense, sparse), 1e-4f);
  }
}

TEST(SparsePrefillProfile, SequenceWithoutAFittingProfileIsRefused) {
  const model::Model* m = shared_model(longhaul::testing::smollm2_path());
  if (m == nullptr) GTEST_SKIP() << "SmolLM2 is not installed";
  ThreadPool pool(2);
  auto engine = make_engine(*m, pool, 1024, 256);
  ASSERT_NE(engine, nullptr);
  SequenceOptions so;
  so.prefill_attn = *model::parse_prefill_attention("minference");
  Result<kv::SeqId> seq = engine->add_sequence(so);
  ASSERT_FALSE(seq.is_ok());
  EXPECT_NE(seq.message().find("longhaul calibrate-prefill"), std::string::npos) << seq.message();
  auto other = test_profile(*m, 0.0f, 1.0f, 0.5f);
  other->model = "another.gguf";
  so.prefill_attn.profile = other;
  seq = engine->add_sequence(so);
  ASSERT_FALSE(seq.is_ok());
  EXPECT_NE(seq.message().find("is for another.gguf"), std::string::npos) << seq.message();
}

TEST_P(SparsePrefillEngineTest, SmallBudgetTakesTheSparsePath) {
  auto engine = make_engine(*model_, pool_, 1024, 256);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> tokens = some_tokens(kPrompt, 4);
  const int32_t n_vocab = model_->config().n_vocab;
  const std::vector<float> dense = prompt_logits(*engine, "dense", tokens);
  // Chunks 0..255, 256..511 and 512..599, each sparse up to its last 64 tokens (every token returns logits here).
  // minference at 256 keys: at query block 5 (320 .. 383) every pattern's 4 blocks leave keys out. MoA with 64-token
  // spans: the sink block and the query's own, so the first two blocks' queries see every earlier key. hip at 448
  // keeps block 0 and the 5 blocks up to the query's and searches 1 of the rest: only the third chunk's sparse rows
  // (512 .. 535, query block 8, candidates 1 .. 3) drop keys. hyper at 320 with 64 samples keeps block 0, the own
  // block, 2 hashed blocks and 64 columns: the second chunk's sparse rows (256 .. 447, query blocks 4 .. 6) drop keys.
  struct Case {
    const char* spec;
    int32_t n_exact;               // leading queries that see every key they may
    int32_t first_moved, n_moved;  // rows that must move
  };
  for (const Case& c : {Case{"minference:budget=256:min_context=0", 64, 320, 64},
                        Case{"moa:density=0.1:min_context=0", 128, 256, 64},
                        Case{"hip:budget=448:min_context=0", 64, 512, 24},
                        Case{"hyper:budget=320:samples=64:min_context=0", 64, 256, 192}}) {
    SCOPED_TRACE(c.spec);
    const std::vector<float> sparse = prompt_logits(*engine, c.spec, tokens, 64.0f, 0.0f);
    ASSERT_EQ(dense.size(), sparse.size());
    for (float x : sparse) ASSERT_TRUE(std::isfinite(x));
    EXPECT_TRUE(bit_identical(rows(dense, n_vocab, 0, c.n_exact), rows(sparse, n_vocab, 0, c.n_exact)));
    const float moved = max_abs_diff(rows(dense, n_vocab, c.first_moved, c.n_moved),
                                     rows(sparse, n_vocab, c.first_moved, c.n_moved));
    EXPECT_GT(moved, 1e-2f);
  }
}

TEST_P(SparsePrefillEngineTest, ShortContextStaysDense) {
  auto engine = make_engine(*model_, pool_, 1024, 256);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> tokens = some_tokens(kPrompt, 5);
  const std::vector<float> dense = prompt_logits(*engine, "dense", tokens);
  // min_context past the prompt's length: every chunk is dense.
  const std::vector<float> below = prompt_logits(*engine, "minference:budget=256:min_context=601", tokens);
  EXPECT_TRUE(bit_identical(dense, below));
}

INSTANTIATE_TEST_SUITE_P(DefaultModels, SparsePrefillEngineTest, ::testing::Values("SmolLM2", "Gemma3"));

TEST(SparsePrefillDenseTail, LastQueriesAreExactlyDense) {
  if (!longhaul::testing::file_exists(longhaul::testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 is not installed";
  // SmolLM2 with its first layer only.
  const longhaul::testing::CutModel one(longhaul::testing::smollm2_path(), 1);
  ASSERT_NE(one.get(), nullptr);
  ASSERT_EQ(one.get()->config().n_layer, 1);
  ThreadPool pool(2);
  // One chunk of 400 tokens: queries 0 .. 335 sparse, 336 .. 399 the dense tail.
  auto engine = make_engine(*one.get(), pool, 1024, 512);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> tokens = some_tokens(400, 6);
  const int32_t n_vocab = one.get()->config().n_vocab;
  const std::vector<float> dense = prompt_logits(*engine, "dense", tokens);
  const std::vector<float> sparse = prompt_logits(*engine, "minference:budget=256:min_context=0", tokens);
  ASSERT_EQ(dense.size(), sparse.size());
  EXPECT_TRUE(bit_identical(rows(dense, n_vocab, 336, 64), rows(sparse, n_vocab, 336, 64)));
  // The rows before the tail did drop keys (else the equality above would say nothing).
  EXPECT_GT(max_abs_diff(rows(dense, n_vocab, 200, 136), rows(sparse, n_vocab, 200, 136)), 1e-3f);
}

}  // namespace
}  // namespace longhaul::generate
