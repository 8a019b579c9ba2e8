#include "sampling/sampler_chain.h"

#include <gtest/gtest.h>

#include <array>
#include <limits>
#include <utility>
#include <vector>

namespace longhaul::sampling {
namespace {

SamplerChain make_chain(const SamplingOptions& options) {
  auto chain = SamplerChain::create(options);
  EXPECT_TRUE(chain.is_ok()) << chain.message();
  return std::move(chain).value();
}

std::vector<int32_t> run(SamplerChain& chain, const std::vector<float>& logits, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(chain.sample(logits.data(), static_cast<int32_t>(logits.size())));
    chain.accept(out.back());
  }
  return out;
}

// Sampling filters switched off, so the draw follows softmax(logits / temperature).
SamplingOptions plain_options(float temperature, uint32_t seed) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = seed;
  return o;
}

const std::vector<float> kSix = {0.5f, 1.0f, 1.5f, 2.0f, 0.0f, -1.0f};

TEST(SamplerChain, DefaultOrderFollowsLlamaCpp) {
  SamplingOptions o;
  o.seed = 42;
  SamplerChain chain = make_chain(o);
  EXPECT_EQ(chain.describe(),
            "penalties(last_n=64, repeat=1, frequency=0, presence=0) -> top-k(k=40) -> "
            "top-p(p=0.95, min_keep=1) -> min-p(p=0.05, min_keep=1) -> temperature(t=0.8) -> "
            "dist(seed=42)");
  EXPECT_EQ(chain.seed(), 42u);
  EXPECT_EQ(chain.n_stages(), 6u);
}

TEST(SamplerChain, NonPositiveTemperatureIsGreedy) {
  SamplingOptions o;
  o.temperature = -1.0f;
  SamplerChain chain = make_chain(o);
  EXPECT_EQ(chain.describe(), "penalties(last_n=64, repeat=1, frequency=0, presence=0) -> greedy");
  EXPECT_EQ(run(chain, kSix, 5), (std::vector<int32_t>(5, 3)));  // argmax of kSix is id 3
}

TEST(SamplerChain, GreedyHonoursRepeatPenalty) {
  // repeat 2 over logits [3, 2, 0.1]: first pick 0; after accept(0) id 0 becomes 3 / 2 = 1.5 < 2,
  // so the next pick is 1; then id 1 becomes 1 < 1.5 and id 0 is picked again.
  SamplingOptions o;
  o.temperature = 0.0f;
  o.repeat_penalty = 2.0f;
  SamplerChain chain = make_chain(o);
  EXPECT_EQ(run(chain, {3.0f, 2.0f, 0.1f}, 3), (std::vector<int32_t>{0, 1, 0}));
}

// A greedy chain with its penalties off takes the argmax of the raw logits: the highest logit, ties to the lowest
// id, NaN never (it counts as -inf), and the first id when nothing beats -inf.
TEST(SamplerChain, GreedyArgmaxOfRawLogits) {
  SamplingOptions o;
  o.temperature = 0.0f;
  SamplerChain chain = make_chain(o);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<std::vector<float>, int32_t>> cases = {
      {{1.0f, 3.0f, nan, 3.0f, -inf}, 1},
      {{nan, -2.0f, nan, 5.0f, 5.0f}, 3},
      {{nan, nan, nan}, 0},
      {{-inf, -inf, nan, -inf}, 0},
      {{-inf, nan, -7.5f}, 2},
      {{nan, inf, 1e30f}, 1},
      {{0.25f}, 0},
  };
  for (const auto& [logits, expected] : cases) {
    EXPECT_EQ(chain.sample(logits.data(), static_cast<int32_t>(logits.size())), expected);
    ASSERT_EQ(chain.last_candidates().size(), 1u) << "the pick alone";
    EXPECT_EQ(chain.last_candidates().data[0].id, expected);
    EXPECT_EQ(chain.last_candidates().data[0].prob, 1.0f);
  }
  const std::vector<float> all_nan = {nan, nan};
  EXPECT_EQ(chain.sample(all_nan.data(), 2), 0);
  EXPECT_EQ(chain.last_candidates().data[0].logit, -inf) << "NaN counts as -inf, as fill() makes it";
}

TEST(SamplerChain, CreateRejectsInvalidOptions) {
  SamplingOptions o;
  o.top_p = 1.5f;
  auto chain = SamplerChain::create(o);
  ASSERT_FALSE(chain.is_ok());
  EXPECT_EQ(chain.message(), "top_p = 1.5: must be in (0, 1] (1 = off)");
}

TEST(SamplerChain, SameSeedSameTokensDifferentSeedsDiffer) {
  SamplerChain a = make_chain(plain_options(1.0f, 5));
  SamplerChain b = make_chain(plain_options(1.0f, 5));
  SamplerChain c = make_chain(plain_options(1.0f, 6));
  const auto seq = run(a, kSix, 100);
  EXPECT_EQ(seq, run(b, kSix, 100));
  EXPECT_NE(seq, run(c, kSix, 100));
}

TEST(SamplerChain, RandomSeedIsRecordedAndReproducible) {
  SamplerChain chain = make_chain(plain_options(1.0f, kRandomSeed));
  ASSERT_NE(chain.seed(), kRandomSeed);
  SamplerChain again = make_chain(plain_options(1.0f, static_cast<uint32_t>(chain.seed())));
  EXPECT_EQ(run(chain, kSix, 100), run(again, kSix, 100));
}

TEST(SamplerChain, CloneContinuesAndResetRewinds) {
  SamplingOptions o = plain_options(1.0f, 77);
  o.repeat_penalty = 1.3f;  // so that history matters too
  SamplerChain chain = make_chain(o);
  const auto first = run(chain, kSix, 30);
  SamplerChain copy = chain.clone();
  EXPECT_EQ(run(copy, kSix, 30), run(chain, kSix, 30));
  chain.reset();
  EXPECT_EQ(run(chain, kSix, 30), first);
}

TEST(SamplerChain, TopKLimitsTheDraw) {
  SamplingOptions o = plain_options(1.0f, 11);
  o.top_k = 2;
  SamplerChain chain = make_chain(o);
  for (int32_t t : run(chain, kSix, 500)) EXPECT_TRUE(t == 3 || t == 2) << t;
}

// Pearson's chi-square statistic of observed counts against expected probabilities.
template <size_t N>
double chi_square(const std::array<int, N>& counts, const std::array<double, N>& probs, int n) {
  double chi2 = 0.0;
  for (size_t i = 0; i < N; ++i) {
    const double expected = n * probs[i];
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

TEST(SamplerChain, FrequenciesMatchSoftmax) {
  // numpy: softmax([0.5, 1, 1.5, 2, 0, -1]). With 5 degrees of freedom a correct sampler exceeds
  // chi2 = 20.515 with probability 0.001; the seed is fixed, so the outcome never changes between
  // runs, and a wrong distribution lands far above the bound.
  constexpr int kDraws = 20000;
  const std::array<double, 6> probs = {0.0936474, 0.15439846, 0.25456003, 0.41969853, 0.05680002, 0.02089556};
  SamplerChain chain = make_chain(plain_options(1.0f, 2024));
  std::array<int, 6> counts{};
  for (int i = 0; i < kDraws; ++i) ++counts[chain.sample(kSix.data(), 6)];
  EXPECT_LT(chi_square(counts, probs, kDraws), 20.515);
}

TEST(SamplerChain, FrequenciesMatchSoftmaxWithTopKAndTemperature) {
  // top_k 4 keeps ids 0..3; numpy: softmax([0.5, 1, 1.5, 2] / 0.7) =
  // [0.06353556, 0.12978581, 0.26511699, 0.54156164]. 3 degrees of freedom: bound 16.266 (p = 0.001).
  // The same counts tested against softmax([0.5, 1, 1.5, 2]) (temperature ignored) are expected
  // to give chi2 ~ 791, so the check does tell a wrong temperature apart.
  constexpr int kDraws = 20000;
  const std::array<double, 4> probs = {0.06353556, 0.12978581, 0.26511699, 0.54156164};
  const std::array<double, 4> no_temperature = {0.10153632, 0.1674051, 0.27600434, 0.45505423};
  SamplingOptions o = plain_options(0.7f, 31337);
  o.top_k = 4;
  SamplerChain chain = make_chain(o);
  std::array<int, 4> counts{};
  for (int i = 0; i < kDraws; ++i) {
    const int32_t t = chain.sample(kSix.data(), 6);
    ASSERT_LT(t, 4) << "top-k 4 let token " << t << " through";
    ++counts[t];
  }
  EXPECT_LT(chi_square(counts, probs, kDraws), 16.266);
  EXPECT_GT(chi_square(counts, no_temperature, kDraws), 16.266);
}

TEST(SamplerChain, LastCandidatesHoldFinalDistribution) {
  SamplingOptions o = plain_options(1.0f, 1);
  o.top_k = 2;
  SamplerChain chain = make_chain(o);
  chain.sample(kSix.data(), 6);
  const TokenCandidates& c = chain.last_candidates();
  ASSERT_EQ(c.size(), 2u);
  // softmax([2, 1.5]) = [0.62245933, 0.37754067] (numpy), best first after top-k.
  EXPECT_NEAR(c.data[0].prob, 0.62245933f, 1e-6f);
  EXPECT_NEAR(c.data[1].prob, 0.37754067f, 1e-6f);
}

}  // namespace
}  // namespace longhaul::sampling
