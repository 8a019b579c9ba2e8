// StreamingLLM (Xiao et al., 2023): first S sinks + last W tokens, positions
// re-assigned by cache index. Expected values are worked out by hand from the rule
// and, for the key rotation, from RoPE's definition in double precision.
#include <gtest/gtest.h>

#include <cmath>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::positions_of;
using testing::step;

std::string streaming_spec(int32_t sink, int32_t window) {
  return "streaming:sink=" + std::to_string(sink) + ":window=" + std::to_string(window);
}

TEST(StreamingPolicy, KeepsSinksAndTheLastWindowOneTokenAtATime) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(streaming_spec(2, 3), testing::tiny_context(shape));
  EXPECT_EQ(policy->max_cells(), 5);
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  for (int i = 0; i < 5; ++i) step(*policy, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  step(*policy, cache, seq, 1);  // token 5 arrives: token 2 leaves
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 1, 3, 4, 5}));
  for (int i = 0; i < 94; ++i) step(*policy, cache, seq, 1);
  for (int32_t il = 0; il < shape.n_layer; ++il)
    EXPECT_EQ(positions_of(cache, seq, il), (std::vector<int32_t>{0, 1, 97, 98, 99}));
}

TEST(StreamingPolicy, MultiTokenStepsNeverExceedTheBudget) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(streaming_spec(4, 8), testing::tiny_context(shape));
  EXPECT_EQ(policy->max_step_tokens(), 8);
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
  // Sinks stay; the rest is the contiguous run of the most recent positions.
  const std::vector<int32_t> pos = positions_of(cache, seq, 0);
  ASSERT_EQ(pos.size(), 12u);
  for (int32_t i = 0; i < 4; ++i) EXPECT_EQ(pos[static_cast<size_t>(i)], i);
  for (size_t i = 5; i < pos.size(); ++i) EXPECT_EQ(pos[i], pos[i - 1] + 1);
  EXPECT_EQ(pos.back(), cache.next_position(seq) - 1);
}

TEST(StreamingPolicy, WithoutSinksIsAPlainWindow) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make(streaming_spec(0, 4), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  for (int i = 0; i < 10; ++i) step(*policy, cache, seq, 1);
  EXPECT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{6, 7, 8, 9}));
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

TEST(StreamingPolicy, SinkKeysMoveToTheirCachePositionWindowKeysStay) {
  const KvShape shape = testing::tiny_shape(1);
  auto policy = testing::make(streaming_spec(2, 4), testing::tiny_context(shape));
  KvCache cache(shape, {4, policy->max_cells(), 1});
  const SeqId seq = *cache.add_sequence();
  // Store each token's key rotated at its text position, as the model does.
  for (int32_t t = 0; t < 20; ++t) {
    const int32_t cell = step(*policy, cache, seq, 1);
    for (int32_t h = 0; h < shape.n_head_kv; ++h) {
      const std::vector<double> k = rope_ref(raw_key(t, h), t, 10000.0);
      uint16_t* dst = cache.key(seq, 0, h, cell);
      for (int d = 0; d < 4; ++d) dst[d] = tensor::f32_to_f16(static_cast<float>(k[static_cast<size_t>(d)]));
    }
  }
  // Cells: sinks (tokens 0, 1) then tokens 16..19. The last eviction happened before token
  // 19 arrived, when the window ended with token 18 at cache index 4: shift = 18 - 4 = 14.
  ASSERT_EQ(positions_of(cache, seq, 0), (std::vector<int32_t>{0, 1, 16, 17, 18, 19}));
  for (int32_t h = 0; h < shape.n_head_kv; ++h) {
    for (int32_t i = 0; i < 2; ++i) {
      const std::vector<double> want = rope_ref(raw_key(i, h), i + 14, 10000.0);
      const uint16_t* got = cache.key(seq, 0, h, i);
      for (int d = 0; d < 4; ++d) EXPECT_NEAR(tensor::f16_to_f32(got[d]), want[static_cast<size_t>(d)], 2e-3) << i;
    }
    for (int32_t c = 2; c < 6; ++c) {
      const int32_t t = 14 + c;
      const std::vector<double> want = rope_ref(raw_key(t, h), t, 10000.0);
      const uint16_t* got = cache.key(seq, 0, h, c);
      for (int d = 0; d < 4; ++d) EXPECT_NEAR(tensor::f16_to_f32(got[d]), want[static_cast<size_t>(d)], 2e-3) << t;
    }
  }
  // What the rotation is for: the sink's score against the newest token's query equals
  // the score at cache distances (sink i at index i, query at index 5).
  const std::vector<double> q_raw = {0.3, -0.7, 0.2, 0.9};
  for (int32_t i = 0; i < 2; ++i) {
    const std::vector<double> q = rope_ref(q_raw, 19, 10000.0);  // the query at its text position
    const std::vector<double> q_cache = rope_ref(q_raw, 5, 10000.0);
    const std::vector<double> k_cache = rope_ref(raw_key(i, 0), i, 10000.0);
    double got = 0, want = 0;
    const uint16_t* k = cache.key(seq, 0, 0, i);
    for (int d = 0; d < 4; ++d) {
      got += q[static_cast<size_t>(d)] * tensor::f16_to_f32(k[d]);
      want += q_cache[static_cast<size_t>(d)] * k_cache[static_cast<size_t>(d)];
    }
    EXPECT_NEAR(got, want, 5e-3);
  }
}

TEST(StreamingPolicy, RejectsNegativeParameters) {
  const KvPolicyContext ctx = testing::tiny_context(testing::tiny_shape());
  EXPECT_FALSE(make_kv_policy(streaming_spec(-1, 4), ctx).is_ok());
  EXPECT_FALSE(make_kv_policy(streaming_spec(4, -4), ctx).is_ok());
}

}  // namespace
}  // namespace longhaul::kv
