// Parameters that several policies have, read the same way (name, default, range) by each policy that has them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "base/status.h"
#include "kv/kv_policy.h"
#include "kv/policy_params.h"

namespace longhaul::kv {

// Cells per sequence and layer a bounded policy keeps (h2o, a2sf, tova, snapkv).
inline int32_t read_budget(PolicyParams& params) {
  return params.get_int("budget", kDefaultKvBudget, 2, kMaxParamCount, "cells each layer keeps");
}

// First tokens always kept as attention sinks (streaming, lm-infinite, duo); 0 = none.
inline int32_t read_sink_tokens(PolicyParams& params) {
  return params.get_int("sink", kDefaultSinkTokens, 0, 1024, "attention-sink tokens always kept");
}

// Most recent tokens always kept, part of the budget (h2o, a2sf); by default half of it, the H2O paper's split.
inline int32_t read_recent(PolicyParams& params, int32_t budget) {
  return params.get_int("recent", budget / 2, 1, kMaxParamCount, "recent tokens kept, within the budget", "budget/2");
}

// Whether each KV head ranks and keeps its own cells (select=head, the papers' rule) or every head of a layer keeps
// the cells ranked by their summed scores (select=layer). Sliding-window layers and quantized storage always rank
// per layer (KvPolicy::can_retain_per_head).
inline bool read_select_per_head(PolicyParams& params) {
  return params.get_word("select", "head", {"head", "layer"}, "each KV head keeps its own cells, or the layer's") ==
         "head";
}

// Twilight's top-p page budget (Lin et al., 2025; kv/policies/page_selection.h TopPPruning) of every policy that
// selects pages per query (quest, lserve, hip, recycled): of the pages the budget selects, read only the
// best-scored ones whose estimated attention mass reaches top_p of theirs. 1 = off (the fixed budget).
inline float read_top_p(PolicyParams& params) {
  return params.get_float("top_p", 1.0f, 0.0f, 1.0f, /*lo_open=*/true,
                          "read selected pages until their estimated attention reaches this share (Twilight)");
}

// ", top_p=0.9" when top-p pruning is on, else "" (for describe()).
inline std::string describe_top_p(float top_p) {
  if (top_p >= 1.0f) return "";
  char text[32];
  std::snprintf(text, sizeof text, ", top_p=%g", static_cast<double>(top_p));
  return text;
}

// The budget of a policy that selects pages (quest, lserve, hip, recycled): at least one page of page_tokens >= 1
// cells.
inline Status check_page_budget(const std::string& policy, int32_t budget, int32_t page_tokens) {
  if (page_tokens < 1) return Status::error(policy + ": page=" + std::to_string(page_tokens) + " must be >= 1 token");
  if (budget < page_tokens)
    return Status::error(policy + ": budget=" + std::to_string(budget) + " is less than one page (page=" +
                         std::to_string(page_tokens) + " tokens)");
  return Status::ok();
}

}  // namespace longhaul::kv
