// hip (HiP attention, Lee et al., 2024): per decode query, a hierarchical top-k tree search over the pages of a
// cache that keeps every cell. See hip.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kv/kv_policy.h"

namespace longhaul::kv {

struct HipOptions {
  int32_t budget = kDefaultKvBudget;  // tokens' worth of selected pages each decode query reads, besides those below
  int32_t page_tokens = 32;           // cells per page: the unit of selection, where the tree search stops
  int32_t sink_tokens = kDefaultSinkTokens;  // pages holding positions < sink_tokens are always read
  int32_t window = 32;                // pages holding one of the last `window` cells are always read
  int32_t dense_layers = 2;           // the first layers read every page (as quest)
  float top_p = 1.0f;                 // Twilight top-p over the chosen pages' estimated attention; 1 = off
};

Result<std::unique_ptr<KvPolicy>> make_hip_policy(const KvPolicyContext& context, const HipOptions& options);

// One branch of the tree search: candidate pages [first, end) and the score of its representative cell.
struct HipBranch {
  int32_t first = 0;
  int32_t end = 0;
  float score = 0.0f;
};

// HiP's hierarchical top-k over n candidate pages (in cell order) with k = n_select branches:
//   1. k branches split the candidates evenly (branch i: pages [i * n / k, (i + 1) * n / k)).
//   2. Every branch of more than one page splits into halves [first, mid) and [mid, end), mid = (first + end) / 2
//      (a one-page branch goes on as it is); each is scored by its representative cell, the middle one of its
//      cells (cell (c0 + c1) / 2 of the cells [c0, c1) the pages hold, counted over the candidates only); the k
//      best (ties to the earlier branch) go on.
//   3. Repeat 2 until every branch is one page.
//   cells:      [n] cells of each candidate page (each >= 1)
//   score_cell: (candidate, cell within it) -> score of that key for the query
// Returns the chosen branches, one page each, ascending: min(n_select, n) of them (n <= n_select: every page,
// each scored by its middle cell). O(k log(n / k)) scored cells.
std::vector<HipBranch> hip_tree_search(std::span<const int32_t> cells, int32_t n_select,
                                       const std::function<float(int32_t, int32_t)>& score_cell);

}  // namespace longhaul::kv
