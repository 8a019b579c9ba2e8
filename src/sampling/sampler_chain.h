// SamplerChain: the ordered stages that turn one logits row into one token.
//
// Typical use (the generate loop):
//   LH_ASSIGN_OR_RETURN(auto chain, SamplerChain::create(options));
//   for (int32_t t : prompt) chain.accept(t);         // so penalties see the prompt
//   int32_t token = chain.sample(logits, n_vocab);     // logits: [n_vocab]
//   chain.accept(token);                               // sample() does not accept by itself
//
// sample() and accept() are separate on purpose: speculative decoding samples tokens that may
// be rejected, and only the accepted ones must enter the penalty window.
//
// Thread-safety: not thread-safe; one chain per sequence. clone() makes an independent copy.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "sampling/sampler_stage.h"
#include "sampling/sampling_options.h"
#include "sampling/token_candidates.h"

namespace longhaul::sampling {

class SamplerChain {
 public:
  // Builds llama.cpp's default order from validated options:
  //   temperature > 0:  penalties -> top-k -> top-p -> min-p -> temperature -> dist
  //   temperature <= 0: penalties -> greedy
  // Stages that are switched off stay in the chain as no-ops so describe() shows every setting.
  // The seed is resolved once here (kRandomSeed -> a clock-derived seed) and kept in seed().
  static Result<SamplerChain> create(const SamplingOptions& options);

  // A custom chain. The last stage must set `selected` (GreedyStage, DistStage or your own);
  // `seed` is only recorded for seed(), the stages carry their own.
  SamplerChain(std::vector<std::unique_ptr<SamplerStage>> stages, uint64_t seed);

  SamplerChain(SamplerChain&&) = default;
  SamplerChain& operator=(SamplerChain&&) = default;
  SamplerChain(const SamplerChain&) = delete;
  SamplerChain& operator=(const SamplerChain&) = delete;

  // Runs every stage on `logits` and returns the chosen token id in [0, n_vocab).
  // Advances the RNG of a dist stage; does not record the token (call accept()).
  int32_t sample(const float* logits, int32_t n_vocab);  // logits: [n_vocab]

  // Tells every stage that `token` is now part of the sequence (prompt or generated).
  void accept(int32_t token);

  // Back to the just-created state: penalty history cleared, RNG rewound to seed().
  void reset();

  // An independent copy that continues exactly where this chain is (history and RNG state).
  SamplerChain clone() const;

  // The seed actually used; pass it as SamplingOptions::seed to reproduce a run.
  uint64_t seed() const { return seed_; }

  // E.g. "penalties(last_n=64, repeat=1, frequency=0, presence=0) -> top-k(k=40) -> ... -> dist(seed=42)".
  std::string describe() const;

  size_t n_stages() const { return stages_.size(); }
  const SamplerStage& stage(size_t i) const { return *stages_.at(i); }

  // The candidates as the last stage left them (probabilities of the final distribution for dist). A greedy chain
  // whose other stages change nothing keeps only its pick, with probability 1.
  const TokenCandidates& last_candidates() const { return candidates_; }

 private:
  // Whether sample() may take the argmax of the raw logits: the picking stage picks the best and every other stage
  // would leave the candidates as they are.
  bool takes_raw_argmax() const;

  std::vector<std::unique_ptr<SamplerStage>> stages_;
  uint64_t seed_ = 0;
  TokenCandidates candidates_;  // reused by every sample() so a step allocates nothing
};

}  // namespace longhaul::sampling
