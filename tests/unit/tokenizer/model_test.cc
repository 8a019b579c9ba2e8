// Special-token rules on the default models. Expected ids are the token texts' ids in the
// GGUF files and llama.cpp's behaviour (llama_vocab_is_eog, llama_tokenize) as observed
// through llama-cpp-python 0.3.36.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "tokenizer_test_util.h"

namespace longhaul::tokenizer {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using testing::id_of;
using testing::load_model;
using ::testing::Not;

const Tokenizer* smollm2() {
  const auto* m = load_model(longhaul::testing::smollm2_path());
  return m != nullptr ? m->tokenizer.get() : nullptr;
}
const Tokenizer* gemma3() {
  const auto* m = load_model(longhaul::testing::gemma3_path());
  return m != nullptr ? m->tokenizer.get() : nullptr;
}

#define LH_MODEL_OR_SKIP(var, getter) \
  const Tokenizer* var = getter();    \
  if (var == nullptr) GTEST_SKIP() << "model file missing"

TEST(SmolLm2Tokenizer, Basics) {
  LH_MODEL_OR_SKIP(t, smollm2);
  EXPECT_EQ(t->model_name(), "gpt2");
  EXPECT_EQ(t->pre_name(), "smollm");
  EXPECT_EQ(t->n_vocab(), 49152);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(t->token_attr(2), TokenAttr::kControl);
  EXPECT_TRUE(t->encode("", true, false).empty());
  EXPECT_TRUE(t->encode("", false, true).empty());
}

TEST(SmolLm2Tokenizer, ImEndIsPlainTextUnlessParsed) {
  LH_MODEL_OR_SKIP(t, smollm2);
  ASSERT_EQ(id_of(*t, "<|im_end|>"), 2);
  EXPECT_THAT(t->encode("<|im_end|>", false, true), ElementsAre(2));
  EXPECT_THAT(t->encode("x<|im_end|>y", false, true), Contains(2));
  const std::vector<int32_t> plain = t->encode("<|im_end|>", false, false);
  EXPECT_THAT(plain, Not(Contains(2)));
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(t->decode(plain), "<|im_end|>");
}

TEST(SmolLm2Tokenizer, DigitsAreSplitOneByOne) {
  LH_MODEL_OR_SKIP(t, smollm2);
  EXPECT_THAT(t->encode("2024", false, false),
              ElementsAre(id_of(*t, "2"), id_of(*t, "0"), id_of(*t, "2"), id_of(*t, "4")));
}

TEST(SmolLm2Tokenizer, ControlTokensRenderOnlyWhenAsked) {
  LH_MODEL_OR_SKIP(t, smollm2);
  EXPECT_EQ(t->token_to_piece(2), "");
  EXPECT_EQ(t->token_to_piece(2, true), "<|im_end|>");
  const std::vector<int32_t> ids = {1, id_of(*t, "hi"), 2};
  EXPECT_EQ(t->decode(ids), "hi");
  EXPECT_EQ(t->decode(ids, true), "<|im_start|>hi<|im_end|>");
}

TEST(SmolLm2Tokenizer, EndOfGenerationSetIsLlamaCpps) {
  LH_MODEL_OR_SKIP(t, smollm2);
  std::vector<int32_t> eog;
  for (int32_t id = 0; id < t->n_vocab(); ++id)
    if (t->is_end_of_generation(id)) eog.push_back(id);
  // <|endoftext|>, <|im_end|>, and <reponame> (llama.cpp takes it for a FIM repo token).
  EXPECT_THAT(eog, ElementsAre(0, 2, 4));
}

TEST(Gemma3Tokenizer, Basics) {
  LH_MODEL_OR_SKIP(t, gemma3);
  EXPECT_EQ(t->model_name(), "llama");
  EXPECT_EQ(t->n_vocab(), 262144);
  EXPECT_EQ(t->bos_id(), 2);
  EXPECT_EQ(t->eos_id(), 1);
  EXPECT_EQ(t->eot_id(), 106);
  EXPECT_TRUE(t->add_bos());
  EXPECT_THAT(t->encode("", true, false), ElementsAre(2));
  EXPECT_TRUE(t->encode("", false, false).empty());
  // No space prefix for Gemma 3 (tokenizer.ggml.add_space_prefix = false).
  EXPECT_THAT(t->encode("Hello", true, false), ElementsAre(2, id_of(*t, "Hello")));
}

TEST(Gemma3Tokenizer, UserDefinedTokensAreAlwaysMatched) {
  LH_MODEL_OR_SKIP(t, gemma3);
  ASSERT_EQ(t->token_attr(108), TokenAttr::kUserDefined);  // "\n\n"
  ASSERT_EQ(t->token_attr(203), TokenAttr::kUserDefined);  // "<s>"
  EXPECT_THAT(t->encode("a\n\nb", false, false), ElementsAre(id_of(*t, "a"), 108, id_of(*t, "b")));
  EXPECT_THAT(t->encode("a<s>b", false, false), Contains(203));
}

// "</s>" is user-defined in the file, but its text is on llama.cpp's end-of-generation list,
// which makes it a control token: matched only with parse_special, hidden when decoding.
TEST(Gemma3Tokenizer, EndOfSentenceTextIsControlLikeLlamaCpp) {
  LH_MODEL_OR_SKIP(t, gemma3);
  ASSERT_EQ(id_of(*t, "</s>"), 212);
  EXPECT_TRUE(t->is_control(212));
  EXPECT_THAT(t->encode("a</s>b", false, false), Not(Contains(212)));
  EXPECT_THAT(t->encode("a</s>b", false, true), Contains(212));
  EXPECT_EQ(t->token_to_piece(212), "");
}

TEST(Gemma3Tokenizer, EndOfGenerationSetIsLlamaCpps) {
  LH_MODEL_OR_SKIP(t, gemma3);
  std::vector<int32_t> eog;
  for (int32_t id = 0; id < t->n_vocab(); ++id)
    if (t->is_end_of_generation(id)) eog.push_back(id);
  EXPECT_THAT(eog, ElementsAre(1, 106, 212));  // <eos>, <end_of_turn>, </s>
}

TEST(Gemma3Tokenizer, ByteFallbackPiecesAreRawBytes) {
  LH_MODEL_OR_SKIP(t, gemma3);
  const int32_t id = id_of(*t, "<0xE4>");
  EXPECT_EQ(t->token_attr(id), TokenAttr::kByte);
  EXPECT_EQ(t->token_to_piece(id), "\xE4");
  EXPECT_EQ(t->token_to_piece(id_of(*t, "\xE2\x96\x81the")), " the");  // U+2581 reads as a space
}

TEST(Gemma3Tokenizer, StartOfTurnParsedOnlyOnRequest) {
  LH_MODEL_OR_SKIP(t, gemma3);
  const std::string prompt = "<start_of_turn>user\nhi<end_of_turn>\n";
  EXPECT_THAT(t->encode(prompt, false, true), Contains(105));
  EXPECT_THAT(t->encode(prompt, false, true), Contains(106));
  EXPECT_THAT(t->encode(prompt, false, false), Not(Contains(105)));
}

}  // namespace
}  // namespace longhaul::tokenizer
