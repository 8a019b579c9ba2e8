// RULER-style needle in a haystack (Hsieh et al., 2024). Expected strings are RULER's
// templates (scripts/data/synthetic/niah.py), written out by hand.
#include "eval/niah.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "eval/task.h"
#include "gguf/gguf_file.h"
#include "testing/model_paths.h"

namespace longhaul::eval {
namespace {

constexpr const char* kVariants[] = {"niah", "niah-uuid", "niah-multikey", "niah-multivalue", "niah-multiquery"};

NiahConfig config_of(const std::string& name) {
  Result<NiahConfig> c = niah_config(name);
  EXPECT_TRUE(c.is_ok()) << c.message();
  return c.is_ok() ? *c : NiahConfig{};
}

bool is_seven_digits(const std::string& s) {
  return s.size() == 7 && s[0] != '0' && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_uuid4(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return s[14] == '4' && std::string("89ab").find(s[19]) != std::string::npos;
}

TEST(Niah, EveryVariantIsRegistered) {
  for (const char* name : kVariants) {
    Result<std::unique_ptr<Task>> t = make_task(name);
    ASSERT_TRUE(t.is_ok()) << name << ": " << t.message();
    EXPECT_EQ((*t)->name(), name);
  }
  EXPECT_FALSE(niah_config("niah-multikeys").is_ok());
}

TEST(Niah, SamplesAreDeterministicPerSeed) {
  for (const char* name : kVariants) {
    const NiahConfig c = config_of(name);
    const NiahSample a = make_niah_sample(c, 42), b = make_niah_sample(c, 42), other = make_niah_sample(c, 43);
    ASSERT_EQ(a.needles.size(), b.needles.size());
    for (size_t i = 0; i < a.needles.size(); ++i) {
      EXPECT_EQ(a.needles[i].key, b.needles[i].key);
      EXPECT_EQ(a.needles[i].value, b.needles[i].value);
    }
    EXPECT_EQ(a.queries, b.queries);
    EXPECT_EQ(a.expected, b.expected);
    EXPECT_NE(a.expected, other.expected) << name;
  }
}

TEST(Niah, SingleNeedleHasASevenDigitValue) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const NiahSample s = make_niah_sample(config_of("niah"), seed);
    ASSERT_EQ(s.needles.size(), 1u);
    ASSERT_EQ(s.queries, std::vector<std::string>{s.needles[0].key});
    ASSERT_EQ(s.expected, std::vector<std::string>{s.needles[0].value});
    EXPECT_TRUE(is_seven_digits(s.expected[0])) << s.expected[0];
    EXPECT_NE(s.needles[0].key.find('-'), std::string::npos);  // adjective-noun
  }
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const NiahSample s = make_niah_sample(config_of("niah-uuid"), seed);
    EXPECT_TRUE(is_uuid4(s.expected.at(0))) << s.expected[0];
  }
}

TEST(Niah, DistractorKeysDifferFromTheAskedKey) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const NiahSample s = make_niah_sample(config_of("niah-multikey"), seed);
    ASSERT_EQ(s.needles.size(), 4u);
    ASSERT_EQ(s.queries.size(), 1u);
    std::set<std::string> keys;
    int32_t asked = 0;
    for (const NiahNeedle& n : s.needles) {
      keys.insert(n.key);
      if (n.key == s.queries[0]) {
        ++asked;
        EXPECT_EQ(s.expected, std::vector<std::string>{n.value});
      }
    }
    EXPECT_EQ(keys.size(), 4u) << "keys are distinct";
    EXPECT_EQ(asked, 1) << "exactly one needle answers the question; three are distractors";
  }
}

TEST(Niah, MultiValueAsksForEveryValueOfOneKey) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const NiahSample s = make_niah_sample(config_of("niah-multivalue"), seed);
    ASSERT_EQ(s.needles.size(), 4u);
    ASSERT_EQ(s.queries.size(), 1u);
    std::multiset<std::string> values;
    for (const NiahNeedle& n : s.needles) {
      EXPECT_EQ(n.key, s.queries[0]);
      values.insert(n.value);
    }
    EXPECT_EQ(values, std::multiset<std::string>(s.expected.begin(), s.expected.end()));
    EXPECT_EQ(std::set<std::string>(s.expected.begin(), s.expected.end()).size(), 4u) << "values are distinct";
  }
}

TEST(Niah, MultiQueryAsksForEveryKey) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const NiahSample s = make_niah_sample(config_of("niah-multiquery"), seed);
    ASSERT_EQ(s.needles.size(), 4u);
    ASSERT_EQ(s.queries.size(), 4u);
    ASSERT_EQ(s.expected.size(), 4u);
    EXPECT_EQ(std::set<std::string>(s.queries.begin(), s.queries.end()).size(), 4u);
    for (size_t q = 0; q < 4; ++q) {
      // The q-th expected value is the one whose needle names the q-th asked key.
      const auto it = std::find_if(s.needles.begin(), s.needles.end(),
                                   [&](const NiahNeedle& n) { return n.key == s.queries[q]; });
      ASSERT_NE(it, s.needles.end());
      EXPECT_EQ(it->value, s.expected[q]);
    }
  }
}

TEST(Niah, ScoresTheFractionOfValuesRecalled) {
  const std::vector<std::string> one = {"4821307"};
  EXPECT_DOUBLE_EQ(niah_score(" 4821307.", one), 1.0);
  EXPECT_DOUBLE_EQ(niah_score(" 482130", one), 0.0);  // a prefix is not the value
  EXPECT_DOUBLE_EQ(niah_score(" 4821 307", one), 0.0);
  const std::vector<std::string> four = {"1111111", "2222222", "3333333", "4444444"};
  EXPECT_DOUBLE_EQ(niah_score(" 3333333, 1111111, and 9999999.", four), 0.5);
  EXPECT_DOUBLE_EQ(niah_score("4444444 2222222 1111111 3333333", four), 1.0);
  EXPECT_DOUBLE_EQ(niah_score("", four), 0.0);
  // RULER compares lower-cased strings, so a UUID in upper case counts.
  const std::vector<std::string> uuid = {"3f2c8a1e-9b4d-4c7a-8e21-0d5f6b7a9c13"};
  EXPECT_DOUBLE_EQ(niah_score(" 3F2C8A1E-9B4D-4C7A-8E21-0D5F6B7A9C13", uuid), 1.0);
  EXPECT_DOUBLE_EQ(niah_score("anything", std::vector<std::string>{}), 1.0);
}

TEST(Niah, AnswerBudgetGrowsWithTheValuesAsked) {
  EXPECT_GE(niah_answer_tokens(config_of("niah")), 16);
  EXPECT_GT(niah_answer_tokens(config_of("niah-uuid")), niah_answer_tokens(config_of("niah")));
  EXPECT_GT(niah_answer_tokens(config_of("niah-multivalue")), niah_answer_tokens(config_of("niah")));
  EXPECT_GT(niah_answer_tokens(config_of("niah-multiquery")), niah_answer_tokens(config_of("niah")));
}

class NiahPromptTest : public ::testing::Test {
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
  std::string text(const NiahPrompt& p, int32_t begin, int32_t end) const {
    return tok_->decode(
        std::span<const int32_t>(p.tokens).subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin)));
  }
  std::unique_ptr<tokenizer::Tokenizer> tok_;
};

TEST_F(NiahPromptTest, LengthAndDepthAreAsAsked) {
  for (const char* name : kVariants) {
    const NiahConfig c = config_of(name);
    const NiahSample s = make_niah_sample(c, 7);
    for (int32_t n : {1024, 4096}) {
      for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
        const NiahPrompt p = build_niah_prompt(*tok_, n, depth, c, s);
        const auto size = static_cast<int32_t>(p.tokens.size());
        EXPECT_LE(size, n) << name;
        EXPECT_GE(size, n * 0.97) << name << " " << n;  // within one filler unit (~23 tokens)
        // Depth as RULER defines it: the share of the filler before the needles, to within one unit.
        const int32_t filler = p.haystack_end - p.haystack_begin - (p.needles_end - p.needles_begin);
        const double share = static_cast<double>(p.needles_begin - p.haystack_begin) / filler;
        EXPECT_NEAR(share, depth, 30.0 / filler) << name << " " << n << " " << depth;
        // And as a fraction of the whole prompt (instruction, needles and question included).
        if (n == 4096) {
          EXPECT_NEAR(static_cast<double>(p.needles_begin) / size, depth, 0.05) << name << " " << depth;
        }
        EXPECT_EQ(p.tokens, build_niah_prompt(*tok_, n, depth, c, s).tokens) << "deterministic";
      }
    }
  }
}

TEST_F(NiahPromptTest, HoldsRulersSentences) {
  const NiahConfig single = config_of("niah");
  const NiahSample s = make_niah_sample(single, 3);
  const NiahPrompt p = build_niah_prompt(*tok_, 1024, 0.5, single, s);
  const std::string& key = s.queries[0];
  EXPECT_EQ(text(p, p.needles_begin, p.needles_end),
            "\nOne of the special magic numbers for " + key + " is: " + s.expected[0] + ".");
  const std::string all = tok_->decode(p.tokens);
  EXPECT_EQ(all.find("A special magic number is hidden within the following text."), 0u);
  EXPECT_NE(all.find("\nThe grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."),
            std::string::npos);
  const std::string question = "\nWhat is the special magic number for " + key +
                               " mentioned in the provided text? The special magic number for " + key +
                               " mentioned in the provided text is";
  ASSERT_GE(all.size(), question.size());
  EXPECT_EQ(all.substr(all.size() - question.size()), question);

  // Several keys asked: RULER's plural template and its "a, b, c, and d" list.
  const NiahConfig multi = config_of("niah-multiquery");
  const NiahSample m = make_niah_sample(multi, 3);
  const std::string q = m.queries[0] + ", " + m.queries[1] + ", " + m.queries[2] + ", and " + m.queries[3];
  const std::string mall = tok_->decode(build_niah_prompt(*tok_, 1024, 0.5, multi, m).tokens);
  EXPECT_NE(mall.find("What are all the special magic numbers for " + q + " mentioned in the provided text?"),
            std::string::npos);
  EXPECT_NE(mall.find("Some special magic numbers are hidden"), std::string::npos);
  for (const NiahNeedle& n : m.needles)
    EXPECT_NE(mall.find("One of the special magic numbers for " + n.key + " is: " + n.value + "."), std::string::npos);
}

}  // namespace
}  // namespace longhaul::eval
