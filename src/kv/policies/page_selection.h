// Pieces shared by the policies that choose, per decode query, the pages each KV head reads (KvPolicy::select_pages:
// quest, recycled, lserve, hip): when a selection applies, which pages are read whatever it says, and the ranking of
// the other pages by a score.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_policy.h"

namespace longhaul::kv {

// The pages of one (sequence, layer) as a selection sees them.
struct PageCandidates {
  std::vector<KvCache::PageSpan> spans;  // [n_pages]
  std::vector<uint8_t> always;           // [n_pages] 1 = read whatever the selection says
  int32_t n_candidates = 0;              // pages with always == 0
};

// Whether the queries of one select_pages call are one decode query: every query (the query heads of a GQA group)
// at one position. Prefill chunks and draft trees (queries at several positions) read every page: the papers
// select for decode.
bool is_decode_query(const KvPolicy::PageQuery& query);

// Sets `pages` to every page of the layer, 0 .. n_pages - 1: what select_pages returns when it does not select.
void select_every_page(int32_t n_pages, std::vector<int32_t>& pages);

// Fills `out` for layer il of seq. Always read: the last page (it takes the step's appends and may be partial),
// empty pages, pages holding a position < sink_tokens (attention sinks, StreamingLLM, Xiao et al., 2023), and
// pages holding a cell at index >= first_local_cell (the local window; a policy may move it earlier, e.g. to the
// cells its scores do not cover yet).
void classify_pages(const KvCache& cache, SeqId seq, int32_t il, int32_t sink_tokens, int32_t first_local_cell,
                    PageCandidates& out);

// Twilight (Lin et al., 2025, "Twilight: Adaptive Attention Sparsity with Hierarchical Top-p Pruning"): a fixed
// budget reads too much where attention is concentrated and too little where it is spread. Twilight lets a base
// method select with its (conservative) budget, then prunes that selection by top-p: only the best-scored pages
// whose estimated attention mass reaches p of the selection's are read.
struct TopPPruning {
  float p = 1.0f;               // share of the selection's estimated attention mass to read; 1 = off (the budget)
  std::span<const float> mass;  // [n_pages] each candidate's estimated attention mass (>= 0, any common scale)
  bool active() const { return p < 1.0f; }
  // The same p over `page_mass` (a span taken once the masses are computed: a vector filled later may move).
  TopPPruning with_mass(std::span<const float> page_mass) const { return {p, page_mass}; }
};

// The pages marked always, plus the n_select others with the largest score (ties to the earlier page), ascending;
// with top_p active, only the smallest prefix of those n_select (best score first) whose mass reaches
// top_p.p * their total mass (at least one page; all of them if the mass is not a positive finite number).
//   score:  [n_pages] (read for candidates only)
//   ranked: scratch, reused between calls
// Returns the number of pages chosen by score: min(n_select, candidates), or fewer after top-p.
int32_t select_top_pages(std::span<const float> score, std::span<const uint8_t> always, int32_t n_select,
                         std::vector<int32_t>& selected, std::vector<std::pair<float, int32_t>>& ranked,
                         const TopPPruning& top_p = {});

// Estimated attention mass of each candidate page from a per-page score in the softmax's domain (q . k with the
// attention scale applied, as the queries select_pages receives are): mass = n_cells * exp(score - max score), as
// if every cell of the page scored the page's score. That is the page's share of the softmax over the candidate
// cells under that assumption; the estimate is only as good as the score (Quest's bound is >= every key's score,
// so it overstates pages of spread keys; a HiP representative is one real key of the page, exact where scores
// are locally smooth, as HiP assumes), which is why it only orders and prunes what the score selected.
//   mass: [n_pages] out; 0 for pages marked always.
void page_mass_from_scores(std::span<const float> score, std::span<const KvCache::PageSpan> spans,
                           std::span<const uint8_t> always, std::vector<float>& mass);

}  // namespace longhaul::kv
