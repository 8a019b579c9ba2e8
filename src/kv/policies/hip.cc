// hip: HiP attention (Lee et al., 2024, "HiP Attention: Sparse Sub-Quadratic Attention with Hierarchical
// Attention Pruning"). Every cell is kept, as under `full`; what changes is what a decode query reads. HiP needs
// no training and no summaries: attention scores are locally smooth (neighbouring keys score alike), so the score
// of one representative key stands for a whole block of keys, and a tree search finds the k blocks that score
// highest in O(k log(T / k)) dot products instead of T. It starts from k branches that split the candidates evenly;
// each iteration splits every branch in two, scores each half by its representative key and keeps the k best
// halves, until a branch is one block. The representative is the middle key of a half, as in the authors' kernels
// (hip-attention's masking iteration scores key (left + center) / 2 for the half [left, center)).
//
// Here a block is a page (`page` cells), the unit the attention reads, and k = budget / page: the search stops
// when its branches are single pages, and those pages are read, plus the attention sinks, the local window and
// the partial last page, always. HiP is written for multi-head attention; the query heads of a GQA group share
// their KV head's pages, so a representative's score is the largest of the group's queries' (as quest takes the
// largest bound). The first `dense` layers read everything, as quest's do, and prefill chunks and verification
// steps (queries at several positions) read every page: HiP's decode path is what is implemented.
//
// Keys are read through KvCache::head_rows: f16 pages in place, quantized pages (bits=8|4) dequantized into the
// policy's per-(layer, head) scratch; the dot products are the attention's own kernel (kernels::dot_f16_rows). The
// policy keeps no state between queries, so a fork (which shares its parent's pages) and a truncation need nothing.
// top_p=P (Twilight, kv/policies/page_selection.h) prunes the chosen pages by the scores of their representatives.
#include "kv/policies/hip.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {

std::vector<HipBranch> hip_tree_search(std::span<const int32_t> cells, int32_t n_select,
                                       const std::function<float(int32_t, int32_t)>& score_cell) {
  const auto n = static_cast<int32_t>(cells.size());
  // first_cell[i]: cells of the candidates before candidate i; [n + 1].
  std::vector<int64_t> first_cell(static_cast<size_t>(n) + 1, 0);
  for (int32_t i = 0; i < n; ++i)
    first_cell[static_cast<size_t>(i) + 1] = first_cell[static_cast<size_t>(i)] + cells[static_cast<size_t>(i)];
  // The middle cell of the candidates [first, end) scores the branch.
  auto score_branch = [&](HipBranch& b) {
    const int64_t middle = (first_cell[static_cast<size_t>(b.first)] + first_cell[static_cast<size_t>(b.end)]) / 2;
    const auto page = static_cast<int32_t>(
        std::upper_bound(first_cell.begin(), first_cell.end(), middle) - first_cell.begin() - 1);
    b.score = score_cell(page, static_cast<int32_t>(middle - first_cell[static_cast<size_t>(page)]));
  };

  std::vector<HipBranch> branches;
  if (n <= n_select) {  // every page is chosen; each still gets its score (the top-p estimate reads it)
    for (int32_t i = 0; i < n; ++i) {
      branches.push_back({i, i + 1, 0.0f});
      score_branch(branches.back());
    }
    return branches;
  }
  const int64_t k = std::max(n_select, 0);
  if (k == 0) return branches;
  for (int64_t i = 0; i < k; ++i)
    branches.push_back({static_cast<int32_t>(i * n / k), static_cast<int32_t>((i + 1) * n / k), 0.0f});
  std::vector<HipBranch> children;
  for (;;) {
    const bool split =
        std::any_of(branches.begin(), branches.end(), [](const HipBranch& b) { return b.end - b.first > 1; });
    if (!split) break;
    children.clear();
    for (const HipBranch& b : branches) {
      if (b.end - b.first > 1) {
        const int32_t mid = (b.first + b.end) / 2;
        children.push_back({b.first, mid, 0.0f});
        children.push_back({mid, b.end, 0.0f});
      } else {
        children.push_back(b);
      }
    }
    for (HipBranch& c : children) score_branch(c);
    // The k best halves, ties to the earlier one (children are in cell order), then back in cell order.
    std::stable_sort(children.begin(), children.end(),
                     [](const HipBranch& a, const HipBranch& b) { return a.score > b.score; });
    children.resize(static_cast<size_t>(k));
    std::sort(children.begin(), children.end(),
              [](const HipBranch& a, const HipBranch& b) { return a.first < b.first; });
    branches.swap(children);
  }
  return branches;
}

namespace {

class HipPolicy final : public KvPolicy {
 public:
  HipPolicy(KvPolicyContext context, const HipOptions& options)
      : KvPolicy(std::move(context)), options_(options), units_(n_units()) {
    for (auto& u : units_) u = std::make_unique<Unit>();
  }

  // Nothing but scratch is kept between queries: the fork starts with its own.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new HipPolicy(context_, options_));
  }
  std::string name() const override { return "hip"; }
  std::string describe() const override {
    return "hip(budget=" + std::to_string(options_.budget) + ", page=" + std::to_string(options_.page_tokens) +
           ", sink=" + std::to_string(options_.sink_tokens) + ", window=" + std::to_string(options_.window) +
           ", dense=" + std::to_string(options_.dense_layers) + describe_top_p(options_.top_p) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const override {
    const KvCache& cache = query.cache;
    if (query.il < options_.dense_layers || layer_window(query.il) > 0 || !is_decode_query(query)) {
      select_every_page(cache.n_pages(query.seq, query.il), pages);
      return;
    }
    Unit& u = *units_[static_cast<size_t>(query.il) * static_cast<size_t>(context_.shape.n_head_kv) +
                      static_cast<size_t>(query.kv_head)];
    std::lock_guard<std::mutex> lock(u.mutex);
    const int32_t n_cells = cache.n_cells(query.seq, query.il);
    classify_pages(cache, query.seq, query.il, options_.sink_tokens, n_cells - options_.window, u.layout);
    const auto n_pages = static_cast<int32_t>(u.layout.spans.size());
    const int32_t n_select = options_.budget / options_.page_tokens;
    const TopPPruning top_p{options_.top_p, {}};
    if (u.layout.n_candidates <= n_select && !top_p.active()) {  // the budget covers every page
      select_every_page(n_pages, pages);
      return;
    }
    u.candidates.clear();
    u.cells.clear();
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      if (u.layout.always[static_cast<size_t>(ip)]) continue;
      u.candidates.push_back(ip);
      u.cells.push_back(u.layout.spans[static_cast<size_t>(ip)].n_cells);
    }
    // One page's keys at a time: the late iterations score single-page branches again and again.
    int32_t rows_page = -1;
    const uint16_t* keys = nullptr;  // [n_cells of rows_page, dk] f16
    const int32_t dk = query.dk;
    auto score_cell = [&](int32_t candidate, int32_t cell) {
      const int32_t ip = u.candidates[static_cast<size_t>(candidate)];
      if (ip != rows_page) {
        keys = cache.head_rows(query.seq, query.il, query.kv_head, ip, u.rows, /*want_keys=*/true,
                               /*want_values=*/false).keys;
        rows_page = ip;
      }
      if (keys == nullptr) return -std::numeric_limits<float>::infinity();  // released rows: nothing to read
      float best = -std::numeric_limits<float>::infinity();
      for (int32_t i = 0; i < query.n_q; ++i) {
        float s = 0.0f;
        kernels::dot_f16_rows(query.q + static_cast<int64_t>(i) * dk, keys + static_cast<int64_t>(cell) * dk, dk, 1,
                              dk, &s);
        best = std::max(best, s);
      }
      return best;
    };
    const std::vector<HipBranch> chosen = hip_tree_search(u.cells, n_select, score_cell);
    if (!top_p.active()) {
      pages.clear();
      for (int32_t ip = 0; ip < n_pages; ++ip)
        if (u.layout.always[static_cast<size_t>(ip)]) pages.push_back(ip);
      for (const HipBranch& b : chosen) pages.push_back(u.candidates[static_cast<size_t>(b.first)]);
      std::sort(pages.begin(), pages.end());
      return;
    }
    // Twilight prunes what the tree search chose, by the scores of their representative keys: candidates it did
    // not choose score -infinity (no mass, ranked last).
    u.score.assign(static_cast<size_t>(n_pages), -std::numeric_limits<float>::infinity());
    for (const HipBranch& b : chosen)
      u.score[static_cast<size_t>(u.candidates[static_cast<size_t>(b.first)])] = b.score;
    page_mass_from_scores(u.score, u.layout.spans, u.layout.always, u.mass);
    select_top_pages(u.score, u.layout.always, n_select, pages, u.ranked, top_p.with_mass(u.mass));
  }

 private:
  // Scratch of one (layer, KV head), reused from query to query.
  struct Unit {
    std::mutex mutex;
    PageCandidates layout;
    std::vector<int32_t> candidates;  // [n_candidates] page indices
    std::vector<int32_t> cells;       // [n_candidates] cells of each
    KvCache::Scratch rows;            // a quantized page's keys, dequantized
    std::vector<float> score, mass;   // [n_pages] top-p: the chosen pages' scores and estimated attention mass
    std::vector<std::pair<float, int32_t>> ranked;
  };

  size_t n_units() const {
    return static_cast<size_t>(context_.shape.n_layer) * static_cast<size_t>(context_.shape.n_head_kv);
  }

  HipOptions options_;
  // [n_layer * n_head_kv]; select_pages (const) runs on the attention threads, one (layer, KV head) per call.
  mutable std::vector<std::unique_ptr<Unit>> units_;
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_hip_policy(const KvPolicyContext& context, PolicyParams& params) {
  HipOptions o;
  o.budget = params.get_int("budget", o.budget, 1, kMaxParamCount, "tokens of selected pages each decode query reads");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, where the tree search stops");
  o.sink_tokens = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 0, kMaxParamCount, "most recent tokens always read");
  o.dense_layers = params.get_int("dense", o.dense_layers, 0, 1024, "first layers that read every page");
  o.top_p = read_top_p(params);
  if (Status st = params.refusal(); !st.is_ok()) return st;
  return make_hip_policy(context, o);
}

Result<std::unique_ptr<KvPolicy>> make_hip_policy(const KvPolicyContext& context, const HipOptions& options) {
  LH_RETURN_IF_ERROR(check_page_budget("hip", options.budget, options.page_tokens));
  if (options.dense_layers < 0)
    return Status::error("hip: dense=" + std::to_string(options.dense_layers) + " must be >= 0 layers");
  return std::unique_ptr<KvPolicy>(new HipPolicy(context, options));
}

}  // namespace longhaul::kv
