// streaming: StreamingLLM (Xiao et al., 2023, "Efficient Streaming Language Models
// with Attention Sinks"). Keeps the first S tokens as attention sinks plus a window
// of the last W tokens; memory is constant at S + W cells per layer.
//
// Positions inside the cache. The paper assigns positions by cache index, not by
// text position: a query at cache index n-1 sees a key at cache index c at distance
// n-1-c. It caches keys before RoPE and rotates them at attention time. We cache
// keys after RoPE (as the model does for every policy) and get the same scores more
// cheaply, because a RoPE score depends only on the distance between query and key:
//   - window keys are contiguous in the text, so their text distance to the query
//     already equals their cache-index distance; they are left untouched;
//   - only the S sinks are off: after `shift` tokens were evicted, sink i must sit at
//     position i + shift. RoPE rotations compose, so rotating the sink's key by
//     `shift` moves it there. We rotate from a copy of the sink keys taken before the
//     first eviction, so the rounding to f16 happens once, not once per eviction.
// Cost: S keys per layer and head per eviction, instead of re-rotating the whole window
// (or every key at every step, as pre-RoPE caching needs). The attention mask keeps
// using text positions, which give the same visibility: sinks precede every query,
// window keys are within W of it.
#include <algorithm>

#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

struct StreamingOptions {
  int32_t sink = kDefaultSinkTokens;  // S: first tokens kept as attention sinks (0 = none)
  int32_t window = 1020;              // W: most recent tokens kept (S + W = 1024 with the default 4 sinks, as in the
                                      // paper's runs)
};

class StreamingPolicy final : public KvPolicy {
 public:
  StreamingPolicy(const KvPolicyContext& context, int32_t n_sink, int32_t window)
      : KvPolicy(context), n_sink_(n_sink), window_(window) {}

  std::unique_ptr<KvPolicy> fork(SeqId from, SeqId to) const override {
    auto copy = std::unique_ptr<StreamingPolicy>(new StreamingPolicy(*this));
    copy->sinks_.clear();
    if (static_cast<size_t>(from) < sinks_.size()) {
      copy->sinks_.resize(static_cast<size_t>(to) + 1);
      copy->sinks_[static_cast<size_t>(to)] = sinks_[static_cast<size_t>(from)];
    }
    return copy;
  }
  std::string name() const override { return "streaming"; }
  std::string describe() const override {
    return "streaming(sink=" + std::to_string(n_sink_) + ", window=" + std::to_string(window_) + ")";
  }
  int32_t max_cells() const override { return n_sink_ + window_; }
  // The sinks are re-written in place (re-positioned): quantized storage must keep them f16.
  int32_t f16_prefix_tokens() const override { return n_sink_; }
  // A step of n tokens needs n free cells in the window.
  int32_t max_step_tokens() const override { return window_; }

  EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const override {
    EvictionPlan plan;
    const int32_t n = cache.n_cells(seq, 0);
    LH_CHECK_MSG(next.n_tokens <= window_, "streaming: a step brings more tokens than the window holds");
    if (n + next.n_tokens <= max_cells()) return plan;
    // Keep the sinks and the last (W - incoming) cells, so that after the step the
    // cache holds exactly S + W cells. n > S here because incoming <= W.
    const int32_t keep_recent = window_ - next.n_tokens;
    const int32_t recent_begin = std::max(n_sink_, n - keep_recent);
    std::vector<int32_t> keep;
    keep.reserve(static_cast<size_t>(n_sink_ + keep_recent));
    for (int32_t c = 0; c < std::min(n_sink_, n); ++c) keep.push_back(c);
    for (int32_t c = recent_begin; c < n; ++c) keep.push_back(c);
    plan.evict = true;
    plan.keep.assign(static_cast<size_t>(cache.shape().n_layer), keep);
    return plan;
  }

  // Sinks are never evicted. When a truncation cuts into them, the window is gone and
  // the survivors go back to their own positions (the copies), and the copies are dropped.
  void truncate(KvCache& cache, SeqId seq, int32_t n_cells) override {
    if (n_cells >= n_sink_ || static_cast<size_t>(seq) >= sinks_.size()) return;
    auto& layers = sinks_[static_cast<size_t>(seq)];
    for (int32_t il = 0; il < static_cast<int32_t>(layers.size()); ++il) {
      const LayerSinks& sinks = layers[static_cast<size_t>(il)];
      const int32_t n = std::min(n_cells, static_cast<int32_t>(sinks.positions.size()));
      if (n > 0) cache.write_keys(seq, il, 0, n, sinks.keys.data());
    }
    layers.clear();
  }

 protected:
  void after_retain(KvCache& cache, SeqId seq, int32_t il, std::span<const int32_t> keep) override {
    (void)keep;
    const int32_t n = cache.n_cells(seq, il);
    const int32_t n_sink = std::min(n_sink_, n);
    if (n_sink == 0 || n <= n_sink) return;
    const std::span<const int32_t> pos = cache.positions(seq, il);
    // The window is contiguous: its last cell's distance to its cache index is the shift.
    const int32_t shift = pos[static_cast<size_t>(n - 1)] - (n - 1);
    const RopeSpec& rope = context_.rope[static_cast<size_t>(il)];
    if (rope.n_rot == 0) return;
    const KvShape& shape = cache.shape();
    const int32_t dk = shape.head_dim_k;
    LayerSinks& sinks = layer_sinks(seq, il, shape.n_layer);
    if (sinks.keys.empty()) {
      // First eviction: the sinks still hold keys rotated at their own positions.
      sinks.positions.assign(pos.begin(), pos.begin() + n_sink);
      sinks.keys.resize(static_cast<size_t>(n_sink) * shape.n_head_kv * dk);
      cache.read_keys(seq, il, 0, n_sink, sinks.keys.data());
    }
    // Through read_keys / write_keys, which work for f16 and quantized cells alike (the cache keeps the first
    // `sink` cells f16 when it quantizes (f16_prefix_tokens), so this is exact either way).
    const int32_t n_rotate = std::min(n_sink, static_cast<int32_t>(sinks.positions.size()));
    std::vector<float> rotated(static_cast<size_t>(n_rotate) * shape.n_head_kv * dk);  // [n_rotate, n_head_kv, dk]
    std::copy_n(sinks.keys.data(), rotated.size(), rotated.data());
    for (int32_t i = 0; i < n_rotate; ++i) {
      // Sink i belongs at cache index i, i.e. at position i + shift.
      const int32_t delta = i + shift - sinks.positions[static_cast<size_t>(i)];
      kernels::RopeAngles angles;
      angles.compute(&delta, 1, rope.n_rot, rope.freq_base, rope.freq_scale);
      kernels::rope(rotated.data() + static_cast<size_t>(i) * shape.n_head_kv * dk, shape.n_head_kv, dk, rope.n_rot,
                    angles.cos_sin.data(), rope.style);
    }
    if (n_rotate > 0) cache.write_keys(seq, il, 0, n_rotate, rotated.data());
  }

 private:
  struct LayerSinks {
    std::vector<int32_t> positions;  // [n_sink] text positions the copies were rotated at
    std::vector<float> keys;         // [n_sink, n_head_kv, head_dim_k] keys as first stored
  };
  LayerSinks& layer_sinks(SeqId seq, int32_t il, int32_t n_layer) {
    if (sinks_.size() <= static_cast<size_t>(seq)) sinks_.resize(static_cast<size_t>(seq) + 1);
    auto& layers = sinks_[static_cast<size_t>(seq)];
    if (layers.empty()) layers.resize(static_cast<size_t>(n_layer));
    return layers[static_cast<size_t>(il)];
  }

  int32_t n_sink_;
  int32_t window_;
  std::vector<std::vector<LayerSinks>> sinks_;  // [seq][n_layer]
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_streaming_policy(const KvPolicyContext& context, PolicyParams& params) {
  StreamingOptions o;
  o.sink = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 1, kMaxParamCount, "most recent tokens kept");
  return std::unique_ptr<KvPolicy>(new StreamingPolicy(context, o.sink, o.window));
}

}  // namespace longhaul::kv
