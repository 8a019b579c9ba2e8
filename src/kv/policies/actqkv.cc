// actqkv: ActQKV (Xiao et al., 2025, "Activation-aware Probe-Query: Effective Key-Value Retrieval for Long-Context
// LLMs Inference"). Every cell is kept, as under `full`; what changes is what a decode query reads.
//
// The paper: InfLLM-style retrieval of KV blocks, where the query that retrieves (the probe-Query) is built from a
// whole context window rather than taken raw. Most tokens of a window carry little of its meaning; the few whose
// query activations stand out ("anchor" tokens) carry much of it. ActQKV measures that per token as the Activation
// Bias (the squared deviation of the token's query activation from the window's mean, in units of the channel's
// variance), and the probe is the window's queries weighted by their share of it. Blocks are retrieved by their
// similarity to the probe. At decode a dynamic cut-off sets how many blocks each layer recalls: a layer whose
// retrieval scores are spread (high normalized entropy, low information density) needs more of them than one whose
// scores single out a few.
//
// Here, per (layer, KV head):
//   - the window is the queries of the last `probe` positions this sequence fed (prompt and decoded tokens alike,
//     kept in the policy; the current decode query is the window's newest token), each token's row holding the
//     GQA group's query heads side by side, [group * dk] (the authors concatenate a layer's heads the same way);
//   - activation_bias and probe_query (below, formulas in actqkv.h) give one probe per query head of the group;
//   - a page is scored by Quest's bound for the probe (Tang et al., 2024): sum_c max(p_c * min_c, p_c * max_c)
//     over the page's per-channel key minimum and maximum, the largest over the group's probes. The paper scores a
//     block by the cosine similarity of the probe with the mean of the block's representative keys (InfLLM's); our
//     infllm and longheads found those representatives miss the passkey page on SmolLM2 where Quest's bound does
//     not, so the bound is used, and it is in the softmax's domain (the queries carry the attention scale), which
//     the cut-off needs;
//   - the cut-off: D = normalized entropy of softmax(page scores) over the candidates, and the layer reads
//     n = clamp(ceil(D * n_max), n_min, n_max) of them, the best-scored (n_max = budget / page, n_min = min / page),
//     plus, always, the attention sinks, the local window and the partial last page. When the candidates fit in
//     n_max the layer reads every page (the budget covers the cache).
// The first `dense` layers read every page, as under quest, and sliding-window layers read their window already;
// prefill chunks and draft trees (queries at several positions) read everything: ActQKV selects at decode (its
// prefill retrieval is InfLLM's chunked prefill, which this engine does not need: the prompt is attended whole).
//
// Deviations. The cut-off: the authors split one budget (max * n_layer / 2 per step) over the layers in order,
// each taking a share proportional to its mean density over the last 100 steps relative to the layers after it;
// here each layer scales its own maximum by its current density, because selection runs per (layer, KV head) on the
// attention threads, and a pool shared in layer order would tie a layer's reads to the others' history, which forks
// and rollbacks would have to replay. The statistics: the authors' code keeps a running mean and variance over
// every window and layer seen; this code uses the window's own, as the paper's per-window formula writes them. The paper's question term
// (cosine with the user question's queries, weight 4) needs a question span the engine does not know; it is left
// out. Defaults follow quest's (sink 4, window 32, dense 2, page 32) so the two compare at equal budgets; the
// authors run sink 64, window 512, blocks of 32, at most 92 and at least 32 blocks; `probe` = 256 is their window.
//
// Cost: the probe is O(probe * group * dk) per (layer, KV head) (about 50K multiply-adds on SmolLM2), more than
// scoring the pages at a few thousand tokens, so one probe serves `refresh` consecutive decode positions (the
// paper builds one per context window; LServe reuses a selection the same way); the selection itself, the scores
// and the cut-off, is redone for every query with it.
//
// Memory beyond `full`'s: per (layer, KV head) `probe` query rows of group * dk floats, and two dk-float bounds per
// page (SmolLM2, at most 30 layers x 3 KV heads x 256 rows x 192 floats: 17.7 MB).
#include "kv/policies/actqkv.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kv/policies/page_key_summaries.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/placed_pages.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {

void activation_bias(std::span<const float> x, int32_t n, int32_t d, std::vector<float>& phi) {
  phi.assign(static_cast<size_t>(std::max(n, 0)), 0.0f);
  if (n < 1 || d < 1) return;
  std::vector<double> mean(static_cast<size_t>(d), 0.0), var(static_cast<size_t>(d), 0.0);  // [d]
  for (int32_t j = 0; j < n; ++j)
    for (int32_t c = 0; c < d; ++c) mean[static_cast<size_t>(c)] += x[static_cast<size_t>(j) * d + c];
  for (double& m : mean) m /= n;
  for (int32_t j = 0; j < n; ++j)
    for (int32_t c = 0; c < d; ++c) {
      const double dev = x[static_cast<size_t>(j) * d + c] - mean[static_cast<size_t>(c)];
      var[static_cast<size_t>(c)] += dev * dev;
    }
  double mean_var = 0.0;
  for (double& v : var) {
    v /= n;
    mean_var += v;
  }
  mean_var /= d;
  const double eps = mean_var / 100.0;
  if (!(mean_var > 0.0)) return;  // every token alike: no token deviates
  for (int32_t j = 0; j < n; ++j) {
    double sum = 0.0;
    for (int32_t c = 0; c < d; ++c) {
      const double dev = x[static_cast<size_t>(j) * d + c] - mean[static_cast<size_t>(c)];
      sum += dev * dev / (var[static_cast<size_t>(c)] + eps);
    }
    phi[static_cast<size_t>(j)] = static_cast<float>(sum / d);
  }
}

void probe_query(std::span<const float> x, int32_t n, int32_t d, std::vector<float>& weights,
                 std::vector<float>& probe) {
  activation_bias(x, n, d, weights);
  double total = 0.0;
  for (float w : weights) total += w;
  for (float& w : weights)
    w = total > 0.0 && std::isfinite(total) ? static_cast<float>(w / total) : 1.0f / static_cast<float>(n);
  probe.assign(static_cast<size_t>(std::max(d, 0)), 0.0f);
  for (int32_t j = 0; j < n; ++j)
    for (int32_t c = 0; c < d; ++c)
      probe[static_cast<size_t>(c)] += weights[static_cast<size_t>(j)] * x[static_cast<size_t>(j) * d + c];
}

float information_density(std::span<const float> scores) {
  if (scores.size() < 2) return 1.0f;
  const float top = *std::max_element(scores.begin(), scores.end());
  if (!std::isfinite(top)) return 1.0f;
  double z = 0.0;
  for (float s : scores) z += std::exp(static_cast<double>(s) - top);
  double entropy = 0.0;
  for (float s : scores) {
    const double p = std::exp(static_cast<double>(s) - top) / z;
    if (p > 0.0) entropy -= p * std::log(p);
  }
  return static_cast<float>(std::clamp(entropy / std::log(static_cast<double>(scores.size())), 0.0, 1.0));
}

int32_t dynamic_cutoff(std::span<const float> scores, int32_t n_min, int32_t n_max) {
  const auto n = static_cast<int32_t>(scores.size());
  const double density = information_density(scores);
  const auto wanted = static_cast<int32_t>(std::ceil(density * n_max));
  return std::min(std::clamp(wanted, std::min(n_min, n_max), n_max), n);
}

namespace {

struct ActQkvOptions {
  int32_t budget = kDefaultKvBudget;  // most tokens of selected pages a decode query reads, besides those always read
  int32_t min_tokens = kDefaultKvBudget / 4;  // fewest tokens of selected pages (the cut-off's floor)
  int32_t page_tokens = 32;           // cells per page: the unit of selection (the authors' blocks: 32)
  int32_t sink_tokens = 4;            // pages holding positions < sink_tokens are always read
  int32_t window = 32;                // pages holding one of the last `window` cells are always read
  int32_t dense_layers = 2;           // the first layers read every page
  int32_t probe = 256;                // positions whose queries form the probe's window (the authors' window: 256)
  int32_t refresh = 8;                // consecutive decode positions that share one probe
};

// One token of the probe's window.
struct WindowToken {
  int32_t position = 0;
  std::vector<float> q;  // [group * dk] the group's query heads side by side (after RoPE, scaled)
};

// A page's per-channel key bounds, and the span they were computed over.
struct PageBounds {
  int32_t first_cell = 0;
  int32_t n_cells = 0;
  std::vector<float> key_min, key_max;  // [dk]
};

// One (layer, KV head).
struct HeadState {
  int32_t group = 0;                // query heads per KV head (0 = no query seen yet)
  std::deque<WindowToken> window;   // [<= probe] oldest first
  std::vector<PageBounds> pages;    // by page index
  int32_t probe_position = -1;      // the decode position `probe` was built for (-1: none)
  // Scratch, reused from call to call.
  PageCandidates layout;
  std::vector<float> x;             // [window, group * dk]
  std::vector<float> weights;       // [window]
  std::vector<float> probe;         // [group * dk]
  std::vector<float> score;         // [n_pages]
  std::vector<float> candidates;    // [n_candidates] their scores, for the cut-off
  std::vector<std::pair<float, int32_t>> ranked;
};

class ActQkvPolicy final : public KvPolicy {
 public:
  ActQkvPolicy(KvPolicyContext context, const ActQkvOptions& options)
      : KvPolicy(std::move(context)), options_(options), heads_(context_.shape) {}

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new ActQkvPolicy(*this));
  }
  std::string name() const override { return "actqkv"; }
  std::string describe() const override {
    const ActQkvOptions& o = options_;
    return "actqkv(budget=" + std::to_string(o.budget) + ", min=" + std::to_string(o.min_tokens) +
           ", page=" + std::to_string(o.page_tokens) + ", sink=" + std::to_string(o.sink_tokens) +
           ", window=" + std::to_string(o.window) + ", dense=" + std::to_string(o.dense_layers) +
           ", probe=" + std::to_string(o.probe) + ", refresh=" + std::to_string(o.refresh) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  // Bounds of pages reaching past the cut describe keys that are gone; queries of positions past the last kept
  // cell were never part of this sequence's history (a rejected draft, a rewound chat).
  void truncate(KvCache& cache, SeqId seq, int32_t n_cells) override {
    const int32_t last_position = n_cells > 0 ? cache.positions(seq, 0)[static_cast<size_t>(n_cells) - 1] : -1;
    heads_.for_each([&](HeadState& h) {
      for (PageBounds& b : h.pages)
        if (b.first_cell + b.n_cells > n_cells) b = PageBounds{};
      while (!h.window.empty() && h.window.back().position > last_position) h.window.pop_back();
      if (h.probe_position > last_position) h.probe_position = -1;
    });
  }

  // Per (layer, KV head): the window's size and positions (two policies with equal windows probe alike).
  std::vector<double> statistics() const override {
    std::vector<double> out;
    heads_.for_each([&](const HeadState& h) {
      out.push_back(static_cast<double>(h.window.size()));
      for (const WindowToken& t : h.window) out.push_back(t.position);
    });
    return out;
  }

  void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const override {
    const int32_t n_pages = query.cache.n_pages(query.seq, query.il);
    if (query.il < options_.dense_layers || layer_window(query.il) > 0) {
      select_every_page(n_pages, pages);
      return;
    }
    heads_.with(query.il, query.kv_head, [&](HeadState& h) {
      remember(query, h);
      if (!is_decode_query(query) || h.window.empty()) {
        select_every_page(n_pages, pages);
        return;
      }
      select(query, h, pages);
    });
  }

 private:
  ActQkvPolicy(const ActQkvPolicy& other) = default;

  // Adds the queries of one select call to the window. Rows are token-major (the group's heads of one token, then
  // the next token's); a call whose positions do not rise token by token (a draft tree) is not a stretch of this
  // sequence's history and is skipped. The blocks of one prefill step reach here from several threads in any order,
  // so tokens are merged by position (a position seen again replaces its row) and the window keeps the newest
  // `probe` positions: the same window whatever the order. Positions past a rollback were dropped by truncate.
  void remember(const PageQuery& query, HeadState& h) const {
    int32_t group = 1;
    while (group < query.n_q && query.q_pos[group] == query.q_pos[0]) ++group;
    if (query.n_q % group != 0) return;
    const int32_t n_tokens = query.n_q / group;
    for (int32_t t = 0; t < n_tokens; ++t)
      for (int32_t g = 0; g < group; ++g) {
        const int32_t pos = query.q_pos[t * group + g];
        if (pos != query.q_pos[t * group] || (t > 0 && pos <= query.q_pos[(t - 1) * group])) return;
      }
    if (h.group != group) {
      h.window.clear();
      h.group = group;
    }
    const int32_t row = group * query.dk;
    for (int32_t t = std::max(0, n_tokens - options_.probe); t < n_tokens; ++t) {
      const int32_t pos = query.q_pos[t * group];
      const float* q = query.q + static_cast<int64_t>(t) * row;
      auto at = std::lower_bound(h.window.begin(), h.window.end(), pos,
                                 [](const WindowToken& w, int32_t p) { return w.position < p; });
      if (at != h.window.end() && at->position == pos) {
        at->q.assign(q, q + row);
      } else if (at != h.window.begin() || static_cast<int32_t>(h.window.size()) < options_.probe) {
        h.window.insert(at, {pos, std::vector<float>(q, q + row)});
      }
    }
    while (static_cast<int32_t>(h.window.size()) > options_.probe) h.window.pop_front();
  }

  // The decode query's pages: the probe's best-bounded candidates, as many as the cut-off gives, plus those always
  // read. Caller holds h's lock; the window holds the decode query.
  void select(const PageQuery& query, HeadState& h, std::vector<int32_t>& pages) const {
    const int32_t n_cells = query.cache.n_cells(query.seq, query.il);
    classify_pages(query.cache, query.seq, query.il, options_.sink_tokens, n_cells - options_.window, h.layout);
    const auto n_pages = static_cast<int32_t>(h.layout.spans.size());
    const int32_t n_max = options_.budget / options_.page_tokens;
    if (h.layout.n_candidates <= n_max || query.n_q != h.group) {  // the budget covers every page
      select_every_page(n_pages, pages);
      return;
    }
    const int32_t dk = query.dk, row = h.group * dk;
    const int32_t position = query.q_pos[0];
    // A probe built for an earlier position less than `refresh` back serves this one too (not for the same
    // position again: a rejected draft's query is asked again with other tokens before it).
    if (!(h.probe_position >= 0 && position > h.probe_position && position - h.probe_position < options_.refresh)) {
      const auto n = static_cast<int32_t>(h.window.size());
      h.x.resize(static_cast<size_t>(n) * row);
      for (int32_t j = 0; j < n; ++j)
        std::copy(h.window[static_cast<size_t>(j)].q.begin(), h.window[static_cast<size_t>(j)].q.end(),
                  h.x.begin() + static_cast<int64_t>(j) * row);
      probe_query(h.x, n, row, h.weights, h.probe);  // probe [group, dk]: one per query head
      h.probe_position = position;
    }

    if (h.pages.size() < static_cast<size_t>(n_pages)) h.pages.resize(static_cast<size_t>(n_pages));
    h.score.assign(static_cast<size_t>(n_pages), 0.0f);
    h.candidates.clear();
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      if (h.layout.always[static_cast<size_t>(ip)]) continue;
      const PageBounds& b = bounds(query, h, ip);
      const float s = page_key_bound(h.probe.data(), h.group, dk, b.key_min.data(), b.key_max.data(), /*n_sub=*/1);
      h.score[static_cast<size_t>(ip)] = s;
      h.candidates.push_back(s);
    }
    const int32_t n_read = dynamic_cutoff(h.candidates, options_.min_tokens / options_.page_tokens, n_max);
    select_top_pages(h.score, h.layout.always, n_read, pages, h.ranked);
  }

  // Page ip's key bounds, computed now if the page is new or its span changed (truncation, KIVI freezing the f16
  // residual into quantized pages).
  const PageBounds& bounds(const PageQuery& query, HeadState& h, int32_t ip) const {
    const KvCache::PageSpan& span = h.layout.spans[static_cast<size_t>(ip)];
    PageBounds& b = h.pages[static_cast<size_t>(ip)];
    if (b.first_cell == span.first_cell && b.n_cells == span.n_cells && !b.key_min.empty()) return b;
    const std::vector<float> keys = page_keys(query, ip);  // [n_cells, dk]
    key_bounds(keys, span.n_cells, query.dk, b.key_min, b.key_max);
    b.first_cell = span.first_cell;
    b.n_cells = span.n_cells;
    return b;
  }

  ActQkvOptions options_;
  PerHeadState<HeadState> heads_;  // [n_layer * n_head_kv]
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_actqkv_policy(const KvPolicyContext& context, PolicyParams& params) {
  ActQkvOptions o;
  o.budget =
      params.get_int("budget", o.budget, 1, kMaxParamCount, "most tokens of selected pages a decode query reads");
  o.min_tokens = params.get_int("min", o.budget / 4, 0, kMaxParamCount,
                                "fewest tokens of selected pages (the dynamic cut-off's floor)", "budget/4");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, the unit of selection");
  o.sink_tokens = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 0, kMaxParamCount, "most recent tokens always read");
  o.dense_layers = params.get_int("dense", o.dense_layers, 0, 1024, "first layers that read every page");
  o.probe = params.get_int("probe", o.probe, 1, 65536, "recent positions whose queries form the probe query");
  o.refresh = params.get_int("refresh", o.refresh, 1, 65536, "consecutive decode positions that share one probe");
  if (Status st = params.refusal(); !st.is_ok()) return st;
  LH_RETURN_IF_ERROR(check_page_budget("actqkv", o.budget, o.page_tokens));
  if (o.min_tokens > o.budget)
    return Status::error("actqkv: min=" + std::to_string(o.min_tokens) + " is more than budget=" +
                         std::to_string(o.budget) + " tokens");
  return std::unique_ptr<KvPolicy>(new ActQkvPolicy(context, o));
}

}  // namespace longhaul::kv
