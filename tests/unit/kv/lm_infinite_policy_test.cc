// LM-Infinite (Han et al., 2023): a Λ-shaped mask (first S tokens + last W) and a
// distance ceiling W. Expected retained sets come from the Λ's definition (position p
// survives after token T-1 when p < S or T-1-p < W); expected keys come from RoPE's
// definition in double precision, as in the streaming test.
#include <gtest/gtest.h>

#include <cmath>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::positions_of;
using testing::step;

std::string lm_infinite_spec(int32_t sink, int32_t window) {
  return "lm-infinite:sink=" + std::to_string(sink) + ":window=" + std::to_string(window);
}

// The Λ after token last: start tokens and the local window of the last W tokens.
std::vector<int32_t> lambda_positions(int32_t last, int32_t n_start, int32_t window) {
  std::vector<int32_t> want;
  for (int32_t p = 0; p <= last; ++p)
    if (p < n_start || last - p < window) want.push_back(p);
  return want;
}

TEST(LmInfinitePolicy, DefaultsAndValidation) {
  const KvPolicyContext ctx = testing::tiny_context(testing::tiny_shape());
  auto policy = testing::make("lm-infinite", ctx);
  EXPECT_EQ(policy->name(), "lm-infinite");
  EXPECT_EQ(policy->max_cells(), 4 + 2048);
  EXPECT_EQ(policy->max_step_tokens(), 2048);
  EXPECT_EQ(policy->describe(), "lm-infinite(sink=4, window=2048, ceiling=2048)");
  EXPECT_FALSE(make_kv_policy(lm_infinite_spec(-1, 4), ctx).is_ok());
  EXPECT_FALSE(make_kv_policy(lm_infinite_spec(4, -4), ctx).is_ok());
  const std::vector<std::string> names = kv_policy_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "lm-infinite"), names.end());
}

TEST(LmInfinitePolicy, RetainsExactlyTheLambdaOneTokenAtATime) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(lm_infinite_spec(2, 3), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  for (int32_t t = 0; t < 100; ++t) {
    step(*policy, cache, seq, 1);
    for (int32_t il = 0; il < shape.n_layer; ++il)
      ASSERT_EQ(positions_of(cache, seq, il), lambda_positions(t, 2, 3)) << t;
  }
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 1, 97, 98, 99}));
}

TEST(LmInfinitePolicy, RetainsExactlyTheLambdaWithMultiTokenSteps) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(lm_infinite_spec(3, 5), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  int32_t last = -1;
  for (int32_t n : {4, 3, 2, 5, 1, 5, 5, 3, 1, 4}) {
    step(*policy, cache, seq, n);
    last += n;
    for (int32_t il = 0; il < shape.n_layer; ++il)
      ASSERT_EQ(positions_of(cache, seq, il), lambda_positions(last, 3, 5)) << "after token " << last;
  }
}

TEST(LmInfinitePolicy, NeverExceedsTheBudgetAndReusesPages) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(lm_infinite_spec(4, 8), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  int64_t allocated_after_warmup = 0;
  for (int i = 0; i < 60; ++i) {
    step(*policy, cache, seq, 1 + i % 8);  // append_cells fails (and step aborts) past max_cells
    EXPECT_LE(cache.n_cells(seq, 0), 12);
    if (i == 10) allocated_after_warmup = cache.allocated_bytes();
    if (i > 10) {
      EXPECT_EQ(cache.allocated_bytes(), allocated_after_warmup);
    }
  }
  EXPECT_EQ(positions_of(cache, seq, 0), lambda_positions(cache.next_position(seq) - 1, 4, 8));
}

// RoPE of a 4-dim head (two pairs, "normal" style) at `pos`, in double.
std::vector<double> rope_ref(const std::vector<double>& x, double pos, double base) {
  std::vector<double> y(4);
  for (int i = 0; i < 2; ++i) {
    const double theta = pos * std::pow(base, -2.0 * i / 4.0);
    y[2 * i] = x[2 * i] * std::cos(theta) - x[2 * i + 1] * std::sin(theta);
    y[2 * i + 1] = x[2 * i] * std::sin(theta) + x[2 * i + 1] * std::cos(theta);
  }
  return y;
}

std::vector<double> raw_key(int32_t token, int32_t head) {
  return {0.5 + 0.01 * token, -0.25 + 0.1 * head, 0.75 - 0.02 * token, 0.125 * (head + 1)};
}

// Stores the keys of the cells a step appended, rotated at their text positions, as the model does.
void write_keys(KvCache& cache, SeqId seq, int32_t first_cell, int32_t first_token, int32_t n) {
  const KvShape& shape = cache.shape();
  for (int32_t il = 0; il < shape.n_layer; ++il)
    for (int32_t i = 0; i < n; ++i)
      for (int32_t h = 0; h < shape.n_head_kv; ++h) {
        const std::vector<double> k = rope_ref(raw_key(first_token + i, h), first_token + i, 10000.0);
        uint16_t* dst = cache.key(seq, il, h, first_cell + i);
        for (int d = 0; d < 4; ++d) dst[d] = tensor::f32_to_f16(static_cast<float>(k[static_cast<size_t>(d)]));
      }
}

// Largest deviation of the cached key of `cell` from token's raw key rotated directly to `pos`.
double key_error(const KvCache& cache, SeqId seq, int32_t il, int32_t cell, int32_t token, int32_t pos) {
  double err = 0;
  for (int32_t h = 0; h < cache.shape().n_head_kv; ++h) {
    const std::vector<double> want = rope_ref(raw_key(token, h), pos, 10000.0);
    const uint16_t* got = cache.key(seq, il, h, cell);
    for (int d = 0; d < 4; ++d)
      err = std::max(err, std::abs(tensor::f16_to_f32(got[d]) - want[static_cast<size_t>(d)]));
  }
  return err;
}

// The position whose direct rotation matches the cached key best (the key's apparent position).
int32_t apparent_position(const KvCache& cache, SeqId seq, int32_t il, int32_t cell, int32_t token, int32_t max_pos) {
  int32_t best = -1;
  double best_err = 1e9;
  for (int32_t p = 0; p <= max_pos; ++p) {
    const double e = key_error(cache, seq, il, cell, token, p);
    if (e < best_err) best_err = e, best = p;
  }
  EXPECT_LT(best_err, 2e-3) << "no position matches the key of cell " << cell;
  return best;
}

TEST(LmInfinitePolicy, StartTokensSitAtTheCeilingAfterEvictionWindowKeysStay) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(lm_infinite_spec(2, 4), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  for (int32_t t = 0; t < 20; ++t) write_keys(cache, seq, step(*policy, cache, seq, 1), t, 1);
  // Cells: start tokens 0, 1, then the window 16..19. Before token 19's step both start
  // tokens were moved to 19 - W = 15, so query 19 sees them at the ceiling.
  ASSERT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 1, 16, 17, 18, 19}));
  for (int32_t il = 0; il < shape.n_layer; ++il) {
    for (int32_t i = 0; i < 2; ++i) EXPECT_LT(key_error(cache, seq, il, i, i, 15), 2e-3) << il << " " << i;
    for (int32_t c = 2; c < 6; ++c) EXPECT_LT(key_error(cache, seq, il, c, 14 + c, 14 + c), 2e-3) << c;
  }
  // What the rotation is for: the start token's score against the newest query (at its
  // text position 19) equals the score at the clamped distance W = 4.
  const std::vector<double> q_raw = {0.3, -0.7, 0.2, 0.9};
  for (int32_t i = 0; i < 2; ++i) {
    const std::vector<double> q = rope_ref(q_raw, 19, 10000.0);
    const std::vector<double> q_clamped = rope_ref(q_raw, 4, 10000.0);
    const std::vector<double> k_own = rope_ref(raw_key(i, 0), 0, 10000.0);
    double got = 0, want = 0;
    const uint16_t* k = cache.key(seq, 0, 0, i);
    for (int d = 0; d < 4; ++d) {
      got += q[static_cast<size_t>(d)] * tensor::f16_to_f32(k[d]);
      want += q_clamped[static_cast<size_t>(d)] * k_own[static_cast<size_t>(d)];
    }
    EXPECT_NEAR(got, want, 5e-3);
  }
}

TEST(LmInfinitePolicy, ShortTextsKeepTheirOwnPositions) {
  const KvShape shape = testing::tiny_shape(1);
  auto policy = testing::make(lm_infinite_spec(2, 4), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  // Up to token W = 4 every distance is within the ceiling: exactly full attention.
  for (int32_t t = 0; t < 5; ++t) write_keys(cache, seq, step(*policy, cache, seq, 1), t, 1);
  for (int32_t i = 0; i < 2; ++i) EXPECT_LT(key_error(cache, seq, 0, i, i, i), 1e-3) << i;
  // Token 5 is 5 > W past token 0, before any eviction: token 0 moves to 5 - W = 1.
  write_keys(cache, seq, step(*policy, cache, seq, 1), 5, 1);
  EXPECT_EQ(cache.n_cells(seq, 0), 6);
  EXPECT_EQ(apparent_position(cache, seq, 0, 0, 0, 5), 1);
  EXPECT_EQ(apparent_position(cache, seq, 0, 1, 1, 5), 1);
}

TEST(LmInfinitePolicy, EveryQuerySeesStartTokensWithinTheCeiling) {
  const KvShape shape = testing::tiny_shape(1);
  const int32_t n_start = 3, window = 6;
  auto policy = testing::make(lm_infinite_spec(n_start, window), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  int32_t next = 0;
  for (int32_t n : {2, 3, 4, 1, 1, 6, 2, 5, 1, 1, 3, 6, 1}) {
    const int32_t cells_before = cache.n_cells(seq, 0);
    const int32_t first_cell = step(*policy, cache, seq, n);
    write_keys(cache, seq, first_cell, next, n);
    const int32_t first_query = next, last_query = next + n - 1;
    next += n;
    const bool evicted = cells_before + n > n_start + window;
    for (int32_t j = 0; j < std::min(n_start, cache.n_cells(seq, 0)); ++j) {
      const int32_t a = apparent_position(cache, seq, 0, j, j, last_query);
      EXPECT_GE(a, j) << "start tokens only move forward";
      EXPECT_LE(last_query - a, window) << "token " << j << " beyond the ceiling, step ending at " << last_query;
      if (last_query - j <= window) {
        EXPECT_EQ(a, j) << "within the ceiling a start token keeps its distance";
      }
      if (evicted) {
        EXPECT_EQ(last_query - a, window) << "after an eviction the last query sees the ceiling exactly";
      }
      // Earlier queries of the step: closer than the last one, by the query offset only.
      EXPECT_GE(first_query - a, last_query - a - (n - 1));
    }
  }
}

TEST(LmInfinitePolicy, TruncateRestoresOwnPositions) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(lm_infinite_spec(2, 4), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  for (int32_t t = 0; t < 12; ++t) write_keys(cache, seq, step(*policy, cache, seq, 1), t, 1);
  ASSERT_GT(key_error(cache, seq, 0, 0, 0, 0), 1e-2);  // moved
  cache.truncate(seq, 3);
  policy->truncate(cache, seq, 3);
  for (int32_t il = 0; il < shape.n_layer; ++il)
    for (int32_t i = 0; i < 2; ++i) EXPECT_LT(key_error(cache, seq, il, i, i, i), 1e-3) << il << " " << i;
  // Cells 0, 1, 8 remain. The next plan re-applies the ceiling for the farthest query the
  // cache could still take (8 + 3 free cells = 11): both start tokens go to 11 - W = 7, so
  // queries 9, 10, 11 see them at 2, 3, 4, all within the ceiling; from the next eviction
  // on (query 12) the ceiling is met exactly again.
  for (int32_t t = 9; t < 12; ++t) {
    write_keys(cache, seq, step(*policy, cache, seq, 1), t, 1);
    for (int32_t i = 0; i < 2; ++i) EXPECT_EQ(apparent_position(cache, seq, 0, i, i, t), 7) << t;
  }
  write_keys(cache, seq, step(*policy, cache, seq, 1), 12, 1);
  for (int32_t i = 0; i < 2; ++i) EXPECT_EQ(apparent_position(cache, seq, 0, i, i, 12), 12 - 4);
}

}  // namespace
}  // namespace longhaul::kv
