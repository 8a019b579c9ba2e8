// libFuzzer driver for the server's request parser (server/request_parser.h): any body must parse or give an
// OpenAI error with a 4xx status and a message, never crash; what parses must hold values inside the documented
// ranges.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/request_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longhaul::server;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto check_error = [](const std::optional<ApiError>& e) {
    if (e && (e->status < 400 || e->status >= 500 || e->message.empty())) std::abort();
    if (e) (void)error_json(*e);
  };
  for (Endpoint endpoint : {Endpoint::kChatCompletions, Endpoint::kCompletions}) {
    CompletionRequest r;
    const std::optional<ApiError> e = parse_completion_request(body, endpoint, r);
    check_error(e);
    if (e) continue;
    if (r.n < 1 || r.n > kMaxChoices || (r.max_tokens && (*r.max_tokens < 1 || *r.max_tokens > kMaxMaxTokens)) ||
        (r.temperature && !(*r.temperature >= 0 && *r.temperature <= 2)) || (r.top_p && !(*r.top_p > 0 && *r.top_p <= 1)) ||
        r.top_logprobs < 0 || r.top_logprobs > 20 || static_cast<int32_t>(r.stop.size()) > kMaxStop ||
        (endpoint == Endpoint::kChatCompletions ? r.messages.empty() : r.prompts.empty()))
      std::abort();
    for (const PromptInput& p : r.prompts)
      for (int32_t id : p.ids)
        if (id < 0) std::abort();
  }
  EmbeddingRequest emb;
  check_error(parse_embedding_request(body, emb));
  TokenizeRequest tok;
  check_error(parse_tokenize_request(body, tok));
  DetokenizeRequest detok;
  check_error(parse_detokenize_request(body, detok));
  return 0;
}
