#include "sampling/token_candidates.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/status.h"

namespace longhaul::sampling {
namespace {

// sort_top() switches to the bounded-heap selection when k is at most this fraction of the
// candidates; above it the heap's log(k) updates stop paying for themselves.
constexpr size_t kHeapSelectRatio = 16;

}  // namespace

void TokenCandidates::fill(const float* logits, int32_t n_vocab) {
  LH_CHECK_MSG(n_vocab > 0, "n_vocab = " + std::to_string(n_vocab) + ": must be > 0");
  LH_CHECK(logits != nullptr);
  data.resize(static_cast<size_t>(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) {
    const float logit = logits[i];
    data[i] = TokenData{i, std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit, 0.0f};
  }
  n_sorted = 0;
  selected = -1;
}

void TokenCandidates::sort_top(size_t k) {
  k = std::min(k, data.size());
  if (k <= n_sorted) return;
  // Everything before n_sorted already beats everything after it, so only the tail takes part.
  const auto first = data.begin() + static_cast<std::ptrdiff_t>(n_sorted);
  const auto kth = data.begin() + static_cast<std::ptrdiff_t>(k);
  if (kth != data.end()) {
    if (n_sorted == 0 && k <= data.size() / kHeapSelectRatio) {
      partition_best(k);
    } else {
      std::nth_element(first, kth, data.end(), better);
    }
  }
  std::sort(first, kth, better);
  n_sorted = k;
}

void TokenCandidates::partition_best(size_t k) {
  // A bounded heap whose front is the worst of the k best seen so far. On a large vocabulary
  // almost every entry loses the single comparison with the front, so this pass is much cheaper
  // than nth_element's repeated partitioning of the whole array.
  scratch.clear();
  for (const TokenData& t : data) {
    if (scratch.size() < k) {
      scratch.push_back(t);
      std::push_heap(scratch.begin(), scratch.end(), better);
    } else if (better(t, scratch.front())) {
      std::pop_heap(scratch.begin(), scratch.end(), better);
      scratch.back() = t;
      std::push_heap(scratch.begin(), scratch.end(), better);
    }
  }
  // better() is a strict total order (ids are unique), so exactly k entries are not worse than
  // the threshold; partition moves them to the front.
  const TokenData threshold = scratch.front();
  std::partition(data.begin(), data.end(), [&](const TokenData& t) { return !better(threshold, t); });
}

void TokenCandidates::truncate(size_t n) {
  LH_CHECK_MSG(n >= 1, "a stage must keep at least one candidate");
  if (n >= data.size()) return;
  data.resize(n);
  n_sorted = std::min(n_sorted, n);
  if (selected >= static_cast<int64_t>(n)) selected = -1;
}

size_t TokenCandidates::argmax() const {
  LH_CHECK(!data.empty());
  if (n_sorted > 0) return 0;
  size_t best = 0;
  for (size_t i = 1; i < data.size(); ++i) {
    if (better(data[i], data[best])) best = i;
  }
  return best;
}

void TokenCandidates::softmax() {
  LH_CHECK(!data.empty());
  const float max_logit = data[argmax()].logit;
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    const float uniform = 1.0f / static_cast<float>(data.size());
    for (TokenData& t : data) t.prob = uniform;
    return;
  }
  // Subtracting the maximum keeps exp() in range; the sum is accumulated in double so that a
  // 262k-entry vocabulary does not lose the tail's mass to float rounding.
  double sum = 0.0;
  for (TokenData& t : data) {
    t.prob = std::exp(t.logit - max_logit);
    sum += t.prob;
  }
  const double inv = 1.0 / sum;
  for (TokenData& t : data) t.prob = static_cast<float>(t.prob * inv);
}

}  // namespace longhaul::sampling
