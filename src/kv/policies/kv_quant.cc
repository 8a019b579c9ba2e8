// kv-quant: KIVI (Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache").
// Full retention (as `full`: nothing is evicted, the context size bounds memory) with quantized cell storage:
// keys per channel over groups of G tokens, values per token over groups of 32 channels, the R most recent
// tokens in f16. The quantization itself is the cache's (kv/kv_cache.h, kv/quantized_page.h), so every other
// policy can use it as well (`h2o:bits=8`); this policy only makes it the default, at 8 bits.
//
// Defaults: 8 bits, G = 32, R = 128. KIVI's paper uses G = 32 and R = 128 with 2 and 4 bits; 8 bits is our
// default because it changes a 135M model's greedy output least (`kv-quant:bits=4` is one parameter away). The
// storage parameters (bits, group, residual) are read for every policy in one place (read_kv_storage,
// kv/policy_registry.h), not by this class: it has no parameters of its own.
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

constexpr int32_t kDefaultBits = 8;

class KvQuantPolicy final : public KvPolicy {
 public:
  using KvPolicy::KvPolicy;
  // No state indexed by sequence: a copy carries on for the forked sequence.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override { return std::unique_ptr<KvPolicy>(new KvQuantPolicy(*this)); }
  std::string name() const override { return "kv-quant"; }
  // The storage (bits, group, residual) is appended by the Session, which owns it (Session::describe_kv).
  std::string describe() const override { return "kv-quant"; }
  int32_t max_cells() const override { return 0; }
  bool shares_prefix() const override { return true; }  // keeps every cell where it was written
  int32_t default_kv_bits() const override { return kDefaultBits; }
  Status check_storage(const KvQuantOptions& storage) const override {
    if (storage.bits == 16) return Status::error("kv-quant: bits=16 stores f16 cells, which is the full policy; use 8 or 4");
    return Status::ok();
  }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_kv_quant_policy(const KvPolicyContext& context, PolicyParams&) {
  return std::unique_ptr<KvPolicy>(new KvQuantPolicy(context));
}

}  // namespace longhaul::kv
