// Expected sets are hand-worked and were cross-checked against llama.cpp's own samplers
// (llama_sampler_init_top_k/top_p/min_p/temp through llama-cpp-python 0.3.36) on the same input.
#include "sampling/filter_stages.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

namespace longhaul::sampling {
namespace {

// logits [1, 2, 3, 4]; numpy softmax = [0.0320586, 0.08714432, 0.23688282, 0.64391426].
TokenCandidates one_to_four() {
  const float logits[] = {1.0f, 2.0f, 3.0f, 4.0f};
  TokenCandidates c;
  c.fill(logits, 4);
  return c;
}

std::vector<int32_t> ids(const TokenCandidates& c) {
  std::vector<int32_t> out;
  for (const TokenData& t : c.data) out.push_back(t.id);
  return out;
}

TEST(TopK, KeepsTheKBestSortedDescending) {
  TokenCandidates c = one_to_four();
  TopKStage(2).apply(c);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{3, 2}));
  EXPECT_TRUE(c.sorted());
}

TEST(TopK, ZeroIsOffAndLeavesOrderAlone) {
  TokenCandidates c = one_to_four();
  TopKStage(0).apply(c);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(TopK, LargerThanVocabularyKeepsEverything) {
  TokenCandidates c = one_to_four();
  TopKStage(10).apply(c);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{3, 2, 1, 0}));
}

TEST(TopP, KeepsSmallestPrefixReachingP) {
  // Cumulative softmax, best first: 0.6439, 0.8808, 0.9177, 1.
  struct Case {
    float p;
    int32_t min_keep;
    std::vector<int32_t> kept;
  };
  const Case cases[] = {
      {0.9f, 1, {3, 2, 1}},   // 0.8808 < 0.9 <= 0.9177
      {0.85f, 1, {3, 2}},     // 0.6439 < 0.85 <= 0.8808
      {0.5f, 1, {3}},         // the top token alone has 0.6439
      {0.5f, 3, {3, 2, 1}},   // min_keep wins over p
  };
  for (const Case& k : cases) {
    TokenCandidates c = one_to_four();
    TopPStage(k.p, k.min_keep).apply(c);
    EXPECT_EQ(ids(c), k.kept) << "p=" << k.p << " min_keep=" << k.min_keep;
    EXPECT_NEAR(c.data[0].prob, 0.64391426f, 1e-6f);  // softmax over the input, not renormalised
  }
}

TEST(TopP, OneIsOff) {
  TokenCandidates c = one_to_four();
  TopPStage(1.0f, 1).apply(c);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(TopP, GrowsSortedPrefixBeyondFirstGuess) {
  // 1000 equal logits: each prob is 1/1000, so p = 0.5 needs exactly 500 tokens (the first
  // sorted prefix is 256), and the tie-break by id makes them ids 0..499.
  std::vector<float> logits(1000, 0.25f);
  TokenCandidates c;
  c.fill(logits.data(), 1000);
  TopPStage(0.5f, 1).apply(c);
  ASSERT_EQ(c.size(), 500u);
  for (int32_t i = 0; i < 500; ++i) ASSERT_EQ(c.data[i].id, i);
}

TEST(TopP, LargeVocabularyUsesBothSelectionPaths) {
  // 4096 equal logits: each prob is exactly 2^-12, so p = 0.125 needs exactly 512 tokens. The
  // first 256 come from the bounded-heap selection (256 <= 4096 / 16), the next from nth_element.
  std::vector<float> logits(4096, -1.0f);
  TokenCandidates c;
  c.fill(logits.data(), 4096);
  TopPStage(0.125f, 1).apply(c);
  ASSERT_EQ(c.size(), 512u);
  for (int32_t i = 0; i < 512; ++i) ASSERT_EQ(c.data[i].id, i);
}

TEST(MinP, KeepsTokensAboveFractionOfTopProbability) {
  // p_i / p_max for ids 0, 1, 2 = e^-3, e^-2, e^-1 = 0.0498, 0.1353, 0.3679.
  struct Case {
    float p;
    int32_t min_keep;
    std::vector<int32_t> kept;
  };
  const Case cases[] = {
      {0.1f, 1, {1, 2, 3}},  // unsorted input keeps its order
      {0.3f, 1, {2, 3}},
      {0.3f, 3, {3, 2, 1}},  // too few pass: the best min_keep, sorted
      {1.0f, 1, {3}},
      {0.0f, 1, {0, 1, 2, 3}},  // off
  };
  for (const Case& k : cases) {
    TokenCandidates c = one_to_four();
    MinPStage(k.p, k.min_keep).apply(c);
    EXPECT_EQ(ids(c), k.kept) << "p=" << k.p << " min_keep=" << k.min_keep;
  }
}

TEST(MinP, KeepsSortedPrefixValid) {
  TokenCandidates c = one_to_four();
  c.sort_top(2);  // [3, 2 | 0, 1] in some order after the prefix
  MinPStage(0.1f, 1).apply(c);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c.n_sorted, 2u);
  EXPECT_EQ(c.data[0].id, 3);
  EXPECT_EQ(c.data[1].id, 2);
  EXPECT_EQ(c.data[2].id, 1);
}

TEST(Temperature, DividesLogits) {
  TokenCandidates c = one_to_four();
  TemperatureStage(2.0f).apply(c);
  const float expected[] = {0.5f, 1.0f, 1.5f, 2.0f};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(c.data[i].logit, expected[i]);
}

TEST(Temperature, ZeroKeepsOnlyTheArgmax) {
  TokenCandidates c = one_to_four();
  TemperatureStage(0.0f).apply(c);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{3}));
}

TEST(FilterStages, DescribeNamesParameters) {
  EXPECT_EQ(TopKStage(40).describe(), "top-k(k=40)");
  EXPECT_EQ(TopPStage(0.95f, 1).describe(), "top-p(p=0.95, min_keep=1)");
  EXPECT_EQ(MinPStage(0.05f, 0).describe(), "min-p(p=0.05, min_keep=1)");
  EXPECT_EQ(TemperatureStage(0.8f).describe(), "temperature(t=0.8)");
}

}  // namespace
}  // namespace longhaul::sampling
