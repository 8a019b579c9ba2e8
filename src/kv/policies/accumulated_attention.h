// Shared by h2o and a2sf: a fixed budget of the most recent tokens plus the tokens
// with the largest accumulated attention, where past attention decays by a
// forgetting factor per token (1 = plain sum, which is H2O).
#pragma once

#include <memory>
#include <string>

#include "kv/kv_policy.h"
#include "kv/policy_params.h"

namespace longhaul::kv {

std::unique_ptr<KvPolicy> make_accumulated_attention_policy(const KvPolicyContext& context, std::string name,
                                                            int32_t budget, int32_t recent, float forgetting_factor,
                                                            bool per_head);

// The recent window is part of the budget: fails unless recent < budget, naming both and the spec.
Status check_recent_within_budget(const PolicyParams& params, int32_t recent, int32_t budget);

}  // namespace longhaul::kv
