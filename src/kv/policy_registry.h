// Name -> KvPolicy factory. Each policy file in kv/policies/ defines one factory;
// kv/policy_registry.cc lists them, one line per policy.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "kv/kv_policy.h"

namespace longhaul::kv {

using KvPolicyFactory = Result<std::unique_ptr<KvPolicy>> (*)(const KvPolicyContext& context,
                                                             const KvPolicyOptions& options);

// Builds the policy called `name`; fails for unknown names (listing the known ones)
// and for parameters the policy rejects (naming the value and the limit).
Result<std::unique_ptr<KvPolicy>> make_kv_policy(const std::string& name, const KvPolicyContext& context,
                                                 const KvPolicyOptions& options);

// A KV policy as written on a command line or in a request: "name" or "name:key=value:key=value..."
// (e.g. "h2o:budget=512:recent=128", "kv-quant:bits=4", "duo:retrieval=0.25"), over the defaults `base`.
struct KvPolicyChoice {
  std::string name;
  KvPolicyOptions options;
};
// Fails naming the parameter, the spec and the accepted form; the name is checked by make_kv_policy.
Result<KvPolicyChoice> parse_kv_policy(std::string_view spec, const KvPolicyOptions& base);

// Registered policy names, in registry order.
std::vector<std::string> kv_policy_names();

// The factories, one per file in kv/policies/.
Result<std::unique_ptr<KvPolicy>> make_full_policy(const KvPolicyContext& context, const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_streaming_policy(const KvPolicyContext& context,
                                                        const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_lm_infinite_policy(const KvPolicyContext& context,
                                                          const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_h2o_policy(const KvPolicyContext& context, const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_a2sf_policy(const KvPolicyContext& context, const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_tova_policy(const KvPolicyContext& context, const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_snapkv_policy(const KvPolicyContext& context, const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_kv_quant_policy(const KvPolicyContext& context, const KvPolicyOptions& options);
Result<std::unique_ptr<KvPolicy>> make_duo_policy(const KvPolicyContext& context, const KvPolicyOptions& options);

struct HeadProfile;
// duo: which KV heads keep every cell, [n_layer * n_head_kv]: the round(fraction * n) best-scored heads of the n
// heads of global layers (layer_window[il] == 0); sliding-window layers' heads are never chosen.
std::vector<bool> choose_retrieval_heads(const HeadProfile& profile, const std::vector<int32_t>& layer_window,
                                         float fraction);

}  // namespace longhaul::kv
