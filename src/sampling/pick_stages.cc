#include "sampling/pick_stages.h"

#include "base/status.h"

namespace longhaul::sampling {

void GreedyStage::apply(TokenCandidates& candidates) {
  candidates.selected = static_cast<int64_t>(candidates.argmax());
}

DistStage::DistStage(uint64_t seed) : seed_(seed), rng_(seed) {}

std::string DistStage::describe() const { return "dist(seed=" + std::to_string(seed_) + ")"; }

void DistStage::apply(TokenCandidates& candidates) {
  LH_CHECK(!candidates.data.empty());
  // Top 53 bits -> a double uniform in [0, 1) with every value equally spaced.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  candidates.softmax();
  double total = 0.0;
  for (const TokenData& t : candidates.data) total += t.prob;
  // Scaling the target by the actual total (instead of assuming 1) keeps the draw exact when
  // the float probabilities do not sum to exactly one.
  const double target = u * total;
  double running = 0.0;
  int64_t last_nonzero = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double p = candidates.data[i].prob;
    if (p <= 0.0) continue;
    running += p;
    last_nonzero = static_cast<int64_t>(i);
    // Strictly greater: a zero-probability candidate can never be drawn, even when u == 0.
    if (running > target) {
      candidates.selected = static_cast<int64_t>(i);
      return;
    }
  }
  // Only reachable through rounding at u close to 1.
  candidates.selected = last_nonzero;
}

}  // namespace longhaul::sampling
