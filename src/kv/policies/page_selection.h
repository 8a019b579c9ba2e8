// Pieces shared by the policies that choose, per decode query, the pages each KV head reads (KvPolicy::select_pages:
// quest, recycled, lserve): when a selection applies, which pages are read whatever it says, and the ranking of
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

// The pages marked always, plus the n_select others with the largest score (ties to the earlier page), ascending.
//   score:  [n_pages] (read for candidates only)
//   ranked: scratch, reused between calls
// Returns the number of pages chosen by score: min(n_select, candidates).
int32_t select_top_pages(std::span<const float> score, std::span<const uint8_t> always, int32_t n_select,
                         std::vector<int32_t>& selected, std::vector<std::pair<float, int32_t>>& ranked);

}  // namespace longhaul::kv
