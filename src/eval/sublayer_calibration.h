// FinerCut's sub-layer calibration (Zhang et al., 2024, "FinerCut: Finer-grained Interpretable Layer Pruning for
// Large Language Models"): every attention and every FFN sub-layer of the model is a pruning candidate
// (model/sublayers.h), and the greedy order removes, one at a time, the candidate whose removal — together with
// the ones removed before it — changes the model's output least on calibration text. FinerCut measures the change
// of the output distribution; we take the mean KL divergence KL(whole || pruned) of the next-token distributions
// over the calibration tokens (teacher-forced, one sequence), and record beside it the share of tokens whose top
// token the pruned model still picks (the per-token acceptance a greedy self-speculative draft of that model would
// get).
//
// Cost: ranking k sub-layers of a model with S takes k*S - k*(k-1)/2 forward passes over the calibration tokens
// (each candidate of each round once), plus one for the whole model.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kv/head_profile.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

struct SublayerCalibrationOptions {
  int32_t n_tokens = 128;  // calibration tokens (one sequence, teacher-forced), >= 2
  // Sub-layers ranked (0 = a quarter of them, rounded up: FinerCut's headline pruning ratio is 25%).
  int32_t n_ranked = 0;
  int32_t n_threads = 0;   // 0 = all cores
};

// The calibration tokens: what the tokenizer puts first (BOS), then the last tokens of the default eval text (eval/ppl.h), whose
// start is what `longhaul eval --task ppl` reads, so a perplexity measured there is not measured on the
// calibration text. Fails when the text is missing or shorter.
Result<std::vector<int32_t>> sublayer_calibration_tokens(const tokenizer::Tokenizer& tokenizer, int32_t n_tokens);

// FinerCut's greedy removal order on `tokens` (>= 2 of them); progress(line) before each forward pass (may be
// null). Ties go to the earlier sub-layer (attn.0, ffn.0, attn.1, ...).
Result<std::vector<kv::SublayerRemoval>> calibrate_sublayers(const model::Model& model,
                                                             std::span<const int32_t> tokens,
                                                             const SublayerCalibrationOptions& options,
                                                             const std::function<void(const std::string&)>& progress);

// Both, into `profile`'s sub-layer section (its other sections untouched; its shape set when empty).
Status calibrate_sublayer_order(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                const SublayerCalibrationOptions& options,
                                const std::function<void(const std::string&)>& progress, kv::HeadProfile& profile);

}  // namespace longhaul::eval
