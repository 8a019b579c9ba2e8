// Sparse prefill calibration: the head profile's prefill section (kv/head_profile.h), the input of
// --prefill-attn minference and moa (model/sparse_prefill.h).
//
// MInference 1.0 (Jiang et al., 2024) assigns each attention head one of its three patterns offline, by its
// "kernel-aware optimal sparse pattern search": on a calibration prompt, each candidate (a pattern with a
// configuration of the same cost) keeps some share of each query's dense attention mass, and the head takes the
// candidate that keeps the most (the reference implementation, minference_forward.py search_pattern, averages the
// kept mass over the queries past the first 2500). We measure it the same way, per query head of every global layer,
// on passkey prompts (eval/passkey.h), with equal compute counted in keys per query (budget B): A-shape (the sink
// block and B/64 - 1 local blocks), block-sparse (B/64 - 1 top blocks and the query's own), and vertical-slash at
// a few splits of B into columns and diagonals, its indices estimated from the prompt's last 64 queries as at run
// time. The kept mass is read on sampled queries: the last 64 and a spread of 64-query blocks over the prompt, those
// that see more keys than the budget (the reference likewise skips the early queries).
// Ties (within 0.001) go to the cheaper pattern, in the order A-shape, block-sparse, vertical-slash.
//
// MoA (Fu et al., 2024, "Mixture of Sparse Attention") gives each head a sliding span (the sinks and a local band)
// whose width follows a per-head elastic rule span = alpha + beta * N, chosen for several input lengths at once
// under a density budget (mean span / N over heads <= density at each profiled length) to lose the least accuracy.
// MoA's loss proxy is the attention influence: each attention value times the gradient of the model's loss with
// respect to it, summed over the values a span masks (a first-order estimate of the loss change). longhaul has no
// backward pass, so the loss of a span here is the share of the sampled queries' attention mass it drops (1 -
// recall), measured with the run-time key blocks (model/sparse_prefill_moa.cc) at each profiled length. MoA solves
// the rule choice as a mixed-integer program; we take its Lagrangian relaxation (each head picks the rule of least
// loss + lambda * density, lambda bisected until every length meets the budget), then spend the budget the
// relaxation leaves unused greedily, one head's move at a time -- not guaranteed optimal, as MoA's solver is.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kv/head_profile.h"
#include "model/model.h"
#include "model/sparse_prefill.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

struct PrefillCalibrationOptions {
  std::vector<int32_t> lengths = {2048, 4096, 8192};  // tokens of the passkey prompts, one each (MoA's lengths)
  int32_t budget = 2048;        // keys per query each MInference candidate computes (equal compute)
  int32_t n_spread_blocks = 8;  // 64-query blocks sampled over each prompt besides its last 64 queries
  float density = 0.5f;         // MoA: mean span / N over heads at each profiled length, in (0, 1]
  uint64_t seed = 1234;         // seeds the passkeys
  int32_t n_threads = 0;        // 0 = all cores
};

// One MInference candidate of a head and the share of attention mass it kept.
struct PatternCandidate {
  kv::PrefillPattern pattern = kv::PrefillPattern::kAShape;
  int32_t n_columns = 0;  // vertical-slash: columns of the budget; else 0
  double recall = 0.0;
};
// The search's rule: the index of the candidate with the highest recall, a later one replacing the best so far only
// when it keeps more than 0.001 more (the candidates are listed cheapest first). Needs at least one candidate.
size_t best_candidate(std::span<const PatternCandidate> candidates);

struct SpanRecall;
struct HeadSearch {
  std::vector<PatternCandidate> candidates;  // cheapest first: A-shape, block-sparse, vertical-slash by columns
  int32_t n_scored = 0;                      // samples the recalls average over
};
// One head on one prompt: every candidate at `budget` keys per query with the share of the sampled queries'
// attention mass its key sets keep, averaged over the samples some of whose queries see more keys than the budget
// (1 for every candidate when none does). samples: 64-query stretches over the prompt's keys (each over keys 0 ..
// its last query), the last one the prompt's last 64 queries, whose attention gives vertical-slash its indices for
// every sample. curve (may be null): MoA's curve from the same attention rows, over every sample.
HeadSearch search_head(std::span<const model::HeadQueriesKeys> samples, int32_t budget, SpanRecall* curve);

// One head's attention-mass curve on one prompt for MoA: kept[w] is the mean share of the sampled queries' mass in
// the sink block and the w key blocks up to each query's own (kept[0] the sink block alone; the last entry 1).
struct SpanRecall {
  int32_t n_tokens = 0;      // the prompt's length N
  std::vector<double> kept;  // [N / 64 + 2]
  // The share kept by a span of `span` tokens at this length (the run-time rounding: ceil(span / 64) blocks).
  double at_span(double span) const;
};

// An elastic rule span = alpha + beta * N.
struct SpanRule {
  double alpha = 0.0;  // tokens
  double beta = 0.0;   // share of N
};
// MoA's candidate rules (alpha in tokens x beta in shares of N).
std::vector<SpanRule> moa_candidate_rules();
// The rule of each head (curves[head] holds its curve at every profiled length, in the same order for every head),
// chosen from `rules` under `density` as the header says. Fails when no choice meets the budget.
Result<std::vector<SpanRule>> choose_span_rules(const std::vector<std::vector<SpanRecall>>& curves,
                                                std::span<const SpanRule> rules, double density);

// The search and MoA's profile over every query head of the global layers; progress(line) before each prompt and
// each analysis (may be null). Returns a profile holding the prefill section only (n_layer, n_head_kv, n_head and
// the model's file name set).
Result<kv::HeadProfile> calibrate_prefill(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                          const PrefillCalibrationOptions& options,
                                          const std::function<void(const std::string&)>& progress);

}  // namespace longhaul::eval
