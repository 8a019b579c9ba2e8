// A Session is one conversation with a model: its KV cache, forward buffers and
// thread pool. It feeds prompt tokens (prefill, in chunks of n_batch tokens per
// step, matrix-matrix) and generated tokens (decode, one per step).
//
// Thread-safety: a Session is used by one thread at a time. Move-only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "model/model.h"

namespace longhaul::generate {

struct SessionOptions {
  int32_t n_ctx = 4096;    // tokens the KV cache holds (0 = the model's training context); policies that
                           // bound memory (streaming, h2o, tova) use their own budget instead
  int32_t n_batch = 512;   // prompt tokens per forward step (capped by the policy's max_step_tokens)
  int32_t n_threads = 0;   // worker threads including the caller (0 = all cores this process may use)
  int32_t page_tokens = 0;  // KV cells per page (0 = the policy's choice, else 256)
  std::string kv_policy = "full";    // KV policy name, see kv/policy_registry.h ("full" = keep everything)
  kv::KvPolicyOptions kv_options;    // its parameters
};

// Called after each prefill chunk with (tokens done, tokens total).
using ProgressFn = std::function<void(int64_t, int64_t)>;

class Session {
 public:
  static Result<std::unique_ptr<Session>> create(const model::Model& model, const SessionOptions& options);
  // With a policy object instead of options.kv_policy (a policy the registry does not list, e.g. the head
  // calibration's scorer); options.kv_options still give the cell storage.
  static Result<std::unique_ptr<Session>> create(const model::Model& model, const SessionOptions& options,
                                                 std::unique_ptr<kv::KvPolicy> policy);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const model::Model& model() const { return model_; }
  int32_t n_ctx() const { return n_ctx_; }
  int32_t n_threads() const { return pool_.n_threads(); }
  // Tokens of the conversation so far (the next token's position). Under an evicting
  // policy the cache holds fewer: see n_cells().
  int32_t n_past() const { return cache_.next_position(seq_); }
  // Cells the cache holds per layer.
  int32_t n_cells() const { return cache_.n_cells(seq_, 0); }
  // True when no further token fits: the policy does not evict and n_ctx cells are used.
  bool context_full() const { return policy_->max_cells() == 0 && n_cells() >= n_ctx_; }

  // Appends tokens to the conversation; afterwards logits() are those of the last token.
  Status feed(std::span<const int32_t> tokens, const ProgressFn& progress = nullptr);
  // Logits of the last token fed: [n_vocab].
  const float* logits() const { return logits_.data(); }
  // Logits of every token of the last feed() when it was called with all_logits: [n_tokens, n_vocab].
  Status feed_all_logits(std::span<const int32_t> tokens, std::vector<float>& out);

  // Forgets the conversation (the cache keeps its pages for reuse).
  void reset();
  // Keeps the tokens at positions < n_keep (under the full policy: the first n_keep).
  void truncate(int32_t n_keep);

  const kv::KvCache& cache() const { return cache_; }
  const kv::KvPolicy& policy() const { return *policy_; }
  // The policy's describe() plus the cell storage when quantized, e.g. "full+int8(group=32, residual=128)".
  std::string describe_kv() const;

 private:
  Session(const model::Model& model, const SessionOptions& options, kv::KvCache cache, kv::SeqId seq, int32_t n_ctx,
          int n_threads, std::unique_ptr<kv::KvPolicy> policy);
  Status run(std::span<const int32_t> tokens, bool all_logits, std::vector<float>* out, const ProgressFn& progress);

  const model::Model& model_;
  SessionOptions options_;
  kv::KvCache cache_;
  std::unique_ptr<kv::KvPolicy> policy_;
  kv::SeqId seq_;
  int32_t n_ctx_;
  ThreadPool pool_;
  model::ForwardState state_;
  model::Batch batch_;
  std::vector<float> logits_;  // [n_vocab] of the last token
  std::vector<float> step_logits_;
};

// What a KV policy needs to know about `model` (cache shape, per-layer RoPE).
kv::KvPolicyContext kv_policy_context(const model::Model& model);

// The cache storage `options` ask for under `policy` (kv_bits 0 = the policy's default), checked: fails naming
// the value and the limit.
Result<kv::KvQuantOptions> kv_storage(const kv::KvPolicyOptions& options, const kv::KvPolicy& policy,
                                      const kv::KvShape& shape);

}  // namespace longhaul::generate
