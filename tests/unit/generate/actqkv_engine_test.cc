// actqkv (ActQKV) on the real models, through the engine's attention plan: with a budget that covers the cache it
// reads every page and gives full's logits bit for bit (f16 and KIVI int8 storage); a small budget reads fewer keys
// and moves a decode step's logits; a fork, which copies the probe's window, decodes as its parent.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class ActQkvEngineTest : public EachModelTest {};

TEST_P(ActQkvEngineTest, CoveringBudgetGivesFullLogits) {
  expect_full_logits(*model_, pool_, {"actqkv:budget=4096", "actqkv:budget=4096:probe=1"}, 32);
}

TEST_P(ActQkvEngineTest, SmallBudgetReadsFewerKeys) {
  // The selection is active: a decode step after an 840-token prompt reads a few of its 27 pages, and its logits
  // are not full's.
  const std::vector<std::vector<float>> l =
      first_decode_logits(*model_, pool_, {"full", "actqkv:budget=128:min=64"}, 840, 32);
  ASSERT_EQ(l.size(), 2u);
  EXPECT_GT(max_abs_diff(l[1], l[0]), 0.0f);

  auto engine = make_engine(*model_, pool_, 2048);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = some_tokens(1500, 7);
  std::vector<double> share;
  for (const char* spec : {"actqkv:budget=128", "actqkv:budget=4096"}) {
    const kv::SeqId seq = add_sequence(*engine, spec);
    share.push_back(decode_keys_share(*engine, seq, prompt, {300, 4000}));
    // Every selecting (layer, KV head) holds the probe's window: the queries of the last 256 positions, the prompt's
    // tail and the three decoded tokens (positions 1247 .. 1502); dense and sliding-window layers hold none.
    const std::vector<double> stats = engine->policy(seq).statistics();
    int32_t n_windows = 0;
    for (size_t i = 0; i < stats.size(); i += 1 + static_cast<size_t>(stats[i])) {
      if (stats[i] == 0) continue;
      ++n_windows;
      ASSERT_EQ(stats[i], 256.0);
      EXPECT_EQ(stats[i + 1], 1247.0);
      EXPECT_EQ(stats[i + 256], 1502.0);
    }
    EXPECT_GT(n_windows, 0);
    engine->remove(seq);
  }
  EXPECT_GT(share[0], 0.0);
  EXPECT_LT(share[0], share[1]) << share[0] << " " << share[1];
}

TEST_P(ActQkvEngineTest, ForkDecodesAsItsParent) {
  // Decode steps first, so that the window holds decoded queries as well as the prompt's.
  expect_fork_decodes_as_parent(*model_, pool_, "actqkv:budget=128", 8);
}

INSTANTIATE_TEST_SUITE_P(Models, ActQkvEngineTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
