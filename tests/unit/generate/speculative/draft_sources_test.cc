// The draft sources on crafted sequences: prompt lookup's matcher (longest tail first, latest occurrence,
// continuation cut at the text's end) and Token Recycling's matrix (rows = top-k of the logits after each fed
// token) and its tree (the template walked breadth-first over the matrix), each checked against values worked out
// by hand from the papers' rules.
#include <gtest/gtest.h>

#include <vector>

#include "draft_testing.h"
#include "generate/speculative/ngram.h"
#include "generate/speculative/recycle.h"
#include "generate/speculative/registry.h"

namespace longhaul::generate::speculative {
namespace {

using testing::propose;

TEST(NgramMatcher, FindsTheLatestEarlierOccurrenceOfTheTail) {
  //                                0  1  2  3  4  5  6  7  8
  const std::vector<int32_t> text = {5, 6, 7, 1, 6, 7, 2, 6, 7};
  EXPECT_EQ(find_latest_earlier(text, 2), 4);   // "6 7" at 4 (and at 1): the latest
  EXPECT_EQ(find_latest_earlier(text, 1), 5);   // "7" at 5
  EXPECT_EQ(find_latest_earlier(text, 3), -1);  // "2 6 7" occurs only as the tail
  EXPECT_EQ(find_latest_earlier(text, 9), -1);  // the whole text has nothing before it
  EXPECT_EQ(find_latest_earlier(std::vector<int32_t>{4, 4, 4}, 2), 0);  // overlapping the tail is allowed
}

TEST(NgramSource, ProposesWhatFollowedTheLongestMatchingTail) {
  NgramSource source(1, 4);
  // Tail "1 2 3": occurs at 0 (followed by 9 8) — a 3-gram match, preferred over the later 1-gram "3" at 6.
  const std::vector<int32_t> text = {1, 2, 3, 9, 8, 0, 3, 4, 1, 2, 3};
  EXPECT_EQ(propose(source, text, 4).tokens, (std::vector<int32_t>{9, 8, 0, 3}));
  EXPECT_TRUE(propose(source, text, 4).parents.empty());  // a chain
  EXPECT_EQ(propose(source, text, 1).tokens, (std::vector<int32_t>{9}));
  // Only a 1-gram matches: "3" latest at 6, followed by 4 1 2 3 (cut at the text's end).
  const std::vector<int32_t> text2 = {1, 2, 3, 9, 8, 0, 3, 4, 1, 7, 3};
  EXPECT_EQ(propose(source, text2, 8).tokens, (std::vector<int32_t>{4, 1, 7, 3}));
  // Nothing matches.
  EXPECT_TRUE(propose(source, {1, 2, 3}, 4).empty());
  EXPECT_TRUE(propose(source, {}, 4).empty());
  // n_min = 2 ignores 1-gram matches.
  NgramSource strict(2, 4);
  EXPECT_TRUE(propose(strict, text2, 8).empty());
  // Periodic text: the continuation runs into the tail itself.
  EXPECT_EQ(propose(source, {7, 8, 7, 8, 7}, 5).tokens, (std::vector<int32_t>{8, 7}));
}

TEST(NgramSource, CountsTheWholeMatchedTailForTheEvidenceClass) {
  NgramSource source(1, 4);
  std::vector<int32_t> tokens;
  int32_t matched = -1;
  // "1 2 3" at 0..2 matches the tail's last three tokens and no more (the text starts before a fourth).
  EXPECT_EQ(source.lookup(std::vector<int32_t>{1, 2, 3, 9, 8, 0, 3, 4, 1, 2, 3}, 4, tokens, &matched), 3);
  EXPECT_EQ(matched, 3);
  // A 1-gram "3" at 6: 0 before it against 7 before the tail.
  EXPECT_EQ(source.lookup(std::vector<int32_t>{1, 2, 3, 9, 8, 0, 3, 4, 1, 7, 3}, 4, tokens, &matched), 1);
  EXPECT_EQ(matched, 1);
  EXPECT_EQ(source.lookup(std::vector<int32_t>{1, 2, 3}, 4, tokens, &matched), 0);
  EXPECT_EQ(matched, 0);
  // A quoted span of 20 tokens: the 4-gram lookup finds its first occurrence, which matches all 20, and its
  // evidence class is that of 17 tokens or more. Past kMaxCountedMatch the count stops.
  std::vector<int32_t> quote;
  for (int32_t i = 0; i < 20; ++i) quote.push_back(100 + i);
  std::vector<int32_t> text = quote;
  text.push_back(55);
  text.insert(text.end(), quote.begin(), quote.end());
  EXPECT_EQ(source.lookup(text, 4, tokens, &matched), 4);
  EXPECT_EQ(matched, 20);
  EXPECT_EQ(tokens, (std::vector<int32_t>{55, 100, 101, 102}));
  const Draft d = propose(source, text, 4);
  EXPECT_EQ(d.evidence, 3);
  for (int32_t i = 20; i < 40; ++i) quote.push_back(100 + i);
  text = quote;
  text.push_back(55);
  text.insert(text.end(), quote.begin(), quote.end());
  source.lookup(text, 4, tokens, &matched);
  EXPECT_EQ(matched, NgramSource::kMaxCountedMatch);
  EXPECT_EQ(propose(source, {1, 2, 3, 9, 8, 0, 3, 4, 1, 7, 3}, 4).evidence, 1);
  EXPECT_EQ(propose(source, {1, 2, 3}, 4).evidence, 0);  // nothing proposed
}

TEST(DraftEvidence, MatchLengthClassesSeparateChanceRepeatsFromQuotes) {
  const int32_t expected[] = {0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3};
  for (int32_t m = 0; m < 19; ++m) EXPECT_EQ(match_length_class(m), expected[m]) << m << " tokens";
  EXPECT_EQ(match_length_class(-1), 0);
  EXPECT_EQ(match_length_class(100000), kDraftEvidenceClasses - 1);
}

TEST(RecycleTemplate, ParentsFirstSiblingsByRankWideAtTheRoot) {
  const std::vector<TemplateNode> t = make_tree_template(63, 8);
  ASSERT_EQ(t.size(), 63u);
  // The first nodes: the root's best candidate, then its child by rank 0 (0.5 * 0.5 = 0.25 > 0.15 of rank 1).
  EXPECT_EQ(t[0].parent, kDraftRoot);
  EXPECT_EQ(t[0].rank, 0);
  EXPECT_EQ(t[1].parent, 0);
  EXPECT_EQ(t[1].rank, 0);
  EXPECT_EQ(t[2].parent, kDraftRoot);
  EXPECT_EQ(t[2].rank, 1);
  int32_t n_root = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_LT(t[i].parent, static_cast<int32_t>(i));
    n_root += t[i].parent == kDraftRoot;
    // Siblings appear by rank.
    for (size_t j = 0; j < i; ++j)
      if (t[j].parent == t[i].parent) {
        EXPECT_LT(t[j].rank, t[i].rank);
      }
  }
  EXPECT_EQ(n_root, 8);  // every candidate of the last token is tried
  EXPECT_EQ(make_tree_template(5, 8).size(), 5u);
}

TEST(RecycleSource, TopKIdsBestFirstTiesToTheLowerId) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f};
  std::vector<int32_t> top(3);
  top_k_ids(logits.data(), 6, top);
  EXPECT_EQ(top, (std::vector<int32_t>{5, 1, 3}));
  std::vector<int32_t> all(6);
  top_k_ids(logits.data(), 6, all);
  EXPECT_EQ(all, (std::vector<int32_t>{5, 1, 3, 4, 0, 2}));
}

TEST(RecycleSource, MatrixRowsAreEachFedTokensTopKAndTheTreeWalksThem) {
  constexpr int32_t kVocab = 8;
  RecycleSource source(kVocab, 2);
  EXPECT_TRUE(propose(source, {1}, 10).empty());  // nothing learnt yet
  // One verification step fed tokens 1, 4, 6; the logits after each put two candidates first.
  const std::vector<int32_t> fed = {1, 4, 6};
  std::vector<float> logits(3 * kVocab, 0.0f);
  auto set = [&](int row, int32_t best, int32_t second) {
    logits[static_cast<size_t>(row * kVocab + best)] = 5.0f;
    logits[static_cast<size_t>(row * kVocab + second)] = 4.0f;
  };
  set(0, 4, 2);  // after 1: 4, then 2
  set(1, 6, 3);  // after 4: 6, then 3
  set(2, 7, 1);  // after 6: 7, then 1
  VerifiedStep step;
  step.tokens = fed;
  step.logits = logits.data();
  step.n_vocab = kVocab;
  source.observe({0, fed}, step);
  EXPECT_EQ(std::vector<int32_t>(source.candidates(1).begin(), source.candidates(1).end()), (std::vector<int32_t>{4, 2}));
  EXPECT_EQ(std::vector<int32_t>(source.candidates(4).begin(), source.candidates(4).end()), (std::vector<int32_t>{6, 3}));
  EXPECT_EQ(std::vector<int32_t>(source.candidates(6).begin(), source.candidates(6).end()), (std::vector<int32_t>{7, 1}));
  EXPECT_EQ(source.candidates(2)[0], -1);
  // The template for k = 2 (priors 0.5, 0.15): root r0 (0.5), its r0 (0.25), root r1 (0.15), then r0 r0 r0
  // (0.125), r0 r1 (0.075), r0 r0 r1... Walked from token 1: 4; 4 -> 6; 2; 6 -> 7; 4 -> 3; 7 unknown: left out.
  const Draft d = propose(source, {0, 1}, 5);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{4, 6, 2, 7, 3}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot, 0, kDraftRoot, 1, 0}));
  // A later step overwrites a row: the matrix follows the text.
  std::vector<float> again(kVocab, 0.0f);
  again[5] = 1.0f;
  again[0] = 0.5f;
  const std::vector<int32_t> one = {4};
  step.tokens = one;
  step.logits = again.data();
  source.observe({0, one}, step);
  EXPECT_EQ(std::vector<int32_t>(source.candidates(4).begin(), source.candidates(4).end()), (std::vector<int32_t>{5, 0}));
}

TEST(DraftRegistry, NamesOptionsAndErrors) {
  EXPECT_EQ(draft_source_names(), (std::vector<std::string>{"none", "ngram", "recycle", "aded", "retrieval", "draft", "self"}));
  SpeculativeOptions o;
  Result<std::unique_ptr<DraftSource>> none = make_draft_source(o, 100);
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(*none, nullptr);
  o.type = "recycle";
  Result<std::unique_ptr<DraftSource>> recycle = make_draft_source(o, 100);
  ASSERT_TRUE(recycle.is_ok());
  EXPECT_EQ((*recycle)->name(), "recycle");
  o.type = "eagle";
  EXPECT_NE(validate(o).message().find("unknown draft source 'eagle' (known: none, ngram, recycle, aded, retrieval, draft, self)"), std::string::npos);
  o.type = "ngram";
  o.draft_min = 20;
  EXPECT_NE(validate(o).message().find("--draft-min 20 is outside [0, --draft-max 16]"), std::string::npos);
  o.draft_min = 0;
  o.draft_max = 0;
  EXPECT_FALSE(validate(o).is_ok());
}

}  // namespace
}  // namespace longhaul::generate::speculative
