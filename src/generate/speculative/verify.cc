#include "generate/speculative/verify.h"

#include "base/status.h"

namespace longhaul::generate::speculative {

namespace {

// A double uniform in [0, 1) from the top 53 bits, as the sampler's dist stage draws.
double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double probability_of(const sampling::TokenCandidates& target, int32_t token) {
  for (const sampling::TokenData& t : target.data)
    if (t.id == token) return t.prob;
  return 0.0;  // filtered out by a stage: the target never emits it
}

}  // namespace

Choice choose_token(const sampling::TokenCandidates& target, std::span<const int32_t> children, std::mt19937_64& rng) {
  LH_CHECK(!target.data.empty());
  if (target.size() == 1) {  // one-hot (greedy, or a filter left one token): nothing to draw
    const int32_t token = target.data[0].id;
    for (size_t c = 0; c < children.size(); ++c)
      if (children[c] == token) return {token, static_cast<int32_t>(c)};
    return {token, -1};
  }
  // The residual is p restricted to the tokens not rejected yet; `mass` is its total (1 at the start).
  std::vector<int32_t> rejected;
  double mass = 1.0;
  for (size_t c = 0; c < children.size(); ++c) {
    const int32_t token = children[c];
    bool seen = false;
    for (int32_t r : rejected) seen = seen || r == token;
    if (seen) continue;  // a repeated child has no residual mass left
    const double p = probability_of(target, token);
    if (p <= 0.0) continue;  // never accepted; rejecting it leaves the residual as it is
    // Accept with probability residual(token) = p / mass.
    if (uniform(rng) * mass < p) return {token, static_cast<int32_t>(c)};
    rejected.push_back(token);
    mass -= p;
  }
  // Sample the residual: p over the tokens not rejected, renormalised. Its total is summed again rather than taken
  // from `mass`, so rounding in the subtractions cannot bias the draw.
  auto is_rejected = [&](int32_t id) {
    for (int32_t r : rejected)
      if (r == id) return true;
    return false;
  };
  double total = 0.0;
  for (const sampling::TokenData& t : target.data)
    if (!is_rejected(t.id)) total += t.prob;
  if (total <= 0.0) {
    // Only rounding gets here (the rejected children held all the mass): the last of them had it.
    return {rejected.back(), -1};
  }
  const double goal = uniform(rng) * total;
  double running = 0.0;
  int32_t last = -1;
  for (const sampling::TokenData& t : target.data) {
    if (t.prob <= 0.0f || is_rejected(t.id)) continue;
    running += t.prob;
    last = t.id;
    if (running > goal) return {t.id, -1};
  }
  return {last, -1};  // rounding at a draw close to 1
}

Verification verify_tree(std::span<const int32_t> tokens, std::span<const int32_t> parents,
                         const std::function<const float*(int32_t node)>& logits, int32_t n_vocab,
                         sampling::SamplerChain& chain, std::mt19937_64& rng,
                         const std::function<bool(int32_t token)>& emit) {
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
    const Choice choice = choose_token(chain.distribution(logits(node), n_vocab), child_tokens, rng);
    chain.accept(choice.token);
    v.last_node = node;
    if (choice.child >= 0) ++v.n_accepted;
    if (!emit(choice.token) || choice.child < 0) return v;
    node = child_nodes[static_cast<size_t>(choice.child)];
    v.path.push_back(node);
  }
}

}  // namespace longhaul::generate::speculative
