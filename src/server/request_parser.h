// The request parser: JSON bodies of the OpenAI endpoints (and llama-server's /tokenize, /detokenize) to internal
// request structs. Pure functions of the body and the limits, nothing else (no model, no engine), so that every
// byte a client sends is checked in one place, unit-tested, and fuzzed (tests/fuzz/request_parser_fuzz.cc).
//
// Each parser returns an ApiError for a body it refuses: malformed JSON, a body that is not an object, a missing
// required field, a field of the wrong type, a value out of range, a field the API does not have, or one longhaul
// does not implement (a tool call, a logit bias). Checks that need the model (the model's name, the prompt's length
// against the context, the KV policy's parameters) are the server's, after tokenization.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/api_error.h"
#include "tokenizer/chat_format.h"

namespace longhaul::server {

enum class Endpoint { kChatCompletions, kCompletions };

// A prompt as the client gave it: text, or token ids.
struct PromptInput {
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
};

// POST /v1/chat/completions and /v1/completions. Unset optional fields take the server's defaults (its sampling
// flags).
struct CompletionRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string model;
  std::vector<tokenizer::ChatMessage> messages;  // chat
  std::vector<PromptInput> prompts;              // completions: one or more prompts (batched: n choices each)
  std::optional<int32_t> max_tokens;             // max_tokens or max_completion_tokens (unset = up to the context)
  std::optional<float> temperature;              // [0, 2]
  std::optional<float> top_p;                    // (0, 1]
  std::optional<uint32_t> seed;
  std::vector<std::string> stop;                 // at most kMaxStop non-empty strings
  std::optional<float> presence_penalty;         // [-2, 2]
  std::optional<float> frequency_penalty;        // [-2, 2]
  int32_t n = 1;                                 // choices per prompt, [1, kMaxChoices]
  bool stream = false;
  bool include_usage = false;                    // stream_options.include_usage
  // Log-probabilities: chat's logprobs (bool) + top_logprobs (0..20); completions' logprobs (0..5, the top count).
  bool logprobs = false;
  int32_t top_logprobs = 0;
  std::optional<std::string> kv_policy;          // extension: the --kv-policy syntax
  // Extension (llama-server's field): generate max_tokens tokens, past end-of-generation tokens (load benchmarks
  // that must compare the same number of tokens). false = stop at the model's end of generation.
  bool ignore_eos = false;
};

// POST /v1/embeddings.
struct EmbeddingRequest {
  std::string model;
  std::vector<PromptInput> inputs;  // at least one, at most kMaxEmbeddingInputs
  bool base64 = false;              // encoding_format "base64" (little-endian float32), else "float"
};

// POST /tokenize ({"content", "add_special", "parse_special", "with_pieces"}) and /detokenize ({"tokens"}), as
// llama-server has them.
struct TokenizeRequest {
  std::string content;
  bool add_special = true;
  bool parse_special = false;
  bool with_pieces = false;
};
struct DetokenizeRequest {
  std::vector<int32_t> tokens;
};

inline constexpr int32_t kMaxChoices = 16;
inline constexpr int32_t kMaxStop = 4;
inline constexpr int32_t kMaxPrompts = 64;
inline constexpr int32_t kMaxEmbeddingInputs = 256;
inline constexpr int32_t kMaxMaxTokens = 1 << 24;

// Each fills `out` and returns nothing, or returns the error to send.
std::optional<ApiError> parse_completion_request(std::string_view body, Endpoint endpoint, CompletionRequest& out);
std::optional<ApiError> parse_embedding_request(std::string_view body, EmbeddingRequest& out);
std::optional<ApiError> parse_tokenize_request(std::string_view body, TokenizeRequest& out);
std::optional<ApiError> parse_detokenize_request(std::string_view body, DetokenizeRequest& out);

}  // namespace longhaul::server
