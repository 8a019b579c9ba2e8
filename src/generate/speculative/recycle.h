// Token Recycling (Luo et al., 2024, "Turning Trash into Treasure: Accelerating Inference of Large Language Models
// with Token Recycling"): every forward step computes a distribution over the vocabulary after each token it was
// fed, and decoding throws all but one token of it away. Token Recycling keeps the top-k candidates of each
// distribution in an adjacency matrix (row = the token fed, k candidates that the model gave after it, best
// first) and drafts from it: starting at the request's last token, a breadth-first walk over the matrix fills a
// static tree template (node = parent node, rank r: the r-th candidate of the parent's token). Every step's logits
// (rejected draft tokens' too) overwrite the rows of the tokens fed, so the matrix follows the text; it is never
// reset, so what one request taught helps the next (the paper's hot start).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "generate/speculative/draft_source.h"

namespace longhaul::generate::speculative {

// One node of a draft tree template.
struct TemplateNode {
  int32_t parent = kDraftRoot;  // index of the parent node (an earlier one), or kDraftRoot: the last token
  int32_t rank = 0;             // which candidate of the parent's token, 0 = the best
};

// A static tree template of `n_nodes` nodes for candidates of rank < k, parents before children and siblings by
// rank. The paper uses one fixed, hand-tuned tree; this one is built by the same principle for any size: nodes are
// added best first by their prior chance of being accepted, the product along the path of a per-rank acceptance
// prior (rank 0 is accepted about half the time, the rest decay quickly), so the tree is wide near the root and
// deep along the best candidates.
std::vector<TemplateNode> make_tree_template(int32_t n_nodes, int32_t k);

class RecycleSource final : public DraftSource {
 public:
  static constexpr int32_t kCandidates = 8;     // k, the paper's choice
  static constexpr int32_t kTemplateNodes = 63;  // largest tree drafted (a tentative step holds 64 tokens)

  explicit RecycleSource(int32_t n_vocab, int32_t k = kCandidates);

  std::string name() const override { return "recycle"; }
  // The template's first max_tokens nodes, each the parent's token's candidate of the node's rank; a node whose
  // candidate is not known yet is left out with its subtree.
  void propose(const DraftContext& context, int32_t max_tokens, Draft& draft) override;
  // Rows of step.tokens become the top-k of their logits.
  void observe(const DraftContext& context, const VerifiedStep& step) override;

  // The candidates [k] recorded after `token`, best first; -1 where none is known.
  std::span<const int32_t> candidates(int32_t token) const;
  int32_t k() const { return k_; }

 private:
  int32_t n_vocab_;
  int32_t k_;
  std::vector<int32_t> matrix_;  // [n_vocab, k] candidate ids, -1 = unknown; allocated by the first observe()
  std::vector<TemplateNode> template_;
  std::vector<int32_t> node_token_;  // [template size] scratch of propose(): each node's token, -1 = left out
  std::vector<int32_t> node_index_;  // [template size] scratch: each node's index in the draft
};

// The k best token ids of `logits` [n_vocab], best first (ties: the lower id), into `out` [k].
void top_k_ids(const float* logits, int32_t n_vocab, std::span<int32_t> out);

}  // namespace longhaul::generate::speculative
