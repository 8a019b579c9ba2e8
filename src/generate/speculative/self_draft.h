// Self-speculative decoding (`--spec-type self`): the draft is the target model itself with some of its
// sub-layers left out (Draft & Verify, Zhang et al., 2023, "Draft & Verify: Lossless Large Language Model
// Acceleration via Self-Speculative Decoding"), so it needs no second model and no training. Which sub-layers:
// the first N of FinerCut's removal order (Zhang et al., 2024; eval/sublayer_calibration.h), kept in the model's
// head profile — the attention and FFN branches whose removal changes the output least.
//
// The draft runs as a draft model (draft_model.h: greedy drafting with BiLD's fallback, rollback to the kept text)
// on an Engine of its own over the same loaded model, sharing the target's thread pool, with the skip set as the
// engine's option. Its KV cache is its own: the draft's keys and values come from its pruned passes and its
// tentative tokens, and the target's cache only ever holds what the target computed and kept.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "generate/speculative/draft_source.h"
#include "kv/head_profile.h"
#include "model/model.h"

namespace longhaul::generate::speculative {

// The default number of sub-layers the draft leaves out: the most whose pruned model still picks the whole
// model's top token on at least this share of the calibration tokens (SublayerRemoval::agreement, the per-token
// greedy acceptance such a draft would have), and at least 1.
inline constexpr float kDefaultDraftAgreement = 0.8f;
int32_t default_draft_skip(const std::vector<kv::SublayerRemoval>& order);

// The `self` source: target with `skip` left out, drafting greedily until its top probability falls below
// `fallback`; its sequences hold n_ctx tokens.
Result<std::unique_ptr<DraftSource>> make_self_draft(const model::Model& target, const model::SublayerSkip& skip,
                                                     ThreadPool* pool, int32_t n_ctx, float fallback);

}  // namespace longhaul::generate::speculative
