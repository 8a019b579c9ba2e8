// Name -> KvPolicy factory. Each policy file in kv/policies/ declares its options struct and defines one factory
// that reads them from the spec's parameters (kv/policy_params.h); kv/policy_registry.cc lists the factories, one
// line per policy.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "kv/policy_params.h"

namespace longhaul::kv {

// Reads every parameter the policy has from `params` (all of them before failing on any, so that the registry can
// name a key the policy does not have), checks them together, and builds the policy.
using KvPolicyFactory = Result<std::unique_ptr<KvPolicy>> (*)(const KvPolicyContext& context, PolicyParams& params);

// A policy built from a spec, with the cell storage the spec asks for.
struct BuiltKvPolicy {
  std::unique_ptr<KvPolicy> policy;
  KvQuantOptions storage;
};

// Builds the policy a spec names ("h2o:budget=512:bits=8"): the policy reads its parameters, read_kv_storage the
// cell storage's. Fails for an unknown name (listing the known ones), a value out of its range (naming the value
// and the limit), a key neither reads (naming the policy's parameters), or parameters the policy rejects together.
Result<BuiltKvPolicy> make_kv_policy(std::string_view spec, const KvPolicyContext& context);

// The cell storage every policy shares (KIVI, Liu et al., 2024; kv/kv_cache.h KvQuantOptions), read from the
// spec's bits, group and residual over the policy's defaults (default_kv_bits, f16_prefix_tokens), and checked
// against the policy (check_storage) and the model's head dims.
Result<KvQuantOptions> read_kv_storage(PolicyParams& params, const KvPolicy& policy, const KvShape& shape);

// Whether the policy `name` reads the model's head profile (duo, lserve): the commands then load or compute it.
bool kv_policy_uses_head_profile(std::string_view name);

// Whether the policy `name` reads the parameter `key` of its own (not the cell storage's): asked of its factory, as
// --help is. False for an unknown name.
bool kv_policy_takes_parameter(std::string_view name, std::string_view key);

// Whether the policy `name` takes Twilight's top_p: those that select, per decode query, the pages each KV head
// reads within a budget (quest, lserve, hip, recycled; infllm and longheads select too, but read what they place
// whole). False for an unknown name.
bool kv_policy_takes_top_p(std::string_view name);

// Registered policy names, in registry order.
std::vector<std::string> kv_policy_names();

// What --help and the README say about each policy: its description and the parameters its factory reads (asked
// of it with an empty spec, so the list is the code's own), and the cell storage's parameters.
struct KvPolicyDoc {
  std::string name;
  std::string description;
  std::vector<ParamDoc> params;
};
std::vector<KvPolicyDoc> kv_policy_docs();
std::vector<ParamDoc> kv_storage_docs();
// The policies and their parameters as lines of text, for the commands' --help.
std::string kv_policy_help();

// The factories, one per file in kv/policies/.
Result<std::unique_ptr<KvPolicy>> make_full_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_streaming_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_lm_infinite_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_h2o_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_a2sf_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_tova_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_snapkv_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_kv_quant_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_quest_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_recycled_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_hip_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_lserve_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_duo_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_infllm_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_longheads_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_retrieval_policy(const KvPolicyContext& context, PolicyParams& params);
Result<std::unique_ptr<KvPolicy>> make_actqkv_policy(const KvPolicyContext& context, PolicyParams& params);

struct HeadProfile;
// duo: which KV heads keep every cell, [n_layer * n_head_kv]: the round(fraction * n) best-scored heads of the n
// heads of global layers (layer_window[il] == 0); sliding-window layers' heads are never chosen.
std::vector<bool> choose_retrieval_heads(const HeadProfile& profile, const std::vector<int32_t>& layer_window,
                                         float fraction);
// duo and lserve: choose_retrieval_heads on the model's head profile (KvPolicyContext::head_profile); fails, naming
// `policy`, when there is none or it was measured on a model of another shape.
Result<std::vector<bool>> retrieval_heads_of_profile(const KvPolicyContext& context, float fraction,
                                                     const std::string& policy);

}  // namespace longhaul::kv
