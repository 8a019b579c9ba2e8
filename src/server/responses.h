// OpenAI response shapes built from the loop's results: finish reasons, usage, log-probabilities (chat's
// {"content": [...]} and completions' {"tokens", "token_logprobs", "top_logprobs", "text_offset"}).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>

#include "generate/generator.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::server {

// "stop" for an end-of-generation token or a stop string, "length" for max_tokens or a full context.
const char* finish_reason(generate::StopReason stop);

// usage: cached_tokens (prompt_tokens_details) = prompt tokens taken from the prefix cache instead of fed.
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens);

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}.
nlohmann::json chat_logprobs_json(const tokenizer::Tokenizer& tokenizer, std::span<const generate::TokenLogprob> lps);
// Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}; offsets count from
// `text_offset` (the bytes of the choice's text before these tokens).
nlohmann::json completion_logprobs_json(const tokenizer::Tokenizer& tokenizer,
                                        std::span<const generate::TokenLogprob> lps, int64_t text_offset);

// Serializes a response; text that is not valid UTF-8 (a token cut mid-character) is replaced, never thrown on.
std::string dump(const nlohmann::json& j);

}  // namespace longhaul::server
