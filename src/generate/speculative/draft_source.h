// Draft sources for speculative decoding: cheap guesses of the tokens that follow a request's text, which the
// generation loop (generate/generator.h) verifies in one forward step of the target model. Verification keeps only
// what the target itself would have produced (speculative/verify.h), so a source changes the speed, never the
// output: a bad guess costs the extra tokens of one step, a good one saves whole steps.
//
// Adding a source is one file beside this one (ngram.cc, recycle.cc) plus one line in registry.cc.
//
// Thread-safety: a source is called from the thread that drives its Generator, one call at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace longhaul::generate::speculative {

// Parent of a draft token that follows the request's last token directly.
inline constexpr int32_t kDraftRoot = -1;

// How strongly a source's own evidence backs a draft, as a class in [0, kDraftEvidenceClasses). The generation
// loop keeps its acceptance estimates (draft_length.h) per class, so that a draft continuing a long match is
// verified deep while one continuing a single matched token is verified shallow or not at all. Prompt lookup and
// retrieval give the length of the text's tail that their draft continues (match_length_class); a source without
// such a signal leaves 0. On SmolLM2's input-grounded prompt, prompt lookup's first draft token was accepted 33-68%
// of the time after a match of 1-4 tokens, 75-100% after 5-16 and every time after 17 or more (docs/benchmarks.md,
// "Draft lengths by evidence class").
inline constexpr int32_t kDraftEvidenceClasses = 4;

// The class of a draft that continues a matched tail of `matched` tokens: 0 for none, 1 for 1-4 tokens (a chance
// repeat, mostly), 2 for 5-16, 3 for 17 or more (quoting).
inline int32_t match_length_class(int64_t matched) {
  if (matched <= 0) return 0;
  if (matched <= 4) return 1;
  if (matched <= 16) return 2;
  return 3;
}

// Tokens proposed to follow a request's last token: a chain, or a tree of alternatives.
struct Draft {
  std::vector<int32_t> tokens;  // [n] proposed token ids
  // Empty: a chain (tokens[0] follows the last token, tokens[i] follows tokens[i - 1]). Otherwise [n]: the index
  // in `tokens` of each token's parent (an earlier one), or kDraftRoot. Verification tries the children of a node
  // in their order here, so a source lists the likelier alternative first.
  std::vector<int32_t> parents;
  int32_t evidence = 0;  // the draft's evidence class, in [0, kDraftEvidenceClasses)

  size_t size() const { return tokens.size(); }
  bool empty() const { return tokens.empty(); }
  void clear() {
    tokens.clear();
    parents.clear();
    evidence = 0;
  }
};

// A request as a source sees it.
struct DraftContext {
  // The request's id within its generation loop; a source that keeps per-request state (a draft model's own
  // sequence) keys it on this and drops it in end().
  uint64_t request = 0;
  // The request's text so far: its prompt, then the generated tokens. The draft follows tokens.back().
  std::span<const int32_t> tokens;
};

// What the target made of one step of a request: the tokens it was fed whose logits the step returned (the last
// prompt token after a prefill; the last generated token and the draft after a verification step), and the logits.
struct VerifiedStep {
  std::span<const int32_t> tokens;   // [n]
  std::span<const int32_t> parents;  // [n] parent of each token within `tokens` (kDraftRoot for a root); empty: a chain
  const float* logits = nullptr;     // [n, n_vocab] the target's raw logits after each token
  int32_t n_vocab = 0;
  int32_t n_accepted = 0;            // draft tokens of the step the target accepted
  // Nodes (indices into `tokens`) the cache kept: node 0, then each accepted draft token the walk went on from
  // (Verification::path); empty after a prefill or a step without a draft.
  std::span<const int32_t> path;
};

class DraftSource {
 public:
  virtual ~DraftSource() = default;

  // Short stable name, as --spec-type takes it ("ngram").
  virtual std::string name() const = 0;

  // Writes at most `max_tokens` (>= 1) tokens to follow context.tokens.back() into `draft`, which the caller has
  // cleared; proposing nothing is fine (the step then decodes one token). May update the source's own state.
  virtual void propose(const DraftContext& context, int32_t max_tokens, Draft& draft) = 0;

  // Learns from the target's logits of a step of this request (Token Recycling's candidate matrix, a draft model's
  // rollback). Called after the prefill's last chunk and after every decode step, before the next propose().
  // context.tokens is the request's text up to step.tokens[0] (its last token): the tokens the step emitted are
  // not in it yet.
  virtual void observe(const DraftContext& /*context*/, const VerifiedStep& /*step*/) {}

  // The request ended (finished, failed or cancelled).
  virtual void end(uint64_t /*request*/) {}
};

}  // namespace longhaul::generate::speculative
