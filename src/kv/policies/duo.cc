// duo: DuoAttention (Xiao et al., 2024, "DuoAttention: Efficient Long-Context LLM Inference with Retrieval and
// Streaming Heads"), with heads chosen as RazorAttention (Tang et al., 2024) does, without training.
//
// Only a minority of attention heads fetch information from far back in the context (retrieval heads); the others
// attend to the attention sinks and the last few hundred tokens (streaming heads). duo keeps every cell for the
// retrieval heads and, for each streaming head, only the first `sink` positions plus a window of the last `window`
// positions, freeing the rest of that head's keys and values a page at a time (KvCache::release_head_rows).
// Positions are not re-assigned: the retrieval heads of the same layer see the whole text at its real positions,
// and a streaming head's sinks and window sit at their real distances too, as in the paper.
//
// Which heads retrieve comes from a head profile (kv/head_profile.h, `longhaul calibrate-heads`): the
// `retrieval_fraction` of the global layers' KV heads with the highest score keep everything. The paper learns a
// gate per KV head by optimisation on synthetic passkey data; we rank heads by the attention mass they put on the
// needle and by RazorAttention's echo and induction scores, which needs no gradient. With GQA the choice is per KV
// head, as in the paper (its query heads share the cells).
//
// Sliding-window layers (Gemma 3's local layers) already see only their window: duo frees every head's cells
// behind it, which changes no output, and leaves the profile to the global layers.
//
// Memory: retrieval heads hold every cell; a streaming head holds at most the pages that cover its sinks and its
// window (window / page + 2 pages of 64 cells). KV bytes = (r + (1 - r) * (sink + window + 2 * 64) / n) of full
// attention for a share r of retrieval heads in an n-token context, before the local layers' savings.
// Combined with KIVI storage (duo:bits=8 or 4) each kept cell is quantized as well: a streaming head frees its rows
// of quantized pages (kv/quantized_page.h keeps one block per head), and also keeps the f16 residual (at most
// R + G - 1 cells plus the last step's), which the next append quantizes.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kv/head_profile.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

constexpr int32_t kPageTokens = 64;  // smaller than the default 256: memory follows the windows more closely

// The head profile is not a parameter: it is the model's (KvPolicyContext::head_profile), and a path may hold ':'.
struct DuoOptions {
  float retrieval_fraction = 0.25f;   // share of the global layers' KV heads that keep every cell, in [0, 1]
  int32_t sink = kDefaultSinkTokens;  // streaming heads: first tokens kept as attention sinks (0 = none)
  int32_t window = 512;               // streaming heads: most recent tokens kept (measured in docs/long-context.md)
};

class DuoPolicy final : public KvPolicy {
 public:
  DuoPolicy(const KvPolicyContext& context, std::vector<bool> retrieval, float fraction, int32_t n_sink_asked,
            int32_t n_sink, int32_t window)
      : KvPolicy(context),
        retrieval_(std::move(retrieval)),
        fraction_(fraction),
        n_sink_asked_(n_sink_asked),
        n_sink_(n_sink),
        window_(window) {}

  // No state indexed by sequence: a copy carries on for the forked sequence.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override { return std::unique_ptr<KvPolicy>(new DuoPolicy(*this)); }
  std::string name() const override { return "duo"; }
  std::string describe() const override {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f", static_cast<double>(fraction_));
    return "duo(retrieval=" + std::string(buf) + ", sink=" + std::to_string(n_sink_) + ", window=" +
           std::to_string(window_) + ")";
  }
  int32_t max_cells() const override { return 0; }  // retrieval heads keep every cell: the context size applies
  int32_t page_tokens() const override { return kPageTokens; }
  // The sinks as asked, not rounded to pages: quantized storage keeps those first cells f16.
  int32_t f16_prefix_tokens() const override { return n_sink_asked_; }
  bool has_head_spans() const override { return true; }

  HeadSpan head_span(int32_t il, int32_t kv_head) const override {
    if (layer_window(il) > 0 || is_retrieval(il, kv_head)) return {};  // the layer's own window, or everything
    return {n_sink_, window_};
  }

  // Frees, for each head that does not see everything, the pages whose cells no query from next.first_position on
  // can see: every cell at a position >= the head's sinks and at least `window` positions behind that query.
  // Pages are in position order, so the scan of a head stops at the first page that is still visible.
  EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const override {
    EvictionPlan plan;
    const KvShape& shape = cache.shape();
    for (int32_t il = 0; il < shape.n_layer; ++il) {
      const std::span<const int32_t> pos = cache.positions(seq, il);
      const int32_t n_pages = cache.n_pages(seq, il);
      for (int32_t h = 0; h < shape.n_head_kv; ++h) {
        int32_t n_sink = 0, window = layer_window(il);
        if (window == 0) {
          if (is_retrieval(il, h)) continue;
          n_sink = n_sink_;
          window = window_;
        }
        // The last page takes the next appends: never freed.
        for (int32_t ip = 0; ip + 1 < n_pages; ++ip) {
          const KvCache::PageSpan span = cache.page_span(seq, il, ip);
          if (span.n_cells == 0) continue;
          // With KIVI storage the f16 pages are the prefix (sinks) and the residual, whose cells the next append
          // freezes into key groups: a head's rows are freed once they are quantized.
          if (cache.quantized(seq) && !span.quantized) continue;
          const int32_t first = pos[static_cast<size_t>(span.first_cell)];
          const int32_t last = pos[static_cast<size_t>(span.first_cell + span.n_cells - 1)];
          if (next.first_position - last < window) break;  // this page and the later ones are still visible
          if (first < n_sink) continue;                    // holds sinks
          if (cache.head_rows_present(seq, il, h, ip)) plan.release.push_back({il, h, ip});
        }
      }
    }
    return plan;
  }

 private:
  bool is_retrieval(int32_t il, int32_t kv_head) const {
    return retrieval_[static_cast<size_t>(il) * static_cast<size_t>(context_.shape.n_head_kv) +
                      static_cast<size_t>(kv_head)];
  }

  std::vector<bool> retrieval_;  // [n_layer * n_head_kv]
  float fraction_;
  int32_t n_sink_asked_;  // the sink parameter
  int32_t n_sink_;        // the sinks streaming heads see: n_sink_asked_ rounded up to whole pages
  int32_t window_;
};

}  // namespace

std::vector<bool> choose_retrieval_heads(const HeadProfile& profile, const std::vector<int32_t>& layer_window,
                                         float fraction) {
  const int32_t n_layer = profile.n_layer, n_head = profile.n_head_kv;
  std::vector<int32_t> global;  // flat indices of the global layers' heads
  for (int32_t il = 0; il < n_layer; ++il) {
    const bool local = static_cast<size_t>(il) < layer_window.size() && layer_window[static_cast<size_t>(il)] > 0;
    if (!local)
      for (int32_t h = 0; h < n_head; ++h) global.push_back(il * n_head + h);
  }
  // Highest score first; ties go to the earlier head, so the choice is deterministic.
  std::stable_sort(global.begin(), global.end(), [&](int32_t a, int32_t b) {
    return profile.heads[static_cast<size_t>(a)].score > profile.heads[static_cast<size_t>(b)].score;
  });
  const auto n_keep = static_cast<size_t>(std::lround(static_cast<double>(fraction) * static_cast<double>(global.size())));
  std::vector<bool> retrieval(static_cast<size_t>(n_layer) * static_cast<size_t>(n_head), false);
  for (size_t i = 0; i < n_keep && i < global.size(); ++i) retrieval[static_cast<size_t>(global[i])] = true;
  return retrieval;
}

Result<std::vector<bool>> retrieval_heads_of_profile(const KvPolicyContext& context, float fraction,
                                                     const std::string& policy) {
  const HeadProfile* profile = context.head_profile.get();
  if (profile == nullptr)
    return Status::error(policy + ": no head profile (give --head-profile FILE, made by `longhaul calibrate-heads`)");
  if (profile->n_layer != context.shape.n_layer || profile->n_head_kv != context.shape.n_head_kv)
    return Status::error(policy + ": head profile" + (profile->source.empty() ? "" : " '" + profile->source + "'") +
                         " is for " + std::to_string(profile->n_layer) + " layers x " +
                         std::to_string(profile->n_head_kv) + " KV heads, the model has " +
                         std::to_string(context.shape.n_layer) + " x " + std::to_string(context.shape.n_head_kv) +
                         " (made for " + (profile->model.empty() ? "another model" : profile->model) + ")");
  if (!profile->has_head_scores())
    return Status::error(policy + ": head profile" + (profile->source.empty() ? "" : " '" + profile->source + "'") +
                         " holds no head scores, only the sub-layer order (run `longhaul calibrate-heads`)");
  return choose_retrieval_heads(*profile, context.layer_window, fraction);
}

Result<std::unique_ptr<KvPolicy>> make_duo_policy(const KvPolicyContext& context, PolicyParams& params) {
  DuoOptions o;
  o.retrieval_fraction = params.get_float("retrieval", o.retrieval_fraction, 0.0f, 1.0f, /*lo_open=*/false,
                                          "share of the global layers' KV heads that keep every token");
  o.sink = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 1, kMaxParamCount, "streaming heads' most recent tokens kept");
  LH_ASSIGN_OR_RETURN(std::vector<bool> retrieval, retrieval_heads_of_profile(context, o.retrieval_fraction, "duo"));
  // A page that holds a sink is kept whole, so the head may as well see all of it: the sinks are the first
  // `sink` positions rounded up to whole pages (64 with the default 4), at no extra memory.
  const int32_t n_sink = (o.sink + kPageTokens - 1) / kPageTokens * kPageTokens;
  return std::unique_ptr<KvPolicy>(
      new DuoPolicy(context, std::move(retrieval), o.retrieval_fraction, o.sink, n_sink, o.window));
}

}  // namespace longhaul::kv
