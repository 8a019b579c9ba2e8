// The request parser (server/request_parser.h): what the official openai client sends is read field by field, and
// every kind of bad body gets the OpenAI error (status, param, code) that the client turns into BadRequestError.
#include "server/request_parser.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace longhaul::server {
namespace {

using json = nlohmann::json;

CompletionRequest chat_ok(const std::string& body) {
  CompletionRequest r;
  const std::optional<ApiError> e = parse_completion_request(body, Endpoint::kChatCompletions, r);
  EXPECT_FALSE(e.has_value()) << (e ? e->message : "");
  return r;
}

ApiError chat_error(const std::string& body) {
  CompletionRequest r;
  const std::optional<ApiError> e = parse_completion_request(body, Endpoint::kChatCompletions, r);
  EXPECT_TRUE(e.has_value()) << body;
  return e.value_or(ApiError{});
}

ApiError completion_error(const std::string& body) {
  CompletionRequest r;
  const std::optional<ApiError> e = parse_completion_request(body, Endpoint::kCompletions, r);
  EXPECT_TRUE(e.has_value()) << body;
  return e.value_or(ApiError{});
}

TEST(RequestParser, ReadsAChatRequestAsTheOpenaiClientSendsIt) {
  const CompletionRequest r = chat_ok(R"({"messages":[{"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
      "model":"smollm2-135m","max_completion_tokens":12,"temperature":0,"top_p":0.5,"seed":7,"stop":["\n","END"],
      "presence_penalty":0.5,"frequency_penalty":-1,"n":2,"stream":true,"stream_options":{"include_usage":true},
      "logprobs":true,"top_logprobs":3,"kv_policy":"streaming:window=252","user":"u1",
      "ignore_eos":true})");
  EXPECT_EQ(r.model, "smollm2-135m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hi there");
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_EQ(r.temperature, 0.0f);
  EXPECT_EQ(r.top_p, 0.5f);
  EXPECT_EQ(r.seed, 7u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(r.presence_penalty, 0.5f);
  EXPECT_EQ(r.frequency_penalty, -1.0f);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.kv_policy, "streaming:window=252");
  EXPECT_TRUE(r.ignore_eos);
}

TEST(RequestParser, LeavesUnsetFieldsUnset) {
  const CompletionRequest r = chat_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":null})");
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FALSE(r.temperature.has_value());
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_FALSE(r.kv_policy.has_value());
  EXPECT_FALSE(r.ignore_eos);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.logprobs);
}

TEST(RequestParser, ReadsCompletionPromptsInEveryForm) {
  for (const auto& [prompt, n_prompts, ids] :
       std::vector<std::tuple<std::string, size_t, bool>>{{R"("once")", 1, false},
                                                          {R"(["a","b","c"])", 3, false},
                                                          {R"([1,2,3])", 1, true},
                                                          {R"([[1,2],[3]])", 2, true}}) {
    CompletionRequest r;
    ASSERT_FALSE(parse_completion_request(R"({"model":"m","prompt":)" + prompt + R"(,"logprobs":2})", Endpoint::kCompletions, r))
        << prompt;
    EXPECT_EQ(r.prompts.size(), n_prompts) << prompt;
    EXPECT_EQ(r.prompts[0].is_ids, ids) << prompt;
    EXPECT_TRUE(r.logprobs);
    EXPECT_EQ(r.top_logprobs, 2);
  }
}

TEST(RequestParser, RefusesMalformedBodies) {
  for (const std::string body : {"", "{", "not json", "{\"model\": }", "\xff\xfe"}) {
    const ApiError e = chat_error(body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "invalid_json") << body;
  }
  EXPECT_EQ(chat_error("[1,2]").code, "invalid_json");
  EXPECT_EQ(chat_error("\"text\"").code, "invalid_json");
}

TEST(RequestParser, NamesTheFieldOfAWrongTypeOrValue) {
  struct Case {
    std::string fields;
    std::string param;
    std::string code;
  };
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  for (const Case& c : std::vector<Case>{
           {R"("model":1,)" + msgs, "model", "invalid_type"},
           {R"("model":"m","messages":"hi")", "messages", "invalid_type"},
           {R"("model":"m","messages":[])", "messages", "invalid_value"},
           {R"("model":"m","messages":[{"role":"robot","content":"x"}])", "messages[0].role", "invalid_value"},
           {R"("model":"m","messages":[{"role":"user"}])", "messages[0].content", "missing_required_parameter"},
           {R"("model":"m","messages":[{"content":"x"}])", "messages[0].role", "missing_required_parameter"},
           {R"("model":"m","messages":[{"role":"user","content":"x","tool_calls":[]}])", "messages[0].tool_calls",
            "unknown_parameter"},
           {R"("model":"m",)" + msgs + R"(,"temperature":"hot")", "temperature", "invalid_type"},
           {R"("model":"m",)" + msgs + R"(,"temperature":2.5)", "temperature", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"top_p":0)", "top_p", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"max_tokens":0)", "max_tokens", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"max_tokens":1.5)", "max_tokens", "invalid_type"},
           {R"("model":"m",)" + msgs + R"(,"max_tokens":99999999999999999999)", "max_tokens", "invalid_type"},
           {R"("model":"m",)" + msgs + R"(,"max_tokens":18446744073709551615)", "max_tokens", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"n":17)", "n", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"seed":-1)", "seed", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"stop":["a","b","c","d","e"])", "stop", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"stop":[""])", "stop", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"stop":7)", "stop", "invalid_type"},
           {R"("model":"m",)" + msgs + R"(,"presence_penalty":3)", "presence_penalty", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"top_logprobs":21,"logprobs":true)", "top_logprobs", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"top_logprobs":2)", "top_logprobs", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"stream_options":{"include_usage":true})", "stream_options", "invalid_value"},
           {R"("model":"m",)" + msgs + R"(,"kv_policy":5)", "kv_policy", "invalid_type"},
           {R"("model":"m",)" + msgs + R"(,"ignore_eos":1)", "ignore_eos", "invalid_type"},
           {R"("model":"m",)" + msgs + R"(,"tools":[{"type":"function"}])", "tools", "unsupported_parameter"},
           {R"("model":"m",)" + msgs + R"(,"logit_bias":{"1":5})", "logit_bias", "unsupported_parameter"},
           {R"("model":"m",)" + msgs + R"(,"temprature":1)", "temprature", "unknown_parameter"},
           {msgs, "model", "missing_required_parameter"},
           {R"("model":"m")", "messages", "missing_required_parameter"},
       }) {
    const ApiError e = chat_error("{" + c.fields + "}");
    EXPECT_EQ(e.status, 400) << c.fields;
    EXPECT_EQ(e.param, c.param) << c.fields << ": " << e.message;
    EXPECT_EQ(e.code, c.code) << c.fields << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
  }
}

TEST(RequestParser, CompletionsHaveTheirOwnFields) {
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":"x","logprobs":true})").param, "logprobs");
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":"x","logprobs":6})").code, "invalid_value");
  EXPECT_EQ(completion_error(R"({"model":"m","messages":[]})").code, "unknown_parameter");
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":[-1]})").param, "prompt");
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":[]})").param, "prompt");
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":[1.5]})").param, "prompt");
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":"x","echo":true})").code, "unsupported_parameter");
  EXPECT_EQ(completion_error(R"({"model":"m","prompt":["a","b","c","d","e"],"n":16})").param, "n");
}

TEST(RequestParser, ReadsEmbeddingRequests) {
  EmbeddingRequest r;
  ASSERT_FALSE(parse_embedding_request(R"({"model":"m","input":["a","b"],"encoding_format":"base64"})", r));
  EXPECT_EQ(r.inputs.size(), 2u);
  EXPECT_TRUE(r.base64);
  ASSERT_FALSE(parse_embedding_request(R"({"model":"m","input":[5,6]})", r));
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(r.inputs[0].ids, (std::vector<int32_t>{5, 6}));
  EXPECT_FALSE(r.base64);
  EXPECT_EQ(parse_embedding_request(R"({"model":"m","input":"a","encoding_format":"hex"})", r)->param, "encoding_format");
  EXPECT_EQ(parse_embedding_request(R"({"model":"m","input":""})", r)->param, "input");
  EXPECT_EQ(parse_embedding_request(R"({"model":"m"})", r)->code, "missing_required_parameter");
  EXPECT_EQ(parse_embedding_request(R"({"model":"m","input":"a","dimensions":8})", r)->code, "unsupported_parameter");
}

TEST(RequestParser, ReadsTokenizeAndDetokenize) {
  TokenizeRequest t;
  ASSERT_FALSE(parse_tokenize_request(R"({"content":"hi","add_special":false,"with_pieces":true})", t));
  EXPECT_EQ(t.content, "hi");
  EXPECT_FALSE(t.add_special);
  EXPECT_TRUE(t.with_pieces);
  EXPECT_EQ(parse_tokenize_request(R"({"text":"hi"})", t)->code, "unknown_parameter");
  DetokenizeRequest d;
  ASSERT_FALSE(parse_detokenize_request(R"({"tokens":[1,2,3]})", d));
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_detokenize_request(R"({"tokens":"1 2"})", d)->code, "invalid_type");
}

TEST(RequestParser, ErrorsSerializeAsOpenaiErrors) {
  const json j = json::parse(error_json(bad_request("'n' = 17 is out of range", "n", "invalid_value")));
  EXPECT_EQ(j["error"]["message"], "'n' = 17 is out of range");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_EQ(j["error"]["code"], "invalid_value");
  const json k = json::parse(error_json(ApiError{401, "no key", "invalid_request_error", "", ""}));
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

}  // namespace
}  // namespace longhaul::server
