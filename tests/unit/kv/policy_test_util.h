// Helpers for the KV policy tests: a tiny cache filled with known keys, and the
// eviction protocol as the Session drives it.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "kv/policy_registry.h"
#include "tensor/half.h"

namespace longhaul::kv::testing {

inline KvShape tiny_shape(int32_t n_layer = 2) {
  KvShape s;
  s.n_layer = n_layer;
  s.n_head_kv = 2;
  s.head_dim_k = 4;
  s.head_dim_v = 4;
  return s;
}

inline KvPolicyContext tiny_context(const KvShape& shape) {
  KvPolicyContext c;
  c.shape = shape;
  c.rope.resize(static_cast<size_t>(shape.n_layer));
  for (auto& r : c.rope) {
    r.n_rot = shape.head_dim_k;
    r.freq_base = 10000.0f;
  }
  return c;
}

// The policy a spec names ("h2o:budget=6:recent=2"); aborts when the spec is refused.
inline std::unique_ptr<KvPolicy> make(const std::string& spec, const KvPolicyContext& context) {
  Result<BuiltKvPolicy> p = make_kv_policy(spec, context);
  LH_CHECK_MSG(p.is_ok(), p.message().c_str());
  return std::move(p->policy);
}

// Runs steps 1-3 of the protocol for `n_tokens` new tokens, then appends their cells
// (what Model::forward does first). Returns the index of the first new cell.
inline int32_t step(KvPolicy& policy, KvCache& cache, SeqId seq, int32_t n_tokens) {
  StepInfo next;
  next.first_position = cache.next_position(seq);
  next.n_tokens = n_tokens;
  next.starts_feed = true;  // each call is one whole feed()
  policy.apply_eviction(policy.plan_eviction(cache, seq, next), cache, seq);
  policy.begin_step(seq, next);
  std::vector<int32_t> pos(static_cast<size_t>(n_tokens));
  std::iota(pos.begin(), pos.end(), next.first_position);
  Result<int32_t> first = cache.append_cells(seq, pos);
  LH_CHECK(first.is_ok());
  return *first;
}

// A cache of `n_cells` cells in pages of 4 whose keys are 0.01 except page `needle_page`, whose keys point along
// channel 0 of KV head 0 (and channel 1 of KV head 1).
struct NeedleCache {
  KvShape shape = tiny_shape(3);
  KvCache cache;
  SeqId seq = 0;
  NeedleCache(int32_t n_cells, int32_t needle_page)
      : cache(shape, KvCacheOptions{/*page_tokens=*/4, /*max_cells=*/0, /*max_sequences=*/4}) {
    seq = *cache.add_sequence();
    std::vector<int32_t> pos(static_cast<size_t>(n_cells));
    for (int32_t i = 0; i < n_cells; ++i) pos[static_cast<size_t>(i)] = i;
    LH_CHECK(cache.append_cells(seq, pos).is_ok());
    const int32_t dk = shape.head_dim_k;
    std::vector<float> keys(static_cast<size_t>(n_cells) * shape.n_head_kv * dk, 0.01f);
    for (int32_t i = 4 * needle_page; i < 4 * needle_page + 4; ++i) {
      keys[(static_cast<size_t>(i) * shape.n_head_kv + 0) * dk + 0] = 5.0f;
      keys[(static_cast<size_t>(i) * shape.n_head_kv + 1) * dk + 1] = 5.0f;
    }
    for (int32_t il = 0; il < shape.n_layer; ++il) cache.write_keys(seq, il, 0, n_cells, keys.data());
  }
};

// The pages `policy` has KV head kv_head of layer il read for one decode query: the queries q [n_q, dk] of the
// head's GQA group, all at `position`.
inline std::vector<int32_t> select_for_decode(const KvPolicy& policy, const KvCache& cache, SeqId seq, int32_t il,
                                              int32_t kv_head, const std::vector<float>& q, int32_t position,
                                              int32_t dk = 4) {
  std::vector<int32_t> q_pos(q.size() / static_cast<size_t>(dk), position);
  std::vector<int32_t> pages;
  policy.select_pages({cache, seq, il, kv_head, q.data(), q_pos.data(), static_cast<int32_t>(q_pos.size()), dk}, pages);
  return pages;
}

// RoPE of adjacent pairs over every dim of x at position `pos`, base 10000 (tiny_context's), written out
// independently of kernels::rope.
inline std::vector<float> rotate_pairs(const std::vector<float>& x, double pos) {
  std::vector<float> y = x;
  const auto n = static_cast<int32_t>(x.size());
  for (int32_t i = 0; i < n / 2; ++i) {
    const double theta = pos * std::pow(10000.0, -2.0 * i / n);
    const double c = std::cos(theta), s = std::sin(theta);
    y[2 * i] = static_cast<float>(x[2 * i] * c - x[2 * i + 1] * s);
    y[2 * i + 1] = static_cast<float>(x[2 * i] * s + x[2 * i + 1] * c);
  }
  return y;
}

inline float dot(const std::vector<float>& a, const std::vector<float>& b) {
  float s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// One sequence holding positions 0 .. n_cells - 1 in pages of page_tokens cells, every layer with the same random
// keys (standard normal, from `seed`).
struct RandomKeyCache {
  KvShape shape;
  KvCache cache;
  SeqId seq;
  std::vector<float> keys;  // [n_cells, n_head_kv, head_dim_k] as stored (rounded to f16)

  RandomKeyCache(const KvShape& s, int32_t page_tokens, int32_t n_cells, uint32_t seed)
      : shape(s), cache(s, KvCacheOptions{page_tokens, 0, 4}), seq(*cache.add_sequence()) {
    std::vector<int32_t> pos(static_cast<size_t>(n_cells));
    std::iota(pos.begin(), pos.end(), 0);
    LH_CHECK(cache.append_cells(seq, pos).is_ok());
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    keys.resize(static_cast<size_t>(n_cells) * shape.n_head_kv * shape.head_dim_k);
    for (float& k : keys) k = normal(rng);
    for (int32_t il = 0; il < shape.n_layer; ++il) cache.write_keys(seq, il, 0, n_cells, keys.data());
    for (float& k : keys) k = tensor::f16_to_f32(tensor::f32_to_f16(k));
  }
  // The stored key of `head` at `cell`, [head_dim_k].
  std::vector<float> key(int32_t cell, int32_t head) const {
    const float* k = keys.data() + (static_cast<size_t>(cell) * shape.n_head_kv + head) * shape.head_dim_k;
    return {k, k + shape.head_dim_k};
  }
};

inline std::vector<int32_t> positions_of(const KvCache& cache, SeqId seq, int32_t il) {
  const auto p = cache.positions(seq, il);
  return {p.begin(), p.end()};
}

}  // namespace longhaul::kv::testing
