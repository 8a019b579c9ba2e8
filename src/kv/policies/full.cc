// full: the baseline. Keeps every token; memory grows with the conversation up to
// the context size, as llama.cpp's default cache does.
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

class FullPolicy final : public KvPolicy {
 public:
  using KvPolicy::KvPolicy;
  // No state indexed by sequence: a copy carries on for the forked sequence.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override { return std::unique_ptr<KvPolicy>(new FullPolicy(*this)); }
  std::string name() const override { return "full"; }
  std::string describe() const override { return "full"; }
  int32_t max_cells() const override { return 0; }
  bool shares_prefix() const override { return true; }  // keeps every cell where it was written
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }
};

}  // namespace

// No parameters of its own.
Result<std::unique_ptr<KvPolicy>> make_full_policy(const KvPolicyContext& context, PolicyParams&) {
  return std::unique_ptr<KvPolicy>(new FullPolicy(context));
}

}  // namespace longhaul::kv
