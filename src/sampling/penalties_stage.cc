#include "sampling/penalties_stage.h"

#include <algorithm>

#include "base/status.h"
#include "sampling/format_number.h"

namespace longhaul::sampling {

PenaltiesStage::PenaltiesStage(int32_t last_n, float repeat, float frequency, float presence)
    : last_n_(last_n), repeat_(repeat), frequency_(frequency), presence_(presence) {
  LH_CHECK_MSG(last_n >= -1, "penalty last_n = " + std::to_string(last_n) + ": must be >= -1");
  LH_CHECK_MSG(repeat > 0.0f, "repeat penalty = " + format_number(repeat) + ": must be > 0");
}

std::string PenaltiesStage::describe() const {
  return "penalties(last_n=" + std::to_string(last_n_) + ", repeat=" + format_number(repeat_) +
         ", frequency=" + format_number(frequency_) + ", presence=" + format_number(presence_) + ")";
}

bool PenaltiesStage::active() const {
  return last_n_ != 0 && (repeat_ != 1.0f || frequency_ != 0.0f || presence_ != 0.0f);
}

void PenaltiesStage::apply(TokenCandidates& candidates) {
  if (!active() || n_in_window_ == 0) return;
  // One pass over the candidates with a direct-indexed count table: O(n_candidates) reads,
  // cheaper than hashing each id, and independent of the window length.
  const size_t n_counted = counts_.size();
  for (TokenData& t : candidates.data) {
    const size_t id = static_cast<size_t>(t.id);
    if (id >= n_counted || counts_[id] == 0) continue;
    const int32_t count = counts_[id];
    t.logit = t.logit <= 0.0f ? t.logit * repeat_ : t.logit / repeat_;
    t.logit -= static_cast<float>(count) * frequency_ + presence_;
  }
  // Rescoring can change the order, so nothing is known to be sorted any more.
  candidates.n_sorted = 0;
}

void PenaltiesStage::accept(int32_t token) {
  if (!active()) return;
  LH_CHECK_MSG(token >= 0, "accepted token id " + std::to_string(token) + " is negative");
  const size_t id = static_cast<size_t>(token);
  if (id >= counts_.size()) counts_.resize(id + 1, 0);
  ++counts_[id];
  ++n_in_window_;
  if (last_n_ == -1) return;  // unbounded window: nothing is evicted
  const size_t capacity = static_cast<size_t>(last_n_);
  if (window_.size() < capacity) {
    window_.push_back(token);
    return;
  }
  // Full window: the oldest token sits in the slot we overwrite.
  --counts_[static_cast<size_t>(window_[window_next_])];
  --n_in_window_;
  window_[window_next_] = token;
  window_next_ = (window_next_ + 1) % capacity;
}

void PenaltiesStage::reset() {
  window_.clear();
  window_next_ = 0;
  std::fill(counts_.begin(), counts_.end(), 0);
  n_in_window_ = 0;
}

std::unique_ptr<SamplerStage> PenaltiesStage::clone() const {
  return std::make_unique<PenaltiesStage>(*this);
}

}  // namespace longhaul::sampling
