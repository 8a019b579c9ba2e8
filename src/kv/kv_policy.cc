#include "kv/kv_policy.h"

#include <algorithm>
#include <numeric>

namespace longhaul::kv {

void KvPolicy::apply_eviction(const EvictionPlan& plan, KvCache& cache, SeqId seq) {
  if (plan.evict) retain(plan, cache, seq);
  for (const HeadRelease& r : plan.release) cache.release_head_rows(seq, r.il, r.kv_head, r.i_page);
}

void KvPolicy::retain(const EvictionPlan& plan, KvCache& cache, SeqId seq) {
  LH_CHECK_MSG(static_cast<int32_t>(plan.keep.size()) == cache.shape().n_layer, "eviction plan needs one list per layer");
  LH_CHECK_MSG(plan.head_keep.empty() || static_cast<int32_t>(plan.head_keep.size()) == cache.shape().n_layer,
               "eviction plan needs no per-head lists or one entry per layer");
  size_t n_keep = 0;
  for (int32_t il = 0; il < cache.shape().n_layer; ++il) {
    const auto l = static_cast<size_t>(il);
    const bool per_head = !plan.head_keep.empty() && !plan.head_keep[l].empty();
    const size_t count = per_head ? plan.head_keep[l][0].size() : plan.keep[l].size();
    if (il == 0) n_keep = count;
    LH_CHECK_MSG(count == n_keep, "eviction plan keeps different counts per layer");
    if (per_head) {
      cache.retain_cells_per_head(seq, il, plan.head_keep[l]);
      after_retain_per_head(cache, seq, il, plan.head_keep[l]);
    } else {
      cache.retain_cells(seq, il, plan.keep[l]);
      after_retain(cache, seq, il, plan.keep[l]);
    }
  }
}

EvictionPlan KvPolicy::plan_from_head_scores(
    const KvCache& cache, SeqId seq, const CellScores& scores, int32_t n_cells, bool per_head,
    const std::function<std::vector<int32_t>(const std::vector<float>&)>& choose) const {
  const int32_t n_layer = cache.shape().n_layer, n_head = cache.shape().n_head_kv;
  EvictionPlan plan;
  plan.evict = true;
  plan.keep.resize(static_cast<size_t>(n_layer));
  plan.head_keep.resize(static_cast<size_t>(n_layer));
  for (int32_t il = 0; il < n_layer; ++il) {
    const auto l = static_cast<size_t>(il);
    if (per_head && can_retain_per_head(cache, seq, il)) {
      for (int32_t h = 0; h < n_head; ++h) plan.head_keep[l].push_back(choose(scores.get(il * n_head + h, n_cells)));
    } else {
      plan.keep[l] = choose(scores.get_sum(il * n_head, n_head, n_cells));
    }
  }
  return plan;
}

void CellScores::retain_rows(int32_t first, int32_t count, std::span<const int32_t> keep) {
  for (int32_t i = first; i < first + count; ++i) retain(i, keep);
}

void CellScores::retain_rows(int32_t first, std::span<const std::vector<int32_t>> keep) {
  for (size_t h = 0; h < keep.size(); ++h) retain(first + static_cast<int32_t>(h), keep[h]);
}

void CellScores::accumulate(int32_t il, std::span<const float> probs, float weight) {
  Layer& layer = layers_[static_cast<size_t>(il)];
  std::lock_guard<std::mutex> lock(layer.mutex);
  if (layer.sum.size() < probs.size()) layer.sum.resize(probs.size(), 0.0);
  for (size_t c = 0; c < probs.size(); ++c) layer.sum[c] += static_cast<double>(weight) * probs[c];
}

CellScores::CellScores(const CellScores& other) : layers_(other.layers_.size()) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::lock_guard<std::mutex> lock(other.layers_[i].mutex);
    layers_[i].sum = other.layers_[i].sum;
  }
}

std::vector<double> CellScores::values() const {
  std::vector<double> out;
  for (const Layer& layer : layers_) {
    std::lock_guard<std::mutex> lock(layer.mutex);
    out.push_back(static_cast<double>(layer.sum.size()));
    out.insert(out.end(), layer.sum.begin(), layer.sum.end());
  }
  return out;
}

void CellScores::zero(int32_t il) {
  Layer& layer = layers_[static_cast<size_t>(il)];
  std::lock_guard<std::mutex> lock(layer.mutex);
  std::fill(layer.sum.begin(), layer.sum.end(), 0.0);
}

void CellScores::scale(int32_t il, float factor) {
  Layer& layer = layers_[static_cast<size_t>(il)];
  std::lock_guard<std::mutex> lock(layer.mutex);
  for (double& s : layer.sum) s *= factor;
}

void CellScores::retain(int32_t il, std::span<const int32_t> keep) {
  Layer& layer = layers_[static_cast<size_t>(il)];
  std::lock_guard<std::mutex> lock(layer.mutex);
  std::vector<double> kept(keep.size(), 0.0);
  for (size_t i = 0; i < keep.size(); ++i) {
    const auto c = static_cast<size_t>(keep[i]);
    if (c < layer.sum.size()) kept[i] = layer.sum[c];
  }
  layer.sum = std::move(kept);
}

void CellScores::truncate(int32_t n_cells) {
  for (Layer& layer : layers_) {
    std::lock_guard<std::mutex> lock(layer.mutex);
    if (static_cast<int32_t>(layer.sum.size()) > n_cells) layer.sum.resize(static_cast<size_t>(n_cells));
  }
}

std::vector<float> CellScores::get(int32_t il, int32_t n_cells) const {
  const Layer& layer = layers_[static_cast<size_t>(il)];
  std::lock_guard<std::mutex> lock(layer.mutex);
  std::vector<float> out(static_cast<size_t>(n_cells), 0.0f);
  for (size_t c = 0; c < out.size() && c < layer.sum.size(); ++c) out[c] = static_cast<float>(layer.sum[c]);
  return out;
}

std::vector<float> CellScores::get_sum(int32_t first, int32_t count, int32_t n_cells) const {
  std::vector<float> out(static_cast<size_t>(n_cells), 0.0f);
  for (int32_t i = first; i < first + count; ++i) {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    std::lock_guard<std::mutex> lock(layer.mutex);
    for (size_t c = 0; c < out.size() && c < layer.sum.size(); ++c) out[c] += static_cast<float>(layer.sum[c]);
  }
  return out;
}

std::vector<int32_t> top_cells(std::span<const float> score, int32_t begin, int32_t end, int32_t n_keep) {
  LH_CHECK(begin >= 0 && begin <= end && end <= static_cast<int32_t>(score.size()));
  n_keep = std::clamp(n_keep, 0, end - begin);
  std::vector<int32_t> idx(static_cast<size_t>(end - begin));
  std::iota(idx.begin(), idx.end(), begin);
  // Larger score first; on ties the older cell wins. That is a total order, so selecting the first n_keep (linear
  // time: policies call this per layer and head at every decode step) gives the same set as sorting.
  std::nth_element(idx.begin(), idx.begin() + n_keep, idx.end(), [&](int32_t a, int32_t b) {
    const float sa = score[static_cast<size_t>(a)], sb = score[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  });
  idx.resize(static_cast<size_t>(n_keep));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace longhaul::kv
