// The default models against llama.cpp's own output, recorded by tools/record_fixtures.py
// through llama-cpp-python: token ids for every corpus case (both add_special and
// parse_special settings), llama_detokenize's text, and the built-in chat formats.
#include <gtest/gtest.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "base/mapped_file.h"
#include "tokenizer_test_util.h"

namespace longhaul::tokenizer {
namespace {

using testing::load_model;
using testing::LoadedModel;

struct ModelCase {
  const char* fixture_dir;  // under tests/testdata/fixtures/
  std::string (*path)();
};

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.fixture_dir; }

std::string to_hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

class FixtureTest : public ::testing::TestWithParam<ModelCase> {
 protected:
  std::optional<nlohmann::json> fixture(const std::string& name) {
    const std::string path = std::string(LONGHAUL_TESTDATA_DIR) + "/fixtures/" + GetParam().fixture_dir + "/" + name;
    if (!longhaul::testing::file_exists(path)) return std::nullopt;
    Result<std::string> text = read_text_file(path);
    LH_CHECK_MSG(text.is_ok(), text.message());
    return nlohmann::json::parse(*text);
  }
};

#define LH_LOAD_OR_SKIP(var, fixture_name, json_var)                                                                   \
  if (!longhaul::testing::file_exists(GetParam().path())) GTEST_SKIP() << "model file missing: " << GetParam().path(); \
  const LoadedModel* var = load_model(GetParam().path());                                                              \
  std::optional<nlohmann::json> json_var = fixture(fixture_name);                                                      \
  if (!json_var) GTEST_SKIP() << "fixture missing: " << fixture_name

TEST_P(FixtureTest, EncodeMatchesLlamaCppOnEveryCase) {
  LH_LOAD_OR_SKIP(m, "tokenize.json", fx);
  const Tokenizer& t = *m->tokenizer;
  size_t n_cases = 0;
  size_t n_match = 0;
  for (const auto& c : (*fx)["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const bool add_special = c["add_special"].get<bool>();
    const bool parse_special = c["parse_special"].get<bool>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = t.encode(text, add_special, parse_special);
    ++n_cases;
    if (got == expected) ++n_match;
    EXPECT_EQ(got, expected) << "text (hex) " << to_hex(text) << " add_special=" << add_special
                             << " parse_special=" << parse_special;
  }
  std::cout << "[ fixture  ] " << GetParam().fixture_dir << " tokenize: " << n_match << "/" << n_cases
            << " cases identical to llama.cpp\n";
  EXPECT_GT(n_cases, 100u) << "the corpus shrank unexpectedly";
}

TEST_P(FixtureTest, DecodeMatchesLlamaDetokenize) {
  LH_LOAD_OR_SKIP(m, "tokenize.json", fx);
  const Tokenizer& t = *m->tokenizer;
  size_t n_checked = 0;
  for (const auto& c : (*fx)["cases"]) {
    if (!c.contains("decoded_hex")) continue;
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(to_hex(t.decode(ids, false)), c["decoded_hex"].get<std::string>()) << "ids of " << c["text"];
    EXPECT_EQ(to_hex(t.decode(ids, true)), c["decoded_special_hex"].get<std::string>()) << "ids of " << c["text"];
    ++n_checked;
  }
  EXPECT_GT(n_checked, 50u);
}

TEST_P(FixtureTest, ChatFormatMatchesLlamaCppBuiltIn) {
  LH_LOAD_OR_SKIP(m, "chat.json", fx);
  const ChatFormat format = detect_chat_format(*m->file);
  size_t n = 0;
  for (const auto& c : (*fx)["cases"]) {
    std::vector<ChatMessage> messages;
    for (const auto& msg : c["messages"])
      messages.push_back({msg["role"].get<std::string>(), msg["content"].get<std::string>()});
    EXPECT_EQ(format_chat(format, messages, c["add_generation_prompt"].get<bool>()), c["text"].get<std::string>());
    ++n;
  }
  EXPECT_GT(n, 0u);
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// Invalid UTF-8 tokenizes as llama.cpp tokenizes it: each invalid byte U+FFFD under byte-level BPE, the raw bytes
// (byte fallback) under SentencePiece (hardening.json, recorded from the bytes themselves).
TEST_P(FixtureTest, InvalidUtf8MatchesLlamaCpp) {
  LH_LOAD_OR_SKIP(m, "hardening.json", fx);
  size_t n = 0;
  for (const auto& c : (*fx)["invalid_utf8"]) {
    const std::string bytes = from_hex(c["text_hex"].get<std::string>());
    EXPECT_EQ(m->tokenizer->encode(bytes, c["add_special"].get<bool>(), false), c["ids"].get<std::vector<int32_t>>())
        << "bytes " << c["text_hex"];
    ++n;
  }
  EXPECT_GE(n, 20u);
}

// Messages that spell the template's markers stay text: the ids are llama.cpp's for its template's output with only
// the template's own markers as control tokens (hardening.json). A message can neither close its turn nor open one.
TEST_P(FixtureTest, ChatMessagesNeverBecomeControlTokens) {
  LH_LOAD_OR_SKIP(m, "hardening.json", fx);
  const ChatFormat format = detect_chat_format(*m->file);
  size_t n = 0;
  for (const auto& c : (*fx)["chat_injection"]) {
    std::vector<ChatMessage> messages;
    for (const auto& msg : c["messages"])
      messages.push_back({msg["role"].get<std::string>(), msg["content"].get<std::string>()});
    const std::vector<int32_t> ids = encode_chat(*m->tokenizer, format, messages, c["add_generation_prompt"].get<bool>());
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << c["messages"].dump();
    ++n;
  }
  EXPECT_GE(n, 5u);
}

INSTANTIATE_TEST_SUITE_P(DefaultModels, FixtureTest,
                         ::testing::Values(ModelCase{"smollm2", &longhaul::testing::smollm2_path},
                                           ModelCase{"gemma3", &longhaul::testing::gemma3_path}),
                         [](const ::testing::TestParamInfo<ModelCase>& info) {
                           return std::string(info.param.fixture_dir);
                         });

// Byte-level BPE loses nothing: every corpus text comes back byte for byte (SentencePiece
// does not promise this, so only the SmolLM2 vocabulary is checked).
TEST(ByteLevelBpeRoundTrip, DecodeOfEncodeIsIdentityOnTheCorpus) {
  const std::string model_path = longhaul::testing::smollm2_path();
  const std::string fixture_path = std::string(LONGHAUL_TESTDATA_DIR) + "/fixtures/smollm2/tokenize.json";
  if (!longhaul::testing::file_exists(model_path)) GTEST_SKIP() << "model file missing: " << model_path;
  if (!longhaul::testing::file_exists(fixture_path)) GTEST_SKIP() << "fixture missing: " << fixture_path;
  const Tokenizer& t = *load_model(model_path)->tokenizer;
  ASSERT_EQ(t.model_name(), "gpt2");
  Result<std::string> json = read_text_file(fixture_path);
  ASSERT_TRUE(json.is_ok()) << json.message();
  size_t n = 0;
  const nlohmann::json fixture = nlohmann::json::parse(*json);
  for (const auto& c : fixture["cases"]) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(t.decode(t.encode(text, false, false)), text);
    ++n;
  }
  EXPECT_GT(n, 100u);
}

}  // namespace
}  // namespace longhaul::tokenizer
