// Stages that pick the token: greedy (argmax) and dist (a seeded draw from the softmax).
// One of them ends every chain.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "sampling/sampler_stage.h"

namespace longhaul::sampling {

// Selects the candidate with the highest logit; equal logits go to the lowest token id.
class GreedyStage final : public SamplerStage {
 public:
  std::string name() const override { return "greedy"; }
  void apply(TokenCandidates& candidates) override;
  bool picks_best() const override { return true; }
  std::unique_ptr<SamplerStage> clone() const override { return std::make_unique<GreedyStage>(); }
};

// Draws one candidate with probability softmax(logit) using std::mt19937_64 seeded with `seed`.
// The draw itself is ours (a 53-bit uniform double scaled by the total mass, then a running sum
// over the candidates in their current order) rather than std::discrete_distribution, whose
// algorithm the standard leaves open; mt19937_64's output sequence is fixed by the standard, so
// the same seed, options and logits give the same tokens with any standard library.
// Every apply() consumes exactly one 64-bit output, also when one candidate is left, so the
// random stream does not depend on how much the earlier stages filtered.
class DistStage final : public SamplerStage {
 public:
  explicit DistStage(uint64_t seed);  // already resolved: kRandomSeed is not special here

  std::string name() const override { return "dist"; }
  std::string describe() const override;
  void apply(TokenCandidates& candidates) override;
  void reset() override { rng_.seed(seed_); }
  std::unique_ptr<SamplerStage> clone() const override { return std::make_unique<DistStage>(*this); }

  uint64_t seed() const { return seed_; }

 private:
  uint64_t seed_;
  std::mt19937_64 rng_;
};

}  // namespace longhaul::sampling
