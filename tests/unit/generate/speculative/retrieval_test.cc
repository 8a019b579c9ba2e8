// The retrieval source on crafted token streams: the suffix array against a brute-force sort of the suffixes, the
// range search, and the draft trees worked out by hand from the rules in retrieval.h (longest match over the text
// and the corpus, continuations merged into a trie, pruning by share, prompt lookup's chain fused first unless the
// retrieval matched a longer tail).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "draft_testing.h"
#include "generate/speculative/retrieval.h"

namespace longhaul::generate::speculative {
namespace {

using testing::propose;

TEST(SuffixArray, SortsSuffixesShorterFirst) {
  const std::vector<int32_t> text = {2, 1, 2, 1, 3};
  // [1 2 1 3] < [1 3] < [2 1 2 1 3] < [2 1 3] < [3]
  EXPECT_EQ(build_suffix_array(text), (std::vector<int32_t>{1, 3, 0, 2, 4}));
  EXPECT_EQ(build_suffix_array(std::vector<int32_t>{1, 1, 1}), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_TRUE(build_suffix_array(std::vector<int32_t>{}).empty());
}

TEST(SuffixArray, MatchesABruteForceSortOnRepetitiveText) {
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    std::vector<int32_t> text(static_cast<size_t>(1 + rng() % 300));
    for (int32_t& t : text) t = static_cast<int32_t>(rng() % 3);  // three symbols: long repeats
    std::vector<int32_t> expected(text.size());
    std::iota(expected.begin(), expected.end(), 0);
    std::sort(expected.begin(), expected.end(), [&](int32_t a, int32_t b) {
      return std::lexicographical_compare(text.begin() + a, text.end(), text.begin() + b, text.end());
    });
    EXPECT_EQ(build_suffix_array(text), expected) << "round " << round;
  }
}

TEST(SuffixArray, FindsTheRangeOfAPattern) {
  const std::vector<int32_t> text = {2, 1, 2, 1, 3};
  const std::vector<int32_t> sa = build_suffix_array(text);
  EXPECT_EQ(find_suffix_range(text, sa, std::vector<int32_t>{2, 1}), (std::pair<int64_t, int64_t>{2, 4}));
  EXPECT_EQ(find_suffix_range(text, sa, std::vector<int32_t>{1}), (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_EQ(find_suffix_range(text, sa, std::vector<int32_t>{1, 3}), (std::pair<int64_t, int64_t>{1, 2}));
  const auto none = find_suffix_range(text, sa, std::vector<int32_t>{4});
  EXPECT_EQ(none.first, none.second);
  const auto past_end = find_suffix_range(text, sa, std::vector<int32_t>{3, 2});
  EXPECT_EQ(past_end.first, past_end.second);
}

TEST(RetrievalSource, TextOccurrencesFormATreeWithPromptLookupsChainFirst) {
  RetrievalSource source;
  //                                 0  1  2  3  4  5  6  7  8  9 10 11 12
  const std::vector<int32_t> text = {7, 1, 2, 3, 9, 1, 2, 3, 8, 5, 1, 2, 3};
  // The tail "1 2 3" occurred at 1..3 (then 9 1 2 3 8 5) and at 5..7 (then 8 5 1 2 3). Prompt lookup's chain is
  // the latest, 8 5 1 2 3: kept first; then the other branch from its root.
  Draft d = propose(source, text, 6);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{8, 5, 1, 2, 3, 9}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot, 0, 1, 2, 3, kDraftRoot}));
  d = propose(source, text, 3);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{8, 5, 1}));
  // Both occurrences match the tail's last three tokens (9 and 5 precede them): evidence class 1 (1-4 tokens).
  EXPECT_EQ(d.evidence, 1);
  EXPECT_TRUE(propose(source, {4, 5, 6}, 4).empty());  // no earlier occurrence, no corpus
  // A tail repeated for 18 tokens: past kMaxMatch, prompt lookup's count gives the class of 17 tokens or more.
  std::vector<int32_t> quote;
  for (int32_t i = 0; i < 18; ++i) quote.push_back(200 + i);
  std::vector<int32_t> quoted = quote;
  quoted.push_back(7);
  quoted.insert(quoted.end(), quote.begin(), quote.end());
  EXPECT_EQ(propose(source, quoted, 2).evidence, 3);
  quoted.erase(quoted.begin(), quoted.begin() + 6);  // now 12 tokens before the 7 match the tail
  EXPECT_EQ(propose(source, quoted, 2).evidence, 2);
}

TEST(RetrievalSource, CorpusContinuationsAreCountedAndTheMostFrequentComeFirst) {
  //                                    0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
  RetrievalSource source(std::vector<int32_t>{4, 1, 2, 3, 6, 6, 0, 1, 2, 3, 6, 7, 1, 2, 3, 5});
  // The text's longest tail in the corpus is "1 2 3" (at 1, 7, 12): continuations 6 6 0, 6 7 1 and 5. Node 6 is
  // reached by two of three occurrences; 5, then the second level, by one each.
  Draft d = propose(source, {9, 9, 1, 2, 3}, 3);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{6, 5, 6}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot, kDraftRoot, 0}));
  // A longer match wins over a shorter one: "0 1 2 3" occurs once (at 6), so only 6 7 1 follows.
  d = propose(source, {0, 1, 2, 3}, 3);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{6, 7, 1}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot, 0, 1}));
}

TEST(RetrievalSource, ALongerCorpusMatchComesBeforePromptLookupsChain) {
  RetrievalSource source(std::vector<int32_t>{9, 2, 3, 1, 4, 4});
  // Prompt lookup matches the text's last token, 1, at 1 and proposes 7 2 3 1; the corpus matches its last three,
  // 2 3 1, and proposes 4 4. The longer match goes first; the chain follows, ranked by count (none).
  const std::vector<int32_t> text = {5, 1, 7, 2, 3, 1};
  Draft d = propose(source, text, 3);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{4, 4, 7}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot, 0, kDraftRoot}));
  EXPECT_EQ(d.evidence, 1);  // the corpus's 3-token match (the chain's is 1)
  // As long a match in the text as the chain's: the chain stays first (TextOccurrences... above).
  RetrievalSource short_corpus(std::vector<int32_t>{1, 4, 4});
  d = propose(short_corpus, text, 3);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{7, 2, 3}));
}

TEST(RetrievalSource, RareContinuationsArePruned) {
  // "1" is followed once each by 10..26 and twice by 2: each of the 17 rare ones has a share of 1/19, below 1/16,
  // and is pruned with its subtree; 2 (2/19) stays, and under it only what both occurrences share (the second
  // ends the corpus).
  std::vector<int32_t> corpus;
  for (int32_t t = 10; t <= 26; ++t) corpus.insert(corpus.end(), {1, t});
  corpus.insert(corpus.end(), {1, 2, 1, 2});
  RetrievalSource source(corpus);
  const Draft d = propose(source, {0, 1}, 8);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{2}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot}));
}

}  // namespace
}  // namespace longhaul::generate::speculative
