// hip (HiP attention, Lee et al., 2024) on the real models, through the engine's attention plan: with a budget
// that covers the cache it reads every page and gives full's logits bit for bit (f16 and KIVI int8 storage);
// smaller budgets, f16 or int8, move a decode step's logits away from full's and larger ones back towards them;
// a fork selects as its parent.
#include <algorithm>

#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class HipEngineTest : public EachModelTest {};

TEST_P(HipEngineTest, CoveringBudgetGivesFullLogits) { expect_full_logits(*model_, pool_, {"hip:budget=4096"}, 32); }

TEST_P(HipEngineTest, LargerBudgetsComeCloserToFull) {
  for (const char* storage : {"", ":bits=8"}) {
    // 8 and 24 of the 27 pages of 32 cells (plus sinks and window) after the same 840-token prompt.
    const std::string bits = storage;
    const std::vector<std::vector<float>> l = first_decode_logits(
        *model_, pool_, {"full" + bits, "hip:budget=256" + bits, "hip:budget=768" + bits}, 840, 32);
    ASSERT_EQ(l.size(), 3u);
    const float d256 = max_abs_diff(l[1], l[0]), d768 = max_abs_diff(l[2], l[0]);
    // The selection is active (reading every page would match full bit for bit) ...
    EXPECT_GT(d256, 0.0f) << storage;
    // ... and reading more of the pages the tree search ranks highest brings the step closer to full attention.
    EXPECT_LT(d768, d256) << storage << ": " << d256 << " " << d768;
    // The greedy pick stays full's. With 8-bit cells on Gemma 3, full's two best tokens are 0.09 apart, less than
    // the prompt's rounding moves them (changing the prefill kernel's sums flipped them), so there full's pick must
    // stay among hip's best two.
    const int32_t full_pick = argmax(l[0]);
    if (bits.empty()) {
      EXPECT_EQ(argmax(l[2]), full_pick) << d256 << " " << d768;
    } else {
      const float full_pick_logit = l[2][static_cast<size_t>(full_pick)];
      const auto above = std::count_if(l[2].begin(), l[2].end(), [&](float x) { return x > full_pick_logit; });
      EXPECT_LE(above, 1) << storage << ": " << d256 << " " << d768;
    }
  }
}

TEST_P(HipEngineTest, ForkSelectsAsItsParent) {
  expect_fork_decodes_as_parent(*model_, pool_, "hip:budget=128", 0);
  expect_fork_decodes_as_parent(*model_, pool_, "hip:budget=128:bits=8", 3);
}

INSTANTIATE_TEST_SUITE_P(Models, HipEngineTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
