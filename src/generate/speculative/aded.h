// ADED (Liu, Lei, Zhang and Xu, 2024, "Adaptive Draft-Verification for Efficient Large Language Model Decoding"):
// drafts from a tri-gram table that follows the target model's own output distribution, with a Monte Carlo tree
// search choosing which continuations to draft.
//
// Table. A row per token pair (a, b) holds the k tokens the model most expects after "... a b", each with an
// estimated probability. Every step's logits update the rows of the pairs the step fed — node i's pair is the token
// before it (its parent in the draft tree, or the text's token before the pending one) and its own token — so the
// table adapts as decoding goes, rejected draft tokens' logits included (they are the model's output all the
// same). Update of row (a, b) from the logits l after b: q = softmax over the k largest logits; each kept
// probability becomes (1 - eta) p + eta q (q = 0 for a token outside the new top-k), new tokens enter with eta q,
// and the k most probable stay. eta = 1/2 forgets an old distribution in a few steps, as the paper's table tracks
// "changing token probabilities during decoding". A bigram row (b alone) is updated beside each tri-gram row and
// stands in while a pair has not been seen (a backoff the paper does not need: it starts from a corpus-built table).
//
// Drafts: exploration and exploitation. The paper builds drafts with MCTS: each selection takes the child with the
// best PUCT score, exploitation plus an exploration bonus that shrinks as a branch is visited (AlphaZero's rule,
// Silver et al., 2018):
//     score(c) = Q(c) + C(N) * P(c) * sqrt(N + 1) / (1 + n(c)),   C(N) = c_init + log((N + c_base + 1) / c_base)
// P(c) is the row's probability of c (normalised over the row), Q(c) the value of drafting c: its acceptance rate
// so far, (accepted(c) + P(c)) / (drafted(c) + 1) (the prior P until the target has judged it), N the visits of
// the parent within this draft, n(c) those of c. Each descent from the last token follows the best scores down the
// tree already built and adds the first child not in it (expansion), counting a visit on every node of its path
// (backpropagation); max_tokens descents give a tree that is deep along confident continuations and branches where
// the table is unsure or where a likely token kept being rejected. Verification tells each drafted candidate
// whether it was accepted (observe()), which is the reward Q learns from.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "generate/speculative/draft_source.h"

namespace longhaul::generate::speculative {

class AdedSource final : public DraftSource {
 public:
  static constexpr int32_t kCandidates = 8;      // k: tokens kept per token pair
  static constexpr float kLearningRate = 0.5f;   // eta of the row update
  static constexpr double kCInit = 1.25;         // c_init of the PUCT exploration weight (AlphaZero's)
  static constexpr double kCBase = 19652.0;      // c_base
  static constexpr int32_t kMaxRows = 1 << 18;   // rows at most (k = 8: 32 MiB); later pairs get no row of their own
  static constexpr int32_t kNoToken = -1;        // the first token of a bigram row

  // One candidate of a row.
  struct Candidate {
    int32_t token = -1;
    float probability = 0.0f;  // estimated p(token | pair)
    int32_t n_drafted = 0;     // times it was drafted after the pair
    int32_t n_accepted = 0;    // times the target accepted it there
  };

  explicit AdedSource(int32_t n_vocab, int32_t k = kCandidates);

  std::string name() const override { return "aded"; }
  // A tree of at most max_tokens nodes grown by PUCT descents from the pair of the text's last two tokens; nothing
  // before the table knows the last token.
  void propose(const DraftContext& context, int32_t max_tokens, Draft& draft) override;
  // Updates the rows of the pairs the step fed from its logits, and the drafted and accepted counts of its draft.
  void observe(const DraftContext& context, const VerifiedStep& step) override;

  // Row (first, second), most probable first (empty when the pair has no row); first = kNoToken: the bigram row.
  std::span<const Candidate> row(int32_t first, int32_t second) const;

 private:
  // The row for (first, second), created when absent and there is room (null otherwise).
  Candidate* row_for_update(int32_t first, int32_t second);
  // The tri-gram row, else the bigram row of `second`; empty when neither is known.
  std::span<const Candidate> lookup(int32_t first, int32_t second) const;
  // Sets top_ and top_q_ to the k largest of logits [n_vocab] and their softmax over those k.
  void read_distribution(const float* logits);
  // Moves row (first, second) towards the distribution read_distribution() read.
  void update_row(int32_t first, int32_t second);
  void count_draft(int32_t first, int32_t second, int32_t token, bool accepted);

  int32_t n_vocab_;
  int32_t k_;
  std::unordered_map<uint64_t, int32_t> row_index_;  // (first + 1) << 32 | second -> row number
  std::vector<Candidate> rows_;                      // [n_rows, k]; unused slots have token -1
  std::vector<int32_t> top_;                         // [k] scratch: ids of the largest logits, largest first
  std::vector<double> top_q_;                        // [k] scratch: their softmax over the k
  std::vector<Candidate> merged_;                    // [2k] scratch of update_row()
};

}  // namespace longhaul::generate::speculative
