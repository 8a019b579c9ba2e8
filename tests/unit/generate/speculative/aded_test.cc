// ADED's tri-gram table and its PUCT drafts on crafted steps, against values worked out by hand from the rules in
// aded.h (row update p <- (1 - eta) p + eta q with q the softmax of the k largest logits; score = Q + C P sqrt(N + 1)
// / (1 + n), C = 1.25 + log((N + 19653) / 19652)).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "generate/speculative/aded.h"

namespace longhaul::generate::speculative {
namespace {

constexpr int32_t kVocab = 8;

// Logits [kVocab] whose two largest are `best` (3 times as likely) and `second`: q = 0.75, 0.25 over the top 2.
std::vector<float> two_best(int32_t best, int32_t second) {
  std::vector<float> l(kVocab, -20.0f);
  l[static_cast<size_t>(best)] = std::log(3.0f);
  l[static_cast<size_t>(second)] = 0.0f;
  return l;
}

// One step of `fed` tokens (a chain; node 0 follows `context`) with the logits of each, keeping nodes `path`.
void observe(AdedSource& source, const std::vector<int32_t>& context, const std::vector<int32_t>& fed,
             const std::vector<std::vector<float>>& logits, const std::vector<int32_t>& path) {
  std::vector<float> all;
  for (const auto& l : logits) all.insert(all.end(), l.begin(), l.end());
  VerifiedStep step;
  step.tokens = fed;
  step.logits = all.data();
  step.n_vocab = kVocab;
  step.path = path;
  step.n_accepted = static_cast<int32_t>(path.size()) - 1;
  source.observe({0, context}, step);
}

Draft propose(AdedSource& source, const std::vector<int32_t>& context, int32_t max_tokens) {
  Draft d;
  source.propose({0, context}, max_tokens, d);
  return d;
}

TEST(AdedTable, RowsMoveHalfWayToEachStepsTopKAndKeepTheKMostProbable) {
  AdedSource source(kVocab, 2);
  EXPECT_TRUE(propose(source, {5, 3}, 4).empty());  // nothing learnt yet
  // After "5 3" the model puts 4 (0.75) before 6 (0.25): the new row holds half of that.
  observe(source, {5, 3}, {3}, {two_best(4, 6)}, {});
  auto row = source.row(5, 3);
  ASSERT_EQ(row.size(), 2u);
  EXPECT_EQ(row[0].token, 4);
  EXPECT_FLOAT_EQ(row[0].probability, 0.375f);
  EXPECT_EQ(row[1].token, 6);
  EXPECT_FLOAT_EQ(row[1].probability, 0.125f);
  EXPECT_EQ(source.row(AdedSource::kNoToken, 3).size(), 2u);  // the bigram row beside it
  // Next time 6 and 1 are tied (0.5 each): 6 -> 0.0625 + 0.25, 1 -> 0.25, 4 -> 0.1875 drops out of the top 2.
  std::vector<float> tie(kVocab, -20.0f);
  tie[6] = 1.0f;
  tie[1] = 1.0f;
  observe(source, {5, 3}, {3}, {tie}, {});
  row = source.row(5, 3);
  ASSERT_EQ(row.size(), 2u);
  EXPECT_EQ(row[0].token, 6);
  EXPECT_FLOAT_EQ(row[0].probability, 0.3125f);
  EXPECT_EQ(row[1].token, 1);
  EXPECT_FLOAT_EQ(row[1].probability, 0.25f);
  // Another pair ending in 3 has its own tri-gram row; the bigram row of 3 saw both steps.
  EXPECT_TRUE(source.row(7, 3).empty());
}

TEST(AdedTable, EachFedTokensPairIsItsParentAndItself) {
  AdedSource source(kVocab, 2);
  // A draft step: pending 3 after "5", then drafts 4 and 6 as a chain. Pairs: (5, 3), (3, 4), (4, 6).
  observe(source, {5, 3}, {3, 4, 6}, {two_best(4, 6), two_best(7, 2), two_best(1, 0)}, {0, 1});
  EXPECT_EQ(source.row(5, 3)[0].token, 4);
  EXPECT_EQ(source.row(3, 4)[0].token, 7);
  EXPECT_EQ(source.row(4, 6)[0].token, 1);
  EXPECT_TRUE(source.row(5, 4).empty());
  // The drafts were counted against the rows they came from (which this step created after counting, so the
  // counts start with the next step's drafts).
  observe(source, {5, 3}, {3, 4, 7}, {two_best(4, 6), two_best(7, 2), two_best(1, 0)}, {0, 1});
  EXPECT_EQ(source.row(5, 3)[0].n_drafted, 1);  // 4 after (5, 3): drafted and kept
  EXPECT_EQ(source.row(5, 3)[0].n_accepted, 1);
  EXPECT_EQ(source.row(3, 4)[0].token, 7);
  EXPECT_EQ(source.row(3, 4)[0].n_drafted, 1);  // 7 after (3, 4): drafted, rejected (not on the path)
  EXPECT_EQ(source.row(3, 4)[0].n_accepted, 0);
}

TEST(AdedDrafts, PuctDescentsGoDeepWhereConfidentAndBranchWhenADescentEnds) {
  AdedSource source(kVocab, 2);
  // Rows (5, 3): 4 then 6, priors 0.75 / 0.25; (3, 4): 7 then 2. Nothing is known after 7, 2 or 6.
  observe(source, {5, 3}, {3, 4}, {two_best(4, 6), two_best(7, 2)}, {});
  // Descent 1 at the root (N = 0): 4 scores 0.75 + 1.25 * 0.75 = 1.69, 6 only 0.56: add 4.
  // Descent 2 (N = 1): 4 scores 0.75 + 1.25 * 0.75 * sqrt(2) / 2 = 1.41 > 6's 0.25 + 1.25 * 0.25 * sqrt(2) = 0.69:
  //   go into 4, add its best candidate 7.
  // Descent 3 (N = 2): 4 again (1.29 against 0.79), then 7 (1.56 against 2's 0.79), which has no row: closed.
  // Descent 4: 4, then 2 is all that is left below it: add 2. Descent 5: 4 (1.22 against 0.88), 2 has no row:
  //   closed; descent 6: 4 has nothing open: closed. Descent 7: add 6.
  const Draft d = propose(source, {5, 3}, 4);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{4, 7, 2, 6}));
  EXPECT_EQ(d.parents, (std::vector<int32_t>{kDraftRoot, 0, 0, kDraftRoot}));
  EXPECT_EQ(propose(source, {5, 3}, 2).tokens, (std::vector<int32_t>{4, 7}));
  // An unseen pair falls back to the bigram row of its last token.
  EXPECT_EQ(propose(source, {0, 3}, 1).tokens, (std::vector<int32_t>{4}));
  // Nothing at all is known after 6.
  EXPECT_TRUE(propose(source, {5, 6}, 4).empty());
}

TEST(AdedDrafts, TheTargetsVerdictsMoveTheChoice) {
  AdedSource source(kVocab, 2);
  observe(source, {5, 3}, {3}, {two_best(4, 6)}, {});
  // Five steps reject a drafted 4 after (5, 3); five accept a drafted 6 there. The logits keep the row's priors at
  // 0.75 / 0.25.
  for (int i = 0; i < 5; ++i) {
    observe(source, {5, 3}, {3, 4}, {two_best(4, 6), two_best(1, 2)}, {0});
    observe(source, {5, 3}, {3, 6}, {two_best(4, 6), two_best(1, 2)}, {0, 1});
  }
  const auto row = source.row(5, 3);
  ASSERT_EQ(row.size(), 2u);
  EXPECT_EQ(row[0].token, 4);
  EXPECT_EQ(row[0].n_drafted, 5);
  EXPECT_EQ(row[0].n_accepted, 0);
  EXPECT_EQ(row[1].n_drafted, 5);
  EXPECT_EQ(row[1].n_accepted, 5);
  // Q(4) = 0.75 / 6 = 0.125, Q(6) = 5.25 / 6 = 0.875: 4 scores 0.125 + 0.9375 = 1.06, 6 scores 0.875 + 0.3125 =
  // 1.19. Exploitation of what the target accepted now beats the table's prior.
  EXPECT_EQ(propose(source, {5, 3}, 1).tokens, (std::vector<int32_t>{6}));
}

}  // namespace
}  // namespace longhaul::generate::speculative
