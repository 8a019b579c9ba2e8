// longheads (LongHeads, Lu et al., 2024) on a crafted cache: the local chunks read in place; the first chunk and
// the chunks whose representation best matches the un-rotated queries placed side by side before them; the span;
// forks. Expected values are computed here from the rules, with RoPE written out independently.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::dot;
using testing::make;
using testing::rotate_pairs;
using testing::tiny_context;
using testing::tiny_shape;

constexpr int32_t kDk = 4;
constexpr int32_t kCells = 62;  // chunks (pages of 4) 0..15, the last one partial

struct Fixture : testing::RandomKeyCache {
  Fixture() : RandomKeyCache(tiny_shape(3), 4, kCells, 17) {}

  // The chunk's representation: its keys with positions from the chunk's start, weighted by the softmax of their
  // scores against their mean (scale 1 / sqrt(dk)).
  std::vector<float> representation(int32_t page, int32_t head) const {
    std::vector<std::vector<float>> k;
    for (int32_t j = 0; j < 4; ++j) k.push_back(rotate_pairs(key(4 * page + j, head), -4 * page));
    std::vector<float> mean(kDk, 0.0f);
    for (const auto& kj : k)
      for (int32_t c = 0; c < kDk; ++c) mean[static_cast<size_t>(c)] += kj[static_cast<size_t>(c)] / 4;
    std::vector<double> w;
    double sum = 0;
    for (const auto& kj : k) sum += w.emplace_back(std::exp(dot(mean, kj) / 2.0));
    std::vector<float> repr(kDk, 0.0f);
    for (size_t j = 0; j < k.size(); ++j)
      for (int32_t c = 0; c < kDk; ++c)
        repr[static_cast<size_t>(c)] += static_cast<float>(w[j] / sum) * k[j][static_cast<size_t>(c)];
    return repr;
  }
};

struct Selection {
  std::vector<int32_t> pages;
  std::vector<KvPolicy::PagePlacement> placed;
};

Selection select(const KvPolicy& policy, const Fixture& f, int32_t il, int32_t kv_head, const std::vector<float>& q,
                 const std::vector<int32_t>& q_pos) {
  Selection s;
  policy.select_placed_pages(
      {f.cache, f.seq, il, kv_head, q.data(), q_pos.data(), static_cast<int32_t>(q_pos.size()), kDk}, s.pages,
      s.placed);
  return s;
}

TEST(LongheadsPolicy, PlacesTheFirstAndTheBestChunkSideBySideBeforeTheLocalOnes) {
  Fixture f;
  auto policy = make("longheads:span=16:page=4:score=repr", tiny_context(f.shape));
  EXPECT_TRUE(policy->selects_pages() && policy->places_pages());
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (int32_t head = 0; head < 2; ++head) {
    std::vector<float> q(2 * kDk);  // two query heads of the group, at position 62
    for (float& x : q) x = normal(rng);
    const Selection s = select(*policy, f, 1, head, q, {62, 62});
    // Local: the chunk of position 62 (page 15, partial) and the complete one before it (page 14).
    EXPECT_EQ(s.pages, (std::vector<int32_t>{14, 15}));
    // One chosen chunk of pages 1..13 (span 16 = 4 chunks: first, chosen, two local): the best representation
    // against the sum of the queries without rotation.
    std::vector<float> sum_q(kDk, 0.0f);
    for (int32_t i = 0; i < 2; ++i) {
      const std::vector<float> qi = rotate_pairs({q.begin() + i * kDk, q.begin() + (i + 1) * kDk}, -62);
      for (int32_t c = 0; c < kDk; ++c) sum_q[static_cast<size_t>(c)] += qi[static_cast<size_t>(c)];
    }
    std::vector<std::pair<float, int32_t>> ranked;
    for (int32_t page = 1; page <= 13; ++page) ranked.emplace_back(-dot(sum_q, f.representation(page, head)), page);
    std::sort(ranked.begin(), ranked.end());
    ASSERT_GT(ranked[1].first - ranked[0].first, 1e-3f);
    const int32_t best = ranked[0].second;
    // Side by side before position 56: the best chunk at 52..55, the first chunk at 48..51.
    ASSERT_EQ(s.placed.size(), 2u);
    EXPECT_EQ(s.placed[0].page, 0);
    EXPECT_EQ(s.placed[0].shift, 48);
    EXPECT_EQ(s.placed[1].page, best);
    EXPECT_EQ(s.placed[1].shift, 52 - 4 * best);
    EXPECT_EQ(s.placed[0].min_distance, 0);
  }
}

TEST(LongheadsPolicy, ScoreByBoundRanksChunksByQuestsBound) {
  Fixture f;
  auto policy = make("longheads:span=16:page=4:score=bound", tiny_context(f.shape));
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  std::vector<float> q(2 * kDk);
  for (float& x : q) x = normal(rng);
  const Selection s = select(*policy, f, 1, 0, q, {62, 62});
  // Keys with positions from their chunk's start, queries without rotation: the bound sum_c max(q_c min_c, q_c
  // max_c), the larger of the two queries'.
  std::vector<std::pair<float, int32_t>> ranked;
  for (int32_t page = 1; page <= 13; ++page) {
    std::vector<float> lo(kDk, INFINITY), hi(kDk, -INFINITY);
    for (int32_t cell = 4 * page; cell < 4 * page + 4; ++cell) {
      const std::vector<float> k = rotate_pairs(f.key(cell, 0), -4 * page);
      for (int32_t c = 0; c < kDk; ++c) {
        lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], k[static_cast<size_t>(c)]);
        hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], k[static_cast<size_t>(c)]);
      }
    }
    float bound = -INFINITY;
    for (int32_t i = 0; i < 2; ++i) {
      const std::vector<float> qi = rotate_pairs({q.begin() + i * kDk, q.begin() + (i + 1) * kDk}, -62);
      float b = 0;
      for (int32_t c = 0; c < kDk; ++c)
        b += std::max(qi[static_cast<size_t>(c)] * lo[static_cast<size_t>(c)],
                      qi[static_cast<size_t>(c)] * hi[static_cast<size_t>(c)]);
      bound = std::max(bound, b);
    }
    ranked.emplace_back(-bound, page);
  }
  std::sort(ranked.begin(), ranked.end());
  ASSERT_GT(ranked[1].first - ranked[0].first, 1e-3f);
  ASSERT_EQ(s.placed.size(), 2u);
  EXPECT_EQ(s.placed[1].page, ranked[0].second);
}

TEST(LongheadsPolicy, SpanBoundsTheChunksAndShortContextsReadEverything) {
  Fixture f;
  const std::vector<float> q = {0.3f, -0.2f, 0.5f, 0.1f};
  for (int32_t span : {16, 20, 32, 56}) {
    auto policy = make("longheads:page=4:span=" + std::to_string(span), tiny_context(f.shape));
    const Selection s = select(*policy, f, 2, 0, q, {62});
    // The first chunk plus span / 4 - 3 chosen ones (of 13), placed; the two local ones in place.
    EXPECT_EQ(s.placed.size(), 1u + std::min<size_t>(13, static_cast<size_t>(span / 4 - 3))) << span;
    EXPECT_EQ(s.pages.size(), 2u);
    // Laid side by side: together they end at position 56 and span 4 per chunk, so no distance exceeds span.
    int32_t end = 56;
    for (auto it = s.placed.rbegin(); it != s.placed.rend(); ++it) {
      EXPECT_EQ(4 * it->page + it->shift, end - 4) << span;
      end -= 4;
    }
    EXPECT_LE(62 - end, span + 4) << span;
  }
  // Before the queries reach the span, every chunk is read in place.
  auto policy = make("longheads:page=4:span=64", tiny_context(f.shape));
  const Selection s = select(*policy, f, 2, 0, q, {62});
  EXPECT_EQ(s.pages.size(), 16u);
  EXPECT_TRUE(s.placed.empty());
}

TEST(LongheadsPolicy, ForkSelectsAsItsParent) {
  Fixture f;
  auto policy = make("longheads:span=24:page=4", tiny_context(f.shape));
  const std::vector<float> q = {0.7f, -0.1f, 0.2f, 0.9f};
  const Selection before = select(*policy, f, 1, 1, q, {62});
  std::unique_ptr<KvPolicy> forked = policy->fork(f.seq, f.seq);
  ASSERT_NE(forked, nullptr);
  const Selection after = select(*forked, f, 1, 1, q, {62});
  ASSERT_EQ(after.placed.size(), before.placed.size());
  for (size_t i = 0; i < after.placed.size(); ++i) EXPECT_EQ(after.placed[i].page, before.placed[i].page);
}

TEST(LongheadsPolicy, RejectsASpanOfFewerThanFourChunks) {
  Result<BuiltKvPolicy> p = make_kv_policy("longheads:span=512:page=256", tiny_context(tiny_shape()));
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("span=512"), std::string::npos) << p.message();
}

}  // namespace
}  // namespace longhaul::kv
