// The adaptive draft length's parts on crafted numbers: the step cost fit, the decayed acceptance estimates, and
// the length that maximises expected tokens per second, checked against the formulas of draft_length.h worked by
// hand.
#include "generate/speculative/draft_length.h"

#include <gtest/gtest.h>

#include <vector>

namespace longhaul::generate::speculative {
namespace {

TEST(StepCostModel, FitsALinearCostExactly) {
  StepCostModel cost;
  for (int rep = 0; rep < 3; ++rep)
    for (int32_t n = 1; n <= 16; ++n) cost.add(n, 0.002 + 0.0005 * n);
  EXPECT_NEAR(cost.intercept(), 0.002, 1e-12);
  EXPECT_NEAR(cost.slope(), 0.0005, 1e-12);
  EXPECT_NEAR(cost.seconds(9), 0.0065, 1e-12);
}

TEST(StepCostModel, UsesThePriorSlopeUntilStepSizesVary) {
  StepCostModel fresh;
  EXPECT_NEAR(fresh.seconds(1), 1.0, 1e-12);  // a one-token step is the unit before anything is measured
  const double slope = StepCostModel::kPriorSlope;
  EXPECT_NEAR(fresh.seconds(17) / fresh.seconds(1), (1 + 17 * slope) / (1 + slope), 1e-12);
  StepCostModel ones;
  for (int i = 0; i < 20; ++i) ones.add(1, 0.004);
  // Every step had one token: the prior slope through their mean time.
  EXPECT_NEAR(ones.seconds(1), 0.004, 1e-12);
  EXPECT_NEAR(ones.slope() / ones.intercept(), StepCostModel::kPriorSlope, 1e-12);
  // Prefill chunks past kMaxFitTokens and failed timings do not enter the fit.
  ones.add(512, 1.0);
  ones.add(4, 0.0);
  EXPECT_NEAR(ones.seconds(1), 0.004, 1e-12);
}

TEST(StepCostModel, RejectsANoisyFitThatNoStepCouldCost) {
  StepCostModel cost;
  // Larger steps measured faster than smaller ones (a negative slope): the fit falls back to the prior slope.
  for (int i = 0; i < 10; ++i) {
    cost.add(1, 0.010);
    cost.add(5, 0.004);
  }
  EXPECT_GT(cost.slope(), 0.0);
  EXPECT_NEAR(cost.slope() / cost.intercept(), StepCostModel::kPriorSlope, 1e-12);
}

TEST(DraftAcceptance, EstimatesAreDecayedSharesWithAPrior) {
  DraftAcceptance acc(4);
  // Nothing seen yet: α = 0.5, and the prior halves with each node.
  EXPECT_DOUBLE_EQ(acc.alpha(), 0.5);
  EXPECT_DOUBLE_EQ(acc.p(0), 0.5);
  EXPECT_DOUBLE_EQ(acc.p(2), 0.125);
  const std::vector<int32_t> first_two = {0, 1};
  acc.observe(3, {}, first_two);  // a chain of nodes 0..2, 0 and 1 accepted
  // Each node's parent (the root, node 0, node 1) was accepted: 3 trials of α, 2 hits.
  const double a = (2.0 + 0.5) / (3.0 + 1.0);
  EXPECT_DOUBLE_EQ(acc.alpha(), a);
  const double p0 = (1.0 + a) / 2.0, p1 = (1.0 + a * p0) / 2.0, p2 = (0.0 + a * p1) / 2.0;
  EXPECT_DOUBLE_EQ(acc.p(0), p0);
  EXPECT_DOUBLE_EQ(acc.p(1), p1);
  EXPECT_DOUBLE_EQ(acc.p(2), p2);
  EXPECT_DOUBLE_EQ(acc.p(3), a * p2);  // never proposed: the prior alone
  acc.observe(1, {}, {});              // node 0 proposed and rejected
  const double d = DraftAcceptance::kDecay;
  const double b = (d * 2.0 + 0.5) / (d * 3.0 + 1.0 + 1.0);
  EXPECT_DOUBLE_EQ(acc.alpha(), b);
  const double q0 = (d * 1.0 + b) / (d * 1.0 + 1.0 + 1.0);
  EXPECT_DOUBLE_EQ(acc.p(0), q0);
  EXPECT_DOUBLE_EQ(acc.p(1), (d * 1.0 + b * q0) / (d * 1.0 + 1.0));
  EXPECT_DOUBLE_EQ(acc.p(4), 0.0);  // past max_nodes
}

// With another estimate as the prior (an evidence class's, the pooled one), an unseen class starts from it, and a
// node's prior is its parent's estimate here times the prior's chance of the node given its parent.
TEST(DraftAcceptance, AnotherEstimateCanStandInForTheFixedPrior) {
  DraftAcceptance pooled(3), fresh(3), seen(3);
  const std::vector<int32_t> first_two = {0, 1};
  pooled.observe(3, {}, first_two);
  std::vector<double> prior(3), out(3);
  pooled.estimates(prior);
  fresh.estimates(out, {}, &pooled);
  for (size_t i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(out[i], prior[i]) << "node " << i;
  seen.observe(1, {}, {});  // node 0 proposed and rejected
  seen.estimates(out, {}, &pooled);
  const double p0 = (0.0 + prior[0]) / (1.0 + 1.0);
  const double p1 = (0.0 + p0 * (prior[1] / prior[0])) / (0.0 + 1.0);
  const double p2 = (0.0 + p1 * (prior[2] / prior[1])) / (0.0 + 1.0);
  EXPECT_DOUBLE_EQ(out[0], p0);
  EXPECT_DOUBLE_EQ(out[1], p1);
  EXPECT_DOUBLE_EQ(out[2], p2);
  // Without it, the same observations give the fixed prior's figures: node 1's prior is α p_0.
  seen.estimates(out);
  EXPECT_DOUBLE_EQ(out[1], seen.alpha() * out[0]);
  // A chooser handed the prior picks for a fresh class what it picks from the prior's own estimates.
  StepCostModel cost;
  cost.add(1, 1.0);
  cost.add(3, 2.0);
  std::vector<double> scratch;
  EXPECT_EQ(choose_draft_length(fresh, cost, 3, 0, 0, 0.0, {}, scratch, &pooled),
            choose_draft_length(pooled, cost, 3, 0, 0, 0.0, {}, scratch));
}

// The per-class record: each class learns only its own drafts; the pooled prior learns those of classes above 0.
TEST(DraftAcceptanceByClass, ClassesLearnApartAndThePooledPriorLearnsTheSignalledOnes) {
  DraftAcceptanceByClass by_class(2);
  const std::vector<int32_t> both = {0, 1};
  by_class.observe(3, 2, {}, both);  // a quoting draft, both nodes accepted
  by_class.observe(1, 1, {}, {});    // a chance repeat, rejected
  by_class.observe(0, 2, {}, {});    // a source without a signal, rejected
  DraftAcceptance quoting(2), chance(2), unsignalled(2), pooled(2);
  quoting.observe(2, {}, both);
  chance.observe(1, {}, {});
  unsignalled.observe(2, {}, {});
  pooled.observe(2, {}, both);
  pooled.observe(1, {}, {});
  for (int32_t node = 0; node < 2; ++node) {
    EXPECT_DOUBLE_EQ(by_class.of(3).p(node), quoting.p(node));
    EXPECT_DOUBLE_EQ(by_class.of(1).p(node), chance.p(node));
    EXPECT_DOUBLE_EQ(by_class.of(0).p(node), unsignalled.p(node));
    EXPECT_DOUBLE_EQ(by_class.prior_of(2)->p(node), pooled.p(node));
  }
  EXPECT_EQ(by_class.prior_of(0), nullptr);
  EXPECT_EQ(by_class.prior_of(1), by_class.prior_of(3));
  // Out-of-range classes are clamped into [0, kDraftEvidenceClasses).
  EXPECT_EQ(&by_class.of(-4), &by_class.of(0));
  EXPECT_EQ(&by_class.of(99), &by_class.of(kDraftEvidenceClasses - 1));
}

TEST(DraftAcceptance, AlphaCountsOnlyNodesWhoseParentWasAccepted) {
  DraftAcceptance acc(8);
  // A tree: nodes 0 and 1 both follow the last token, node 2 follows node 0, node 3 follows node 1. The target
  // took node 1, then rejected node 3; nodes 0 and 2 are off its path.
  const std::vector<int32_t> parents = {-1, -1, 0, 1};
  const std::vector<int32_t> accepted = {1};
  acc.observe(4, parents, accepted);
  // Trials of α: nodes 0 and 1 (root children) and node 3 (its parent accepted); node 2's parent was rejected.
  EXPECT_DOUBLE_EQ(acc.alpha(), (1.0 + 0.5) / (3.0 + 1.0));
  // An accepted index past the draft is ignored.
  DraftAcceptance other(8);
  const std::vector<int32_t> bogus = {5};
  other.observe(2, {}, bogus);
  EXPECT_DOUBLE_EQ(other.alpha(), (0.0 + 0.5) / (1.0 + 1.0));  // node 1's parent, node 0, was rejected
  EXPECT_DOUBLE_EQ(other.p(5), other.alpha() * other.p(4));
}

TEST(DraftAcceptance, ATreeNodesPriorFollowsItsParent) {
  DraftAcceptance acc(8);
  // Node 0 always accepted, node 1 (its sibling) never: p_0 high, p_1 low.
  const std::vector<int32_t> parents = {-1, -1};
  const std::vector<int32_t> first = {0};
  for (int i = 0; i < 20; ++i) acc.observe(2, parents, first);
  const double a = acc.alpha();
  std::vector<double> chain(3), tree(3);
  acc.estimates(chain);  // node 2 after node 1, as in a chain
  const std::vector<int32_t> shape = {-1, -1, 0};
  acc.estimates(tree, shape);  // node 2 a child of node 0
  EXPECT_GT(tree[0], 0.9);
  EXPECT_LT(tree[1], 0.1);
  EXPECT_DOUBLE_EQ(tree[2], a * tree[0]);
  EXPECT_DOUBLE_EQ(chain[2], a * chain[1]);
  EXPECT_GT(tree[2], 5 * chain[2]);
}

TEST(DraftAcceptance, UnobservedEstimatesDriftBackToThePrior) {
  DraftAcceptance acc(2);
  for (int i = 0; i < 30; ++i) acc.observe(2, {}, {});
  EXPECT_LT(acc.p(0), 0.06);
  EXPECT_LT(acc.p(1), 0.06);
  for (int i = 0; i < 60; ++i) acc.observe(0, {}, {});  // steps without a draft
  EXPECT_GT(acc.p(0), 0.4);
  EXPECT_NEAR(acc.p(1), acc.alpha() * acc.p(0), 0.05);
}

TEST(DraftAcceptance, LongCopiedSpansRaiseThePriorOfDeeperNodes) {
  // A source that copies: every proposed node accepted, drafts of 4. Node 6, never proposed, is then expected to
  // be accepted nearly as often as the ones seen, so a draft may grow past 4 at once.
  DraftAcceptance acc(16);
  const std::vector<int32_t> all4 = {0, 1, 2, 3};
  for (int i = 0; i < 20; ++i) acc.observe(4, {}, all4);
  EXPECT_GT(acc.alpha(), 0.95);
  EXPECT_GT(acc.p(6), 0.8);
}

// Costs in units where a step of n tokens costs 1 + 0.25 n.
StepCostModel linear_cost() {
  StepCostModel cost;
  for (int rep = 0; rep < 4; ++rep)
    for (int32_t n = 1; n <= 32; ++n) cost.add(n, 1.0 + 0.25 * n);
  return cost;
}

TEST(ChooseDraftLength, MaximisesExpectedTokensPerSecond) {
  const StepCostModel cost = linear_cost();
  std::vector<double> scratch;
  DraftAcceptance sure(16), never(16), three(16);
  const std::vector<int32_t> all = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const std::vector<int32_t> first3 = {0, 1, 2};
  for (int i = 0; i < 40; ++i) {
    sure.observe(16, {}, all);
    never.observe(16, {}, {});
    three.observe(16, {}, first3);
  }
  EXPECT_EQ(choose_draft_length(sure, cost, 16, 0, 0, 0.0, {}, scratch), 16);
  EXPECT_EQ(choose_draft_length(sure, cost, 5, 0, 0, 0.0, {}, scratch), 5);  // capped
  EXPECT_EQ(choose_draft_length(never, cost, 16, 0, 0, 0.0, {}, scratch), 0);
  // A source without a draft for kProbeInterval steps gets a one-node probe; a fresh one starts with one.
  for (int i = 0; i < DraftAcceptance::kProbeInterval - 1; ++i) never.observe(0, {}, {});
  EXPECT_EQ(choose_draft_length(never, cost, 16, 0, 0, 0.0, {}, scratch), 0);
  never.observe(0, {}, {});
  EXPECT_EQ(choose_draft_length(never, cost, 16, 0, 0, 0.0, {}, scratch), 1);
  EXPECT_EQ(choose_draft_length(DraftAcceptance(16), cost, 16, 0, 0, 10.0, {}, scratch), 1);
  // p ~ 1 for nodes 0..2, ~ 0.05 after: rate(3) = 4 / 2.0 beats rate(2) = 3 / 1.75 and rate(4) = 4.05 / 2.25.
  EXPECT_EQ(choose_draft_length(three, cost, 16, 0, 0, 0.0, {}, scratch), 3);
  // Drafting that costs as much per node as the step itself (a draft model as large as the target) leaves a draft
  // of sure guesses worth less: rate(k) = (1 + k) / (1.25 + 1.25 k) is flat, so the shorter draft wins.
  EXPECT_EQ(choose_draft_length(sure, cost, 16, 0, 0, 1.0, {}, scratch), 0);  // drafted recently: no probe
  EXPECT_EQ(choose_draft_length(sure, cost, 16, 0, 0, 0.2, {}, scratch), 16);
}

TEST(ChooseDraftLength, ABusyStepDraftsOnlyItsSurestGuesses) {
  const StepCostModel cost = linear_cost();
  std::vector<double> scratch;
  DraftAcceptance half(8);
  for (int i = 0; i < 40; ++i) {
    // Node i accepted in the first 8 - i of every 8 steps: p_i close to (8 - i) / 8.
    for (int j = 0; j < 8; ++j) {
      std::vector<int32_t> accepted;
      for (int32_t node = 0; node < 8 - j; ++node) accepted.push_back(node);
      half.observe(8, {}, accepted);
    }
  }
  const int32_t alone = choose_draft_length(half, cost, 8, 0, 0, 0.0, {}, scratch);
  // 7 other sequences' decode tokens share the step.
  const int32_t in_batch = choose_draft_length(half, cost, 8, 7, 7, 0.0, {}, scratch);
  EXPECT_GE(alone, 4);
  EXPECT_LT(in_batch, alone);
  // Worked by hand from the estimates: the best of every k.
  for (const auto& [others, chosen] : {std::pair{0, alone}, std::pair{7, in_batch}}) {
    double expected = 1.0 + others, best = expected / cost.seconds(others + 1);
    int32_t best_k = 0;
    for (int32_t k = 1; k <= 8; ++k) {
      expected += half.p(k - 1);
      const double rate = expected / cost.seconds(others + 1 + k);
      if (rate > best) best = rate, best_k = k;
    }
    EXPECT_EQ(chosen, best_k) << others << " other sequences";
  }
}

}  // namespace
}  // namespace longhaul::generate::speculative
