// recycled (Recycled Attention, Xu et al., 2024) on the real models, through the engine's attention plan and its
// observed probabilities: with a budget that covers the cache, or a full step every step (stride=1), every decode
// step gives full's logits bit for bit (f16 and KIVI int8 storage), although the observation pass runs on the full
// steps; a small budget moves a recycled step's logits away from full's, a larger one back towards them; a fork
// recycles as its parent.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class RecycledEngineTest : public EachModelTest {};

TEST_P(RecycledEngineTest, CoveringBudgetOrStrideOneGivesFullLogits) {
  // Six decode steps after the prompt: under stride=4 full, recycled x3, full, recycled; under stride=1 every step
  // is full, whatever the budget. The observation pass of the full steps leaves the output as it is.
  expect_full_logits(*model_, pool_, {"recycled:budget=4096:stride=4", "recycled:budget=64:stride=1"}, 32);
}

TEST_P(RecycledEngineTest, LargerBudgetsComeCloserToFull) {
  // The first decode step after an 840-token prompt is a recycled one (the prompt was the full step): 8 and 24 of
  // the 27 pages (plus sinks and window).
  const std::vector<std::vector<float>> l = first_decode_logits(
      *model_, pool_, {"full", "recycled:stride=8:budget=256", "recycled:stride=8:budget=768"}, 840, 32);
  ASSERT_EQ(l.size(), 3u);
  const float d256 = max_abs_diff(l[1], l[0]), d768 = max_abs_diff(l[2], l[0]);
  // The selection is active (reading every page would match full bit for bit) ...
  EXPECT_GT(d256, 0.0f);
  // ... and reading more of the pages the prompt's last token attended to brings the step closer to full.
  EXPECT_LT(d768, d256) << d256 << " " << d768;
  EXPECT_EQ(argmax(l[2]), argmax(l[0])) << d256 << " " << d768;
}

TEST_P(RecycledEngineTest, ForkRecyclesAsItsParent) {
  // Forked after a recycled step, and decoding through the next full step.
  expect_fork_decodes_as_parent(*model_, pool_, "recycled:budget=128:stride=3", 1);
}

INSTANTIATE_TEST_SUITE_P(Models, RecycledEngineTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
