// lserve: LServe (Yang et al., 2025, "LServe: Efficient Long-sequence LLM Serving with Unified Sparse
// Attention"). Every cell is kept, as under `full`; what changes is what each KV head reads at decode. LServe
// unifies two kinds of sparsity:
//   - static: DuoAttention's streaming heads (Xiao et al., 2024) attend only to the attention sinks and a local
//     window. Which heads stream comes from the model's head profile, chosen as duo chooses
//     (retrieval_heads_of_profile); a streaming head gets the head span {sink, window} (the attention plan's mask)
//     and, at decode, reads only the pages that hold those cells.
//   - dynamic: the retrieval heads select pages per decode query by Quest's bound (kv/policies/page_key_summaries.h),
//     hierarchically: keys are summarized per small logical page (`logical` cells), and a physical page (`page`
//     cells, the unit the attention reads) scores the largest bound of its logical pages. A bound over a few cells
//     is tighter than one over a whole page, so large pages, cheap to read, keep small pages' selectivity. Beside
//     the `budget` tokens of selected pages, a retrieval head always reads the sinks and the last `local` cells.
//     Consecutive decode queries attend to much the same pages, so a selection serves `reuse` consecutive
//     positions before the next one is made (LServe's reusable page selector).
// Unlike duo, streaming heads' rows are not freed: memory is full's, and the gain is in what a decode step reads.
// Sliding-window layers read their window already; their heads neither stream nor select.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kv/policies/page_key_summaries.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

// The head profile is not a parameter: it is the model's (KvPolicyContext::head_profile), as for duo.
struct LServeOptions {
  float retrieval_fraction = 0.5f;    // share of the global layers' KV heads that select pages (LServe: half)
  int32_t budget = kDefaultKvBudget;  // retrieval heads: tokens of selected pages each decode query reads
  int32_t page_tokens = 64;           // cells per physical page, the unit the attention reads
  int32_t logical_tokens = 16;        // cells per logical page, the unit of scoring (<= page)
  int32_t reuse = 4;                  // consecutive decode positions sharing one selection; 1 = select every step
  int32_t sink = kDefaultSinkTokens;  // first tokens every head reads (attention sinks)
  int32_t window = 512;               // streaming heads: most recent tokens read (duo's default)
  int32_t local = 64;                 // retrieval heads: most recent tokens always read
  float top_p = 1.0f;                 // retrieval heads: Twilight top-p over the selected pages; 1 = off
};

class LServePolicy final : public KvPolicy {
 public:
  LServePolicy(KvPolicyContext context, const LServeOptions& options, std::vector<bool> retrieval)
      : KvPolicy(std::move(context)),
        options_(options),
        retrieval_(std::move(retrieval)),
        summaries_(context_.shape, options.logical_tokens) {}

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new LServePolicy(*this));
  }
  std::string name() const override { return "lserve"; }
  std::string describe() const override {
    char fraction[32];
    std::snprintf(fraction, sizeof fraction, "%.2f", static_cast<double>(options_.retrieval_fraction));
    return "lserve(retrieval=" + std::string(fraction) + ", budget=" + std::to_string(options_.budget) +
           ", page=" + std::to_string(options_.page_tokens) + ", logical=" + std::to_string(options_.logical_tokens) +
           ", reuse=" + std::to_string(options_.reuse) + ", sink=" + std::to_string(options_.sink) +
           ", window=" + std::to_string(options_.window) + ", local=" + std::to_string(options_.local) +
           describe_top_p(options_.top_p) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  bool has_head_spans() const override { return true; }
  HeadSpan head_span(int32_t il, int32_t kv_head) const override {
    if (layer_window(il) > 0 || is_retrieval(il, kv_head)) return {};
    return {options_.sink, options_.window};
  }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  void truncate(KvCache&, SeqId, int32_t n_cells) override { summaries_.truncate(n_cells); }

  void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const override {
    // Prefill chunks and draft trees read every page (a streaming head's mask still applies).
    if (layer_window(query.il) > 0 || !is_decode_query(query)) {
      select_every_page(query.cache.n_pages(query.seq, query.il), pages);
      return;
    }
    BoundSelection how;
    how.sink_tokens = options_.sink;
    if (is_retrieval(query.il, query.kv_head)) {
      how.window = options_.local;
      how.n_select = options_.budget / options_.page_tokens;
      how.reuse = options_.reuse;
      how.top_p = options_.top_p;
    } else {
      how.window = options_.window;  // the head span's cells, and no selection
    }
    summaries_.select(query, how, pages);
  }

  // The selections kept for reuse: they decide the next queries' pages.
  std::vector<double> statistics() const override { return summaries_.kept_selections(); }

 private:
  LServePolicy(const LServePolicy& other) = default;

  bool is_retrieval(int32_t il, int32_t kv_head) const {
    return retrieval_[static_cast<size_t>(il) * static_cast<size_t>(context_.shape.n_head_kv) +
                      static_cast<size_t>(kv_head)];
  }

  LServeOptions options_;
  std::vector<bool> retrieval_;  // [n_layer * n_head_kv]
  PageKeySummaries summaries_;   // per (layer, KV head): logical pages' key bounds and the kept selection
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_lserve_policy(const KvPolicyContext& context, PolicyParams& params) {
  LServeOptions o;
  o.retrieval_fraction = params.get_float("retrieval", o.retrieval_fraction, 0.0f, 1.0f, /*lo_open=*/false,
                                          "share of the global layers' KV heads that select pages");
  o.budget = params.get_int("budget", o.budget, 1, kMaxParamCount,
                            "retrieval heads: tokens of selected pages each decode query reads");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per physical page, the unit read");
  o.logical_tokens = params.get_int("logical", o.logical_tokens, 1, 4096, "cells per logical page, the unit scored");
  o.reuse = params.get_int("reuse", o.reuse, 1, 1024, "consecutive decode tokens sharing one page selection");
  o.sink = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 1, kMaxParamCount, "streaming heads' most recent tokens read");
  o.local = params.get_int("local", o.local, 0, kMaxParamCount, "retrieval heads' most recent tokens always read");
  o.top_p = read_top_p(params);
  if (Status st = params.refusal(); !st.is_ok()) return st;
  LH_RETURN_IF_ERROR(check_page_budget("lserve", o.budget, o.page_tokens));
  if (o.logical_tokens > o.page_tokens)
    return Status::error("lserve: logical=" + std::to_string(o.logical_tokens) + " is larger than a page (page=" +
                         std::to_string(o.page_tokens) + " tokens)");
  LH_ASSIGN_OR_RETURN(std::vector<bool> retrieval, retrieval_heads_of_profile(context, o.retrieval_fraction, "lserve"));
  return std::unique_ptr<KvPolicy>(new LServePolicy(context, o, std::move(retrieval)));
}

}  // namespace longhaul::kv
