// Pieces shared by the policies that read distant pages at other positions (KvPolicy::select_placed_pages: infllm,
// longheads): the positions of a block of queries, rotations by a number of positions, and per-(layer, KV head)
// state that the attention threads read and fill under a lock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/ops.h"
#include "kv/kv_policy.h"
#include "tensor/half.h"

namespace longhaul::kv {

// The earliest and the latest position among the queries of one select_placed_pages call.
struct QuerySpan {
  int32_t first = 0;
  int32_t last = 0;
};
inline QuerySpan query_span(const KvPolicy::PageQuery& query) {
  QuerySpan s{query.q_pos[0], query.q_pos[0]};
  for (int32_t i = 1; i < query.n_q; ++i) {
    s.first = std::min(s.first, query.q_pos[i]);
    s.last = std::max(s.last, query.q_pos[i]);
  }
  return s;
}

// Turns the n vectors x [n, dk] by `by` positions with the layer's rotary embedding (negative: back; a key or query
// rotated at p then reads as one rotated at p + by). angles: scratch.
inline void rotate_by(const RopeSpec& rope, int32_t by, float* x, int32_t n, int32_t dk, kernels::RopeAngles& angles) {
  if (rope.n_rot == 0 || by == 0) return;
  angles.compute(&by, 1, rope.n_rot, rope.freq_base, rope.freq_scale);
  kernels::rope(x, n, dk, rope.n_rot, angles.cos_sin.data(), rope.style);
}

// The keys of page ip of the query's (layer, KV head) as f32, [n_cells, dk] (dequantized when the page is; zeros
// where the head's rows were freed).
inline std::vector<float> page_keys(const KvPolicy::PageQuery& query, int32_t ip) {
  const KvCache::PageSpan span = query.cache.page_span(query.seq, query.il, ip);
  KvCache::Scratch scratch;
  const KvCache::HeadRows rows = query.cache.head_rows(query.seq, query.il, query.kv_head, ip, scratch, true, false);
  const int64_t n = static_cast<int64_t>(span.n_cells) * query.dk;
  std::vector<float> keys(static_cast<size_t>(n), 0.0f);
  if (rows.keys != nullptr)
    for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = tensor::f16_to_f32(rows.keys[i]);
  return keys;
}

// Per-channel minimum and maximum of keys [n, dk] (n >= 1): Quest's page summary (Tang et al., 2024), for
// page_key_bound.
inline void key_bounds(const std::vector<float>& keys, int32_t n, int32_t dk, std::vector<float>& key_min,
                       std::vector<float>& key_max) {
  key_min.assign(keys.begin(), keys.begin() + dk);
  key_max = key_min;
  for (int32_t j = 1; j < n; ++j)
    for (int32_t c = 0; c < dk; ++c) {
      const float k = keys[static_cast<size_t>(j) * dk + c];
      key_min[static_cast<size_t>(c)] = std::min(key_min[static_cast<size_t>(c)], k);
      key_max[static_cast<size_t>(c)] = std::max(key_max[static_cast<size_t>(c)], k);
    }
}

// One State per (layer, KV head), each behind its own mutex: select_placed_pages and observe_scores run on the
// attention threads, several of them for the same (layer, KV head) in one step. Copies (a forked sequence's
// policy) copy every State.
template <typename State>
class PerHeadState {
 public:
  explicit PerHeadState(const KvShape& shape)
      : n_head_kv_(shape.n_head_kv), rows_(static_cast<size_t>(shape.n_layer) * shape.n_head_kv) {
    for (auto& row : rows_) row = std::make_unique<Row>();
  }
  PerHeadState(const PerHeadState& other) : n_head_kv_(other.n_head_kv_), rows_(other.rows_.size()) {
    for (size_t i = 0; i < rows_.size(); ++i) {
      rows_[i] = std::make_unique<Row>();
      std::lock_guard<std::mutex> lock(other.rows_[i]->mutex);
      rows_[i]->state = other.rows_[i]->state;
    }
  }
  PerHeadState& operator=(const PerHeadState&) = delete;

  // Calls fn(state) with the (layer, KV head)'s lock held; returns what fn returns.
  template <typename Fn>
  auto with(int32_t il, int32_t kv_head, Fn&& fn) const {
    Row& row = *rows_[static_cast<size_t>(il) * n_head_kv_ + kv_head];
    std::lock_guard<std::mutex> lock(row.mutex);
    return fn(row.state);
  }
  // Calls fn(state) for every (layer, KV head) in order, each with its lock held.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& row : rows_) {
      std::lock_guard<std::mutex> lock(row->mutex);
      fn(row->state);
    }
  }

 private:
  struct Row {
    std::mutex mutex;
    State state;
  };
  int32_t n_head_kv_;
  std::vector<std::unique_ptr<Row>> rows_;  // [n_layer * n_head_kv]; the policy is const where threads fill them
};

}  // namespace longhaul::kv
