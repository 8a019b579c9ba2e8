#include "generate/session.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "kv/policy_registry.h"

namespace longhaul::generate {

Result<std::unique_ptr<Session>> Session::create(const model::Model& model, const SessionOptions& options) {
  LH_ASSIGN_OR_RETURN(std::unique_ptr<kv::KvPolicy> policy,
                      kv::make_kv_policy(options.kv_policy, kv_policy_context(model), options.kv_options));
  return create(model, options, std::move(policy));
}

Result<std::unique_ptr<Session>> Session::create(const model::Model& model, const SessionOptions& options,
                                                 std::unique_ptr<kv::KvPolicy> policy) {
  LH_CHECK(policy != nullptr);
  const int32_t n_ctx = options.n_ctx > 0 ? options.n_ctx : model.config().n_ctx_train;
  if (n_ctx < 1 || n_ctx > (1 << 24)) return Status::error("context size " + std::to_string(n_ctx) + " is outside [1, 16777216]");
  if (options.n_batch < 1) return Status::error("batch size " + std::to_string(options.n_batch) + " must be >= 1");
  if (options.n_threads < 0 || options.n_threads > 1024)
    return Status::error("thread count " + std::to_string(options.n_threads) + " is outside [0, 1024]");
  kv::KvCacheOptions kv_options;
  if (options.page_tokens < 0 || options.page_tokens > (1 << 20))
    return Status::error("KV page size " + std::to_string(options.page_tokens) + " is outside [0, 1048576]");
  if (policy->page_tokens() > 0) kv_options.page_tokens = policy->page_tokens();
  if (options.page_tokens > 0) kv_options.page_tokens = options.page_tokens;
  // A policy that bounds memory sizes the cache itself; the others fill the context.
  kv_options.max_cells = policy->max_cells() > 0 ? policy->max_cells() : n_ctx;
  kv_options.max_sequences = 1;
  LH_ASSIGN_OR_RETURN(const kv::KvQuantOptions quant, kv_storage(options.kv_options, *policy, model.kv_shape()));
  kv::KvCache cache(model.kv_shape(), kv_options, quant);
  LH_ASSIGN_OR_RETURN(kv::SeqId seq, cache.add_sequence());
  const int n_threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
  return std::unique_ptr<Session>(
      new Session(model, options, std::move(cache), seq, n_ctx, n_threads, std::move(policy)));
}

Session::Session(const model::Model& model, const SessionOptions& options, kv::KvCache cache, kv::SeqId seq,
                 int32_t n_ctx, int n_threads, std::unique_ptr<kv::KvPolicy> policy)
    : model_(model),
      options_(options),
      cache_(std::move(cache)),
      policy_(std::move(policy)),
      seq_(seq),
      n_ctx_(n_ctx),
      pool_(n_threads) {}

Result<kv::KvQuantOptions> kv_storage(const kv::KvPolicyOptions& options, const kv::KvPolicy& policy,
                                      const kv::KvShape& shape) {
  kv::KvQuantOptions quant;
  quant.bits = options.kv_bits > 0 ? options.kv_bits : policy.default_kv_bits();
  if (quant.bits != 16 && quant.bits != 8 && quant.bits != 4)
    return Status::error("--kv-bits " + std::to_string(quant.bits) + " is not one of 16, 8, 4");
  if (options.kv_group < 1 || options.kv_group > 4096)
    return Status::error("--kv-group " + std::to_string(options.kv_group) + " is outside [1, 4096]");
  if (options.kv_residual < 0) return Status::error("--kv-residual " + std::to_string(options.kv_residual) + " must be >= 0");
  if (quant.bits == 4 && (shape.head_dim_k % 2 != 0 || shape.head_dim_v % 2 != 0))
    return Status::error("--kv-bits 4 needs even head dims; this model has " + std::to_string(shape.head_dim_k) + " and " +
                         std::to_string(shape.head_dim_v));
  quant.group = options.kv_group;
  quant.residual = options.kv_residual;
  // The attention sinks of streaming and lm-infinite stay f16 (those policies re-write them in place); the other
  // policies keep the same few first tokens in f16, which costs --sink cells per layer.
  quant.f16_prefix = std::clamp(options.sink_tokens, 0, 1024);
  return quant;
}

std::string Session::describe_kv() const {
  std::string out = policy_->describe();
  const kv::KvQuantOptions& q = cache_.quant_options();
  if (q.bits < 16)
    out += "+int" + std::to_string(q.bits) + "(group=" + std::to_string(q.group) + ", residual=" + std::to_string(q.residual) +
           ")";
  return out;
}

kv::KvPolicyContext kv_policy_context(const model::Model& model) {
  const model::ModelConfig& cfg = model.config();
  kv::KvPolicyContext context;
  context.shape = model.kv_shape();
  context.rope.resize(static_cast<size_t>(cfg.n_layer));
  for (int32_t il = 0; il < cfg.n_layer; ++il) {
    kv::RopeSpec& r = context.rope[static_cast<size_t>(il)];
    r.n_rot = cfg.n_rot;
    r.style = cfg.rope_style;
    // As Model::forward: local (sliding-window) layers use their own base and no scaling.
    const bool local = cfg.is_local(il);
    r.freq_base = local ? cfg.rope_freq_base_local : cfg.rope_freq_base;
    r.freq_scale = local ? 1.0f : cfg.rope_freq_scale;
  }
  context.layer_window.resize(static_cast<size_t>(cfg.n_layer));
  for (int32_t il = 0; il < cfg.n_layer; ++il)
    context.layer_window[static_cast<size_t>(il)] = cfg.is_local(il) ? cfg.sliding_window : 0;
  return context;
}

void Session::reset() {
  cache_.clear_sequence(seq_);
  policy_->truncate(cache_, seq_, 0);
}

void Session::truncate(int32_t n_keep) {
  // Cells are in position order in every layer; keep those before n_keep. Layers may
  // have evicted different tokens, and every layer must hold the same number of
  // cells, so the smallest count applies (under the full policy: min(n_keep, n_cells)).
  int32_t keep = n_cells();
  for (int32_t il = 0; il < cache_.shape().n_layer; ++il) {
    const std::span<const int32_t> pos = cache_.positions(seq_, il);
    keep = std::min(keep, static_cast<int32_t>(std::lower_bound(pos.begin(), pos.end(), n_keep) - pos.begin()));
  }
  cache_.truncate(seq_, keep);
  policy_->truncate(cache_, seq_, keep);
}

Status Session::feed(std::span<const int32_t> tokens, const ProgressFn& progress) {
  return run(tokens, false, nullptr, progress);
}

Status Session::feed_all_logits(std::span<const int32_t> tokens, std::vector<float>& out) {
  return run(tokens, true, &out, nullptr);
}

Status Session::run(std::span<const int32_t> tokens, bool all_logits, std::vector<float>* out,
                    const ProgressFn& progress) {
  if (tokens.empty()) return Status::error("nothing to feed: empty token list");
  const int64_t n_total = static_cast<int64_t>(tokens.size());
  // Only a policy that does not bound memory can run out of room; the others evict.
  if (policy_->max_cells() == 0 && n_cells() + n_total > n_ctx_)
    return Status::error("context full: " + std::to_string(n_cells()) + " cached + " + std::to_string(n_total) +
                         " new tokens exceed the context size of " + std::to_string(n_ctx_) + " (raise -c/--ctx-size)");
  if (n_past() + n_total > INT32_MAX / 2)
    return Status::error("position " + std::to_string(n_past() + n_total) + " exceeds the limit of " +
                         std::to_string(INT32_MAX / 2));
  const int32_t n_vocab = model_.config().n_vocab;
  if (out != nullptr) out->resize(static_cast<size_t>(n_total * n_vocab));
  const int64_t step_tokens =
      policy_->max_step_tokens() > 0 ? std::min(options_.n_batch, policy_->max_step_tokens()) : options_.n_batch;
  for (int64_t begin = 0; begin < n_total; begin += step_tokens) {
    const int64_t end = std::min(n_total, begin + step_tokens);
    batch_.clear();
    int32_t pos = n_past();
    // Between steps: the policy makes room for this step, then hears which queries come.
    kv::StepInfo next;
    next.first_position = pos;
    next.n_tokens = static_cast<int32_t>(end - begin);
    next.starts_feed = begin == 0;
    policy_->apply_eviction(policy_->plan_eviction(cache_, seq_, next), cache_, seq_);
    policy_->begin_step(seq_, next);
    for (int64_t i = begin; i < end; ++i) batch_.add(tokens[static_cast<size_t>(i)], pos++, seq_, all_logits || i == n_total - 1);
    LH_RETURN_IF_ERROR(model_.forward(batch_, cache_, state_, pool_, step_logits_, policy_.get()));
    if (out != nullptr)
      std::memcpy(out->data() + begin * n_vocab, step_logits_.data(), step_logits_.size() * sizeof(float));
    if (end == n_total) {
      const float* last = step_logits_.data() + step_logits_.size() - static_cast<size_t>(n_vocab);
      logits_.assign(last, last + n_vocab);
    }
    if (progress) progress(end, n_total);
  }
  return Status::ok();
}

}  // namespace longhaul::generate
