// Per-channel key summaries of pages and the selection of pages by Quest's bound on q . k (Quest, Tang et al.,
// 2024), shared by quest and by lserve's retrieval heads (LServe, Yang et al., 2025).
//
// A summary covers one page of one (layer, KV head), split into logical pages of `logical_tokens` cells (LServe's
// hierarchical paging: small logical pages are scored, and a physical page scores the largest of its logical
// pages' bounds; logical_tokens = 0 or >= the page: one logical page, Quest's rule). Per logical page and channel
// it keeps a lower and an upper value lo_c <= hi_c of the keys (after RoPE, as the queries are; stored in f16,
// rounded outward), and a page is scored by
//   sum_c max(q_c * lo_c, q_c * hi_c)
// (kernels::key_bounds_f16_blocked: a unit's pages in one call, 16 logical pages to a block of SIMD lanes).
// With lo/hi the minimum and maximum (KeySummary::kMinMax, Quest's), that is a bound: q . k <= it for every key k
// of the logical page. With lo/hi = mean -/+ k * std (kMeanStd) it is no bound but an estimate that one outlying
// key cannot inflate: min/max over a page grow with every key, while mean and spread describe most of them.
// Summaries are computed lazily, from the attention threads, the first time a candidate page is seen (the pages
// of a step's own cells are always read, so a summary is never needed before its page is complete); a summary
// records its page's span, and a span that changed (truncation, KIVI freezing the f16 residual into quantized
// pages) is summarized again.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "kv/policies/page_selection.h"

namespace longhaul::kv {

// Quest's bound for the queries q [n_q, dk] over n_sub logical pages whose key bounds are key_min / key_max
// [n_sub, dk]: max over queries i and logical pages s of sum_c max(q_ic * min_sc, q_ic * max_sc). The active ISA's
// kernels::key_bound.
float page_key_bound(const float* q, int32_t n_q, int32_t dk, const float* key_min, const float* key_max,
                     int32_t n_sub);

// How a page's keys are summarized per channel.
enum class KeySummary {
  kMinMax,   // lo = min, hi = max (Quest)
  kMeanStd,  // lo = mean - k * std, hi = mean + k * std (population std over the logical page's keys)
};

// How a (layer, KV head) selects its pages by bound.
struct BoundSelection {
  int32_t sink_tokens = 0;  // pages holding positions < sink_tokens are always read
  int32_t window = 0;       // pages holding one of the last `window` cells are always read
  int32_t n_select = 0;     // candidate pages read, those with the largest bounds
  // Consecutive decode positions that share one selection (LServe's reusable page selector): a selection made for
  // the query at position p also serves positions p + 1 .. p + reuse - 1. 1 = select for every query.
  int32_t reuse = 1;
  // Twilight's top-p (TopPPruning): of the n_select pages, read the best-bounded ones whose estimated attention
  // mass (page_mass_from_scores of the bounds) reaches top_p of theirs; 1 = off.
  float top_p = 1.0f;
};

class PageKeySummaries {
 public:
  // logical_tokens: cells per scored logical page (0 = whole pages); std_scale: k of KeySummary::kMeanStd.
  PageKeySummaries(const KvShape& shape, int32_t logical_tokens, KeySummary kind = KeySummary::kMinMax,
                   float std_scale = 0.0f);
  // A copy of the summaries and the kept selections (a forked sequence's policy).
  PageKeySummaries(const PageKeySummaries& other);
  PageKeySummaries& operator=(const PageKeySummaries&) = delete;

  // The pages KV head query.kv_head of layer query.il reads for a decode query: every page when the candidates
  // (classify_pages) fit n_select and top-p is off, else the pages always read plus the n_select candidates with
  // the largest bound (ties to the earlier page; fewer under top-p), ascending; n_select = 0: only the pages
  // always read. Thread-safe: one mutex per (layer, KV head), whose scratch the call reuses.
  void select(const KvPolicy::PageQuery& query, const BoundSelection& how, std::vector<int32_t>& pages) const;

  // The cache was cut to its first n_cells cells: summaries of pages reaching past them, and selections made
  // over more cells, are dropped.
  void truncate(int32_t n_cells);

  // Per (layer, KV head), the kept selection (position, cells, pages), for KvPolicy::statistics.
  std::vector<double> kept_selections() const;

 private:
  // Which span a page's slots in Unit::blocks describe.
  struct Summary {
    int32_t first_cell = 0;
    int32_t n_cells = 0;
    int32_t n_sub = 0;  // logical pages; 0 = no summary
  };
  // A selection kept for reuse.
  struct KeptSelection {
    bool valid = false;
    int32_t position = 0;        // of the query it was made for
    int32_t n_cells = 0;         // cells of the layer then
    std::vector<int32_t> pages;  // the candidates it chose
  };
  // One (layer, KV head).
  struct Unit {
    std::mutex mutex;
    std::vector<Summary> pages;  // by page index
    // The summaries, laid out for kernels::key_bounds_f16_blocked: [n_blocks, 2, dk, 16] lo and hi in f16, rounded
    // outward (lo down, hi up) so that min/max stay a bound; logical page s of page ip in slot
    // ip * slots_per_page + s (block slot / 16, lane slot % 16). A page with fewer logical pages repeats its last
    // one in its spare slots, which leaves the page's largest bound unchanged. Scoring streams every candidate's
    // summary per decode token: f16 halves the bytes, and the lanes let one converted value serve 16 pages.
    int32_t slots_per_page = 0;  // 0 until the first summary
    std::vector<uint16_t> blocks;
    KeptSelection kept;
    // Scratch, reused from call to call.
    PageCandidates layout;
    std::vector<float> keys;   // [n_cells of a page, n_head_kv, dk]
    std::vector<double> sum, sum_sq;  // [dk] (kMeanStd)
    std::vector<float> lo, hi;        // [dk] one logical page's lo and hi before rounding to f16
    std::vector<float> slot_bound;  // [n_blocks * 16]
    std::vector<float> bound;  // [n_pages]
    std::vector<float> mass;   // [n_pages] estimated attention mass (top-p)
    std::vector<std::pair<float, int32_t>> ranked;
  };

  // Computes page ip's summary if the page is new or its span changed. Caller holds u.mutex.
  void ensure_summary(Unit& u, const KvPolicy::PageQuery& query, int32_t ip, const KvCache::PageSpan& span) const;

  // Fills page ip's slots in u.blocks from head kv_head's rows of keys u.keys [n_cells, n_head_kv, dk].
  void summarize(Unit& u, const Summary& s, int32_t ip, int32_t kv_head, int32_t logical) const;

  // Logical pages of a page of n_cells cells.
  int32_t logical_pages(int32_t n_cells) const;

  KvShape shape_;
  int32_t logical_tokens_ = 0;
  KeySummary kind_ = KeySummary::kMinMax;
  float std_scale_ = 0.0f;
  // [n_layer * n_head_kv]; mutable state behind per-unit mutexes: select is const and runs on the attention
  // threads, one (layer, KV head) per call.
  mutable std::vector<std::unique_ptr<Unit>> units_;
};

}  // namespace longhaul::kv
