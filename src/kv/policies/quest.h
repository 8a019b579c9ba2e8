// quest (Quest, Tang et al., 2024): query-aware page selection over a cache that keeps every cell. See quest.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kv/kv_policy.h"
#include "kv/policies/page_key_summaries.h"

namespace longhaul::kv {

struct QuestOptions {
  int32_t budget = kDefaultKvBudget;  // tokens' worth of selected pages each decode query reads, besides those below
  int32_t page_tokens = 64;           // cells per page: the unit of selection (Quest: 16; see quest.cc)
  int32_t sink_tokens = 4;            // pages holding positions < sink_tokens are always read (attention sinks)
  int32_t window = 32;                // pages holding one of the last `window` cells are always read
  int32_t dense_layers = 0;           // the first layers that read every page (Quest keeps two; see quest.cc)
  KeySummary summary = KeySummary::kMinMax;  // per-channel key bounds of a page: min/max (Quest) or mean -/+ k * std
  float std_scale = 2.0f;             // k of KeySummary::kMeanStd
  float top_p = 1.0f;                 // Twilight top-p over the selected pages' estimated attention; 1 = off
};

Result<std::unique_ptr<KvPolicy>> make_quest_policy(const KvPolicyContext& context, const QuestOptions& options);

// One page as the selection sees it: always read, or a candidate with its key bounds.
struct QuestPage {
  bool always = false;
  const float* key_min = nullptr;  // [dk] element-wise minimum of the page's keys (candidates only)
  const float* key_max = nullptr;  // [dk]
};

// Quest's rule over `pages`: every page marked always, plus the n_select candidates with the largest upper bound
// max_i sum_c max(q_ic * min_c, q_ic * max_c) over the n_q queries q [n_q, dk] (ties to the earlier page).
// selected: ascending page indices. Returns the number of candidates selected.
int32_t quest_select_pages(std::span<const QuestPage> pages, std::span<const float> q, int32_t n_q, int32_t dk,
                           int32_t n_select, std::vector<int32_t>& selected);

}  // namespace longhaul::kv
