// tova: Token Omission Via Attention (Oren et al., 2024, "Transformers are
// Multi-State RNNs"). A fixed budget of B cells; whenever the cache is over it, the
// cell the current query attends to least (attention averaged over the layer's
// heads, as the paper does) is dropped.
//
// The "current query" is the last token of the previous step: its attention row was
// observed during that step, and the eviction for the next step uses it. A step of
// n tokens drops the n lowest cells at once (the paper drops one per token, which is
// what decode does here).
#include <algorithm>

#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {


class TovaPolicy final : public KvPolicy {
 public:
  TovaPolicy(const KvPolicyContext& context, int32_t budget)
      : KvPolicy(context), budget_(budget), scores_(context.shape.n_layer) {}

  // No state indexed by sequence: a copy carries on for the forked sequence.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override { return std::unique_ptr<KvPolicy>(new TovaPolicy(*this)); }
  std::string name() const override { return "tova"; }
  std::string describe() const override { return "tova(budget=" + std::to_string(budget_) + ")"; }
  int32_t max_cells() const override { return budget_; }
  int32_t max_step_tokens() const override { return std::max(1, budget_ / 4); }
  bool needs_scores() const override { return true; }

  EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const override {
    EvictionPlan plan;
    const int32_t n = cache.n_cells(seq, 0);
    if (n + next.n_tokens <= budget_) return plan;
    const int32_t n_keep = budget_ - next.n_tokens;
    LH_CHECK_MSG(n_keep >= 0, "tova: a step brings more tokens than the budget");
    plan.evict = true;
    plan.keep.resize(static_cast<size_t>(cache.shape().n_layer));
    for (int32_t il = 0; il < cache.shape().n_layer; ++il)
      plan.keep[static_cast<size_t>(il)] = top_cells(scores_.get(il, n), 0, n, n_keep);
    return plan;
  }

  // Only the step's last query counts; its row replaces the previous one.
  void begin_step(SeqId, const StepInfo& next) override {
    last_query_ = next.first_position + next.n_tokens - 1;
    for (int32_t il = 0; il < context_.shape.n_layer; ++il) scores_.zero(il);
  }

  void observe_scores(SeqId, int32_t il, int32_t, int32_t query_position, std::span<const float> probs) override {
    if (query_position == last_query_) scores_.accumulate(il, probs);
  }

  void truncate(KvCache&, SeqId, int32_t n_cells) override { scores_.truncate(n_cells); }

 protected:
  void after_retain(KvCache&, SeqId, int32_t il, std::span<const int32_t> keep) override { scores_.retain(il, keep); }

 public:
  std::vector<double> statistics() const override {
    std::vector<double> s = scores_.values();
    s.push_back(last_query_);
    return s;
  }

 private:
  int32_t budget_;
  int32_t last_query_ = -1;  // position of the step's last token
  CellScores scores_;        // attention of the last query per cell, summed over heads
};

}  // namespace

namespace {

struct TovaOptions {
  int32_t budget = kDefaultKvBudget;  // B: cells each layer keeps
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_tova_policy(const KvPolicyContext& context, PolicyParams& params) {
  TovaOptions o;
  o.budget = read_budget(params);
  return std::unique_ptr<KvPolicy>(new TovaPolicy(context, o.budget));
}

}  // namespace longhaul::kv
