// a2sf: Accumulative Attention Score with Forgetting factor (Jo & Shin, 2024, "A2SF:
// Accumulative Attention Scoring with Forgetting Factor for Token Pruning in
// Transformer Decoder"). H2O's rule (recent window + heaviest accumulated attention)
// with past attention decayed by a forgetting factor at every token, so that tokens
// which arrived early are not favoured merely for having been scored more often.
// The default factor 0.9 is ours; the paper tunes the factor per model and task.
#include "kv/policies/accumulated_attention.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {

Result<std::unique_ptr<KvPolicy>> make_a2sf_policy(const KvPolicyContext& context, const KvPolicyOptions& options) {
  const int32_t budget = options.budget > 0 ? options.budget : kDefaultKvBudget;
  const int32_t recent = options.recent > 0 ? options.recent : budget / 2;
  const float forget = options.forgetting_factor > 0.0f ? options.forgetting_factor : 0.9f;
  if (budget < 2) return Status::error("a2sf: --kv-budget " + std::to_string(budget) + " must be >= 2");
  if (recent >= budget)
    return Status::error("a2sf: --recent " + std::to_string(recent) + " must be below the budget " +
                         std::to_string(budget));
  if (!(forget > 0.0f && forget <= 1.0f))
    return Status::error("a2sf: --forgetting " + std::to_string(forget) + " is outside (0, 1]");
  return make_accumulated_attention_policy(context, "a2sf", budget, recent, forget, options.select_per_head);
}

}  // namespace longhaul::kv
