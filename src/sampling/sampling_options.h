// SamplingOptions: what the user asks of the sampler, with llama.cpp's defaults.
#pragma once

#include <cstdint>

#include "base/status.h"

namespace longhaul::sampling {

// Seed value meaning "pick a random seed" (the same value as llama.cpp's LLAMA_DEFAULT_SEED).
inline constexpr uint32_t kRandomSeed = 0xFFFFFFFFu;

struct SamplingOptions {
  float temperature = 0.8f;       // logit divisor, unitless (<= 0 = greedy: argmax, no randomness)
  int32_t top_k = 40;             // tokens kept (0 = off, whole vocabulary)
  float top_p = 0.95f;            // probability mass kept, in (0, 1] (1 = off)
  float min_p = 0.05f;            // minimum probability relative to the top token, in [0, 1] (0 = off)
  float repeat_penalty = 1.0f;    // logit divisor for recent tokens, > 0 (1 = off)
  float frequency_penalty = 0.0f; // logit subtracted per occurrence in the window (0 = off)
  float presence_penalty = 0.0f;  // logit subtracted once if present in the window (0 = off)
  int32_t penalty_last_n = 64;    // window in tokens (0 = off, -1 = every token since reset)
  uint32_t seed = kRandomSeed;    // RNG seed (kRandomSeed = random from the clock; see SamplerChain::seed())
  int32_t min_keep = 1;           // tokens top-p and min-p always keep, >= 0 (0 and 1 both keep one)
};

// Rejects values with no meaning. The message names the field, the value and the allowed range,
// e.g. "top_p = 1.5: must be in (0, 1] (1 = off)". A negative temperature is valid (greedy).
Status validate(const SamplingOptions& options);

// Returns `requested` unless it is kRandomSeed; then a seed derived from the system clock and a
// per-process counter (so chains built in the same clock tick differ). The result is never
// kRandomSeed, so passing it back as SamplingOptions::seed reproduces the run.
uint32_t resolve_seed(uint32_t requested);

}  // namespace longhaul::sampling
