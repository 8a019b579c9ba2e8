#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

struct Entry {
  const char* name;
  KvPolicyFactory make;
};

// One line per policy.
constexpr Entry kPolicies[] = {
    {"full", make_full_policy},
    {"streaming", make_streaming_policy},
    {"lm-infinite", make_lm_infinite_policy},
    {"h2o", make_h2o_policy},
    {"a2sf", make_a2sf_policy},
    {"tova", make_tova_policy},
    {"snapkv", make_snapkv_policy},
    {"kv-quant", make_kv_quant_policy},
    {"duo", make_duo_policy},
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_kv_policy(const std::string& name, const KvPolicyContext& context,
                                                 const KvPolicyOptions& options) {
  for (const Entry& e : kPolicies)
    if (name == e.name) return e.make(context, options);
  std::string known;
  for (const Entry& e : kPolicies) known += (known.empty() ? "" : ", ") + std::string(e.name);
  return Status::error("unknown KV policy '" + name + "' (known: " + known + ")");
}

std::vector<std::string> kv_policy_names() {
  std::vector<std::string> names;
  for (const Entry& e : kPolicies) names.emplace_back(e.name);
  return names;
}

}  // namespace longhaul::kv
