#include "eval/passkey.h"

#include <gtest/gtest.h>

#include "gguf/gguf_file.h"
#include "testing/model_paths.h"

namespace longhaul::eval {
namespace {

TEST(Passkey, ScoresByContainment) {
  EXPECT_TRUE(passkey_correct(" 48213. Remember", "48213"));
  EXPECT_FALSE(passkey_correct(" 4821 3", "48213"));
}

class PasskeyPromptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = longhaul::testing::smollm2_path();
    if (!longhaul::testing::file_exists(path)) GTEST_SKIP() << "model not installed: " << path;
    Result<gguf::GgufFile> file = gguf::GgufFile::open(path);
    ASSERT_TRUE(file.is_ok()) << file.message();
    Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf(*file);
    ASSERT_TRUE(tok.is_ok()) << tok.message();
    tok_ = std::make_unique<tokenizer::Tokenizer>(std::move(tok).value());
  }
  std::unique_ptr<tokenizer::Tokenizer> tok_;
};

TEST_F(PasskeyPromptTest, LengthAndDepthAreAsAsked) {
  for (int32_t n : {512, 2048}) {
    for (double depth : {0.0, 0.5, 1.0}) {
      const PasskeyPrompt p = build_passkey_prompt(*tok_, n, depth, "48213");
      const auto size = static_cast<int32_t>(p.tokens.size());
      EXPECT_LE(size, n);
      EXPECT_GT(size, n - 40);  // within one filler unit (~25 tokens) of the target
      const std::string key_text =
          tok_->decode(std::span<const int32_t>(p.tokens).subspan(static_cast<size_t>(p.key_begin),
                                                                  static_cast<size_t>(p.key_end - p.key_begin)));
      EXPECT_EQ(key_text, " The pass key is 48213. Remember it. 48213 is the pass key.");
      // The key's relative place in the filler is the depth (to within one filler unit).
      const double place = static_cast<double>(p.key_begin) / size;
      EXPECT_NEAR(place, depth, 0.1 + 40.0 / size) << n << " " << depth;
    }
  }
  const std::string text = tok_->decode(build_passkey_prompt(*tok_, 256, 0.5, "11111").tokens);
  EXPECT_NE(text.find("What is the pass key? The pass key is"), std::string::npos);
  EXPECT_NE(text.find("The grass is green. The sky is blue."), std::string::npos);
}

}  // namespace
}  // namespace longhaul::eval
