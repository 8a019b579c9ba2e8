// quest: query-aware page selection (Quest, Tang et al., 2024). Every cell is kept, as under `full`; what
// changes is what a decode query reads. Each full page keeps, per KV head, the element-wise minimum and maximum
// of its keys; for a query q the page's largest possible score is bounded by
//   U(q, page) = sum_c max(q_c * min_c, q_c * max_c)   >= q . k for every key k of the page,
// and only the `budget` tokens' worth of pages with the largest bounds are read, plus the attention sinks, the
// local window and the partial last page, always. Quest is written for multi-head attention; here the query
// heads of a GQA group share their KV head's pages, so a page's bound is the largest of the group's bounds (a
// page any of the heads needs is read). The first `dense` layers read everything: Quest keeps its first two
// layers dense, where attention is spread too evenly for a few pages to hold it.
//
// Summaries are computed lazily, from the attention threads, the first time a page is seen full (keys carry
// their rotary phase, as the queries do): the pages of the step's own cells are always read in full, so a
// summary is never needed before its page is complete. A summary records the page's span; a span that changed
// (truncation, KIVI freezing the f16 residual into quantized pages) is summarized again.
#include <algorithm>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "kv/policies/quest.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {

float quest_page_bound(const float* q, int32_t n_q, int32_t dk, const float* key_min, const float* key_max) {
  float best = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n_q; ++i) {
    const float* qi = q + static_cast<int64_t>(i) * dk;
    // Eight partial sums: without them the float sum is one dependency chain the compiler may not reorder
    // (no -ffast-math), and scoring every page of a long cache is on every decode step's path.
    constexpr int kLanes = 8;
    float partial[kLanes] = {};
    int32_t c = 0;
    for (; c + kLanes <= dk; c += kLanes)
      for (int j = 0; j < kLanes; ++j)
        partial[j] += std::max(qi[c + j] * key_min[c + j], qi[c + j] * key_max[c + j]);
    for (; c < dk; ++c) partial[0] += std::max(qi[c] * key_min[c], qi[c] * key_max[c]);
    float bound = 0.0f;
    for (float v : partial) bound += v;
    best = std::max(best, bound);
  }
  return best;
}

int32_t quest_select_pages(std::span<const QuestPage> pages, std::span<const float> q, int32_t n_q, int32_t dk,
                           int32_t n_select, std::vector<int32_t>& selected) {
  std::vector<float> bound(pages.size());
  std::vector<uint8_t> always(pages.size());
  for (size_t ip = 0; ip < pages.size(); ++ip) {
    always[ip] = pages[ip].always ? 1 : 0;
    if (!pages[ip].always) bound[ip] = quest_page_bound(q.data(), n_q, dk, pages[ip].key_min, pages[ip].key_max);
  }
  std::vector<std::pair<float, int32_t>> ranked;
  return select_top_pages(bound, always, n_select, selected, ranked);
}

namespace {

class QuestPolicy final : public KvPolicy {
 public:
  QuestPolicy(KvPolicyContext context, const QuestOptions& options)
      : KvPolicy(std::move(context)), options_(options), heads_(n_units()) {
    for (auto& h : heads_) h = std::make_unique<HeadSummaries>();
  }

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new QuestPolicy(*this));
  }
  std::string name() const override { return "quest"; }
  std::string describe() const override {
    return "quest(budget=" + std::to_string(options_.budget) + ", page=" + std::to_string(options_.page_tokens) +
           ", sink=" + std::to_string(options_.sink_tokens) + ", window=" + std::to_string(options_.window) +
           ", dense=" + std::to_string(options_.dense_layers) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  void truncate(KvCache&, SeqId, int32_t n_cells) override {
    // Summaries of pages that reach past n_cells would describe keys that are gone.
    for (auto& h : heads_) {
      std::lock_guard<std::mutex> lock(h->mutex);
      for (Summary& s : h->pages)
        if (s.first_cell + s.n_cells > n_cells) s = Summary{};
    }
  }

  void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const override {
    const KvCache& cache = query.cache;
    const int32_t n_pages = cache.n_pages(query.seq, query.il);
    select_every_page(n_pages, pages);
    // Dense: the first layers, and prefill or verification steps. Sliding-window layers read only their window
    // already.
    if (query.il < options_.dense_layers || layer_window(query.il) > 0 || !is_decode_query(query)) return;
    const int32_t n_select = options_.budget / options_.page_tokens;
    PageCandidates layout;
    classify_pages(cache, query.seq, query.il, options_.sink_tokens,
                   cache.n_cells(query.seq, query.il) - options_.window, layout);
    std::vector<KvCache::PageSpan>& spans = layout.spans;
    std::vector<QuestPage> candidates(static_cast<size_t>(n_pages));
    for (size_t ip = 0; ip < candidates.size(); ++ip) candidates[ip].always = layout.always[ip] != 0;
    const int32_t n_candidates = layout.n_candidates;
    if (n_candidates <= n_select) return;  // the budget covers every page

    const int32_t dk = context_.shape.head_dim_k;
    HeadSummaries& head = *heads_[static_cast<size_t>(query.il * context_.shape.n_head_kv + query.kv_head)];
    std::lock_guard<std::mutex> lock(head.mutex);
    if (head.pages.size() < static_cast<size_t>(n_pages)) head.pages.resize(static_cast<size_t>(n_pages));
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      QuestPage& c = candidates[static_cast<size_t>(ip)];
      if (c.always) continue;
      const Summary& s = summary(head, cache, query, ip, spans[static_cast<size_t>(ip)], dk);
      c.key_min = s.key_min.data();
      c.key_max = s.key_max.data();
    }
    quest_select_pages(candidates, std::span<const float>(query.q, static_cast<size_t>(query.n_q) * dk), query.n_q,
                       dk, n_select, pages);
  }

 private:
  struct Summary {
    int32_t first_cell = 0;
    int32_t n_cells = 0;
    std::vector<float> key_min, key_max;  // [head_dim_k]
  };
  // The summaries of one (layer, KV head), by page index.
  struct HeadSummaries {
    std::mutex mutex;
    std::vector<Summary> pages;
  };

  QuestPolicy(const QuestPolicy& other) : KvPolicy(other), options_(other.options_), heads_(other.heads_.size()) {
    for (size_t i = 0; i < heads_.size(); ++i) {
      heads_[i] = std::make_unique<HeadSummaries>();
      std::lock_guard<std::mutex> lock(other.heads_[i]->mutex);
      heads_[i]->pages = other.heads_[i]->pages;
    }
  }

  size_t n_units() const {
    return static_cast<size_t>(context_.shape.n_layer) * static_cast<size_t>(context_.shape.n_head_kv);
  }

  // The summary of page ip, computed now if the page is new or its span changed. Caller holds head.mutex and has
  // sized head.pages to the layer's pages.
  static const Summary& summary(HeadSummaries& head, const KvCache& cache, const PageQuery& query, int32_t ip,
                                const KvCache::PageSpan& span, int32_t dk) {
    Summary& s = head.pages[static_cast<size_t>(ip)];
    if (s.first_cell == span.first_cell && s.n_cells == span.n_cells && !s.key_min.empty()) return s;
    const int32_t n_head_kv = cache.shape().n_head_kv;
    std::vector<float> keys(static_cast<size_t>(span.n_cells) * n_head_kv * dk);  // [n_cells, n_head_kv, dk]
    cache.read_keys(query.seq, query.il, span.first_cell, span.n_cells, keys.data());
    s.first_cell = span.first_cell;
    s.n_cells = span.n_cells;
    s.key_min.assign(static_cast<size_t>(dk), std::numeric_limits<float>::infinity());
    s.key_max.assign(static_cast<size_t>(dk), -std::numeric_limits<float>::infinity());
    for (int32_t i = 0; i < span.n_cells; ++i) {
      const float* k = keys.data() + (static_cast<int64_t>(i) * n_head_kv + query.kv_head) * dk;
      for (int32_t c = 0; c < dk; ++c) {
        s.key_min[static_cast<size_t>(c)] = std::min(s.key_min[static_cast<size_t>(c)], k[c]);
        s.key_max[static_cast<size_t>(c)] = std::max(s.key_max[static_cast<size_t>(c)], k[c]);
      }
    }
    return s;
  }

  QuestOptions options_;
  // [n_layer * n_head_kv]; mutable state behind per-unit mutexes: select_pages is const and runs on the attention
  // threads, one (layer, KV head) per call.
  mutable std::vector<std::unique_ptr<HeadSummaries>> heads_;
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_quest_policy(const KvPolicyContext& context, PolicyParams& params) {
  QuestOptions o;
  o.budget = params.get_int("budget", kDefaultKvBudget, 1, kMaxParamCount, "tokens of selected pages each decode query reads");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, the unit of selection");
  o.sink_tokens = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 0, kMaxParamCount, "most recent tokens always read");
  o.dense_layers = params.get_int("dense", o.dense_layers, 0, 1024, "first layers that read every page");
  if (Status st = params.refusal(); !st.is_ok()) return st;
  return make_quest_policy(context, o);
}

Result<std::unique_ptr<KvPolicy>> make_quest_policy(const KvPolicyContext& context, const QuestOptions& options) {
  if (options.page_tokens < 1)
    return Status::error("quest: page=" + std::to_string(options.page_tokens) + " must be >= 1 token");
  if (options.budget < options.page_tokens)
    return Status::error("quest: budget=" + std::to_string(options.budget) + " is less than one page (page=" +
                         std::to_string(options.page_tokens) + " tokens)");
  if (options.dense_layers < 0)
    return Status::error("quest: dense=" + std::to_string(options.dense_layers) + " must be >= 0 layers");
  return std::unique_ptr<KvPolicy>(new QuestPolicy(context, options));
}

}  // namespace longhaul::kv
