#include "generate/speculative/draft_length.h"

#include <algorithm>

#include "base/status.h"

namespace longhaul::generate::speculative {

void StepCostModel::add(int32_t n_tokens, double seconds) {
  if (n_tokens < 1 || n_tokens > kMaxFitTokens || !(seconds > 0.0)) return;
  const double n = n_tokens;
  w_ = kDecay * w_ + 1.0;
  wn_ = kDecay * wn_ + n;
  wnn_ = kDecay * wnn_ + n * n;
  wt_ = kDecay * wt_ + seconds;
  wnt_ = kDecay * wnt_ + n * seconds;
}

void StepCostModel::fit(double& a, double& b) const {
  if (w_ <= 0.0) {  // nothing measured: one-token step = 1
    a = 1.0 / (1.0 + kPriorSlope);
    b = kPriorSlope * a;
    return;
  }
  const double mean_n = wn_ / w_, mean_t = wt_ / w_;
  const double var_n = wnn_ / w_ - mean_n * mean_n;
  // A slope needs steps of different sizes: with a spread under about one token, the prior slope through the mean.
  if (var_n >= 1.0) {
    b = (wnt_ / w_ - mean_n * mean_t) / var_n;
    a = mean_t - b * mean_n;
    // Timing noise can tilt a fit over few sizes past what a forward step can cost: every token costs something,
    // and the fixed part (weights read once) is at least the cost of a token.
    if (a > 0.0 && b >= 0.01 * a && b <= a) return;
  }
  a = mean_t / (1.0 + kPriorSlope * mean_n);
  b = kPriorSlope * a;
}

double StepCostModel::seconds(int32_t n_tokens) const {
  double a = 0.0, b = 0.0;
  fit(a, b);
  return a + b * n_tokens;
}

double StepCostModel::intercept() const {
  double a = 0.0, b = 0.0;
  fit(a, b);
  return a;
}

double StepCostModel::slope() const {
  double a = 0.0, b = 0.0;
  fit(a, b);
  return b;
}

DraftAcceptance::DraftAcceptance(int32_t max_nodes)
    : hits_(static_cast<size_t>(std::max(0, max_nodes)), 0.0), trials_(hits_.size(), 0.0), accepted_(hits_.size(), 0) {}

void DraftAcceptance::observe(int32_t n_drafted, std::span<const int32_t> parents, std::span<const int32_t> accepted) {
  const auto n = static_cast<size_t>(std::clamp(n_drafted, 0, max_nodes()));
  std::fill(accepted_.begin(), accepted_.end(), 0);
  for (const int32_t node : accepted)
    if (node >= 0 && static_cast<size_t>(node) < n) accepted_[static_cast<size_t>(node)] = 1;
  steps_without_draft_ = n > 0 ? 0 : std::min(steps_without_draft_ + 1, kProbeInterval);
  child_hits_ *= kDecay;
  child_trials_ *= kDecay;
  for (size_t i = 0; i < hits_.size(); ++i) {
    hits_[i] *= kDecay;
    trials_[i] *= kDecay;
    if (i >= n) continue;
    trials_[i] += 1.0;
    hits_[i] += accepted_[i];
    const int32_t parent = parents.empty() ? static_cast<int32_t>(i) - 1 : parents[i];
    if (parent < 0 || (static_cast<size_t>(parent) < n && accepted_[static_cast<size_t>(parent)])) {
      child_trials_ += 1.0;
      child_hits_ += accepted_[i];
    }
  }
}

double DraftAcceptance::alpha() const {
  return (child_hits_ + kPriorAlpha * kPriorWeight) / (child_trials_ + kPriorWeight);
}

void DraftAcceptance::estimates(std::span<double> out, std::span<const int32_t> parents,
                                const DraftAcceptance* prior) const {
  LH_CHECK(out.size() <= hits_.size());
  std::vector<double> prior_p;
  if (prior != nullptr) {
    LH_CHECK(out.size() <= static_cast<size_t>(prior->max_nodes()));
    prior_p.resize(out.size());
    prior->estimates(prior_p, parents);
  }
  const double a = alpha();
  for (size_t i = 0; i < out.size(); ++i) {
    int32_t parent = i < parents.size() ? parents[i] : static_cast<int32_t>(i) - 1;
    if (parent >= static_cast<int32_t>(i)) parent = static_cast<int32_t>(i) - 1;  // not a tree: the loop says so
    const double parent_p = parent < 0 ? 1.0 : out[static_cast<size_t>(parent)];
    double node_prior = a * parent_p;
    if (prior != nullptr) {
      const double prior_parent = parent < 0 ? 1.0 : prior_p[static_cast<size_t>(parent)];
      node_prior = parent_p * (prior_parent > 0.0 ? std::min(1.0, prior_p[i] / prior_parent) : 0.0);
    }
    out[i] = (hits_[i] + node_prior * kPriorWeight) / (trials_[i] + kPriorWeight);
  }
}

double DraftAcceptance::p(int32_t node) const {
  if (node < 0 || node >= max_nodes()) return 0.0;
  std::vector<double> p(static_cast<size_t>(node) + 1);
  estimates(p);
  return p.back();
}

DraftAcceptanceByClass::DraftAcceptanceByClass(int32_t max_nodes)
    : by_class_(static_cast<size_t>(kDraftEvidenceClasses) + 1, DraftAcceptance(max_nodes)) {}

size_t DraftAcceptanceByClass::index(int32_t evidence) {
  return static_cast<size_t>(std::clamp(evidence, 0, kDraftEvidenceClasses - 1));
}

const DraftAcceptance& DraftAcceptanceByClass::of(int32_t evidence) const { return by_class_[index(evidence)]; }

const DraftAcceptance* DraftAcceptanceByClass::prior_of(int32_t evidence) const {
  return index(evidence) > 0 ? &by_class_.back() : nullptr;
}

void DraftAcceptanceByClass::observe(int32_t evidence, int32_t n_drafted, std::span<const int32_t> parents,
                                     std::span<const int32_t> accepted) {
  by_class_[index(evidence)].observe(n_drafted, parents, accepted);
  if (index(evidence) > 0) by_class_.back().observe(n_drafted, parents, accepted);
}

int32_t choose_draft_length(const DraftAcceptance& acceptance, const StepCostModel& cost, int32_t n_max,
                            int32_t n_other_tokens, int32_t n_other_outputs, double draft_token_seconds,
                            std::span<const int32_t> parents, std::vector<double>& scratch,
                            const DraftAcceptance* prior) {
  n_max = std::max(0, std::min(n_max, acceptance.max_nodes()));
  if (prior != nullptr) n_max = std::min(n_max, prior->max_nodes());
  scratch.resize(static_cast<size_t>(n_max));
  acceptance.estimates(scratch, parents.first(std::min(parents.size(), scratch.size())), prior);
  n_other_tokens = std::max(0, n_other_tokens);
  double a = 0.0, b = 0.0;
  cost.fit(a, b);  // once for every k: T(n) = a + b·n
  int32_t best = 0;
  double expected = 1.0 + std::max(0, n_other_outputs);
  double best_rate = expected / (a + b * (n_other_tokens + 1));
  for (int32_t k = 1; k <= n_max; ++k) {
    expected += scratch[static_cast<size_t>(k - 1)];
    const double rate = expected / (a + b * (n_other_tokens + 1 + k) + std::max(0.0, draft_token_seconds) * k);
    if (rate > best_rate) {
      best_rate = rate;
      best = k;
    }
  }
  if (best == 0 && n_max >= 1 && acceptance.due_for_probe()) best = 1;
  return best;
}

}  // namespace longhaul::generate::speculative
