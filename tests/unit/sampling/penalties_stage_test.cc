// Worked example, checked against llama.cpp's penalties sampler (llama_sampler_init_penalties
// through llama-cpp-python 0.3.36, same logits and history): identical values.
#include "sampling/penalties_stage.h"

#include <gtest/gtest.h>

#include <vector>

namespace longhaul::sampling {
namespace {

// logits [2, -1, 0.5, 3, -2, 0]; history [0, 1, 1, 3, 5] -> counts {0: 1, 1: 2, 3: 1, 5: 1}.
const std::vector<float> kLogits = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f};
const std::vector<int32_t> kHistory = {0, 1, 1, 3, 5};

std::vector<float> apply_after_history(PenaltiesStage& stage, const std::vector<int32_t>& history) {
  for (int32_t t : history) stage.accept(t);
  TokenCandidates c;
  c.fill(kLogits.data(), static_cast<int32_t>(kLogits.size()));
  stage.apply(c);
  std::vector<float> out(kLogits.size());
  for (const TokenData& t : c.data) out[static_cast<size_t>(t.id)] = t.logit;
  return out;
}

void expect_logits(const std::vector<float>& got, const std::vector<float>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-6f) << "id " << i;
}

TEST(Penalties, RepeatFrequencyPresenceWorkedExample) {
  // repeat 1.5, frequency 0.25, presence 0.5:
  //   id 0:  2 / 1.5  - (1 * 0.25 + 0.5) =  0.583333   (positive: divided)
  //   id 1: -1 * 1.5  - (2 * 0.25 + 0.5) = -2.5        (negative: multiplied)
  //   id 3:  3 / 1.5  - (1 * 0.25 + 0.5) =  1.25
  //   id 5:  0 * 1.5  - (1 * 0.25 + 0.5) = -0.75       (zero counts as non-positive)
  //   ids 2 and 4 never occurred: unchanged.
  PenaltiesStage stage(64, 1.5f, 0.25f, 0.5f);
  expect_logits(apply_after_history(stage, kHistory), {0.583333f, -2.5f, 0.5f, 1.25f, -2.0f, -0.75f});
}

TEST(Penalties, RepeatOnly) {
  // repeat 2: 2 -> 1, -1 -> -2, 3 -> 1.5, 0 -> 0.
  PenaltiesStage stage(64, 2.0f, 0.0f, 0.0f);
  expect_logits(apply_after_history(stage, kHistory), {1.0f, -2.0f, 0.5f, 1.5f, -2.0f, 0.0f});
}

TEST(Penalties, WindowKeepsOnlyLastN) {
  // last_n 2: the window is [3, 5], so only ids 3 and 5 are penalised.
  PenaltiesStage stage(2, 1.5f, 0.25f, 0.5f);
  expect_logits(apply_after_history(stage, kHistory), {2.0f, -1.0f, 0.5f, 1.25f, -2.0f, -0.75f});
}

TEST(Penalties, EvictedTokenCountsDropOneByOne) {
  // last_n 3 after [1, 1, 1, 1, 0]: the window is [1, 1, 0], so id 1 counts 2, not 4.
  // id 1: -1 - 2 * 0.25 = -1.5 (repeat 1, presence 0); id 0: 2 - 0.25 = 1.75.
  PenaltiesStage stage(3, 1.0f, 0.25f, 0.0f);
  expect_logits(apply_after_history(stage, {1, 1, 1, 1, 0}), {1.75f, -1.5f, 0.5f, 3.0f, -2.0f, 0.0f});
}

TEST(Penalties, MinusOneMeansWholeHistory) {
  // last_n -1 with [1] * 100: count 100 -> -1 - 100 * 0.25 = -26.
  PenaltiesStage stage(-1, 1.0f, 0.25f, 0.0f);
  expect_logits(apply_after_history(stage, std::vector<int32_t>(100, 1)),
                {2.0f, -26.0f, 0.5f, 3.0f, -2.0f, 0.0f});
}

TEST(Penalties, OffSettingsChangeNothing) {
  PenaltiesStage zero_window(0, 1.5f, 0.25f, 0.5f);
  expect_logits(apply_after_history(zero_window, kHistory), kLogits);
  PenaltiesStage neutral(64, 1.0f, 0.0f, 0.0f);
  expect_logits(apply_after_history(neutral, kHistory), kLogits);
}

TEST(Penalties, ResetClearsHistoryAndCloneCopiesIt) {
  PenaltiesStage stage(64, 2.0f, 0.0f, 0.0f);
  for (int32_t t : kHistory) stage.accept(t);
  auto copy = stage.clone();
  stage.reset();
  expect_logits(apply_after_history(stage, {}), kLogits);
  auto& copied = static_cast<PenaltiesStage&>(*copy);
  expect_logits(apply_after_history(copied, {}), {1.0f, -2.0f, 0.5f, 1.5f, -2.0f, 0.0f});
}

TEST(Penalties, Describe) {
  EXPECT_EQ(PenaltiesStage(64, 1.1f, 0.0f, 0.5f).describe(),
            "penalties(last_n=64, repeat=1.1, frequency=0, presence=0.5)");
}

}  // namespace
}  // namespace longhaul::sampling
