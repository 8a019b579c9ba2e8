// Word splits worked by hand from the regexes (and checked against llama.cpp while writing
// the module). Words come back in the byte alphabet: a space is "Ġ" (U+0120).
#include "tokenizer/pretokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace longhaul::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kG = "\xC4\xA0";  // "Ġ", the byte alphabet's space

std::vector<std::string> split(std::string_view pre, std::string_view text) {
  Result<PreTokenizer> p = PreTokenizer::create(pre);
  LH_CHECK_MSG(p.is_ok(), p.message());
  return p->split(text);
}

TEST(PreTokenizer, Gpt2LeavesTheLastSpaceOfARunToTheNextWord) {
  EXPECT_THAT(split("gpt-2", "Hello  world"), ElementsAre("Hello", kG, kG + "world"));
  EXPECT_THAT(split("gpt-2", "it's 42!"), ElementsAre("it", "'s", kG + "42", "!"));
  EXPECT_THAT(split("gpt-2", "end  "), ElementsAre("end", kG + kG));  // a run at the end stays whole
}

TEST(PreTokenizer, SmolLmSplitsDigitsOneByOneFirst) {
  // The digit stage cuts "a  1" into "a  " and "1"; the GPT-2 stage then sees the run of
  // spaces at the end of its piece and keeps it whole.
  EXPECT_THAT(split("smollm", "a  12"), ElementsAre("a", kG + kG, "1", "2"));
}

TEST(PreTokenizer, Llama3GroupsDigitsByThreeAndIgnoresCaseInContractions) {
  EXPECT_THAT(split("llama3", "Hello  world 12345"), ElementsAre("Hello", kG, kG + "world", kG, "123", "45"));
  EXPECT_THAT(split("llama3", "I'M"), ElementsAre("I", "'M"));
  EXPECT_THAT(split("gpt-2", "I'M"), ElementsAre("I", "'", "M"));
  // Newlines collect the spaces before them.
  EXPECT_THAT(split("llama3", "a \n\nb"), ElementsAre("a", kG + "\xC4\x8A\xC4\x8A", "b"));
}

TEST(PreTokenizer, Qwen2TakesSingleDigits) {
  EXPECT_THAT(split("qwen2", "x 2024"), ElementsAre("x", kG, "2", "0", "2", "4"));
}

TEST(PreTokenizer, NonAsciiLettersAndSpaces) {
  // "é" is a letter; U+3000 (ideographic space) is whitespace; "½" is a number. Byte 0x80
  // is one of the unprintable bytes the alphabet moves up: it becomes U+0122 (C4 A2).
  EXPECT_THAT(split("gpt-2", "caf\xC3\xA9\xE3\x80\x80\xC2\xBD"),
              ElementsAre("caf\xC3\x83\xC2\xA9", "\xC3\xA3\xC4\xA2\xC4\xA2", "\xC3\x82\xC2\xBD"));
}

TEST(PreTokenizer, InvalidUtf8BecomesReplacementCharacters) {
  // Each bad byte reads as U+FFFD (EF BF BD), spelled in the byte alphabet.
  const std::string fffd = "\xC3\xAF\xC2\xBF\xC2\xBD";
  EXPECT_THAT(split("gpt-2", "\xFF\xE4\xB8"), ElementsAre(fffd + fffd + fffd));
}

TEST(PreTokenizer, UnknownNameIsAnError) {
  Result<PreTokenizer> p = PreTokenizer::create("klingon-7b");
  ASSERT_FALSE(p.is_ok());
  EXPECT_THAT(p.message(), HasSubstr("'klingon-7b'"));
}

}  // namespace
}  // namespace longhaul::tokenizer
