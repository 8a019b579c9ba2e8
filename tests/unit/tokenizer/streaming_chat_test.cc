// StreamingDecoder on split and broken UTF-8 (expected output worked by hand from Unicode's
// "maximal subpart" rule), and the chat formats (worked from llama.cpp's built-in formats).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace longhaul::tokenizer {
namespace {

using testing::make_tokenizer;
using testing::spm_tokens;
using testing::vocab_writer;

const std::string kFffd = "\xEF\xBF\xBD";

Tokenizer byte_vocab() { return make_tokenizer(vocab_writer("llama", spm_tokens({{"x"}}))); }
constexpr int32_t byte_id(int b) { return 3 + b; }  // <0xXX> ids in spm_tokens()

TEST(StreamingDecoder, HoldsSplitCharactersUntilComplete) {
  const Tokenizer t = byte_vocab();
  StreamingDecoder d(t);
  EXPECT_EQ(d.push(byte_id(0xC3)), "");
  EXPECT_EQ(d.push(byte_id(0xA9)), "\xC3\xA9");  // é
  const std::string llama = "\xF0\x9F\xA6\x99";  // U+1F999
  EXPECT_EQ(d.push_bytes(llama.substr(0, 1)), "");
  EXPECT_EQ(d.push_bytes(llama.substr(1, 2)), "");
  EXPECT_EQ(d.push_bytes(llama.substr(3) + "ok"), llama + "ok");
  EXPECT_EQ(d.flush(), "");
}

TEST(StreamingDecoder, InvalidBytesBecomeReplacementAsSoonAsKnown) {
  const Tokenizer t = byte_vocab();
  StreamingDecoder d(t);
  EXPECT_EQ(d.push_bytes("\x80"), kFffd);                          // a lone continuation byte
  EXPECT_EQ(d.push_bytes("\xC3"), "");                             // could still become a character
  EXPECT_EQ(d.push_bytes("A"), kFffd + "A");                       // ... but "A" is no continuation
  EXPECT_EQ(d.push_bytes("\xE0\x80"), kFffd + kFffd);              // E0 needs A0..BF next (no overlong forms)
  EXPECT_EQ(d.push_bytes("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // a surrogate: three subparts
  EXPECT_EQ(d.push_bytes("\xF4\x90"), kFffd + kFffd);              // above U+10FFFF
  EXPECT_EQ(d.push_bytes("\xC0\xFF"), kFffd + kFffd);              // bytes that never appear in UTF-8
  EXPECT_EQ(d.push_bytes("\xE4\xB8"), "");
  EXPECT_EQ(d.flush(), kFffd);  // an unfinished character at the end is one replacement
  EXPECT_EQ(d.flush(), "");
}

TEST(StreamingDecoder, ControlTokensAreSilentUnlessRendered) {
  const Tokenizer t = byte_vocab();
  StreamingDecoder plain(t);
  EXPECT_EQ(plain.push(2), "");
  StreamingDecoder special(t, /*render_special=*/true);
  EXPECT_EQ(special.push(2), "</s>");
}

// On the BPE model a CJK character or emoji spans several tokens: the running output must
// always end on a character boundary of the original text and add up to all of it.
TEST(StreamingDecoder, RealModelOutputEndsOnCharacterBoundaries) {
  const auto* m = testing::load_model(longhaul::testing::smollm2_path());
  if (m == nullptr) GTEST_SKIP() << "model file missing";
  const std::string text = "Caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\xA6\x99\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!";
  StreamingDecoder d(*m->tokenizer);
  std::string so_far;
  for (int32_t id : m->tokenizer->encode(text, false, false)) {
    so_far += d.push(id);
    ASSERT_EQ(text.compare(0, so_far.size(), so_far), 0) << "not a prefix: " << so_far;
    if (so_far.size() < text.size()) {
      EXPECT_NE(static_cast<uint8_t>(text[so_far.size()]) & 0xC0, 0x80);
    }
  }
  so_far += d.flush();
  EXPECT_EQ(so_far, text);
}

TEST(ChatFormat, ChatMl) {
  const std::vector<ChatMessage> messages = {{"system", "S"}, {"user", "U"}, {"assistant", " A "}};
  EXPECT_EQ(format_chat(ChatFormat::kChatMl, messages, true),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n A "
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(format_chat(ChatFormat::kChatMl, std::span(messages).first(1), false), "<|im_start|>system\nS<|im_end|>\n");
}

TEST(ChatFormat, GemmaFoldsSystemIntoTheNextUserTurn) {
  const std::vector<ChatMessage> messages = {
      {"system", "  S  "}, {"system", "T"}, {"assistant", "A"}, {"user", " U\n"}, {"user", "V"}};
  EXPECT_EQ(format_chat(ChatFormat::kGemma, messages, true),
            "<start_of_turn>model\nA<end_of_turn>\n"
            "<start_of_turn>user\nST\n\nU<end_of_turn>\n"
            "<start_of_turn>user\nV<end_of_turn>\n"
            "<start_of_turn>model\n");
}

ChatFormat detect(const std::string& arch, const char* tmpl) {
  gguf::GgufWriter w;
  w.add_string("general.architecture", arch);
  if (tmpl != nullptr) w.add_string("tokenizer.chat_template", tmpl);
  testing::ParsedGguf p = testing::parse_gguf(w);
  return detect_chat_format(*p.file);
}

TEST(ChatFormat, DetectionFromTemplateThenArchitecture) {
  EXPECT_EQ(detect("llama", "{{'<|im_start|>' + message['role'] + '\\n'}}"), ChatFormat::kChatMl);
  EXPECT_EQ(detect("llama", "{{ '<start_of_turn>' + role + '\\n' }}"), ChatFormat::kGemma);
  EXPECT_EQ(detect("gemma3", "chatml"), ChatFormat::kChatMl);
  EXPECT_EQ(detect("gemma3", nullptr), ChatFormat::kGemma);
  EXPECT_EQ(detect("llama", nullptr), ChatFormat::kChatMl);
  // Phi-4 uses <|im_start|> but is not ChatML; Mistral's [INST] comes first in the detection order.
  EXPECT_EQ(detect("gemma3", "<|im_start|>user<|im_sep|>"), ChatFormat::kGemma);
  EXPECT_EQ(detect("qwen2", "[INST] <start_of_turn>"), ChatFormat::kChatMl);
}

}  // namespace
}  // namespace longhaul::tokenizer
