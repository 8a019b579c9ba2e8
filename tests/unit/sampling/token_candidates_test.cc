#include "sampling/token_candidates.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace longhaul::sampling {
namespace {

std::vector<int32_t> ids(const TokenCandidates& c) {
  std::vector<int32_t> out;
  for (const TokenData& t : c.data) out.push_back(t.id);
  return out;
}

TEST(TokenCandidates, FillLoadsIdsInOrderAndResetsState) {
  const float logits[] = {1.0f, 2.0f, 3.0f};
  TokenCandidates c;
  c.n_sorted = 5;
  c.selected = 2;
  c.fill(logits, 3);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(c.data[2].logit, 3.0f);
  EXPECT_EQ(c.n_sorted, 0u);
  EXPECT_EQ(c.selected, -1);
}

TEST(TokenCandidates, FillTurnsNanIntoMinusInfinity) {
  const float logits[] = {std::numeric_limits<float>::quiet_NaN(), 0.5f};
  TokenCandidates c;
  c.fill(logits, 2);
  EXPECT_EQ(c.data[0].logit, -std::numeric_limits<float>::infinity());
}

TEST(TokenCandidates, RefillReusesTheBuffer) {
  std::vector<float> logits(1000, 0.0f);
  TokenCandidates c;
  c.fill(logits.data(), 1000);
  const TokenData* buffer = c.data.data();
  c.truncate(3);
  c.fill(logits.data(), 1000);
  EXPECT_EQ(c.data.data(), buffer);  // shrinking and refilling kept the allocation
}

TEST(TokenCandidates, SortTopBreaksTiesByLowerId) {
  // Logits [1, 3, 3, 2]: descending order with the tie 3 == 3 going to id 1 first.
  const float logits[] = {1.0f, 3.0f, 3.0f, 2.0f};
  TokenCandidates c;
  c.fill(logits, 4);
  c.sort_top(2);
  EXPECT_EQ(c.n_sorted, 2u);
  EXPECT_EQ(c.data[0].id, 1);
  EXPECT_EQ(c.data[1].id, 2);
  c.sort_top(100);  // clamps to the size and extends the prefix
  EXPECT_TRUE(c.sorted());
  EXPECT_EQ(ids(c), (std::vector<int32_t>{1, 2, 3, 0}));
}

TEST(TokenCandidates, SortTopOnLargeVocabularyMatchesFullSort) {
  // 5000 logits drawn from 50 integer values, so ties are everywhere and the id tie-break
  // decides. The reference is a plain full std::sort with the same order; k = 40 takes the
  // bounded-heap path (40 <= 5000 / 16) and k = 1000 the nth_element path.
  std::vector<float> logits(5000);
  uint32_t state = 12345;
  for (float& x : logits) {
    state = state * 1664525u + 1013904223u;  // LCG (Numerical Recipes), fixed and portable
    x = static_cast<float>((state >> 16) % 50) - 25.0f;
  }
  TokenCandidates reference;
  reference.fill(logits.data(), 5000);
  std::sort(reference.data.begin(), reference.data.end(), TokenCandidates::better);
  for (size_t k : {size_t{40}, size_t{1000}}) {
    TokenCandidates c;
    c.fill(logits.data(), 5000);
    c.sort_top(k);
    ASSERT_EQ(c.n_sorted, k);
    for (size_t i = 0; i < k; ++i) ASSERT_EQ(c.data[i].id, reference.data[i].id) << "k=" << k << " i=" << i;
    // The tail still holds every other candidate exactly once.
    std::vector<int32_t> all = ids(c);
    std::sort(all.begin(), all.end());
    for (int32_t i = 0; i < 5000; ++i) ASSERT_EQ(all[i], i);
  }
}

TEST(TokenCandidates, ArgmaxPrefersLowestIdOnTies) {
  const float logits[] = {1.0f, 5.0f, 5.0f, 2.0f};
  TokenCandidates c;
  c.fill(logits, 4);
  EXPECT_EQ(c.argmax(), 1u);
}

TEST(TokenCandidates, SoftmaxMatchesNumpy) {
  // numpy: softmax([1, 2, 3, 4]) = [0.0320586, 0.08714432, 0.23688282, 0.64391426]
  const float logits[] = {1.0f, 2.0f, 3.0f, 4.0f};
  TokenCandidates c;
  c.fill(logits, 4);
  c.softmax();
  const float expected[] = {0.0320586f, 0.08714432f, 0.23688282f, 0.64391426f};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(c.data[i].prob, expected[i], 1e-6f) << "id " << i;
}

TEST(TokenCandidates, SoftmaxOfAllMinusInfinityIsUniform) {
  const float inf = std::numeric_limits<float>::infinity();
  const float logits[] = {-inf, -inf};
  TokenCandidates c;
  c.fill(logits, 2);
  c.softmax();
  EXPECT_EQ(c.data[0].prob, 0.5f);
  EXPECT_EQ(c.data[1].prob, 0.5f);
}

TEST(TokenCandidates, TruncateClampsSortedPrefixAndSelection) {
  const float logits[] = {4.0f, 3.0f, 2.0f, 1.0f};
  TokenCandidates c;
  c.fill(logits, 4);
  c.sort_top(4);
  c.selected = 3;
  c.truncate(2);
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.n_sorted, 2u);
  EXPECT_EQ(c.selected, -1);
}

}  // namespace
}  // namespace longhaul::sampling
