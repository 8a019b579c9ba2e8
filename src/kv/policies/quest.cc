// quest: query-aware page selection (Quest, Tang et al., 2024). Every cell is kept, as under `full`; what
// changes is what a decode query reads. Each full page keeps, per KV head, the element-wise minimum and maximum
// of its keys; for a query q the page's largest possible score is bounded by
//   U(q, page) = sum_c max(q_c * min_c, q_c * max_c)   >= q . k for every key k of the page,
// and only the `budget` tokens' worth of pages with the largest bounds are read, plus the attention sinks, the
// local window and the partial last page, always. Quest is written for multi-head attention; here the query
// heads of a GQA group share their KV head's pages, so a page's bound is the largest of the group's bounds (a
// page any of the heads needs is read). The first `dense` layers read everything. Quest keeps its first two layers
// dense, where attention is spread too evenly for a few pages to hold it; here the default is none: on SmolLM2 the
// passkey at 4K and 8K was found at every depth either way, while two dense layers of 30 at 8K made a decode token
// read 19% of the cells instead of 13.5% (docs/long-context.md, quest). Gemma 3's first layers slide anyway.
//
// Pages are 64 cells by default (Quest scores pages of 16). At a 1024-token budget on SmolLM2 at 8K, 64-cell pages
// found the UUID needle at 4 of 5 depths, as `full` did, where 32-cell pages found it at 1, and kept passkey and
// multi-key needles equal to `full`; reading 4% more cells, decode at depth 8192 was 22% faster, since a page is
// a contiguous run of rows and each page scored costs a bound (docs/long-context.md, "quest page size").
//
// summary=meanstd replaces min/max by mean -/+ k * std per channel: no longer a bound, but not inflated by one
// outlying key. The summaries, and the selection by
// bound, are kv/policies/page_key_summaries.h (lserve selects the same way).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kv/policies/quest.h"
#include "kv/policies/page_key_summaries.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {

int32_t quest_select_pages(std::span<const QuestPage> pages, std::span<const float> q, int32_t n_q, int32_t dk,
                           int32_t n_select, std::vector<int32_t>& selected) {
  std::vector<float> bound(pages.size());
  std::vector<uint8_t> always(pages.size());
  for (size_t ip = 0; ip < pages.size(); ++ip) {
    always[ip] = pages[ip].always ? 1 : 0;
    if (!pages[ip].always)
      bound[ip] = page_key_bound(q.data(), n_q, dk, pages[ip].key_min, pages[ip].key_max, /*n_sub=*/1);
  }
  std::vector<std::pair<float, int32_t>> ranked;
  return select_top_pages(bound, always, n_select, selected, ranked);
}

namespace {

class QuestPolicy final : public KvPolicy {
 public:
  QuestPolicy(KvPolicyContext context, const QuestOptions& options)
      : KvPolicy(std::move(context)),
        options_(options),
        summaries_(context_.shape, /*logical_tokens=*/0, options.summary, options.std_scale) {}

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new QuestPolicy(*this));
  }
  std::string name() const override { return "quest"; }
  std::string describe() const override {
    return "quest(budget=" + std::to_string(options_.budget) + ", page=" + std::to_string(options_.page_tokens) +
           ", sink=" + std::to_string(options_.sink_tokens) + ", window=" + std::to_string(options_.window) +
           ", dense=" + std::to_string(options_.dense_layers) + summary_text() + describe_top_p(options_.top_p) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  // Summaries of pages that reach past n_cells would describe keys that are gone.
  void truncate(KvCache&, SeqId, int32_t n_cells) override { summaries_.truncate(n_cells); }

  void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const override {
    // Dense: the first layers, and prefill or verification steps. Sliding-window layers read only their window
    // already.
    if (query.il < options_.dense_layers || layer_window(query.il) > 0 || !is_decode_query(query)) {
      select_every_page(query.cache.n_pages(query.seq, query.il), pages);
      return;
    }
    BoundSelection how;
    how.sink_tokens = options_.sink_tokens;
    how.window = options_.window;
    how.n_select = options_.budget / options_.page_tokens;
    how.top_p = options_.top_p;
    summaries_.select(query, how, pages);
  }

 private:
  QuestPolicy(const QuestPolicy& other) = default;

  // ", summary=meanstd, k=2" when the summary is not Quest's min/max, else "".
  std::string summary_text() const {
    if (options_.summary == KeySummary::kMinMax) return "";
    char k[32];
    std::snprintf(k, sizeof k, "%g", static_cast<double>(options_.std_scale));
    return ", summary=meanstd, k=" + std::string(k);
  }

  QuestOptions options_;
  PageKeySummaries summaries_;  // per (layer, KV head) and page, min / max of the keys
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_quest_policy(const KvPolicyContext& context, PolicyParams& params) {
  QuestOptions o;
  o.budget = params.get_int("budget", kDefaultKvBudget, 1, kMaxParamCount, "tokens of selected pages each decode query reads");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, the unit of selection");
  o.sink_tokens = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 0, kMaxParamCount, "most recent tokens always read");
  o.dense_layers = params.get_int("dense", o.dense_layers, 0, 1024, "first layers that read every page");
  o.summary = params.get_word("summary", "minmax", {"minmax", "meanstd"},
                              "per-channel key bounds of a page: min/max, or mean -/+ k std") == "meanstd"
                  ? KeySummary::kMeanStd
                  : KeySummary::kMinMax;
  o.std_scale = params.get_float("k", o.std_scale, 0.0f, 16.0f, /*lo_open=*/true, "summary=meanstd: std either side");
  o.top_p = read_top_p(params);
  if (Status st = params.refusal(); !st.is_ok()) return st;
  return make_quest_policy(context, o);
}

Result<std::unique_ptr<KvPolicy>> make_quest_policy(const KvPolicyContext& context, const QuestOptions& options) {
  LH_RETURN_IF_ERROR(check_page_budget("quest", options.budget, options.page_tokens));
  if (options.dense_layers < 0)
    return Status::error("quest: dense=" + std::to_string(options.dense_layers) + " must be >= 0 layers");
  return std::unique_ptr<KvPolicy>(new QuestPolicy(context, options));
}

}  // namespace longhaul::kv
