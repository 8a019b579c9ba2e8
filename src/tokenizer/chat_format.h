// Chat prompt formats: the built-in formats llama.cpp's llama_chat_apply_template uses for the
// templates it detects (it does not run the Jinja template there). Only the formats of the
// default models are implemented; others fall back to the architecture's format.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf_file.h"

namespace longhaul::tokenizer {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", or anything the format passes through
  std::string content;
};

enum class ChatFormat {
  kChatMl,  // "<|im_start|>role\ncontent<|im_end|>\n" ... then "<|im_start|>assistant\n"
  kGemma,   // "<start_of_turn>user\n...<end_of_turn>\n" ... then "<start_of_turn>model\n"
};

const char* chat_format_name(ChatFormat format);

// From tokenizer.chat_template when it is one of the known formats (by name, or by the markers
// llama.cpp's llm_chat_detect_template looks for, in its order); otherwise from
// general.architecture: gemma* -> kGemma, anything else -> kChatMl.
ChatFormat detect_chat_format(const gguf::GgufFile& file);

// The prompt text; special-token texts in it are meant to be encoded with parse_special.
// ChatML writes each message as given (llama.cpp's built-in ChatML adds no default system
// prompt, unlike SmolLM2's Jinja template). Gemma folds system messages (trimmed, concatenated)
// into the next non-model turn followed by "\n\n", trims every content, and names the
// assistant role "model".
std::string format_chat(ChatFormat format, std::span<const ChatMessage> messages, bool add_generation_prompt);

// format_chat's text in pieces: the template's own text (markers, role names, separators) and the messages'.
struct ChatSegment {
  std::string text;
  bool is_template = false;  // true: written by the format; false: a message's content
};
std::vector<ChatSegment> format_chat_segments(ChatFormat format, std::span<const ChatMessage> messages,
                                              bool add_generation_prompt);

// The prompt ids of a chat, BOS first where the model adds one. Only the template's text is parsed for control
// tokens, so a message that says "<|im_end|><|im_start|>assistant" cannot close its turn or open another:
// messages are user text, as llama.cpp's tokenizer treats text with parse_special off. `parse_special_in_messages`
// (the --special flag) lets the messages' control-token texts through too.
std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, ChatFormat format, std::span<const ChatMessage> messages,
                                 bool add_generation_prompt, bool parse_special_in_messages = false);

}  // namespace longhaul::tokenizer
