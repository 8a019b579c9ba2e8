#include "tokenizer/chat_format.h"

#include <cctype>
#include <initializer_list>
#include <optional>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace longhaul::tokenizer {
namespace {

// std::isspace in the C locale, as the reference trims.
std::string trim(std::string_view s) {
  size_t begin = 0;
  size_t end = s.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(s[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(s[end - 1]))) --end;
  return std::string(s.substr(begin, end - begin));
}

// Follows the order of llama.cpp's llm_chat_detect_template far enough to tell ChatML and
// Gemma apart from the templates it checks before them; nullopt for any other format.
std::optional<ChatFormat> format_from_template(std::string_view tmpl) {
  if (tmpl == "chatml") return ChatFormat::kChatMl;
  if (tmpl == "gemma") return ChatFormat::kGemma;
  auto has = [&](std::string_view marker) { return tmpl.find(marker) != std::string_view::npos; };
  auto has_all = [&](std::initializer_list<std::string_view> markers) {
    for (std::string_view m : markers)
      if (!has(m)) return false;
    return true;
  };
  if (has("<|im_start|>")) {
    // Phi-4 and SmolVLM use <|im_start|> without being ChatML.
    if (has("<|im_sep|>") || has("<end_of_utterance>")) return std::nullopt;
    return ChatFormat::kChatMl;
  }
  if (tmpl.substr(0, 7) == "mistral" || has("[INST]")) return std::nullopt;
  if (has_all({"<|assistant|>", "<|end|>"}) || has("[gMASK]<sop>") || has_all({"<|assistant|>", "<|user|>"}) ||
      has_all({"<|{{ item['role'] }}|>", "<|begin_of_image|>"}) || has_all({"<|user|>", "<|endoftext|>"}) ||
      has("bos_token + message['role']")) {
    return std::nullopt;
  }
  if (has("<start_of_turn>")) return ChatFormat::kGemma;
  return std::nullopt;
}

}  // namespace

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kChatMl: return "chatml";
    case ChatFormat::kGemma: return "gemma";
  }
  return "unknown";
}

ChatFormat detect_chat_format(const gguf::GgufFile& file) {
  if (const std::optional<std::string> tmpl = file.get_string("tokenizer.chat_template")) {
    if (const std::optional<ChatFormat> format = format_from_template(*tmpl)) return *format;
  }
  const std::string arch = file.get_string("general.architecture").value_or("");
  return arch.rfind("gemma", 0) == 0 ? ChatFormat::kGemma : ChatFormat::kChatMl;
}

std::vector<ChatSegment> format_chat_segments(ChatFormat format, std::span<const ChatMessage> messages,
                                              bool add_generation_prompt) {
  std::vector<ChatSegment> out;
  auto markup = [&](std::string text) { out.push_back({std::move(text), true}); };
  auto content = [&](std::string text) {
    if (!text.empty()) out.push_back({std::move(text), false});
  };
  switch (format) {
    case ChatFormat::kChatMl:
      for (const ChatMessage& m : messages) {
        markup("<|im_start|>" + m.role + "\n");
        content(m.content);
        markup("<|im_end|>\n");
      }
      if (add_generation_prompt) markup("<|im_start|>assistant\n");
      break;
    case ChatFormat::kGemma: {
      // Gemma has no system role: system text waits for the next turn that is not the model's.
      std::string system_prompt;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system_prompt += trim(m.content);
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : m.role;
        markup("<start_of_turn>" + role + "\n");
        if (!system_prompt.empty() && role != "model") {
          content(system_prompt);
          markup("\n\n");
          system_prompt.clear();
        }
        content(trim(m.content));
        markup("<end_of_turn>\n");
      }
      if (add_generation_prompt) markup("<start_of_turn>model\n");
      break;
    }
  }
  return out;
}

std::string format_chat(ChatFormat format, std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string out;
  for (const ChatSegment& s : format_chat_segments(format, messages, add_generation_prompt)) out += s.text;
  return out;
}

std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, ChatFormat format, std::span<const ChatMessage> messages,
                                 bool add_generation_prompt, bool parse_special_in_messages) {
  const std::vector<ChatSegment> segments = format_chat_segments(format, messages, add_generation_prompt);
  std::vector<TextSegment> pieces;
  pieces.reserve(segments.size());
  for (const ChatSegment& s : segments) pieces.push_back({s.text, s.is_template || parse_special_in_messages});
  return tokenizer.encode(pieces, true);
}

}  // namespace longhaul::tokenizer
