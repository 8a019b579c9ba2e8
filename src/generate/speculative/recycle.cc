#include "generate/speculative/recycle.h"

#include <algorithm>
#include <queue>

#include "base/status.h"

namespace longhaul::generate::speculative {

std::vector<TemplateNode> make_tree_template(int32_t n_nodes, int32_t k) {
  LH_CHECK(n_nodes >= 0 && k >= 1);
  // Prior chance that the target accepts the rank-r candidate, roughly what Token Recycling and Medusa report for
  // top-k heads; only the order of the products matters.
  static constexpr double kRankPrior[] = {0.50, 0.15, 0.08, 0.05, 0.04, 0.03, 0.025, 0.02};
  auto prior = [](int32_t rank) {
    const int32_t n = static_cast<int32_t>(std::size(kRankPrior));
    return rank < n ? kRankPrior[rank] : kRankPrior[n - 1] * 0.5;
  };
  struct Candidate {
    double score;
    int64_t order;  // ties: the one offered first
    TemplateNode node;
    bool operator<(const Candidate& o) const { return score < o.score || (score == o.score && order > o.order); }
  };
  std::priority_queue<Candidate> frontier;
  int64_t order = 0;
  for (int32_t r = 0; r < k; ++r) frontier.push({prior(r), order++, {kDraftRoot, r}});
  std::vector<TemplateNode> nodes;
  std::vector<double> score;
  while (static_cast<int32_t>(nodes.size()) < n_nodes && !frontier.empty()) {
    const Candidate c = frontier.top();
    frontier.pop();
    nodes.push_back(c.node);
    score.push_back(c.score);
    const auto parent = static_cast<int32_t>(nodes.size()) - 1;
    for (int32_t r = 0; r < k; ++r) frontier.push({c.score * prior(r), order++, {parent, r}});
  }
  // A child scores below its parent and siblings come out by rank, so `nodes` already lists parents first and
  // siblings by rank.
  return nodes;
}

void top_k_ids(const float* logits, int32_t n_vocab, std::span<int32_t> out) {
  const auto k = static_cast<int32_t>(out.size());
  LH_CHECK(k >= 1 && k <= n_vocab);
  // Insertion into a sorted list of k: one comparison per logit for all but the few that enter it.
  int32_t n = 0;
  auto better = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  for (int32_t id = 0; id < n_vocab; ++id) {
    if (n == k && !better(id, out[static_cast<size_t>(k - 1)])) continue;
    int32_t at = n < k ? n++ : k - 1;
    while (at > 0 && better(id, out[static_cast<size_t>(at - 1)])) {
      out[static_cast<size_t>(at)] = out[static_cast<size_t>(at - 1)];
      --at;
    }
    out[static_cast<size_t>(at)] = id;
  }
}

RecycleSource::RecycleSource(int32_t n_vocab, int32_t k)
    : n_vocab_(n_vocab), k_(k), template_(make_tree_template(kTemplateNodes, k)) {
  LH_CHECK(n_vocab >= 1 && k >= 1 && k <= n_vocab);
}

std::span<const int32_t> RecycleSource::candidates(int32_t token) const {
  static const std::vector<int32_t> kUnknown(64, -1);
  LH_CHECK(token >= 0 && token < n_vocab_);
  if (matrix_.empty()) return std::span<const int32_t>(kUnknown).first(static_cast<size_t>(std::min(k_, 64)));
  return std::span<const int32_t>(matrix_).subspan(static_cast<size_t>(token) * static_cast<size_t>(k_),
                                                   static_cast<size_t>(k_));
}

void RecycleSource::propose(const DraftContext& context, int32_t max_tokens, Draft& draft) {
  if (matrix_.empty() || context.tokens.empty()) return;
  const int32_t root = context.tokens.back();
  const size_t n = std::min(template_.size(), static_cast<size_t>(std::max(0, max_tokens)));
  node_token_.assign(n, -1);
  node_index_.assign(n, -1);
  // Breadth-first over the template (parents come first), reading each node's token off its parent's row.
  for (size_t i = 0; i < n; ++i) {
    const TemplateNode& t = template_[i];
    const int32_t parent_token = t.parent == kDraftRoot ? root : node_token_[static_cast<size_t>(t.parent)];
    if (parent_token < 0) continue;  // the parent was left out
    const int32_t token = matrix_[static_cast<size_t>(parent_token) * static_cast<size_t>(k_) + static_cast<size_t>(t.rank)];
    if (token < 0) continue;
    node_token_[i] = token;
    node_index_[i] = static_cast<int32_t>(draft.tokens.size());
    draft.tokens.push_back(token);
    draft.parents.push_back(t.parent == kDraftRoot ? kDraftRoot : node_index_[static_cast<size_t>(t.parent)]);
  }
}

void RecycleSource::observe(const DraftContext& /*context*/, const VerifiedStep& step) {
  LH_CHECK(step.n_vocab == n_vocab_);
  if (matrix_.empty()) matrix_.assign(static_cast<size_t>(n_vocab_) * static_cast<size_t>(k_), -1);
  for (size_t i = 0; i < step.tokens.size(); ++i) {
    const int32_t token = step.tokens[i];
    LH_CHECK(token >= 0 && token < n_vocab_);
    top_k_ids(step.logits + static_cast<int64_t>(i) * n_vocab_, n_vocab_,
              std::span<int32_t>(matrix_).subspan(static_cast<size_t>(token) * static_cast<size_t>(k_),
                                                  static_cast<size_t>(k_)));
  }
}

}  // namespace longhaul::generate::speculative
