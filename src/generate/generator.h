// The prefill -> decode loop: feeds the prompt, then samples, streams and feeds
// one token at a time until a stop condition.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "generate/session.h"
#include "sampling/sampler_chain.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {

struct GenerateOptions {
  int32_t n_predict = 128;  // tokens to generate (-1 = until end of generation or a full context)
  bool ignore_eos = false;  // keep going past end-of-generation tokens
};

struct Timings {
  int32_t n_prompt = 0;          // prompt tokens fed
  int32_t n_generated = 0;       // tokens sampled
  double prompt_seconds = 0.0;   // prefill wall time
  double generate_seconds = 0.0; // decode wall time (sampling included)
  double prompt_tokens_per_s() const { return prompt_seconds > 0 ? n_prompt / prompt_seconds : 0.0; }
  // Decode steps per second: the first generated token comes from the prefill's logits.
  double generate_tokens_per_s() const {
    return generate_seconds > 0 && n_generated > 1 ? (n_generated - 1) / generate_seconds : 0.0;
  }
};

enum class StopReason { kEndOfGeneration, kLength, kContextFull, kCallback };
const char* stop_reason_name(StopReason reason);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the end-of-generation token included when it stopped there)
  std::string text;             // their detokenized text (end-of-generation token not rendered)
  StopReason stop = StopReason::kLength;
  Timings timings;
};

// Called with each newly completed piece of UTF-8 text; returning false stops generation.
using TextFn = std::function<bool(std::string_view)>;

// Feeds `prompt` (may be empty when the session already holds context) and generates.
Result<GenerateResult> generate(Session& session, const tokenizer::Tokenizer& tokenizer,
                                sampling::SamplerChain& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TextFn& on_text = nullptr,
                                const ProgressFn& progress = nullptr);

}  // namespace longhaul::generate
