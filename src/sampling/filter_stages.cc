#include "sampling/filter_stages.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "base/status.h"
#include "sampling/format_number.h"

namespace longhaul::sampling {
namespace {

// The first sorted prefix top-p looks at when nothing is sorted yet. Typical next-token
// distributions put almost all their mass in a few dozen tokens, so one O(n_vocab) selection
// of this size usually suffices; otherwise the prefix doubles.
constexpr size_t kTopPFirstPrefix = 256;

size_t clamp_min_keep(int32_t min_keep) {
  // min_keep 0 (llama.cpp's default) and 1 behave the same: a stage always keeps one token.
  return static_cast<size_t>(std::max<int32_t>(min_keep, 1));
}

}  // namespace

// ---- top-k ----

TopKStage::TopKStage(int32_t k) : k_(k) {
  LH_CHECK_MSG(k >= 0, "top-k k = " + std::to_string(k) + ": must be >= 0");
}

std::string TopKStage::describe() const { return "top-k(k=" + std::to_string(k_) + ")"; }

void TopKStage::apply(TokenCandidates& candidates) {
  if (k_ == 0) return;
  const size_t k = std::min(static_cast<size_t>(k_), candidates.size());
  candidates.sort_top(k);
  candidates.truncate(k);
}

// ---- top-p ----

TopPStage::TopPStage(float p, int32_t min_keep) : p_(p), min_keep_(clamp_min_keep(min_keep)) {
  LH_CHECK_MSG(p > 0.0f && p <= 1.0f, "top-p p = " + format_number(p) + ": must be in (0, 1]");
}

std::string TopPStage::describe() const {
  return "top-p(p=" + format_number(p_) + ", min_keep=" + std::to_string(min_keep_) + ")";
}

void TopPStage::apply(TokenCandidates& candidates) {
  if (p_ >= 1.0f || candidates.size() <= 1) return;
  candidates.softmax();
  // Sort only as much as the running sum needs: start from a small prefix and double it.
  candidates.sort_top(std::max(candidates.n_sorted, kTopPFirstPrefix));
  double cumulative = 0.0;
  size_t i = 0;
  for (;;) {
    for (; i < candidates.n_sorted; ++i) {
      cumulative += candidates.data[i].prob;
      if (cumulative >= p_ && i + 1 >= min_keep_) {
        candidates.truncate(i + 1);
        return;
      }
    }
    if (candidates.sorted()) break;
    candidates.sort_top(2 * candidates.n_sorted);
  }
  // Rounding kept the sum just below p: every candidate stays, as in llama.cpp.
}

// ---- min-p ----

MinPStage::MinPStage(float p, int32_t min_keep) : p_(p), min_keep_(clamp_min_keep(min_keep)) {
  LH_CHECK_MSG(p >= 0.0f && p <= 1.0f, "min-p p = " + format_number(p) + ": must be in [0, 1]");
}

std::string MinPStage::describe() const {
  return "min-p(p=" + format_number(p_) + ", min_keep=" + std::to_string(min_keep_) + ")";
}

void MinPStage::apply(TokenCandidates& candidates) {
  if (p_ <= 0.0f || candidates.size() <= 1) return;
  // p_i >= p * p_max  <=>  logit_i >= logit_max + ln(p): no softmax needed.
  const float min_logit = candidates.data[candidates.argmax()].logit + std::log(p_);
  size_t n_kept = 0;
  for (const TokenData& t : candidates.data) n_kept += t.logit >= min_logit ? 1 : 0;
  if (n_kept < min_keep_) {
    // Everything that passes is among the best min_keep, so keeping those is the answer.
    candidates.sort_top(min_keep_);
    candidates.truncate(std::min(min_keep_, candidates.size()));
    return;
  }
  // Stable compaction. A dropped entry of the sorted prefix implies every later prefix entry is
  // dropped too, so the kept part of the prefix is still the best, in order.
  size_t out = 0;
  size_t n_sorted_kept = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates.data[i].logit < min_logit) continue;
    if (i < candidates.n_sorted) ++n_sorted_kept;
    candidates.data[out++] = candidates.data[i];
  }
  candidates.n_sorted = n_sorted_kept;
  candidates.truncate(out);
}

// ---- temperature ----

TemperatureStage::TemperatureStage(float temperature) : temperature_(temperature) {}

std::string TemperatureStage::describe() const {
  return "temperature(t=" + format_number(temperature_) + ")";
}

void TemperatureStage::apply(TokenCandidates& candidates) {
  if (temperature_ <= 0.0f) {
    const size_t best = candidates.argmax();
    std::swap(candidates.data[0], candidates.data[best]);
    candidates.truncate(1);
    candidates.n_sorted = 1;
    return;
  }
  for (TokenData& t : candidates.data) t.logit /= temperature_;
  // Division preserves the order of logits but rounding can turn two close logits into a tie
  // that the id tie-break then orders differently, so the sorted prefix is no longer promised.
  candidates.n_sorted = 0;
}

}  // namespace longhaul::sampling
