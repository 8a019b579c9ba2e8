// Stages that narrow or rescale the candidate set without picking a token:
// top-k, top-p (nucleus), min-p and temperature.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "sampling/sampler_stage.h"

namespace longhaul::sampling {

// Keeps the k candidates with the highest logits (ties -> lower id), sorted descending.
class TopKStage final : public SamplerStage {
 public:
  explicit TopKStage(int32_t k);  // k: number of tokens kept (0 = off)

  std::string name() const override { return "top-k"; }
  std::string describe() const override;
  void apply(TokenCandidates& candidates) override;
  std::unique_ptr<SamplerStage> clone() const override { return std::make_unique<TopKStage>(*this); }

 private:
  int32_t k_;
};

// Nucleus sampling (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration"):
// keeps the smallest prefix of the candidates, best first, whose softmax probabilities sum to
// at least p, and never fewer than min_keep. Leaves `prob` holding the softmax over the set
// it received (not renormalised over the kept prefix); the dist stage renormalises anyway.
class TopPStage final : public SamplerStage {
 public:
  TopPStage(float p, int32_t min_keep);  // p: probability mass in (0, 1] (1 = off)

  std::string name() const override { return "top-p"; }
  std::string describe() const override;
  void apply(TokenCandidates& candidates) override;
  std::unique_ptr<SamplerStage> clone() const override { return std::make_unique<TopPStage>(*this); }

 private:
  float p_;
  size_t min_keep_;  // >= 1
};

// Min-p sampling (Nguyen et al., 2024, "Turning Up the Heat: Min-p Sampling for Creative and
// Coherent LLM Outputs"): keeps the candidates whose probability is at least p times the
// largest one, i.e. logit >= max_logit + ln(p), and never fewer than min_keep.
class MinPStage final : public SamplerStage {
 public:
  MinPStage(float p, int32_t min_keep);  // p: fraction of the top probability in [0, 1] (0 = off)

  std::string name() const override { return "min-p"; }
  std::string describe() const override;
  void apply(TokenCandidates& candidates) override;
  std::unique_ptr<SamplerStage> clone() const override { return std::make_unique<MinPStage>(*this); }

 private:
  float p_;
  size_t min_keep_;  // >= 1
};

// Divides every logit by the temperature (> 1 flattens, < 1 sharpens the distribution).
// A temperature <= 0 keeps only the best candidate, which makes a following dist stage greedy.
class TemperatureStage final : public SamplerStage {
 public:
  explicit TemperatureStage(float temperature);  // unitless divisor (<= 0 = keep the argmax only)

  std::string name() const override { return "temperature"; }
  std::string describe() const override;
  void apply(TokenCandidates& candidates) override;
  std::unique_ptr<SamplerStage> clone() const override {
    return std::make_unique<TemperatureStage>(*this);
  }

 private:
  float temperature_;
};

}  // namespace longhaul::sampling
