// PenaltiesStage: discourages tokens that appeared in the last N accepted tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sampling/sampler_stage.h"

namespace longhaul::sampling {

// For every candidate whose token occurs `count` > 0 times in the window of the last
// `last_n` accepted tokens (the semantics of llama.cpp's penalties sampler):
//   logit = logit <= 0 ? logit * repeat : logit / repeat        (repetition penalty, Keskar et al.,
//                                                                2019, CTRL, with the sign fix so a
//                                                                negative logit is also pushed down)
//   logit -= count * frequency + presence                       (OpenAI-style additive penalties)
// Tokens outside the window are untouched. The stage does nothing when last_n == 0 or when
// repeat == 1, frequency == 0 and presence == 0.
class PenaltiesStage final : public SamplerStage {
 public:
  // last_n: window length in tokens (0 = off, -1 = every token accepted since reset()).
  PenaltiesStage(int32_t last_n, float repeat, float frequency, float presence);

  std::string name() const override { return "penalties"; }
  std::string describe() const override;
  void apply(TokenCandidates& candidates) override;
  bool changes_nothing() const override { return !active() || n_in_window_ == 0; }  // as apply() tests
  void accept(int32_t token) override;
  void reset() override;
  std::unique_ptr<SamplerStage> clone() const override;

 private:
  bool active() const;

  int32_t last_n_;
  float repeat_;
  float frequency_;
  float presence_;

  // Ring buffer of the window, grown up to last_n entries and then overwritten in place;
  // unused when last_n == -1 because nothing ever leaves the window.
  std::vector<int32_t> window_;  // [min(n_accepted, last_n)]
  size_t window_next_ = 0;       // slot the next token overwrites once the window is full
  // Occurrences of each token id inside the window, grown to the largest id seen.
  std::vector<int32_t> counts_;  // [max accepted id + 1]
  size_t n_in_window_ = 0;       // number of tokens currently counted
};

}  // namespace longhaul::sampling
