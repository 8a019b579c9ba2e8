// Twilight's top-p page budget (Lin et al., 2025) on the policies that select pages: on crafted scores and masses
// the smallest best-first prefix of the budget's pages whose mass reaches P is read; P = 1 is the fixed budget;
// the mass estimate from scores written out; quest, hip and recycled pruning crafted caches as the rule says;
// every selecting policy takes top_p and every other one refuses it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kv/policies/page_selection.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::make;
using testing::NeedleCache;
using testing::select_for_decode;
using testing::step;
using testing::tiny_context;
using testing::tiny_shape;

// Pages 0..9, 0 and 9 always read. Candidates by score, best first: 5 (8), 7 (7), 8 (6), 1 (5), 3 (4), 6 (3), 2 (1),
// 4 (2) with masses 8, 4, 2, 1, 1, 0 for the first six (and 16 for each of the last two, which a budget of six
// never reaches).
struct CraftedPages {
  std::vector<float> score = {0, 5, 1, 4, 2, 8, 3, 7, 6, 0};
  std::vector<float> mass = {0, 1, 16, 1, 16, 8, 0, 4, 2, 0};
  std::vector<uint8_t> always;

  CraftedPages() : always(10, 0) { always[0] = always[9] = 1; }

  std::vector<int32_t> select(int32_t n_select, float p) const {
    std::vector<int32_t> selected;
    std::vector<std::pair<float, int32_t>> ranked;
    const int32_t n = select_top_pages(score, always, n_select, selected, ranked, TopPPruning{p, mass});
    EXPECT_EQ(n, static_cast<int32_t>(selected.size()) - 2);
    return selected;
  }
};

TEST(TopP, ReadsTheSmallestPrefixWhoseMassReachesP) {
  const CraftedPages c;
  // The six pages of the budget hold mass 16: P = 0.5 needs 8 (page 5 alone), 0.75 needs 12 (5, 7), 0.8 needs
  // 12.8 (5, 7, 8), 0.95 needs 15.2 (5, 7, 8, 1, 3: page 6 has no mass).
  EXPECT_EQ(c.select(6, 0.5f), (std::vector<int32_t>{0, 5, 9}));
  EXPECT_EQ(c.select(6, 0.75f), (std::vector<int32_t>{0, 5, 7, 9}));
  EXPECT_EQ(c.select(6, 0.8f), (std::vector<int32_t>{0, 5, 7, 8, 9}));
  EXPECT_EQ(c.select(6, 0.95f), (std::vector<int32_t>{0, 1, 3, 5, 7, 8, 9}));
  // At least one page, however small P.
  EXPECT_EQ(c.select(6, 0.01f), (std::vector<int32_t>{0, 5, 9}));
  // P = 1: the budget, every one of its pages (page 6 included).
  EXPECT_EQ(c.select(6, 1.0f), (std::vector<int32_t>{0, 1, 3, 5, 6, 7, 8, 9}));
  // The share is of the budget's pages: of the best three (mass 14), P = 0.9 needs 12.6: all three.
  EXPECT_EQ(c.select(3, 0.9f), (std::vector<int32_t>{0, 5, 7, 8, 9}));
  // Without mass to share, the budget.
  CraftedPages none;
  std::fill(none.mass.begin(), none.mass.end(), 0.0f);
  EXPECT_EQ(none.select(3, 0.5f), (std::vector<int32_t>{0, 5, 7, 8, 9}));
}

TEST(TopP, MassFromScoresIsCellsTimesExpOfTheScore) {
  // Page 1: 4 cells at score 1; page 2: 2 cells at score 1 + ln 2; page 3: 4 cells at score -inf (unscored).
  const std::vector<float> score = {9, 1.0f, 1.0f + std::log(2.0f), -INFINITY};
  const std::vector<KvCache::PageSpan> spans = {{0, 4, false}, {4, 4, false}, {8, 2, false}, {10, 4, false}};
  const std::vector<uint8_t> always = {1, 0, 0, 0};
  std::vector<float> mass;
  page_mass_from_scores(score, spans, always, mass);
  ASSERT_EQ(mass.size(), 4u);
  EXPECT_EQ(mass[0], 0.0f);                 // always read: not estimated
  EXPECT_NEAR(mass[1], 4 * 0.5f, 1e-6f);    // 4 exp(1 - (1 + ln 2))
  EXPECT_NEAR(mass[2], 2 * 1.0f, 1e-6f);    // 2 exp(0)
  EXPECT_EQ(mass[3], 0.0f);
}

// Needle page 7 (keys 5 along channel 0) among 12 other candidates of keys 0.01; q = (1, 0, 0, 0). A page scores 5
// (quest's bound, hip's middle key) or 0.01 (f16: 0.0099945); masses 4 and 4 exp(0.0099945 - 5) = 0.0272 each,
// 4.327 in all over the 13 candidates a 64-token budget covers. P = 0.9 needs 3.89: the needle's page alone;
// P = 0.95 needs 4.11, 0.11 more: 4.05 others' worth, so five, the earliest of the tied ones (pages 1 to 5).
TEST(TopP, QuestAndHipPruneACoveringBudgetToTheNeedlePage) {
  NeedleCache c(/*n_cells=*/62, /*needle_page=*/7);
  const KvPolicyContext context = tiny_context(c.shape);
  for (const char* policy : {"quest", "hip"}) {
    const std::string spec = std::string(policy) + ":budget=64:page=4:sink=2:window=6:dense=1";
    auto select = [&](const std::string& extra) {
      return select_for_decode(*make(spec + extra, context), c.cache, c.seq, 1, 0, {1, 0, 0, 0}, 62);
    };
    EXPECT_EQ(select("").size(), 16u) << policy;  // the budget covers every page
    EXPECT_EQ(select(":top_p=1").size(), 16u) << policy;
    EXPECT_EQ(select(":top_p=0.9"), (std::vector<int32_t>{0, 7, 14, 15})) << policy;
    EXPECT_EQ(select(":top_p=0.95"), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 7, 14, 15})) << policy;
    EXPECT_NE(make(spec + ":top_p=0.9", context)->describe().find(", top_p=0.9)"), std::string::npos) << policy;
  }
}

// recycled's mass is the attention the full step gave each page (its cells' probabilities, summed over the
// group's two query heads). Page 7: cell 29 at 0.4; page 11: cells 45, 46 at 0.3, 0.1; page 3: cell 13 at 0.2:
// masses 0.8, 0.8, 0.4 (2.0 in all), scores (the largest cell) 0.8, 0.6, 0.4. P = 0.75 needs 1.5: pages 7 and 11;
// P = 0.3 needs 0.6: page 7.
TEST(TopP, RecycledPrunesByTheAttentionOfItsFullStep) {
  for (const auto& [p, want] : std::vector<std::pair<std::string, std::vector<int32_t>>>{
           {"0.75", {0, 7, 11, 14, 15}}, {"0.3", {0, 7, 14, 15}}, {"1", {}}}) {
    const KvShape shape = tiny_shape(3);
    KvCache cache(shape, KvCacheOptions{4, 0, 4});
    const SeqId seq = *cache.add_sequence();
    auto policy = make("recycled:budget=64:page=4:sink=2:window=6:stride=3:top_p=" + p, tiny_context(shape));
    step(*policy, cache, seq, 62);
    std::vector<float> probs(62, 0.0f);
    probs[29] = 0.4f;
    probs[45] = 0.3f;
    probs[46] = 0.1f;
    probs[13] = 0.2f;
    for (int g = 0; g < 2; ++g) policy->observe_scores(seq, 1, 0, 61, probs);
    step(*policy, cache, seq, 1);  // a recycled decode step over 63 cells
    const std::vector<int32_t> got = select_for_decode(*policy, cache, seq, 1, 0, {0.5f, 0.5f, 0.5f, 0.5f}, 62);
    if (want.empty()) {
      EXPECT_EQ(got.size(), 16u) << p;  // P = 1: the budget covers every page
    } else {
      EXPECT_EQ(got, want) << p;
    }
  }
}

TEST(TopP, EverySelectingPolicyTakesItAndNoOtherDoes) {
  const KvPolicyContext context = tiny_context(tiny_shape());
  for (const KvPolicyDoc& doc : kv_policy_docs()) {
    bool has_top_p = false;
    for (const ParamDoc& d : doc.params) has_top_p |= d.key == "top_p";
    const bool selects = doc.name == "quest" || doc.name == "lserve" || doc.name == "hip" || doc.name == "recycled";
    EXPECT_EQ(has_top_p, selects) << doc.name;
    EXPECT_EQ(kv_policy_takes_top_p(doc.name), selects) << doc.name;
  }
  EXPECT_FALSE(kv_policy_takes_top_p("no-such-policy"));
  Result<BuiltKvPolicy> bad = make_kv_policy("quest:top_p=0", context);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.message().find("top_p"), std::string::npos) << bad.message();
  EXPECT_FALSE(make_kv_policy("hip:top_p=1.5", context).is_ok());
}

}  // namespace
}  // namespace longhaul::kv
