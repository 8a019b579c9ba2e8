#include "generate/speculative/aded.h"

#include <algorithm>
#include <cmath>

#include "base/status.h"
#include "generate/speculative/recycle.h"

namespace longhaul::generate::speculative {

namespace {

uint64_t pair_key(int32_t first, int32_t second) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(first + 1)) << 32) | static_cast<uint32_t>(second);
}

}  // namespace

AdedSource::AdedSource(int32_t n_vocab, int32_t k) : n_vocab_(n_vocab), k_(std::min(k, n_vocab)) {
  LH_CHECK(n_vocab >= 1 && k >= 1);
  top_.resize(static_cast<size_t>(k_));
  top_q_.resize(static_cast<size_t>(k_));
}

std::span<const AdedSource::Candidate> AdedSource::row(int32_t first, int32_t second) const {
  const auto it = row_index_.find(pair_key(first, second));
  if (it == row_index_.end()) return {};
  const auto begin = static_cast<size_t>(it->second) * static_cast<size_t>(k_);
  size_t n = 0;
  while (n < static_cast<size_t>(k_) && rows_[begin + n].token >= 0) ++n;
  return std::span<const Candidate>(rows_).subspan(begin, n);
}

std::span<const AdedSource::Candidate> AdedSource::lookup(int32_t first, int32_t second) const {
  std::span<const Candidate> r = first >= 0 ? row(first, second) : std::span<const Candidate>();
  return r.empty() ? row(kNoToken, second) : r;
}

AdedSource::Candidate* AdedSource::row_for_update(int32_t first, int32_t second) {
  const uint64_t key = pair_key(first, second);
  auto it = row_index_.find(key);
  if (it == row_index_.end()) {
    if (static_cast<int32_t>(row_index_.size()) >= kMaxRows) return nullptr;
    it = row_index_.emplace(key, static_cast<int32_t>(row_index_.size())).first;
    rows_.resize(rows_.size() + static_cast<size_t>(k_));
  }
  return rows_.data() + static_cast<size_t>(it->second) * static_cast<size_t>(k_);
}

void AdedSource::read_distribution(const float* logits) {
  // q: softmax over the k largest logits (their share of the row; the rest of the vocabulary is not drafted).
  top_k_ids(logits, n_vocab_, top_);
  const float max_logit = logits[top_[0]];
  double total = 0.0;
  for (size_t i = 0; i < top_.size(); ++i) {
    top_q_[i] = std::exp(static_cast<double>(logits[top_[i]] - max_logit));
    total += top_q_[i];
  }
  for (double& q : top_q_) q /= total;
}

void AdedSource::update_row(int32_t first, int32_t second) {
  Candidate* r = row_for_update(first, second);
  if (r == nullptr) return;
  merged_.clear();
  for (int32_t i = 0; i < k_ && r[i].token >= 0; ++i) {
    Candidate c = r[i];
    c.probability *= 1.0f - kLearningRate;
    merged_.push_back(c);
  }
  for (size_t i = 0; i < top_.size(); ++i) {
    const int32_t id = top_[i];
    const auto q = static_cast<float>(top_q_[i]);
    auto it = std::find_if(merged_.begin(), merged_.end(), [&](const Candidate& c) { return c.token == id; });
    if (it == merged_.end()) {
      merged_.push_back({id, 0.0f, 0, 0});
      it = merged_.end() - 1;
    }
    it->probability += kLearningRate * q;
  }
  // The k most probable stay, most probable first (ties: the lower id, so the row does not depend on history order).
  std::stable_sort(merged_.begin(), merged_.end(), [](const Candidate& a, const Candidate& b) {
    return a.probability > b.probability || (a.probability == b.probability && a.token < b.token);
  });
  for (int32_t i = 0; i < k_; ++i) r[i] = i < static_cast<int32_t>(merged_.size()) ? merged_[static_cast<size_t>(i)] : Candidate{};
}

void AdedSource::count_draft(int32_t first, int32_t second, int32_t token, bool accepted) {
  // The row the draft was read from: the tri-gram row when it exists, else the bigram row (as lookup()).
  for (const int32_t a : {first, kNoToken}) {
    const auto it = row_index_.find(pair_key(a, second));
    if (it == row_index_.end()) continue;
    Candidate* r = rows_.data() + static_cast<size_t>(it->second) * static_cast<size_t>(k_);
    for (int32_t i = 0; i < k_; ++i) {
      if (r[i].token != token) continue;
      ++r[i].n_drafted;
      if (accepted) ++r[i].n_accepted;
    }
    return;
  }
}

void AdedSource::observe(const DraftContext& context, const VerifiedStep& step) {
  LH_CHECK(step.n_vocab == n_vocab_);
  const auto n = static_cast<int32_t>(step.tokens.size());
  if (n == 0) return;
  auto parent = [&](int32_t i) { return step.parents.empty() ? i - 1 : step.parents[static_cast<size_t>(i)]; };
  // The token before node i: its parent's, or for node 0 the text's token before it (context ends with node 0).
  const int32_t before_root =
      context.tokens.size() >= 2 ? context.tokens[context.tokens.size() - 2] : kNoToken;
  auto before = [&](int32_t i) {
    const int32_t p = parent(i);
    return p < 0 ? before_root : step.tokens[static_cast<size_t>(p)];
  };
  // Rewards first, against the rows the draft was read from (before this step's logits move them).
  std::vector<bool> kept(static_cast<size_t>(n), false);
  for (int32_t node : step.path) kept[static_cast<size_t>(node)] = true;
  for (int32_t i = 1; i < n; ++i) {
    const int32_t p = parent(i);
    LH_CHECK(p >= 0 && p < i);
    count_draft(before(p), step.tokens[static_cast<size_t>(p)], step.tokens[static_cast<size_t>(i)],
                kept[static_cast<size_t>(i)]);
  }
  for (int32_t i = 0; i < n; ++i) {
    const int32_t token = step.tokens[static_cast<size_t>(i)];
    LH_CHECK(token >= 0 && token < n_vocab_);
    read_distribution(step.logits + static_cast<int64_t>(i) * n_vocab_);
    const int32_t b = before(i);
    if (b >= 0) update_row(b, token);
    update_row(kNoToken, token);
  }
}

void AdedSource::propose(const DraftContext& context, int32_t max_tokens, Draft& draft) {
  if (context.tokens.empty() || row_index_.empty()) return;
  struct Node {
    int32_t first;         // the token before this one
    int32_t token;
    int32_t draft_index;   // index in the draft, -1 for the root (the text's last token)
    int32_t visits = 0;
    bool closed = false;   // nothing left to add below it
    std::vector<int32_t> children;  // node ids
  };
  const size_t size = context.tokens.size();
  std::vector<Node> nodes;
  nodes.push_back({size >= 2 ? context.tokens[size - 2] : kNoToken, context.tokens[size - 1], -1, 0, false, {}});
  std::vector<int32_t> path;
  // Each descent adds a node or closes one, so 2 * max_tokens + 1 descents always suffice.
  for (int32_t descent = 0; descent <= 2 * max_tokens && static_cast<int32_t>(draft.size()) < max_tokens &&
                            !nodes[0].closed;
       ++descent) {
    path.assign(1, 0);
    int32_t u = 0;
    for (;;) {
      const std::span<const Candidate> r = lookup(nodes[static_cast<size_t>(u)].first, nodes[static_cast<size_t>(u)].token);
      double row_mass = 0.0;
      for (const Candidate& c : r) row_mass += c.probability;
      const double n_parent = nodes[static_cast<size_t>(u)].visits;
      const double c_puct = kCInit + std::log((n_parent + kCBase + 1.0) / kCBase);
      double best_score = -1.0;
      int32_t best = -1;        // candidate index in r
      int32_t best_child = -1;  // its node, -1 when not in the tree yet
      for (size_t ci = 0; ci < r.size(); ++ci) {
        const Candidate& c = r[ci];
        int32_t child = -1;
        for (int32_t id : nodes[static_cast<size_t>(u)].children)
          if (nodes[static_cast<size_t>(id)].token == c.token) child = id;
        if (child >= 0 && nodes[static_cast<size_t>(child)].closed) continue;
        const double prior = row_mass > 0.0 ? c.probability / row_mass : 0.0;
        const double value = (c.n_accepted + prior) / (c.n_drafted + 1.0);
        const double visits = child >= 0 ? nodes[static_cast<size_t>(child)].visits : 0.0;
        const double score = value + c_puct * prior * std::sqrt(n_parent + 1.0) / (1.0 + visits);
        if (score > best_score) {
          best_score = score;
          best = static_cast<int32_t>(ci);
          best_child = child;
        }
      }
      if (best < 0) {  // nothing to draft below u
        nodes[static_cast<size_t>(u)].closed = true;
        break;
      }
      if (best_child < 0) {  // expansion: the new node joins the draft
        const Node& parent = nodes[static_cast<size_t>(u)];
        Node added{parent.token, r[static_cast<size_t>(best)].token, static_cast<int32_t>(draft.size()), 0, false, {}};
        draft.tokens.push_back(added.token);
        draft.parents.push_back(parent.draft_index < 0 ? kDraftRoot : parent.draft_index);
        nodes.push_back(std::move(added));
        const auto id = static_cast<int32_t>(nodes.size()) - 1;
        nodes[static_cast<size_t>(u)].children.push_back(id);
        path.push_back(id);
        for (int32_t v : path) ++nodes[static_cast<size_t>(v)].visits;
        break;
      }
      u = best_child;
      path.push_back(u);
    }
  }
}

}  // namespace longhaul::generate::speculative
