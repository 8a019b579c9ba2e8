// quest on the real models, through the engine's attention plan: with a budget that covers the cache it reads
// every page and gives full's logits bit for bit (f16 and KIVI int8 storage); smaller budgets move a decode
// step's logits away from full's, larger ones back towards them; a fork selects as its parent.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class QuestEngineTest : public EachModelTest {};

TEST_P(QuestEngineTest, CoveringBudgetGivesFullLogits) {
  expect_full_logits(*model_, pool_, {"quest:budget=4096", "quest:budget=4096:summary=meanstd"}, 32);
}

TEST_P(QuestEngineTest, LargerBudgetsComeCloserToFull) {
  // 8, 16 and 24 of the 27 pages (plus sinks and window); 24 leaves out only the least promising ones.
  // Decode-step logits of `full` and of quest at each budget, after the same 840-token prompt, in pages of 32.
  const std::vector<std::vector<float>> l = first_decode_logits(
      *model_, pool_, {"full", "quest:budget=256:page=32", "quest:budget=512:page=32", "quest:budget=768:page=32"}, 840, 32);
  ASSERT_EQ(l.size(), 4u);
  const float d256 = max_abs_diff(l[1], l[0]), d512 = max_abs_diff(l[2], l[0]), d768 = max_abs_diff(l[3], l[0]);
  // The selection is active (reading every page would match full bit for bit) ...
  EXPECT_GT(d256, 0.0f);
  // ... and reading more of the pages Quest ranks highest brings the step closer to full attention.
  EXPECT_LT(d768, d256) << d256 << " " << d512 << " " << d768;
  EXPECT_EQ(argmax(l[3]), argmax(l[0])) << d256 << " " << d512 << " " << d768;
}

TEST_P(QuestEngineTest, ForkSelectsAsItsParent) {
  expect_fork_decodes_as_parent(*model_, pool_, "quest:budget=128", 0);
}

INSTANTIATE_TEST_SUITE_P(Models, QuestEngineTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
