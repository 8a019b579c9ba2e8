#include "server/responses.h"

namespace longhaul::server {

using json = nlohmann::json;

const char* finish_reason(generate::StopReason stop) {
  switch (stop) {
    case generate::StopReason::kEndOfGeneration:
    case generate::StopReason::kStopString:
    case generate::StopReason::kCallback: return "stop";
    case generate::StopReason::kLength:
    case generate::StopReason::kContextFull: return "length";
  }
  return "length";
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

namespace {
json bytes_of(const std::string& piece) {
  json b = json::array();
  for (unsigned char c : piece) b.push_back(static_cast<int>(c));
  return b;
}
}  // namespace

json chat_logprobs_json(const tokenizer::Tokenizer& tokenizer, std::span<const generate::TokenLogprob> lps) {
  json content = json::array();
  for (const generate::TokenLogprob& lp : lps) {
    const std::string piece = tokenizer.token_to_piece(lp.token);
    json top = json::array();
    for (const auto& [id, logprob] : lp.top) {
      const std::string p = tokenizer.token_to_piece(id);
      top.push_back({{"token", p}, {"logprob", logprob}, {"bytes", bytes_of(p)}});
    }
    content.push_back({{"token", piece}, {"logprob", lp.logprob}, {"bytes", bytes_of(piece)}, {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

json completion_logprobs_json(const tokenizer::Tokenizer& tokenizer, std::span<const generate::TokenLogprob> lps,
                              int64_t text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (const generate::TokenLogprob& lp : lps) {
    const std::string piece = tokenizer.token_to_piece(lp.token);
    tokens.push_back(piece);
    token_logprobs.push_back(lp.logprob);
    json alternatives = json::object();
    for (const auto& [id, logprob] : lp.top) alternatives[tokenizer.token_to_piece(id)] = logprob;
    top.push_back(alternatives);
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(piece.size());
  }
  return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace longhaul::server
