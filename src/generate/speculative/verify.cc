#include "generate/speculative/verify.h"

#include "base/status.h"

namespace longhaul::generate::speculative {

Choice choose_token(sampling::SamplerChain& chain, const float* logits, int32_t n_vocab,
                    std::span<const int32_t> children) {
  const int32_t token = chain.sample(logits, n_vocab);
  for (size_t c = 0; c < children.size(); ++c)
    if (children[c] == token) return {token, static_cast<int32_t>(c)};
  return {token, -1};
}

Verification verify_tree(std::span<const int32_t> tokens, std::span<const int32_t> parents,
                         const std::function<const float*(int32_t node)>& logits, int32_t n_vocab,
                         sampling::SamplerChain& chain, const std::function<bool(int32_t token)>& emit) {
  const auto n = static_cast<int32_t>(tokens.size());
  LH_CHECK(n >= 1 && parents.size() == tokens.size());
  Verification v;
  v.path.push_back(0);
  std::vector<int32_t> child_nodes;
  std::vector<int32_t> child_tokens;
  int32_t node = 0;
  for (;;) {
    child_nodes.clear();
    child_tokens.clear();
    for (int32_t j = node + 1; j < n; ++j) {
      if (parents[static_cast<size_t>(j)] != node) continue;
      child_nodes.push_back(j);
      child_tokens.push_back(tokens[static_cast<size_t>(j)]);
    }
    const Choice choice = choose_token(chain, logits(node), n_vocab, child_tokens);
    chain.accept(choice.token);
    v.last_node = node;
    if (choice.child >= 0) ++v.n_accepted;
    if (!emit(choice.token) || choice.child < 0) return v;
    node = child_nodes[static_cast<size_t>(choice.child)];
    v.path.push_back(node);
  }
}

}  // namespace longhaul::generate::speculative
