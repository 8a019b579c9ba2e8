// lm-infinite: LM-Infinite (Han et al., 2023, "LM-Infinite: Zero-Shot Extreme Length
// Generalization for Large Language Models"). Two changes to attention, no training:
//   1. a Λ-shaped mask: every query sees the first n_global tokens and the last L tokens
//      (itself included), nothing in between;
//   2. a distance ceiling: a relative distance larger than L counts as L. Only the start
//      tokens are ever that far from a query (the local branch is within L - 1 of it).
// The authors' code (Glaciohound/LM-Infinite, models/llama.py) realises 2 by scoring the
// global branch with the query rotated to the distance limit against un-rotated keys, so
// every start token that is outside the local window is seen at exactly L.
//
// Memory. The paper computes the Λ over a full cache, but the Λ only moves forward: a
// middle token that has left the local window is never attended again. Evicting it gives
// the same outputs with constant memory, n_global + L cells per layer. The retained set,
// and so the eviction plan, is the same as StreamingLLM's (policies/streaming.cc).
//
// Difference from streaming, stated plainly. Both keep S start tokens plus the last W.
// They differ only in where the start tokens appear to be, and in the default sizes:
//   - streaming places sink i at cache index i, so the newest query sees it at distance
//     S + W - 1 - i (beyond W for all but the last sink), from the first eviction on;
//   - lm-infinite clamps: a start token whose text distance to the query exceeds the
//     ceiling W is seen at distance W, all of them at the same distance, as the authors'
//     code does; before that they are left at their own positions, so a text of at most
//     W + 1 tokens gets exactly full attention.
//   - defaults: W = 2048, the pretraining length of LLaMA, GPT-J and MPT-7B in the paper
//     (the paper's L); the policy context does not carry the model's own training length,
//     so give lm-infinite:window=N for other models (Llama-2: 4096). n_global = 4: the
//     authors' drop-in default is 10 and they report 10-100 as "generally similar"; sink
//     defaults to 4 for every policy with sinks (kDefaultSinkTokens), as StreamingLLM
//     (Xiao et al., 2023) found 4 start tokens enough to hold the attention sink. Use
//     `lm-infinite:sink=10` for the authors' setting.
//
// How the ceiling is applied. Keys are cached after RoPE, and a RoPE score depends only
// on query position minus key position, so moving a start token to a new apparent
// position is one rotation of its key (RoPE rotations compose), done between steps from
// an f32 copy of the key as first stored, so f16 rounding happens once. One rotation
// serves all the queries of a step, so it is chosen for the step's LAST query q: start
// token j goes to position max(j, q - W). Earlier queries of the same step see it up to
// n - 1 closer than W, never beyond; decode steps (n = 1) are exact. The fix-up runs in
// apply_eviction, which does not see the step's size; it bounds q by the cache, which can
// only hold n_global + W cells after the step, so q <= next_position - 1 + (max_cells -
// n_cells). After an eviction that bound is exact (the plan leaves exactly the room the
// step needs). Before the first eviction, between W + 1 and n_global + W tokens, it is
// not: the start tokens are then moved to position n_global - 1 once, at most
// n_global - 1 closer than the paper's clamp and still within the ceiling. After a rewind
// (Session::truncate) leaves the cache short of full, they are likewise closer than the
// ceiling by up to the free cells until the next eviction. (Exact placement everywhere
// would need the step's size in after_retain, which the KvPolicy interface does not pass.)
// The mask keeps using text positions: start tokens precede every query, and the window
// the cache keeps is exactly the local branch.
#include <algorithm>

#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"
#include "tensor/half.h"

namespace longhaul::kv {
namespace {

struct LmInfiniteOptions {
  int32_t sink = kDefaultSinkTokens;  // n_global: start tokens every query sees (0 = none)
  int32_t window = 2048;              // L: the local branch and the distance ceiling; the paper's L_pretrain for
                                      // LLaMA, GPT-J and MPT-7B
};

class LmInfinitePolicy final : public KvPolicy {
 public:
  LmInfinitePolicy(const KvPolicyContext& context, int32_t n_global, int32_t window)
      : KvPolicy(context), n_global_(n_global), window_(window) {}

  std::unique_ptr<KvPolicy> fork(SeqId from, SeqId to) const override {
    auto copy = std::unique_ptr<LmInfinitePolicy>(new LmInfinitePolicy(*this));
    copy->seqs_.clear();
    if (const SeqState* s = state(from)) {
      copy->seqs_.resize(static_cast<size_t>(to) + 1);
      copy->seqs_[static_cast<size_t>(to)] = *s;
    }
    return copy;
  }
  std::string name() const override { return "lm-infinite"; }
  std::string describe() const override {
    return "lm-infinite(sink=" + std::to_string(n_global_) + ", window=" + std::to_string(window_) +
           ", ceiling=" + std::to_string(window_) + ")";
  }
  int32_t max_cells() const override { return n_global_ + window_; }
  // The start tokens are re-written in place (re-positioned): quantized storage must keep them f16.
  int32_t f16_prefix_tokens() const override { return n_global_; }
  // A step of n tokens needs n free cells in the window.
  int32_t max_step_tokens() const override { return window_; }

  EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const override {
    EvictionPlan plan;
    const int32_t n = cache.n_cells(seq, 0);
    LH_CHECK_MSG(next.n_tokens <= window_, "lm-infinite: a step brings more tokens than the window holds");
    std::vector<int32_t> keep;
    if (n + next.n_tokens > max_cells()) {
      // Outside the Λ after this step: everything between the start tokens and the last
      // (W - incoming) cells. n > n_global here because incoming <= W.
      const int32_t keep_recent = window_ - next.n_tokens;
      const int32_t recent_begin = std::max(n_global_, n - keep_recent);
      keep.reserve(static_cast<size_t>(n_global_ + keep_recent));
      for (int32_t c = 0; c < std::min(n_global_, n); ++c) keep.push_back(c);
      for (int32_t c = recent_begin; c < n; ++c) keep.push_back(c);
    } else {
      // Nothing leaves, but the start tokens may need moving: the ceiling first binds
      // when the step's last query is more than W past token 0.
      const int32_t last_query = next.first_position + next.n_tokens - 1;
      if (n_global_ == 0 || n == 0 || last_query <= window_) return plan;
      const SeqState* s = state(seq);
      if (s != nullptr && s->floor == start_floor(cache, seq, n) && s->n_moved == std::min(n_global_, n)) return plan;
      keep.resize(static_cast<size_t>(n));
      for (int32_t c = 0; c < n; ++c) keep[static_cast<size_t>(c)] = c;
    }
    plan.evict = true;
    plan.keep.assign(static_cast<size_t>(cache.shape().n_layer), keep);
    return plan;
  }

  // A rewind moves the queries back, so the start tokens return to their own positions
  // (from the copies) and the next plan re-applies the ceiling for the new position.
  void truncate(KvCache& cache, SeqId seq, int32_t n_cells) override {
    if (static_cast<size_t>(seq) >= seqs_.size()) return;
    SeqState& s = seqs_[static_cast<size_t>(seq)];
    const KvShape& shape = cache.shape();
    for (int32_t il = 0; il < static_cast<int32_t>(s.layers.size()); ++il) {
      const StartKeys& start = s.layers[static_cast<size_t>(il)];
      for (int32_t i = 0; i < n_cells && i < static_cast<int32_t>(start.positions.size()); ++i)
        for (int32_t h = 0; h < shape.n_head_kv; ++h)
          kernels::f32_to_f16_row(start.keys.data() + (static_cast<size_t>(i) * shape.n_head_kv + h) * shape.head_dim_k,
                                  cache.key(seq, il, h, i), shape.head_dim_k);
    }
    s = SeqState{};
  }

 protected:
  void after_retain(KvCache& cache, SeqId seq, int32_t il, std::span<const int32_t> keep) override {
    (void)keep;
    const int32_t n = cache.n_cells(seq, il);
    const int32_t n_start = std::min(n_global_, n);
    if (n_start == 0) return;
    const KvShape& shape = cache.shape();
    SeqState& s = seq_state(seq, shape.n_layer);
    const int32_t target_floor = start_floor(cache, seq, n);
    s.floor = target_floor;
    s.n_moved = n_start;
    const RopeSpec& rope = context_.rope[static_cast<size_t>(il)];
    if (rope.n_rot == 0) return;  // no positions in the keys: nothing to clamp
    const int32_t dk = shape.head_dim_k;
    StartKeys& start = s.layers[static_cast<size_t>(il)];
    // Start tokens not copied yet (all of them at the first fix-up; later, those that
    // arrived since) still hold keys rotated at their own positions.
    const std::span<const int32_t> pos = cache.positions(seq, il);
    for (auto i = static_cast<int32_t>(start.positions.size()); i < n_start; ++i) {
      start.positions.push_back(pos[static_cast<size_t>(i)]);
      start.keys.resize(static_cast<size_t>(i + 1) * shape.n_head_kv * dk);
      for (int32_t h = 0; h < shape.n_head_kv; ++h) {
        const uint16_t* k = cache.key(seq, il, h, i);
        float* dst = start.keys.data() + (static_cast<size_t>(i) * shape.n_head_kv + h) * dk;
        for (int32_t d = 0; d < dk; ++d) dst[d] = tensor::f16_to_f32(k[d]);
      }
    }
    std::vector<float> rotated(static_cast<size_t>(shape.n_head_kv) * dk);  // [n_head_kv, dk]
    for (int32_t i = 0; i < n_start; ++i) {
      const int32_t own = start.positions[static_cast<size_t>(i)];
      const int32_t delta = std::max(own, target_floor) - own;
      std::copy_n(start.keys.data() + static_cast<size_t>(i) * shape.n_head_kv * dk, rotated.size(), rotated.data());
      if (delta != 0) {
        kernels::RopeAngles angles;
        angles.compute(&delta, 1, rope.n_rot, rope.freq_base, rope.freq_scale);
        kernels::rope(rotated.data(), shape.n_head_kv, dk, rope.n_rot, angles.cos_sin.data(), rope.style);
      }
      for (int32_t h = 0; h < shape.n_head_kv; ++h)
        kernels::f32_to_f16_row(rotated.data() + static_cast<size_t>(h) * dk, cache.key(seq, il, h, i), dk);
    }
  }

 private:
  struct StartKeys {
    std::vector<int32_t> positions;  // [n_copied] text positions the copies were rotated at
    std::vector<float> keys;         // [n_copied, n_head_kv, head_dim_k] keys as first stored
  };
  struct SeqState {
    int32_t floor = -1;            // start tokens sit at max(own position, floor); -1 = own positions
    int32_t n_moved = 0;           // start tokens the last fix-up placed
    std::vector<StartKeys> layers;  // [n_layer]
  };

  // Position the start tokens are moved up to so that the farthest query the next step
  // can bring sees them at the ceiling: (largest possible query position) - W.
  int32_t start_floor(const KvCache& cache, SeqId seq, int32_t n_cells) const {
    return cache.next_position(seq) - 1 + (max_cells() - n_cells) - window_;
  }
  const SeqState* state(SeqId seq) const {
    return static_cast<size_t>(seq) < seqs_.size() ? &seqs_[static_cast<size_t>(seq)] : nullptr;
  }
  SeqState& seq_state(SeqId seq, int32_t n_layer) {
    if (seqs_.size() <= static_cast<size_t>(seq)) seqs_.resize(static_cast<size_t>(seq) + 1);
    SeqState& s = seqs_[static_cast<size_t>(seq)];
    if (s.layers.empty()) s.layers.resize(static_cast<size_t>(n_layer));
    return s;
  }

  int32_t n_global_;
  int32_t window_;  // the local branch L, and the distance ceiling
  std::vector<SeqState> seqs_;  // [seq]
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_lm_infinite_policy(const KvPolicyContext& context, PolicyParams& params) {
  LmInfiniteOptions o;
  o.sink = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 1, kMaxParamCount, "local window and distance ceiling in tokens");
  return std::unique_ptr<KvPolicy>(new LmInfinitePolicy(context, o.sink, o.window));
}

}  // namespace longhaul::kv
