#include "server/request_parser.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>

namespace longhaul::server {

namespace {

using json = nlohmann::json;

// The type a JSON value has, as an error message names it.
std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unknown value";
  }
}

ApiError wrong_type(const std::string& field, const char* want, const json& v) {
  return bad_request("'" + field + "' must be " + want + ", not " + type_name(v), field, "invalid_type");
}

ApiError out_of_range(const std::string& field, const char* range, const json& v) {
  return bad_request("'" + field + "' = " + v.dump() + " is out of range: must be " + range, field, "invalid_value");
}

// A body that is a JSON object, or the error.
std::optional<ApiError> parse_object(std::string_view body, json& out) {
  out = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) return bad_request("the request body is not valid JSON", "", "invalid_json");
  if (!out.is_object()) return bad_request("the request body must be a JSON object, not " + type_name(out), "", "invalid_json");
  return std::nullopt;
}

std::optional<ApiError> read_number(const std::string& field, const json& v, double lo, double hi, bool lo_open,
                                    const char* range, std::optional<float>& out) {
  if (!v.is_number()) return wrong_type(field, "a number", v);
  const double x = v.get<double>();
  if (x < lo || x > hi || (lo_open && x == lo)) return out_of_range(field, range, v);
  out = static_cast<float>(x);
  return std::nullopt;
}

std::optional<ApiError> read_int(const std::string& field, const json& v, int64_t lo, int64_t hi, const char* range,
                                 int64_t& out) {
  if (!v.is_number_integer()) return wrong_type(field, "an integer", v);
  // Positive integers parse as unsigned: compare in the unsigned domain first, so a huge one cannot wrap.
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) return out_of_range(field, range, v);
  if (v.get<int64_t>() < lo || v.get<int64_t>() > hi) return out_of_range(field, range, v);
  out = v.get<int64_t>();
  return std::nullopt;
}

std::optional<ApiError> read_bool(const std::string& field, const json& v, bool& out) {
  if (!v.is_boolean()) return wrong_type(field, "a boolean", v);
  out = v.get<bool>();
  return std::nullopt;
}

// A token id list: non-empty, every id a non-negative 32-bit integer (the vocabulary's bound is the server's check).
std::optional<ApiError> read_ids(const std::string& field, const json& v, std::vector<int32_t>& out) {
  out.clear();
  for (const json& t : v) {
    if (!t.is_number_integer() || (!t.is_number_unsigned() && t.get<int64_t>() < 0) ||
        (t.is_number_unsigned() && t.get<uint64_t>() > 0x7fffffffu) ||
        (!t.is_number_unsigned() && t.get<int64_t>() > 0x7fffffff))
      return bad_request("'" + field + "' token ids must be non-negative integers, not " + t.dump(), field, "invalid_value");
    out.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return std::nullopt;
}

// A prompt or an embedding input: a string, a list of strings, a list of token ids, or a list of such lists.
std::optional<ApiError> read_prompts(const std::string& field, const json& v, int32_t max_count,
                                     std::vector<PromptInput>& out) {
  const char* want = "a string, a list of strings, a list of token ids or a list of token id lists";
  out.clear();
  if (v.is_string()) {
    out.push_back({v.get<std::string>(), {}, false});
    return std::nullopt;
  }
  if (!v.is_array()) return wrong_type(field, want, v);
  if (v.empty()) return bad_request("'" + field + "' must not be empty", field, "invalid_value");
  if (v[0].is_number()) {
    PromptInput p;
    p.is_ids = true;
    if (auto e = read_ids(field, v, p.ids)) return e;
    out.push_back(std::move(p));
    return std::nullopt;
  }
  if (static_cast<int64_t>(v.size()) > max_count)
    return bad_request("'" + field + "' holds " + std::to_string(v.size()) + " inputs; at most " +
                           std::to_string(max_count) + " are allowed",
                       field, "invalid_value");
  for (const json& item : v) {
    if (item.is_string()) {
      out.push_back({item.get<std::string>(), {}, false});
    } else if (item.is_array() && !item.empty()) {
      PromptInput p;
      p.is_ids = true;
      if (auto e = read_ids(field, item, p.ids)) return e;
      out.push_back(std::move(p));
    } else {
      return wrong_type(field, want, v);
    }
  }
  return std::nullopt;
}

std::optional<ApiError> read_messages(const json& v, std::vector<tokenizer::ChatMessage>& out) {
  if (!v.is_array()) return wrong_type("messages", "an array of messages", v);
  if (v.empty()) return bad_request("'messages' must hold at least one message", "messages", "invalid_value");
  for (size_t i = 0; i < v.size(); ++i) {
    const json& m = v[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return wrong_type(at, "an object {\"role\", \"content\"}", m);
    tokenizer::ChatMessage msg;
    bool has_role = false, has_content = false;
    for (auto it = m.begin(); it != m.end(); ++it) {
      const std::string& key = it.key();
      const json& f = it.value();
      if (key == "role") {
        if (!f.is_string()) return wrong_type(at + ".role", "a string", f);
        msg.role = f.get<std::string>();
        // OpenAI's "developer" messages are its newer name for system messages.
        if (msg.role == "developer") msg.role = "system";
        if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
          return bad_request(at + ".role '" + f.get<std::string>() +
                                 "' is not supported (system, developer, user, assistant)",
                             at + ".role", "invalid_value");
        has_role = true;
      } else if (key == "content") {
        if (f.is_string()) {
          msg.content = f.get<std::string>();
        } else if (f.is_array()) {
          // Content parts: only text parts, joined.
          for (const json& part : f) {
            if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
                !part["text"].is_string())
              return bad_request(at + ".content: only {\"type\": \"text\", \"text\": string} parts are supported",
                                 at + ".content", "invalid_value");
            msg.content += part["text"].get<std::string>();
          }
        } else {
          return wrong_type(at + ".content", "a string or a list of text parts", f);
        }
        has_content = true;
      } else if (key == "name") {
        if (!f.is_string()) return wrong_type(at + ".name", "a string", f);
      } else {
        return bad_request(at + " has an unknown or unsupported field '" + key + "'", at + "." + key, "unknown_parameter");
      }
    }
    if (!has_role) return bad_request(at + " has no 'role'", at + ".role", "missing_required_parameter");
    if (!has_content) return bad_request(at + " has no 'content'", at + ".content", "missing_required_parameter");
    out.push_back(std::move(msg));
  }
  return std::nullopt;
}

std::optional<ApiError> read_stop(const json& v, std::vector<std::string>& out) {
  out.clear();
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (const json& s : v) {
      if (!s.is_string()) return wrong_type("stop", "a string or a list of strings", v);
      out.push_back(s.get<std::string>());
    }
  } else {
    return wrong_type("stop", "a string or a list of strings", v);
  }
  if (static_cast<int32_t>(out.size()) > kMaxStop)
    return bad_request("'stop' holds " + std::to_string(out.size()) + " strings; at most " + std::to_string(kMaxStop) +
                           " are allowed",
                       "stop", "invalid_value");
  for (const std::string& s : out)
    if (s.empty()) return bad_request("'stop' strings must not be empty", "stop", "invalid_value");
  return std::nullopt;
}

bool one_of(const std::string& key, std::initializer_list<const char*> names) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return key == n; });
}

}  // namespace

std::string error_json(const ApiError& error) {
  json e = {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? json(nullptr) : json(error.param)},
            {"code", error.code.empty() ? json(nullptr) : json(error.code)}};
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<ApiError> parse_completion_request(std::string_view body, Endpoint endpoint, CompletionRequest& out) {
  out = CompletionRequest{};
  out.endpoint = endpoint;
  json obj;
  if (auto e = parse_object(body, obj)) return e;
  const bool chat = endpoint == Endpoint::kChatCompletions;
  bool has_model = false, has_input = false;
  std::optional<int64_t> completion_logprobs;  // completions: "logprobs": N
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    int64_t i = 0;
    if (key == "model") {
      if (!v.is_string()) return wrong_type(key, "a string", v);
      out.model = v.get<std::string>();
      has_model = true;
    } else if (chat && key == "messages") {
      if (auto e = read_messages(v, out.messages)) return e;
      has_input = true;
    } else if (!chat && key == "prompt") {
      if (auto e = read_prompts(key, v, kMaxPrompts, out.prompts)) return e;
      has_input = true;
    } else if (key == "max_tokens" || (chat && key == "max_completion_tokens")) {
      if (v.is_null()) continue;
      if (auto e = read_int(key, v, 1, kMaxMaxTokens, "an integer in [1, 16777216]", i)) return e;
      out.max_tokens = static_cast<int32_t>(i);
    } else if (key == "temperature") {
      if (v.is_null()) continue;
      if (auto e = read_number(key, v, 0.0, 2.0, false, "in [0, 2]", out.temperature)) return e;
    } else if (key == "top_p") {
      if (v.is_null()) continue;
      if (auto e = read_number(key, v, 0.0, 1.0, true, "in (0, 1]", out.top_p)) return e;
    } else if (key == "presence_penalty" || key == "frequency_penalty") {
      if (v.is_null()) continue;
      if (auto e = read_number(key, v, -2.0, 2.0, false, "in [-2, 2]",
                               key == "presence_penalty" ? out.presence_penalty : out.frequency_penalty))
        return e;
    } else if (key == "seed") {
      if (v.is_null()) continue;
      // 4294967295 is the sampler's "random seed" value.
      if (auto e = read_int(key, v, 0, 0xfffffffeLL, "an integer in [0, 4294967294]", i)) return e;
      out.seed = static_cast<uint32_t>(i);
    } else if (key == "stop") {
      if (auto e = read_stop(v, out.stop)) return e;
    } else if (key == "n") {
      if (v.is_null()) continue;
      if (auto e = read_int(key, v, 1, kMaxChoices, "an integer in [1, 16]", i)) return e;
      out.n = static_cast<int32_t>(i);
    } else if (key == "stream") {
      if (v.is_null()) continue;
      if (auto e = read_bool(key, v, out.stream)) return e;
    } else if (key == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) return wrong_type(key, "an object {\"include_usage\": bool}", v);
      for (auto so = v.begin(); so != v.end(); ++so) {
        if (so.key() != "include_usage")
          return bad_request("'stream_options' has an unknown field '" + so.key() + "'", "stream_options." + so.key(),
                             "unknown_parameter");
        if (auto e = read_bool("stream_options.include_usage", so.value(), out.include_usage)) return e;
      }
    } else if (chat && key == "logprobs") {
      if (v.is_null()) continue;
      if (auto e = read_bool(key, v, out.logprobs)) return e;
    } else if (chat && key == "top_logprobs") {
      if (v.is_null()) continue;
      if (auto e = read_int(key, v, 0, 20, "an integer in [0, 20]", i)) return e;
      out.top_logprobs = static_cast<int32_t>(i);
    } else if (!chat && key == "logprobs") {
      if (v.is_null()) continue;
      if (auto e = read_int(key, v, 0, 5, "an integer in [0, 5]", i)) return e;
      completion_logprobs = i;
    } else if (key == "kv_policy") {
      if (v.is_null()) continue;
      if (!v.is_string()) return wrong_type(key, "a string such as \"h2o:budget=512\"", v);
      out.kv_policy = v.get<std::string>();
    } else if (key == "ignore_eos") {
      if (v.is_null()) continue;
      if (auto e = read_bool(key, v, out.ignore_eos)) return e;
    } else if (key == "user" || key == "metadata" || key == "store" || key == "service_tier") {
      // Bookkeeping fields of OpenAI's service that change nothing in the output.
    } else if (key == "logit_bias") {
      if (!v.is_null() && !(v.is_object() && v.empty()))
        return bad_request("'logit_bias' is not supported", key, "unsupported_parameter");
    } else if (!chat && key == "echo") {
      if (v.is_boolean() && v.get<bool>()) return bad_request("'echo' is not supported", key, "unsupported_parameter");
      if (!v.is_boolean() && !v.is_null()) return wrong_type(key, "a boolean", v);
    } else if (!chat && key == "best_of") {
      if (!v.is_null() && !(v.is_number_integer() && v.get<int64_t>() == 1))
        return bad_request("'best_of' other than 1 is not supported", key, "unsupported_parameter");
    } else if (chat && key == "response_format") {
      if (!v.is_null() && !(v.is_object() && v.contains("type") && v["type"] == "text" && v.size() == 1))
        return bad_request("'response_format' other than {\"type\": \"text\"} is not supported", key,
                           "unsupported_parameter");
    } else if (chat && one_of(key, {"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
                                     "audio", "modalities", "prediction", "reasoning_effort", "web_search_options"})) {
      if (!v.is_null() && !(v.is_array() && v.empty()))
        return bad_request("'" + key + "' is not supported", key, "unsupported_parameter");
    } else {
      return bad_request("unknown field '" + key + "'", key, "unknown_parameter");
    }
  }
  if (!has_model) return bad_request("'model' is required", "model", "missing_required_parameter");
  if (!has_input) {
    const char* field = chat ? "messages" : "prompt";
    return bad_request(std::string("'") + field + "' is required", field, "missing_required_parameter");
  }
  if (completion_logprobs) {
    out.logprobs = true;
    out.top_logprobs = static_cast<int32_t>(*completion_logprobs);
  } else if (chat && !out.logprobs && obj.contains("top_logprobs") && !obj["top_logprobs"].is_null()) {
    return bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs", "invalid_value");
  }
  if (!out.stream && out.include_usage)
    return bad_request("'stream_options' is only allowed with 'stream': true", "stream_options", "invalid_value");
  if (static_cast<int64_t>(out.prompts.size()) * out.n > kMaxPrompts)
    return bad_request(std::to_string(out.prompts.size()) + " prompts x n = " + std::to_string(out.n) +
                           " is more than the " + std::to_string(kMaxPrompts) + " choices one request may ask for",
                       "n", "invalid_value");
  return std::nullopt;
}

std::optional<ApiError> parse_embedding_request(std::string_view body, EmbeddingRequest& out) {
  out = EmbeddingRequest{};
  json obj;
  if (auto e = parse_object(body, obj)) return e;
  bool has_model = false, has_input = false;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "model") {
      if (!v.is_string()) return wrong_type(key, "a string", v);
      out.model = v.get<std::string>();
      has_model = true;
    } else if (key == "input") {
      if (auto e = read_prompts(key, v, kMaxEmbeddingInputs, out.inputs)) return e;
      has_input = true;
    } else if (key == "encoding_format") {
      if (v.is_null()) continue;
      if (!v.is_string()) return wrong_type(key, "\"float\" or \"base64\"", v);
      if (v != "float" && v != "base64")
        return bad_request("'encoding_format' must be \"float\" or \"base64\", not " + v.dump(), key, "invalid_value");
      out.base64 = v == "base64";
    } else if (key == "user") {
    } else if (key == "dimensions") {
      if (!v.is_null()) return bad_request("'dimensions' is not supported (the model's width is used)", key,
                                           "unsupported_parameter");
    } else {
      return bad_request("unknown field '" + key + "'", key, "unknown_parameter");
    }
  }
  if (!has_model) return bad_request("'model' is required", "model", "missing_required_parameter");
  if (!has_input) return bad_request("'input' is required", "input", "missing_required_parameter");
  for (const PromptInput& p : out.inputs)
    if (!p.is_ids && p.text.empty()) return bad_request("'input' strings must not be empty", "input", "invalid_value");
  return std::nullopt;
}

std::optional<ApiError> parse_tokenize_request(std::string_view body, TokenizeRequest& out) {
  out = TokenizeRequest{};
  json obj;
  if (auto e = parse_object(body, obj)) return e;
  bool has_content = false;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "content") {
      if (!v.is_string()) return wrong_type(key, "a string", v);
      out.content = v.get<std::string>();
      has_content = true;
    } else if (key == "add_special") {
      if (auto e = read_bool(key, v, out.add_special)) return e;
    } else if (key == "parse_special") {
      if (auto e = read_bool(key, v, out.parse_special)) return e;
    } else if (key == "with_pieces") {
      if (auto e = read_bool(key, v, out.with_pieces)) return e;
    } else {
      return bad_request("unknown field '" + key + "'", key, "unknown_parameter");
    }
  }
  if (!has_content) return bad_request("'content' is required", "content", "missing_required_parameter");
  return std::nullopt;
}

std::optional<ApiError> parse_detokenize_request(std::string_view body, DetokenizeRequest& out) {
  out = DetokenizeRequest{};
  json obj;
  if (auto e = parse_object(body, obj)) return e;
  bool has_tokens = false;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "tokens") {
      if (!v.is_array()) return wrong_type(key, "a list of token ids", v);
      if (auto e = read_ids(key, v, out.tokens)) return e;
      has_tokens = true;
    } else {
      return bad_request("unknown field '" + key + "'", key, "unknown_parameter");
    }
  }
  if (!has_tokens) return bad_request("'tokens' is required", "tokens", "missing_required_parameter");
  return std::nullopt;
}

}  // namespace longhaul::server
