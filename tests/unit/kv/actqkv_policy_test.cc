// actqkv (ActQKV, Xiao et al., 2025): the Activation Bias, the probe query and the dynamic cut-off against their
// formulas written out here, and the policy over a real cache: the probe finds a needle page the decode query alone
// does not, the cut-off follows the page scores' entropy within the budget, sinks and window are always read, and
// truncation and forks keep the window exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kv/policies/actqkv.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::NeedleCache;
using testing::select_for_decode;
using testing::tiny_context;

// The paper's Activation Bias, in double: phi_j = mean_c (x_jc - mean_c)^2 / (var_c + mean(var) / 100).
std::vector<double> paper_bias(const std::vector<std::vector<double>>& x) {
  const size_t n = x.size(), d = x[0].size();
  std::vector<double> mean(d, 0), var(d, 0);
  for (const auto& row : x)
    for (size_t c = 0; c < d; ++c) mean[c] += row[c] / static_cast<double>(n);
  for (const auto& row : x)
    for (size_t c = 0; c < d; ++c) var[c] += (row[c] - mean[c]) * (row[c] - mean[c]) / static_cast<double>(n);
  double eps = 0;
  for (double v : var) eps += v / static_cast<double>(d) / 100.0;
  std::vector<double> phi;
  for (const auto& row : x) {
    double s = 0;
    for (size_t c = 0; c < d; ++c) s += (row[c] - mean[c]) * (row[c] - mean[c]) / (var[c] + eps);
    phi.push_back(s / static_cast<double>(d));
  }
  return phi;
}

std::vector<float> flat(const std::vector<std::vector<double>>& x) {
  std::vector<float> out;
  for (const auto& row : x)
    for (double v : row) out.push_back(static_cast<float>(v));
  return out;
}

TEST(ActQkvRules, ActivationBiasAndProbeFollowThePaper) {
  // Five tokens of three channels; token 3 is the anchor, far from the others on channel 0. Channel 2 barely moves:
  // eps keeps it from dominating.
  const std::vector<std::vector<double>> x = {
      {0.1, 1.0, 0.50}, {-0.2, 0.8, 0.50}, {0.0, 1.1, 0.51}, {6.0, 0.9, 0.50}, {0.3, 1.2, 0.49}};
  const std::vector<double> phi = paper_bias(x);
  std::vector<float> got;
  activation_bias(flat(x), 5, 3, got);
  ASSERT_EQ(got.size(), 5u);
  for (size_t j = 0; j < 5; ++j) EXPECT_NEAR(got[j], phi[j], 1e-5 * std::max(1.0, phi[j])) << j;
  EXPECT_EQ(std::max_element(got.begin(), got.end()) - got.begin(), 3);

  double total = 0;
  for (double p : phi) total += p;
  std::vector<float> weights, probe;
  probe_query(flat(x), 5, 3, weights, probe);
  ASSERT_EQ(weights.size(), 5u);
  ASSERT_EQ(probe.size(), 3u);
  for (size_t j = 0; j < 5; ++j) EXPECT_NEAR(weights[j], phi[j] / total, 1e-6) << j;
  for (size_t c = 0; c < 3; ++c) {
    double want = 0;
    for (size_t j = 0; j < 5; ++j) want += phi[j] / total * x[j][c];
    EXPECT_NEAR(probe[c], want, 1e-5) << c;
  }
  // The anchor pulls the probe along channel 0 well past the plain mean (1.24).
  EXPECT_GT(probe[0], 2.0f);
}

TEST(ActQkvRules, AWindowOfEqualTokensWeighsThemEqually) {
  const std::vector<std::vector<double>> x = {{1, 2}, {1, 2}, {1, 2}, {1, 2}};
  std::vector<float> weights, probe;
  probe_query(flat(x), 4, 2, weights, probe);
  EXPECT_EQ(weights, (std::vector<float>{0.25f, 0.25f, 0.25f, 0.25f}));
  EXPECT_EQ(probe, (std::vector<float>{1, 2}));
  probe_query(flat({{3, -1}}), 1, 2, weights, probe);  // one token: the probe is that token's query
  EXPECT_EQ(probe, (std::vector<float>{3, -1}));
}

// The cut-off written out: D = entropy of softmax(scores) / ln N, n = clamp(ceil(D * n_max), n_min, n_max).
int32_t paper_cutoff(const std::vector<float>& s, int32_t n_min, int32_t n_max) {
  double top = s[0];
  for (float v : s) top = std::max(top, static_cast<double>(v));
  double z = 0, h = 0;
  for (float v : s) z += std::exp(v - top);
  for (float v : s) {
    const double p = std::exp(v - top) / z;
    if (p > 0) h -= p * std::log(p);
  }
  const double density = h / std::log(static_cast<double>(s.size()));
  return std::min(std::clamp(static_cast<int32_t>(std::ceil(density * n_max)), n_min, n_max),
                  static_cast<int32_t>(s.size()));
}

TEST(ActQkvRules, CutoffFollowsTheInformationDensity) {
  // Spread scores: density 1, the whole maximum.
  const std::vector<float> flat_scores(40, 0.7f);
  EXPECT_FLOAT_EQ(information_density(flat_scores), 1.0f);
  EXPECT_EQ(dynamic_cutoff(flat_scores, 2, 10), 10);
  // One page far above the rest: density near 0, the minimum.
  std::vector<float> peaked(40, 0.0f);
  peaked[17] = 60.0f;
  EXPECT_LT(information_density(peaked), 1e-6f);
  EXPECT_EQ(dynamic_cutoff(peaked, 2, 10), 2);
  // Between: a few pages stand out by a few logits.
  std::vector<float> some(40, 0.0f);
  some[3] = 4.0f;
  some[9] = 3.5f;
  some[30] = 3.0f;
  const int32_t want = paper_cutoff(some, 2, 10);
  EXPECT_GT(want, 2);
  EXPECT_LT(want, 10);
  EXPECT_EQ(dynamic_cutoff(some, 2, 10), want);
  for (float step : {0.5f, 1.0f, 2.0f, 5.0f}) {
    std::vector<float> ramp;
    for (int32_t i = 0; i < 30; ++i) ramp.push_back(step * static_cast<float>(i % 7));
    EXPECT_EQ(dynamic_cutoff(ramp, 1, 12), paper_cutoff(ramp, 1, 12)) << step;
    EXPECT_LE(dynamic_cutoff(ramp, 1, 12), 12);
  }
  // Never more than the candidates.
  EXPECT_EQ(dynamic_cutoff(std::vector<float>(3, 1.0f), 1, 10), 3);
}

// pages of 4; sinks: positions < 2 (page 0); window: the last 6 cells; layer 0 dense.
std::unique_ptr<KvPolicy> actqkv(const KvShape& shape, const std::string& more) {
  return testing::make("actqkv:page=4:sink=2:window=6:dense=1" + more, tiny_context(shape));
}

// Feeds the queries of positions first .. first + rows.size() - 1 of one KV head (a group of one) as a prefill
// chunk does: every page read, the queries remembered.
void feed_queries(const KvPolicy& policy, const KvCache& cache, SeqId seq, int32_t il, int32_t kv_head,
                  const std::vector<std::vector<float>>& rows, int32_t first) {
  std::vector<float> q;
  std::vector<int32_t> q_pos;
  for (size_t i = 0; i < rows.size(); ++i) {
    q.insert(q.end(), rows[i].begin(), rows[i].end());
    q_pos.push_back(first + static_cast<int32_t>(i));
  }
  std::vector<int32_t> pages;
  policy.select_pages({cache, seq, il, kv_head, q.data(), q_pos.data(), static_cast<int32_t>(q_pos.size()), 4}, pages);
  EXPECT_EQ(static_cast<int32_t>(pages.size()), cache.n_pages(seq, il));
}

// The prompt's last six queries look along channel 2, except position 58's, an anchor that also looks along
// channel 0, where the needle page's keys point.
const std::vector<std::vector<float>> kWindow = {{0, 0, 1, 0}, {0, 0, 1, 0}, {3, 0, 1, 0},
                                                 {0, 0, 1, 0}, {0, 0, 1, 0}, {0, 0, 1, 0}};
const std::vector<float> kAlongChannel2 = {0, 0, 1, 0};

TEST(ActQkvPolicy, TheProbeFindsTheNeedlePageTheDecodeQueryAloneMisses) {
  NeedleCache c(/*n_cells=*/62, /*needle_page=*/7);  // pages 0..15, the last one partial
  auto policy = actqkv(c.shape, ":budget=4:min=4:probe=8");  // one selected page
  feed_queries(*policy, c.cache, c.seq, 1, 0, kWindow, 56);
  // The decode query alone scores every candidate alike (0.01 on channel 2): the earliest wins. The probe carries
  // the anchor's channel 0: the needle. Sinks (page 0) and window (cells 56..61: pages 14, 15) always.
  auto quest = testing::make("quest:budget=4:page=4:sink=2:window=6:dense=1", tiny_context(c.shape));
  EXPECT_EQ(select_for_decode(*quest, c.cache, c.seq, 1, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 1, 14, 15}));
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 7, 14, 15}));
  // probe=1: the window is the decode query alone, as quest.
  auto alone = actqkv(c.shape, ":budget=4:min=4:probe=1");
  feed_queries(*alone, c.cache, c.seq, 1, 0, kWindow, 56);
  EXPECT_EQ(select_for_decode(*alone, c.cache, c.seq, 1, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 1, 14, 15}));
  // Another layer's window never saw the anchor; dense layers and prefill read every page.
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 1, 14, 15}));
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 0, 0, kAlongChannel2, 62).size(), 16u);
}

TEST(ActQkvPolicy, OneProbeServesRefreshConsecutivePositions) {
  NeedleCache c(/*n_cells=*/62, /*needle_page=*/7);
  auto policy = actqkv(c.shape, ":budget=4:min=4:probe=1:refresh=2");  // probe = the decode query it was built for
  const std::vector<float> along_needle = {10, 0, 0, 0};
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, along_needle, 62), (std::vector<int32_t>{0, 7, 14, 15}));
  // The same position again rebuilds it (a query along channel 2 alone: the earliest candidate)...
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 1, 14, 15}));
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, along_needle, 62), (std::vector<int32_t>{0, 7, 14, 15}));
  // ... the next position keeps it (the needle, whatever the query), and the one after builds a new one.
  ASSERT_TRUE(c.cache.append_cells(c.seq, std::vector<int32_t>{62}).is_ok());
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, kAlongChannel2, 63), (std::vector<int32_t>{0, 7, 14, 15}));
  ASSERT_TRUE(c.cache.append_cells(c.seq, std::vector<int32_t>{63}).is_ok());
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, kAlongChannel2, 64), (std::vector<int32_t>{0, 1, 14, 15}));
}

TEST(ActQkvPolicy, CutoffReadsWhatTheScoresEntropyGivesWithinTheBudget) {
  NeedleCache c(/*n_cells=*/100, /*needle_page=*/11);  // pages 0..24
  // At most 5 selected pages, at least 1; probe=1: the probe is the decode query.
  auto policy = actqkv(c.shape, ":budget=20:min=4:probe=1");
  const std::vector<std::vector<float>> queries = {
      {10, 0, 0, 0}, {0, 0, 0, 0}, {0.3f, -0.2f, 0.5f, 0.1f}, {1, 0, 0, 0},
      {0.6f, 0, 0, 0}, {0.8f, 0, 0, 0}, {0.4f, 0, 0, 0}, {-2, 1, 0, 0}};
  std::vector<int32_t> counts;
  for (const auto& q : queries) {
    // Candidates: pages 1..22 (page 0 holds the sinks, pages 23 and 24 the window 94..99). Head 0's keys are 0.01
    // but the needle page's channel 0, 5: Quest's bound of q is 0.01 * sum(q), or 5 q0 + 0.01 (q1 + q2 + q3).
    // (0.01 as the cache stores it, in f16.)
    const float k = tensor::f16_to_f32(tensor::f32_to_f16(0.01f));
    std::vector<float> scores;
    for (int32_t page = 1; page <= 22; ++page)
      scores.push_back(page == 11 ? 5 * q[0] + k * (q[1] + q[2] + q[3]) : k * (q[0] + q[1] + q[2] + q[3]));
    const int32_t n = paper_cutoff(scores, 1, 5);
    counts.push_back(n);
    const std::vector<int32_t> pages = select_for_decode(*policy, c.cache, c.seq, 2, 0, q, 100);
    EXPECT_EQ(pages.size(), 3u + static_cast<size_t>(n)) << q[0] << " " << q[1];
    EXPECT_LE(pages.size(), 3u + 5u);
    for (int32_t always : {0, 23, 24}) EXPECT_EQ(std::count(pages.begin(), pages.end(), always), 1) << always;
    if (q[0] > 0.5f) {
      EXPECT_EQ(std::count(pages.begin(), pages.end(), 11), 1);
    }
  }
  // The queries span the range: 1 (concentrated) through 2, 3 and 4 to 5 (spread).
  EXPECT_EQ(counts, (std::vector<int32_t>{1, 5, 5, 2, 4, 3, 5, 5}));
  // The two ends: a query along the needle concentrates the scores (one page); an empty one spreads them (five).
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 0, {10, 0, 0, 0}, 100), (std::vector<int32_t>{0, 11, 23, 24}));
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 2, 0, {0, 0, 0, 0}, 100).size(), 8u);
  // A budget that covers the candidates reads every page.
  auto covering = actqkv(c.shape, ":budget=88:probe=1");
  EXPECT_EQ(select_for_decode(*covering, c.cache, c.seq, 2, 0, {10, 0, 0, 0}, 100).size(), 25u);
}

TEST(ActQkvPolicy, TruncationDropsTheQueriesPastTheCutAndAForkProbesAsItsParent) {
  NeedleCache c(62, 7);
  auto policy = actqkv(c.shape, ":budget=4:min=4:probe=8");
  feed_queries(*policy, c.cache, c.seq, 1, 0, kWindow, 56);
  ASSERT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 7, 14, 15}));

  // A fork keeps the window: it selects as its parent and holds the same statistics.
  std::unique_ptr<KvPolicy> forked = policy->fork(c.seq, c.seq);
  ASSERT_NE(forked, nullptr);
  EXPECT_EQ(forked->statistics(), policy->statistics());
  EXPECT_EQ(select_for_decode(*forked, c.cache, c.seq, 1, 0, kAlongChannel2, 62), (std::vector<int32_t>{0, 7, 14, 15}));

  // Roll back to 58 cells (positions 0..57): the anchor's query (position 58) goes with its cell, and the decode
  // query at 58 no longer finds the needle. Window: cells 52..57, pages 13 and 14 (the last, partial).
  c.cache.truncate(c.seq, 58);
  policy->truncate(c.cache, c.seq, 58);
  EXPECT_EQ(select_for_decode(*policy, c.cache, c.seq, 1, 0, kAlongChannel2, 58), (std::vector<int32_t>{0, 1, 13, 14}));
  // The fork, not rolled back, still probes with the anchor.
  EXPECT_NE(forked->statistics(), policy->statistics());
}

TEST(ActQkvPolicy, PrefillBlocksInAnyOrderLeaveTheSameWindow) {
  // The attention threads select for a step's blocks in any order: the window is merged by position and keeps the
  // newest `probe` of them.
  NeedleCache c(62, 7);
  auto in_order = actqkv(c.shape, ":budget=4:min=4:probe=5");
  auto reversed = actqkv(c.shape, ":budget=4:min=4:probe=5");
  const std::vector<std::vector<float>> a(kWindow.begin(), kWindow.begin() + 3), b(kWindow.begin() + 3, kWindow.end());
  feed_queries(*in_order, c.cache, c.seq, 1, 0, a, 56);
  feed_queries(*in_order, c.cache, c.seq, 1, 0, b, 59);
  feed_queries(*reversed, c.cache, c.seq, 1, 0, b, 59);
  feed_queries(*reversed, c.cache, c.seq, 1, 0, a, 56);
  EXPECT_EQ(in_order->statistics(), reversed->statistics());
  // Layer 1, head 0 holds positions 57..61 (the newest five); the other selecting heads hold none.
  std::vector<double> want(static_cast<size_t>(c.shape.n_layer * c.shape.n_head_kv), 0.0);
  want.erase(want.begin() + 2);
  const std::vector<double> window = {5, 57, 58, 59, 60, 61};
  want.insert(want.begin() + 2, window.begin(), window.end());
  EXPECT_EQ(in_order->statistics(), want);
  EXPECT_EQ(select_for_decode(*reversed, c.cache, c.seq, 1, 0, kAlongChannel2, 62),
            (std::vector<int32_t>{0, 7, 14, 15}));
}

TEST(ActQkvPolicy, RejectsBadOptions) {
  const KvShape shape = testing::tiny_shape();
  const KvPolicyContext context = tiny_context(shape);
  Result<BuiltKvPolicy> p = make_kv_policy("actqkv:budget=16:page=32", context);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("budget=16"), std::string::npos) << p.message();
  p = make_kv_policy("actqkv:budget=64:min=128", context);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("min=128"), std::string::npos) << p.message();
  EXPECT_TRUE(make_kv_policy("actqkv:bits=8", context).is_ok());
}

}  // namespace
}  // namespace longhaul::kv
