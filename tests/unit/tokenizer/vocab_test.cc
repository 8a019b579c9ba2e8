// Tiny hand-built vocabularies: the merge loops worked by hand, special-token splitting, and
// every load error from_gguf promises. No model file needed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace longhaul::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::make_tokenizer;
using testing::parse_gguf;
using testing::spm_tokens;
using testing::TokenSpec;
using testing::vocab_writer;

const std::string kSp = "\xE2\x96\x81";  // U+2581

// Ids: 0 <unk>, 1 <s>, 2 </s>, 3 + b for byte b, then 259.. for the pieces below.
std::vector<TokenSpec> spm_pieces() {
  return {{kSp, 1, -1.0f},       {"a", 1, -2.0f},        {"b", 1, -2.0f},  {"ab", 1, -0.5f},
          {kSp + "a", 1, -1.5f}, {kSp + "ab", 1, -0.1f}, {"ba", 1, -3.0f}, {"aa", 1, -1.0f}};
}
constexpr int32_t kSpmSp = 259, kSpmA = 260, kSpmAb = 262, kSpmSpA = 263, kSpmSpAb = 264, kSpmBa = 265, kSpmAa = 266;
constexpr int32_t spm_byte(int b) { return 3 + b; }

TEST(SentencePiece, HighestScoringPairMergesFirst) {
  const Tokenizer t = make_tokenizer(vocab_writer("llama", spm_tokens(spm_pieces())));
  // "▁ab": (a,b) scores -0.5 and beats (▁,a) at -1.5; then "▁ab" (-0.1) forms.
  EXPECT_THAT(t.encode("ab", true, false), ElementsAre(1, kSpmSpAb));
  // "▁ba": only (b,a) is a piece; "▁ba" is not.
  EXPECT_THAT(t.encode("ba", false, false), ElementsAre(kSpmSp, kSpmBa));
}

TEST(SentencePiece, MissingPiecesFallBackToBytes) {
  const Tokenizer t = make_tokenizer(vocab_writer("llama", spm_tokens(spm_pieces())));
  EXPECT_THAT(t.encode("abc", false, false), ElementsAre(kSpmSpAb, spm_byte('c')));
  EXPECT_THAT(t.encode("\xC3\xA9", false, false), ElementsAre(kSpmSp, spm_byte(0xC3), spm_byte(0xA9)));
  EXPECT_EQ(t.decode(t.encode("abc\xC3\xA9", false, false)), "abc\xC3\xA9");
}

TEST(SentencePiece, SpacesBecomeVisibleAndTiesGoLeft) {
  gguf::GgufWriter w = vocab_writer("llama", spm_tokens(spm_pieces()));
  EXPECT_THAT(make_tokenizer(w).encode("a a", false, false), ElementsAre(kSpmSpA, kSpmSpA));
  w.add_bool("tokenizer.ggml.add_space_prefix", false);
  const Tokenizer t = make_tokenizer(w);
  // (a,a) at 0 and at 1 score the same: the left one merges.
  EXPECT_THAT(t.encode("aaa", false, false), ElementsAre(kSpmAa, kSpmA));
}

TEST(SentencePiece, DecodeDropsTheAddedSpacePrefix) {
  const Tokenizer t = make_tokenizer(vocab_writer("llama", spm_tokens(spm_pieces())));
  const int32_t ids[] = {kSpmSpA, kSpmSpA};
  EXPECT_EQ(t.decode(ids), "a a");
  EXPECT_EQ(t.token_to_piece(kSpmSpA), " a");
  EXPECT_EQ(t.token_to_piece(1), "");
  EXPECT_EQ(t.token_to_piece(1, true), "<s>");
}

// Ids: 0 <|endoftext|> (control), 1 <extra> (user-defined), 2 a, 3 b, 4 c, 5 Ġ (space),
// 6 ab, 7 abc, 8 Ġa, 9 ",".
gguf::GgufWriter bpe_writer() {
  gguf::GgufWriter w = vocab_writer("gpt2", {{"<|endoftext|>", 3},
                                             {"<extra>", 4},
                                             {"a"},
                                             {"b"},
                                             {"c"},
                                             {"\xC4\xA0"},
                                             {"ab"},
                                             {"abc"},
                                             {"\xC4\xA0"
                                              "a"},
                                             {","}});
  w.add_string("tokenizer.ggml.pre", "gpt-2");
  w.add("tokenizer.ggml.merges", gguf::make_string_array({"a b", "ab c", "\xC4\xA0 a"}));
  return w;
}

TEST(ByteLevelBpe, LowestRankMergesFirst) {
  const Tokenizer t = make_tokenizer(bpe_writer());
  EXPECT_THAT(t.encode("abc", false, false), ElementsAre(7));
  // " abc" is one word "Ġabc": (a,b) rank 0 beats (Ġ,a) rank 2, then (ab,c) rank 1; "Ġabc" has no merge.
  EXPECT_THAT(t.encode(" abc", false, false), ElementsAre(5, 7));
  EXPECT_THAT(t.encode(" a", false, false), ElementsAre(8));
  EXPECT_THAT(t.encode("cab", false, false), ElementsAre(4, 6));
  // The GPT-2 regex cuts "ab c" into "ab" and " c".
  EXPECT_THAT(t.encode("ab c", false, false), ElementsAre(6, 5, 4));
}

TEST(ByteLevelBpe, DecodeSpellsBytesBackAndCleansSpaces) {
  const Tokenizer t = make_tokenizer(bpe_writer());
  const int32_t ids[] = {5, 7};
  EXPECT_EQ(t.decode(ids), " abc");
  // gpt-2 vocabularies apply clean_up_tokenization_spaces: " ," loses its space.
  const int32_t comma[] = {2, 5, 9};
  EXPECT_EQ(t.decode(comma), "a,");
}

TEST(ByteLevelBpe, SpecialTokens) {
  const Tokenizer t = make_tokenizer(bpe_writer());
  EXPECT_THAT(t.encode("a<extra>b", false, false), ElementsAre(2, 1, 3));  // user-defined: always
  EXPECT_THAT(t.encode("a<|endoftext|>", false, true), ElementsAre(2, 0));
  EXPECT_THAT(t.encode("a<|endoftext|>", false, false), ::testing::Not(::testing::Contains(0)));
  EXPECT_TRUE(t.is_end_of_generation(0));  // "<|endoftext|>" is on the end-of-generation list
  EXPECT_FALSE(t.is_end_of_generation(2));
}

TEST(ByteLevelBpe, AddSpecialFollowsTheFile) {
  gguf::GgufWriter w = bpe_writer();
  w.add_u32("tokenizer.ggml.bos_token_id", 0);
  w.add_u32("tokenizer.ggml.eos_token_id", 0);
  EXPECT_THAT(make_tokenizer(w).encode("a", true, false), ElementsAre(2));
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  w.add_bool("tokenizer.ggml.add_eos_token", true);
  EXPECT_THAT(make_tokenizer(w).encode("a", true, false), ElementsAre(0, 2, 0));
  EXPECT_THAT(make_tokenizer(w).encode("a", false, false), ElementsAre(2));
}

std::string load_error(const gguf::GgufWriter& w) {
  testing::ParsedGguf p = parse_gguf(w);
  Result<Tokenizer> t = Tokenizer::from_gguf(*p.file);
  return t.is_ok() ? "" : t.message();
}

TEST(TokenizerLoad, Errors) {
  EXPECT_THAT(load_error(vocab_writer("bert", spm_tokens({}))), HasSubstr("'bert'"));
  {
    gguf::GgufWriter w = vocab_writer("gpt2", {{"a"}});
    w.add_string("tokenizer.ggml.pre", "no-such-pre");
    w.add("tokenizer.ggml.merges", gguf::make_string_array({}));
    EXPECT_THAT(load_error(w), HasSubstr("no-such-pre"));
  }
  {
    gguf::GgufWriter w = vocab_writer("gpt2", {{"a"}});
    w.add_string("tokenizer.ggml.pre", "gpt-2");
    EXPECT_THAT(load_error(w), HasSubstr("merges"));
  }
  {
    gguf::GgufWriter w;
    w.add_string("tokenizer.ggml.model", "llama");
    w.add("tokenizer.ggml.tokens", gguf::make_string_array({"a", "b"}));
    w.add("tokenizer.ggml.token_type", gguf::make_i32_array({1}));
    EXPECT_THAT(load_error(w), HasSubstr("token_type"));
  }
  {
    gguf::GgufWriter w;
    w.add_string("tokenizer.ggml.model", "llama");
    w.add("tokenizer.ggml.tokens", gguf::make_string_array({"a", "b"}));
    w.add("tokenizer.ggml.scores", gguf::make_f32_array({0.0f}));
    EXPECT_THAT(load_error(w), HasSubstr("scores"));
  }
  EXPECT_THAT(load_error(vocab_writer("llama", {{"<unk>", 2}, {"<s>", 3}, {"</s>", 9}})), HasSubstr("token_type 9"));
  EXPECT_THAT(load_error(vocab_writer("llama", {{"<unk>", 2}, {"<s>", 3}, {"<s>", 3}})), HasSubstr("duplicate"));
  {
    gguf::GgufWriter w = vocab_writer("llama", spm_tokens({}));
    w.add_u32("tokenizer.ggml.bos_token_id", 1000);
    EXPECT_THAT(load_error(w), HasSubstr("bos_token_id"));
  }
  {
    gguf::GgufWriter w = bpe_writer();  // gpt2's default BOS id 11 is outside this vocabulary
    w.add_bool("tokenizer.ggml.add_bos_token", true);
    EXPECT_THAT(load_error(w), HasSubstr("add_bos_token"));
  }
  {
    gguf::GgufWriter w;
    w.add_string("tokenizer.ggml.model", "llama");
    EXPECT_THAT(load_error(w), HasSubstr("tokenizer.ggml.tokens"));
  }
  {
    gguf::GgufWriter w;
    EXPECT_THAT(load_error(w), HasSubstr("tokenizer.ggml.model"));
  }
}

}  // namespace
}  // namespace longhaul::tokenizer
