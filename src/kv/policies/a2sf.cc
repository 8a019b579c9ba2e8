// a2sf: Accumulative Attention Score with Forgetting factor (Jo & Shin, 2024, "A2SF:
// Accumulative Attention Scoring with Forgetting Factor for Token Pruning in
// Transformer Decoder"). H2O's rule (recent window + heaviest accumulated attention)
// with past attention decayed by a forgetting factor at every token, so that tokens
// which arrived early are not favoured merely for having been scored more often.
// The default factor 0.9 is ours; the paper tunes the factor per model and task.
#include "kv/policies/accumulated_attention.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {

namespace {

struct A2sfOptions {
  int32_t budget = kDefaultKvBudget;  // B: cells each layer keeps
  int32_t recent = 0;                 // R: most recent tokens always kept, part of B (default B / 2, as h2o)
  float forget = 0.9f;                // accumulated attention decays by this per token, in (0, 1] (1 = h2o)
  bool select_per_head = true;        // each KV head keeps its own cells, or the layer's
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_a2sf_policy(const KvPolicyContext& context, PolicyParams& params) {
  A2sfOptions o;
  o.budget = read_budget(params);
  o.recent = read_recent(params, o.budget);
  o.forget = params.get_float("forget", o.forget, 0.0f, 1.0f, /*lo_open=*/true, "decay of past attention per token");
  o.select_per_head = read_select_per_head(params);
  LH_RETURN_IF_ERROR(check_recent_within_budget(params, o.recent, o.budget));
  return make_accumulated_attention_policy(context, "a2sf", o.budget, o.recent, o.forget, o.select_per_head);
}

}  // namespace longhaul::kv
