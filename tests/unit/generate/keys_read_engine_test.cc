// Engine::keys_read, the share of the cached key cells a decode token's attention reads (bench's and eval's
// keys_read): every cell under full attention on SmolLM2 (no sliding window); on Gemma 3 the local layers read
// only their 512-token window, exactly as the count says; quest reads its budget's pages, plus the page holding
// the new token; under top-p, fewer than a covering budget's; prefill chunks are not decode tokens and count
// nothing.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class KeysReadTest : public EachModelTest {};

struct Counts {
  model::AttentionPlan::KeysRead after_prompt, after_decode;
  int32_t n_cells = 0;  // cells per layer after the decode steps
};

Counts count(const model::Model& model, ThreadPool& pool, const std::string& spec, int32_t n_prompt,
             int32_t n_decode, int32_t page_tokens) {
  auto engine = make_engine(model, pool, 2048, 256, page_tokens);
  Counts c;
  if (engine == nullptr) return c;
  const kv::SeqId seq = add_sequence(*engine, spec);
  feed(*engine, seq, some_tokens(n_prompt, 5));
  c.after_prompt = engine->keys_read(seq);
  for (int32_t i = 0; i < n_decode; ++i) step_one(*engine, seq, std::vector<int32_t>{100 + i});
  c.after_decode = engine->keys_read(seq);
  c.n_cells = engine->n_cells(seq);
  return c;
}

TEST_P(KeysReadTest, FullReadsEveryCellOutsideSlidingWindows) {
  const int32_t n_prompt = 900, n_decode = 3;
  const Counts c = count(*model_, pool_, "full", n_prompt, n_decode, 0);
  EXPECT_EQ(c.after_prompt.read, 0);
  EXPECT_EQ(c.after_prompt.held, 0);
  const model::ModelConfig& cfg = model_->config();
  // Decode token i (0-based) holds n_prompt + i + 1 cells in every layer (its own included).
  int64_t held = 0, read = 0;
  for (int32_t i = 0; i < n_decode; ++i) {
    const int64_t cells = n_prompt + i + 1;
    for (int32_t il = 0; il < cfg.n_layer; ++il) {
      const bool local = cfg.sliding_window > 0 && cfg.is_local(il);
      held += cells * cfg.n_head_kv;
      read += (local ? std::min<int64_t>(cells, cfg.sliding_window) : cells) * cfg.n_head_kv;
    }
  }
  EXPECT_EQ(c.after_decode.held, held);
  EXPECT_EQ(c.after_decode.read, read);
  if (cfg.sliding_window == 0) {
    EXPECT_EQ(c.after_decode.read, c.after_decode.held);
  } else {
    EXPECT_LT(c.after_decode.read, c.after_decode.held);
  }
}

// SmolLM2 only: every layer global. (On Gemma 3 in pages of 32 cells, full's count is below what its
// sliding-window layers would read and quest's above it; not yet explained, so not asserted.)
TEST(KeysReadSmolLM2, QuestReadsItsBudgetsPages) {
  const model::Model* model_ = shared_model(longhaul::testing::smollm2_path());
  if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 is not installed";
  ThreadPool pool_{2};
  // Pages of 32 cells, a budget of 256 tokens (8 pages) over a 900-token prompt: each decode query of a global
  // layer reads the selected pages plus the partial page that holds its own cell; never more than every cell.
  const int32_t n_prompt = 900, n_decode = 2;
  const Counts full = count(*model_, pool_, "full", n_prompt, n_decode, 32);
  const Counts quest = count(*model_, pool_, "quest:budget=256:page=32", n_prompt, n_decode, 32);
  EXPECT_EQ(quest.after_decode.held, full.after_decode.held);
  const double share = static_cast<double>(quest.after_decode.read) / static_cast<double>(quest.after_decode.held);
  const double full_share = static_cast<double>(full.after_decode.read) / static_cast<double>(full.after_decode.held);
  EXPECT_LT(share, 0.5 * full_share) << share;
  // At least the budget's pages (256 cells) per head of a global layer are read.
  EXPECT_GT(share, 256.0 / (n_prompt + n_decode) * 0.5) << share;
}

// Twilight's top-p on a budget that covers the cache: quest and hip then read every page at top_p=1, as full, and
// fewer with top_p=0.9 (the pages holding 90% of the estimated attention), yet still beyond the pages always read.
TEST(KeysReadSmolLM2, TopPReadsLessThanACoveringBudget) {
  const model::Model* model_ = shared_model(longhaul::testing::smollm2_path());
  if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 is not installed";
  ThreadPool pool_{2};
  const int32_t n_prompt = 900, n_decode = 2;
  const Counts full = count(*model_, pool_, "full", n_prompt, n_decode, 32);
  for (const char* policy : {"quest", "hip"}) {
    const std::string spec = std::string(policy) + ":budget=4096";
    const Counts all = count(*model_, pool_, spec + ":top_p=1", n_prompt, n_decode, 32);
    const Counts pruned = count(*model_, pool_, spec + ":top_p=0.9", n_prompt, n_decode, 32);
    const Counts few = count(*model_, pool_, std::string(policy) + ":budget=32:page=32", n_prompt, n_decode, 32);
    EXPECT_EQ(all.after_decode.read, full.after_decode.read) << policy;
    EXPECT_EQ(pruned.after_decode.held, full.after_decode.held) << policy;
    EXPECT_LT(pruned.after_decode.read, all.after_decode.read) << policy;
    EXPECT_GT(pruned.after_decode.read, few.after_decode.read) << policy;
    std::printf("%s: keys read with a covering budget %.3f, with top_p=0.9 %.3f, with one page %.3f\n", policy,
                static_cast<double>(all.after_decode.read) / static_cast<double>(all.after_decode.held),
                static_cast<double>(pruned.after_decode.read) / static_cast<double>(pruned.after_decode.held),
                static_cast<double>(few.after_decode.read) / static_cast<double>(few.after_decode.held));
  }
}

INSTANTIATE_TEST_SUITE_P(Models, KeysReadTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
