// lserve (LServe, Yang et al., 2025) on the real models, through the engine's attention plan: with every head a
// retrieval head and a budget that covers the cache it gives full's logits bit for bit (f16 and KIVI int8
// storage); with half the heads streaming and a covering budget it gives duo's (the streaming heads read only
// their sinks and window, duo frees the rest: the same cells); a small budget is active; a fork selects (and
// reuses its selections) as its parent. Every sequence uses pages of 64 cells, lserve's and duo's, so that the
// flash pass sums over the same groups of cells.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class LServeEngineTest : public EachModelTest {
 protected:
  void SetUp() override {
    EachModelTest::SetUp();
    if (model_ != nullptr) profile_ = flat_profile(*model_);
  }
  std::shared_ptr<const kv::HeadProfile> profile_;
};

TEST_P(LServeEngineTest, EveryHeadRetrievingWithACoveringBudgetGivesFullLogits) {
  expect_full_logits(*model_, pool_, {"lserve:retrieval=1:budget=4096"}, 64, profile_);
}

TEST_P(LServeEngineTest, StreamingHeadsSeeWhatDuoKeeps) {
  // A decode step's flash pass reads a head's pages in chunks fixed by page index, whether they are listed
  // (lserve) or present (duo frees the others), so both sum the same cells in the same groups.
  auto engine = make_engine(*model_, pool_, 2048, 256, 64);
  ASSERT_NE(engine, nullptr);
  // duo rounds its sinks up to the 64-cell page that holds them; lserve is given those 64.
  const std::vector<float> want = prompt_and_decode_logits(*engine, "duo:retrieval=0.5:sink=4:window=128", profile_);
  const std::vector<float> got =
      prompt_and_decode_logits(*engine, "lserve:retrieval=0.5:budget=4096:sink=64:window=128", profile_);
  EXPECT_TRUE(bit_identical(want, got)) << max_abs_diff(want, got);
}

TEST_P(LServeEngineTest, ASmallBudgetSelects) {
  auto engine = make_engine(*model_, pool_, 2048, 256, 64);
  ASSERT_NE(engine, nullptr);
  const std::vector<float> want = prompt_and_decode_logits(*engine, "full");
  const std::vector<float> got = prompt_and_decode_logits(*engine, "lserve:retrieval=1:budget=128", profile_);
  const auto n_vocab = static_cast<size_t>(model_->config().n_vocab);
  ASSERT_EQ(want.size(), 7 * n_vocab);
  ASSERT_EQ(got.size(), 7 * n_vocab);
  // The prompt reads everything; the decode steps read 2 of 11 pages besides the sinks and the local window.
  EXPECT_TRUE(bit_identical(std::span(want).first(n_vocab), std::span(got).first(n_vocab)));
  EXPECT_GT(max_abs_diff(std::span(want).last(n_vocab), std::span(got).last(n_vocab)), 0.0f);
}

TEST_P(LServeEngineTest, ForkSelectsAsItsParent) {
  // Forked after a decode step, so that the fork carries selections kept for reuse.
  expect_fork_decodes_as_parent(*model_, pool_, "lserve:retrieval=0.5:budget=128:reuse=3", 1, profile_);
}

INSTANTIATE_TEST_SUITE_P(Models, LServeEngineTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
