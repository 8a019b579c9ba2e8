// Verification of a draft against the target model: which draft tokens the target accepts and which token it
// emits where it stops accepting, so that the output is exactly the target's — the same tokens under greedy
// decoding, the same distribution under sampling.
//
// Speculative sampling (Leviathan et al., 2023, "Fast Inference from Transformers via Speculative Decoding"; Chen
// et al., 2023, "Accelerating Large Language Model Decoding with Speculative Sampling") accepts a draft token x
// drawn from a draft distribution q with probability min(1, p(x) / q(x)) and, on rejection, samples from the
// residual norm(max(0, p - q)). The sources here are deterministic (q = 1 on the proposed token), so x is accepted
// with probability p(x) and the residual is p without x, renormalised. Where a tree offers several children at a
// node, they are tried in order, each against the residual left by the ones rejected before it (SpecInfer, Miao et
// al., 2024; Token Recycling's verification): child i is then emitted with probability p(c_i) and any other token
// t with p(t), which is p itself. Drawing one token t from p and accepting the child equal to t, if any, gives that
// same law of (emitted token, accepted child), and that is the rule here: t is what plain sampling draws at that
// point (SamplerChain::sample, one draw of the chain's own generator, none when greedy). So a seeded run emits the
// same tokens with drafts as without -- whatever was drafted, and however long the drafts were -- wherever the
// verification step's logits are plain decoding's bits (model/attention.h, StepPolicy::tokens_apart). p is the
// distribution after every stage of the request's sampler chain (penalties, top-k, top-p, min-p, temperature; the
// argmax alone when greedy), under the history of the tokens accepted so far, so greedy verification accepts
// exactly while the draft token is the target's argmax.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "sampling/sampler_chain.h"

namespace longhaul::generate::speculative {

// The token emitted at one node.
struct Choice {
  int32_t token = -1;
  int32_t child = -1;  // index into the node's children of the accepted draft token, -1: the target's own token
};

// The token that follows a node with logits [n_vocab] under `chain` (as chain.sample draws it, advancing the
// chain's generator as plain sampling does), and which of the node's draft `children` it is (the first equal one).
Choice choose_token(sampling::SamplerChain& chain, const float* logits, int32_t n_vocab,
                    std::span<const int32_t> children);

// The outcome of walking a verified draft tree.
struct Verification {
  // Nodes whose tokens stay fed (the cache keeps them): node 0, then each accepted draft token the walk went on
  // from. The token emitted last is not among them (the next step feeds it), as in plain decoding.
  std::vector<int32_t> path;
  int32_t n_accepted = 0;  // draft tokens emitted (accepted), including one after which emit() stopped the walk
  int32_t last_node = 0;   // node whose logits the last emitted token came from
};

// Walks a step that fed `tokens` ([n]: node 0 the request's last token, then the draft) with `parents` ([n]: each
// node's parent within `tokens`, -1 for node 0): from node 0, chooses a token from `logits(node)` [n_vocab] under
// `chain`, accepts it into the chain's history (chain.accept), hands it to `emit` — which returns false to stop
// (the request is finished) — and goes on into the child it matched, if any.
Verification verify_tree(std::span<const int32_t> tokens, std::span<const int32_t> parents,
                         const std::function<const float*(int32_t node)>& logits, int32_t n_vocab,
                         sampling::SamplerChain& chain, const std::function<bool(int32_t token)>& emit);

}  // namespace longhaul::generate::speculative
