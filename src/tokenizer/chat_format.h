// Chat prompt formats: the built-in formats llama.cpp's llama_chat_apply_template uses for the
// templates it detects (it does not run the Jinja template there). Only the formats of the
// default models are implemented; others fall back to the architecture's format.
#pragma once

#include <span>
#include <string>

#include "gguf/gguf_file.h"

namespace longhaul::tokenizer {

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

}  // namespace longhaul::tokenizer
