// h2o: Heavy-Hitter Oracle (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for
// Efficient Generative Inference of Large Language Models"). A fixed budget of B
// cells: the R most recent tokens plus the B - R "heavy hitters" with the largest
// attention accumulated over every query so far.
//
// As in the paper, each KV head ranks and keeps its own heavy hitters (scores summed
// over the query heads that share it; KvCache::retain_cells_per_head); the recent
// window is the same tokens for every head, so it stays the last R cells.
// Deviations: a layer with a sliding window (whose mask needs exact positions) and
// quantized storage (whose cells cannot leave their key groups) keep one set per
// layer, ranked by the scores summed over its heads; and a step of n tokens evicts n
// at once, ranked by the scores accumulated before the step (the paper evicts one
// token per generated token, which is what decode does here).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kv/policies/accumulated_attention.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {


class AccumulatedAttentionPolicy final : public KvPolicy {
 public:
  AccumulatedAttentionPolicy(const KvPolicyContext& context, std::string name, int32_t budget, int32_t recent,
                             float forgetting_factor, bool per_head)
      : KvPolicy(context),
        name_(std::move(name)),
        budget_(budget),
        recent_(recent),
        forget_(forgetting_factor),
        per_head_(per_head),
        scores_(context.shape.n_layer * context.shape.n_head_kv) {}

  // No state indexed by sequence: a copy carries on for the forked sequence.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override { return std::unique_ptr<KvPolicy>(new AccumulatedAttentionPolicy(*this)); }
  std::string name() const override { return name_; }
  std::string describe() const override {
    std::string d = name_ + "(budget=" + std::to_string(budget_) + ", recent=" + std::to_string(recent_);
    if (forget_ != 1.0f) {
      char buf[32];
      std::snprintf(buf, sizeof buf, ", forget=%g", static_cast<double>(forget_));
      d += buf;
    }
    return d + describe_select(per_head_) + ")";
  }
  int32_t max_cells() const override { return budget_; }
  // Large steps would evict much of the cache on stale scores; a quarter of the budget bounds that.
  int32_t max_step_tokens() const override { return std::max(1, budget_ / 4); }
  bool needs_scores() const override { return true; }

  EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const override {
    EvictionPlan plan;
    const int32_t n = cache.n_cells(seq, 0);
    if (n + next.n_tokens <= budget_) return plan;
    const int32_t n_keep = budget_ - next.n_tokens;
    LH_CHECK_MSG(n_keep >= 0, "h2o: a step brings more tokens than the budget");
    const int32_t n_recent = std::min(recent_, n_keep);
    return plan_from_head_scores(cache, seq, scores_, n, per_head_, [&](const std::vector<float>& score) {
      std::vector<int32_t> keep = top_cells(score, 0, n - n_recent, n_keep - n_recent);
      for (int32_t c = n - n_recent; c < n; ++c) keep.push_back(c);
      return keep;
    });
  }

  // With forgetting, the step's n tokens age the past by forget^n, and a query q of the
  // step weighs forget^(last - q): token by token this is score = forget * score + attention.
  void begin_step(SeqId, const StepInfo& next) override {
    last_query_ = next.first_position + next.n_tokens - 1;
    if (forget_ == 1.0f) return;
    const auto decay = static_cast<float>(std::pow(static_cast<double>(forget_), next.n_tokens));
    for (int32_t i = 0; i < context_.shape.n_layer * context_.shape.n_head_kv; ++i) scores_.scale(i, decay);
  }

  void observe_scores(SeqId, int32_t il, int32_t kv_head, int32_t query_position,
                      std::span<const float> probs) override {
    const float weight =
        forget_ == 1.0f ? 1.0f
                        : static_cast<float>(std::pow(static_cast<double>(forget_), last_query_ - query_position));
    scores_.accumulate(il * context_.shape.n_head_kv + kv_head, probs, weight);
  }

  void truncate(KvCache&, SeqId, int32_t n_cells) override { scores_.truncate(n_cells); }

 protected:
  void after_retain(KvCache&, SeqId, int32_t il, std::span<const int32_t> keep) override {
    scores_.retain_rows(il * context_.shape.n_head_kv, context_.shape.n_head_kv, keep);
  }
  void after_retain_per_head(KvCache&, SeqId, int32_t il, std::span<const std::vector<int32_t>> keep) override {
    scores_.retain_rows(il * context_.shape.n_head_kv, keep);
  }

 public:
  std::vector<double> statistics() const override {
    std::vector<double> s = scores_.values();
    s.push_back(last_query_);
    return s;
  }

 private:
  std::string name_;
  int32_t budget_;
  int32_t recent_;
  float forget_;            // 1 = H2O's plain sum
  bool per_head_;           // each KV head keeps its own heavy hitters where the layer allows it
  int32_t last_query_ = 0;  // position of the step's last token
  CellScores scores_;       // [n_layer * n_head_kv][n_cells] accumulated attention (one sequence per Session)
};

}  // namespace

std::unique_ptr<KvPolicy> make_accumulated_attention_policy(const KvPolicyContext& context, std::string name,
                                                            int32_t budget, int32_t recent, float forgetting_factor,
                                                            bool per_head) {
  return std::make_unique<AccumulatedAttentionPolicy>(context, std::move(name), budget, recent, forgetting_factor,
                                                      per_head);
}

namespace {

struct H2oOptions {
  int32_t budget = kDefaultKvBudget;  // B: cells each layer keeps
  int32_t recent = 0;                 // R: most recent tokens always kept, part of B (the paper's default: B / 2)
  bool select_per_head = true;        // each KV head keeps its own heavy hitters (the paper's rule), or the layer's
};

}  // namespace

Status check_recent_within_budget(const PolicyParams& params, int32_t recent, int32_t budget) {
  if (recent < budget) return Status::ok();
  return Status::error(params.name() + ": recent " + std::to_string(recent) + " must be below the budget " +
                       std::to_string(budget) + " (in '" + params.spec() + "')");
}

Result<std::unique_ptr<KvPolicy>> make_h2o_policy(const KvPolicyContext& context, PolicyParams& params) {
  H2oOptions o;
  o.budget = read_budget(params);
  // The paper's default splits the budget evenly between heavy hitters and recent tokens.
  o.recent = read_recent(params, o.budget);
  o.select_per_head = read_select_per_head(params);
  LH_RETURN_IF_ERROR(check_recent_within_budget(params, o.recent, o.budget));
  return make_accumulated_attention_policy(context, "h2o", o.budget, o.recent, 1.0f, o.select_per_head);
}

}  // namespace longhaul::kv
