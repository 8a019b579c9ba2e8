// The draft-model source on crafted streams (a table model, table_draft_model.h): greedy drafting, BiLD's fallback
// rule, the rollback of the draft model's state to the text the target kept; the vocabulary check on two tiny
// vocabularies; the registry's errors.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "../../tokenizer/tokenizer_test_util.h"
#include "generate/speculative/draft_model.h"
#include "generate/speculative/registry.h"
#include "table_draft_model.h"

namespace longhaul::generate::speculative {
namespace {

constexpr int32_t kVocab = 6;

// After token t the model expects t + 1 (mod 6) with probability 0.9, except after 2, where it is unsure (the
// largest probability is 0.3, on 3).
std::vector<std::vector<float>> table() {
  std::vector<std::vector<float>> t(kVocab, std::vector<float>(kVocab, 0.0f));
  for (int32_t a = 0; a < kVocab; ++a) {
    if (a == 2) {
      // exp(l) proportional to 0.3 for 3 and 0.14 for the other five.
      for (int32_t b = 0; b < kVocab; ++b) t[2][static_cast<size_t>(b)] = std::log(b == 3 ? 0.3f : 0.14f);
      continue;
    }
    for (int32_t b = 0; b < kVocab; ++b)
      t[static_cast<size_t>(a)][static_cast<size_t>(b)] = std::log(b == (a + 1) % kVocab ? 0.9f : 0.02f);
  }
  return t;
}

TEST(TopProbability, IsTheSoftmaxOfTheLargestLogit) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), 0.0f, std::log(3.0f)};
  const auto [token, p] = top_probability(logits.data(), 4);
  EXPECT_EQ(token, 1);  // the lower id of a tie
  EXPECT_NEAR(p, 3.0f / 8.0f, 1e-6f);
}

TEST(DraftModelSource, DraftsGreedilyAndStopsWhereTheDraftModelIsUnsure) {
  auto model = std::make_unique<testing::TableDraftModel>(table());
  testing::TableDraftModel* m = model.get();
  DraftModelSource source(std::move(model), 0.5f);
  Draft d;
  const std::vector<int32_t> text = {5, 3};
  source.propose({7, text}, 3, d);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{4, 5, 0}));  // 0.9 each
  EXPECT_TRUE(d.parents.empty());                          // a chain
  EXPECT_EQ(m->n_appends(), 2);                            // the last draft token is not fed
  EXPECT_EQ(m->held(7), (std::vector<int32_t>{5, 3, 4, 5}));
  EXPECT_EQ(source.n_fallbacks(), 0);
  // From 0: 1 (0.9), 2 (0.9), then after 2 the best is 0.3 < 0.5: the draft hands over.
  d.clear();
  const std::vector<int32_t> text2 = {0};
  source.propose({8, text2}, 5, d);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(source.n_fallbacks(), 1);
  // Without the fallback (threshold 0) it drafts on through the unsure token.
  DraftModelSource eager(std::make_unique<testing::TableDraftModel>(table()), 0.0f);
  d.clear();
  eager.propose({0, text2}, 4, d);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{1, 2, 3, 4}));
}

TEST(DraftModelSource, TheDraftModelRollsBackToWhatTheTargetKept) {
  auto model = std::make_unique<testing::TableDraftModel>(table());
  testing::TableDraftModel* m = model.get();
  DraftModelSource source(std::move(model), 0.5f);
  Draft d;
  std::vector<int32_t> text = {5, 3};
  source.propose({1, text}, 4, d);  // 4 5 0 1; holds 5 3 4 5 0
  ASSERT_EQ(d.tokens, (std::vector<int32_t>{4, 5, 0, 1}));
  // The target kept 4 and then emitted 2 instead of 5: the draft model drops 5 and 0, keeps 5 3 4 and feeds 2.
  text = {5, 3, 4, 2};
  d.clear();
  source.propose({1, text}, 4, d);
  EXPECT_EQ(m->last_dropped(), 2u);
  EXPECT_TRUE(d.tokens.empty());  // after 2 the draft model is unsure
  source.end(1);
  EXPECT_TRUE(m->held(1).empty());
}

TEST(DraftVocabulary, SameSizeAndTextsOrTheFirstDifferenceNamed) {
  using namespace tokenizer::testing;
  const tokenizer::Tokenizer a = make_tokenizer(vocab_writer("llama", spm_tokens({{"a"}, {"b"}})));
  const tokenizer::Tokenizer same = make_tokenizer(vocab_writer("llama", spm_tokens({{"a"}, {"b"}})));
  const tokenizer::Tokenizer other = make_tokenizer(vocab_writer("llama", spm_tokens({{"a"}, {"c"}})));
  const tokenizer::Tokenizer shorter = make_tokenizer(vocab_writer("llama", spm_tokens({{"a"}})));
  EXPECT_TRUE(check_same_vocabulary(a, same).is_ok());
  // 3 special tokens and 256 bytes come first: "a" is 259, "b" 260.
  EXPECT_NE(check_same_vocabulary(a, other).message().find("token 260 is 'c' in the draft model's vocabulary and 'b' "
                                                           "in the target's"),
            std::string::npos)
      << check_same_vocabulary(a, other).message();
  EXPECT_NE(check_same_vocabulary(a, shorter).message().find("the draft model's vocabulary has 260 tokens and the "
                                                             "target's 261"),
            std::string::npos)
      << check_same_vocabulary(a, shorter).message();
}

TEST(DraftRegistry, TheDraftSourceNeedsItsModel) {
  SpeculativeOptions o;
  o.type = "draft";
  EXPECT_NE(validate(o).message().find("--spec-type draft needs a draft model: -md MODEL"), std::string::npos);
  o.draft_model = "small.gguf";
  EXPECT_TRUE(validate(o).is_ok());
  const Result<std::unique_ptr<DraftSource>> made = make_draft_source(o, 100);  // the caller loaded no model
  ASSERT_FALSE(made.is_ok());
  EXPECT_NE(made.message().find("needs a draft model"), std::string::npos);
  o.draft_p_min = 1.5f;
  EXPECT_NE(validate(o).message().find("--draft-p-min 1.5"), std::string::npos);
}

}  // namespace
}  // namespace longhaul::generate::speculative
