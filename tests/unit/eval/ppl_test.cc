#include "eval/ppl.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace longhaul::eval {
namespace {

TEST(TokenNll, MatchesHandWorkedLogSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  // -log(e^3 / (e^1 + e^2 + e^3)) = log(1 + e^-1 + e^-2) = log(1.503214724) = 0.407605964
  EXPECT_NEAR(token_nll(logits, 2), 0.407605964, 1e-7);
  // -log(e^1 / ...) = 2 + 0.407605964
  EXPECT_NEAR(token_nll(logits, 0), 2.407605964, 1e-7);
}

TEST(TokenNll, StableForLargeLogits) {
  const std::vector<float> logits = {1000.0f, 1000.0f};
  EXPECT_NEAR(token_nll(logits, 1), std::log(2.0), 1e-9);
}

TEST(BucketedNll, AssignsTokensToBucketsByIndex) {
  BucketedNll b({4, 8});
  // Bucket 0 holds tokens 1..3 (token 0 is never predicted), bucket 1 tokens 4..7.
  EXPECT_FALSE(b.add(1, 1.0));
  EXPECT_FALSE(b.add(2, 2.0));
  EXPECT_TRUE(b.add(3, 3.0));
  EXPECT_NEAR(b.ppl(0), std::exp(2.0), 1e-12);
  EXPECT_TRUE(std::isnan(b.ppl(1)));
  for (int j = 4; j < 7; ++j) EXPECT_FALSE(b.add(j, 0.5));
  EXPECT_TRUE(b.add(7, 0.5));
  EXPECT_NEAR(b.ppl(1), std::exp(0.5), 1e-12);
  EXPECT_FALSE(b.add(8, 9.0));  // past the last bucket: ignored
  EXPECT_NEAR(b.ppl(1), std::exp(0.5), 1e-12);
}

}  // namespace
}  // namespace longhaul::eval
