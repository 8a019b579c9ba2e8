// retrieval (RetrievalAttention, Liu et al., 2024) on a crafted cache: a decode query reads the static pattern's
// pages and, as single cells, the keys its search returns (with a search breadth covering the index: the exact top
// k by inner product, computed here); prompt queries read everything and are sampled as probes, spread over the
// prompt; the index grows as pages leave the window; a fork retrieves as its parent; truncation drops the index.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::dot;
using testing::make;
using testing::tiny_context;
using testing::tiny_shape;

constexpr int32_t kDk = 4;
constexpr int32_t kCells = 200;  // pages of 4: 0 .. 49

struct Fixture : testing::RandomKeyCache {
  Fixture() : RandomKeyCache(tiny_shape(1), 4, kCells, 23) {}
};

KvPolicy::PageReads decode(const KvPolicy& policy, const KvCache& cache, SeqId seq, int32_t kv_head,
                           const std::vector<float>& q, int32_t position) {
  std::vector<int32_t> q_pos(q.size() / kDk, position);
  KvPolicy::PageReads reads;
  policy.select_reads({cache, seq, 0, kv_head, q.data(), q_pos.data(), static_cast<int32_t>(q_pos.size()), kDk},
                      reads);
  return reads;
}

std::vector<float> random_queries(int32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> q(static_cast<size_t>(n) * kDk);
  for (float& x : q) x = normal(rng);
  return q;
}

// The k cells of [begin, end) with the largest q . key of `head`, for each query of q [n, dk]; their union.
std::set<int32_t> exact_top_k(const Fixture& f, int32_t head, const std::vector<float>& q, int32_t begin, int32_t end,
                              int32_t k) {
  std::set<int32_t> out;
  for (size_t i = 0; i < q.size() / kDk; ++i) {
    const std::vector<float> qi(q.begin() + static_cast<std::ptrdiff_t>(i * kDk),
                                q.begin() + static_cast<std::ptrdiff_t>((i + 1) * kDk));
    std::vector<std::pair<float, int32_t>> scored;
    for (int32_t c = begin; c < end; ++c) scored.emplace_back(-dot(qi, f.key(c, head)), c);
    std::sort(scored.begin(), scored.end());
    for (int32_t j = 0; j < k; ++j) out.insert(scored[static_cast<size_t>(j)].second);
  }
  return out;
}

TEST(RetrievalPolicy, DecodeReadsThePatternAndTheExactTopK) {
  const Fixture f;
  const auto policy = make("retrieval:k=5:window=8:sink=4:probes=0:ef=1000", tiny_context(f.shape));
  for (int32_t head = 0; head < 2; ++head) {
    const std::vector<float> q = random_queries(2, 40 + head);  // the two query heads of a GQA group
    const KvPolicy::PageReads reads = decode(*policy, f.cache, f.seq, head, q, kCells);
    // The sinks' page and the window's (cells >= 192: pages 48 and 49, the last).
    EXPECT_EQ(reads.pages, (std::vector<int32_t>{0, 48, 49}));
    EXPECT_TRUE(reads.placed.empty());
    const std::set<int32_t> want = exact_top_k(f, head, q, 4, 192, 5);
    EXPECT_EQ(std::set<int32_t>(reads.cells.begin(), reads.cells.end()), want) << "head " << head;
    EXPECT_LE(reads.cells.size(), 10u);
    EXPECT_GT(reads.scanned, 0);
  }
}

TEST(RetrievalPolicy, FewKeysOutsideThePatternAreAllRead) {
  const Fixture f;
  // 188 keys outside the pattern, k = 188: nothing to retrieve from, every page is read.
  const auto policy = make("retrieval:k=188:window=8:sink=4", tiny_context(f.shape));
  const KvPolicy::PageReads reads = decode(*policy, f.cache, f.seq, 0, random_queries(2, 3), kCells);
  EXPECT_EQ(reads.pages.size(), 50u);
  EXPECT_TRUE(reads.cells.empty());
}

TEST(RetrievalPolicy, PromptQueriesReadEverythingAndAreSampledAsProbes) {
  const Fixture f;
  const auto policy = make("retrieval:k=5:window=8:probes=8", tiny_context(f.shape));
  // A prompt of 200 positions in blocks of 16, two query heads each.
  for (int32_t first = 0; first < kCells; first += 16) {
    const int32_t n = std::min(16, kCells - first);
    std::vector<int32_t> q_pos;
    for (int32_t t = first; t < first + n; ++t) q_pos.insert(q_pos.end(), {t, t});
    const std::vector<float> q = random_queries(2 * n, static_cast<uint32_t>(first));
    KvPolicy::PageReads reads;
    policy->select_reads({f.cache, f.seq, 0, 1, q.data(), q_pos.data(), 2 * n, kDk}, reads);
    EXPECT_EQ(reads.pages.size(), 50u);
    EXPECT_TRUE(reads.cells.empty());
  }
  // Head 1 of layer 0 kept positions 0, 64, 128 and 192 (2 queries each = 8): the smallest power-of-two stride
  // that keeps at most 8. Head 0 heard nothing. Statistics per head: probes, stride, first cell, batch ends.
  const std::vector<double> stats = policy->statistics();
  EXPECT_EQ(stats, (std::vector<double>{0, 1, 0, 8, 64, 0}));
}

TEST(RetrievalPolicy, IndexGrowsAsPagesLeaveTheWindow) {
  Fixture f;
  const auto policy = make("retrieval:k=1:window=8:sink=4:ef=1000", tiny_context(f.shape));
  const std::vector<float> q = random_queries(1, 77);
  decode(*policy, f.cache, f.seq, 0, q, kCells);
  // Cell 197 (in the window so far) gets a key along the query, far above every other score.
  std::vector<float> keys(static_cast<size_t>(2) * kDk);
  for (int32_t c = 0; c < kDk; ++c)
    keys[static_cast<size_t>(c)] = keys[static_cast<size_t>(kDk + c)] = 20.0f * q[static_cast<size_t>(c)];
  f.cache.write_keys(f.seq, 0, 197, 1, keys.data());
  // Still in the window: read with its page, not retrieved.
  const KvPolicy::PageReads in_window = decode(*policy, f.cache, f.seq, 0, q, kCells);
  EXPECT_NE(in_window.cells, (std::vector<int32_t>{197}));
  EXPECT_EQ(in_window.pages, (std::vector<int32_t>{0, 48, 49}));
  // Eight more cells: the window moves to cells >= 200, and cells 192 .. 199 join the index.
  std::vector<int32_t> pos(8);
  for (int32_t i = 0; i < 8; ++i) pos[static_cast<size_t>(i)] = kCells + i;
  ASSERT_TRUE(f.cache.append_cells(f.seq, pos).is_ok());
  const KvPolicy::PageReads reads = decode(*policy, f.cache, f.seq, 0, q, kCells + 8);
  EXPECT_EQ(reads.cells, (std::vector<int32_t>{197}));
  EXPECT_EQ(reads.pages, (std::vector<int32_t>{0, 50, 51}));
  const std::vector<double> stats = policy->statistics();
  // Head 0: no probes, stride 1, first cell 4, batches ending at 192 and 200. Head 1: never asked.
  EXPECT_EQ(stats, (std::vector<double>{0, 1, 4, 192, 200, 0, 1, 0}));
}

TEST(RetrievalPolicy, ForkRetrievesAsItsParentAndTruncationDropsTheIndex) {
  Fixture f;
  const auto policy = make("retrieval:k=6:window=8:sink=4:probes=16:ef=8:m=4", tiny_context(f.shape));
  // Probes from a prompt, then a decode query that builds the index, then the index grows by two pages.
  for (int32_t first = 0; first < kCells; first += 16) {
    const int32_t n = std::min(16, kCells - first);
    std::vector<int32_t> q_pos;
    for (int32_t t = first; t < first + n; ++t) q_pos.insert(q_pos.end(), {t, t});
    const std::vector<float> q = random_queries(2 * n, 1000 + static_cast<uint32_t>(first));
    KvPolicy::PageReads reads;
    policy->select_reads({f.cache, f.seq, 0, 0, q.data(), q_pos.data(), 2 * n, kDk}, reads);
  }
  decode(*policy, f.cache, f.seq, 0, random_queries(2, 5), kCells);
  std::vector<int32_t> pos(8);
  for (int32_t i = 0; i < 8; ++i) pos[static_cast<size_t>(i)] = kCells + i;
  ASSERT_TRUE(f.cache.append_cells(f.seq, pos).is_ok());
  decode(*policy, f.cache, f.seq, 0, random_queries(2, 6), kCells + 8);
  const std::unique_ptr<KvPolicy> child = policy->fork(f.seq, f.seq);
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(child->statistics(), policy->statistics());
  // A narrow search (ef = 8 over 196 keys) depends on the graph: the fork's rebuilt graph is the same.
  for (uint32_t seed = 0; seed < 8; ++seed) {
    const std::vector<float> q = random_queries(2, 200 + seed);
    EXPECT_EQ(decode(*child, f.cache, f.seq, 0, q, kCells + 8).cells,
              decode(*policy, f.cache, f.seq, 0, q, kCells + 8).cells);
  }
  // Cut to 100 cells: the index (up to cell 200) goes, and the probes past position 99.
  f.cache.truncate(f.seq, 100);
  policy->truncate(f.cache, f.seq, 100);
  const std::vector<double> stats = policy->statistics();
  ASSERT_GE(stats.size(), 3u);
  EXPECT_EQ(stats[2], 4);  // first cell kept, no batch ends
  EXPECT_EQ(stats[3], 0);  // head 1: no probes
  // Probes: 400 prompt queries kept at stride 32 (positions 0, 32, ..., 192: 14 <= 16); positions 0 .. 96 stay.
  EXPECT_EQ(stats[0], 8);
  EXPECT_EQ(stats[1], 32);
}

}  // namespace
}  // namespace longhaul::kv
