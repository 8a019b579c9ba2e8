// A Session is one conversation: a single-sequence view over an Engine (generate/engine.h), for the callers
// that hold one sequence (run, chat, bench, eval). It feeds prompt tokens (prefill, in chunks of n_batch tokens per
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
#include "generate/engine.h"
#include "model/model.h"
#include "model/sparse_prefill.h"

namespace longhaul::generate {

struct SessionOptions {
  int32_t n_ctx = 4096;    // tokens the KV cache holds (0 = the model's training context); policies that
                           // bound memory (streaming, h2o, tova) use their own budget instead
  int32_t n_batch = 512;   // prompt tokens per forward step (capped by the policy's max_step_tokens)
  int32_t n_threads = 0;   // worker threads including the caller (0 = all cores this process may use)
  int32_t page_tokens = 0;  // KV cells per page (0 = the policy's choice, else 256)
  std::string kv_policy = "full";  // KV policy with its parameters, "name:key=value:..." (SequenceOptions::kv_policy)
  std::shared_ptr<const kv::HeadProfile> head_profile;  // the model's, for duo (null = none given)
  model::PrefillAttentionOptions prefill_attn;  // --prefill-attn (SequenceOptions::prefill_attn); default dense
  model::SublayerSkip skip;  // sub-layers every step leaves out (--prune-sublayers; EngineOptions::skip); empty = none
};

class Session {
 public:
  static Result<std::unique_ptr<Session>> create(const model::Model& model, const SessionOptions& options);
  // With a policy object instead of options.kv_policy (a policy the registry does not list, e.g. the head
  // calibration's scorer), stored as the policy's defaults say.
  static Result<std::unique_ptr<Session>> create(const model::Model& model, const SessionOptions& options,
                                                 std::unique_ptr<kv::KvPolicy> policy);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  const model::Model& model() const { return engine_->model(); }
  int32_t n_ctx() const { return engine_->n_ctx(seq_); }
  int32_t n_threads() const { return engine_->n_threads(); }
  // Tokens of the conversation so far (the next token's position). Under an evicting
  // policy the cache holds fewer: see n_cells().
  int32_t n_past() const { return engine_->n_past(seq_); }
  // Cells the cache holds per layer.
  int32_t n_cells() const { return engine_->n_cells(seq_); }
  // True when no further token fits (Engine::context_full).
  bool context_full() const { return engine_->context_full(seq_); }

  // Appends tokens to the conversation; afterwards logits() are those of the last token. A feed cancelled by
  // `progress` fails with a message saying so.
  Status feed(std::span<const int32_t> tokens, const ProgressFn& progress = nullptr);
  // Logits of the last token fed: [n_vocab].
  const float* logits() const { return logits_.data(); }
  // Feeds tokens and returns the logits of every one of them: out [n_tokens, n_vocab].
  Status feed_all_logits(std::span<const int32_t> tokens, std::vector<float>& out);

  // Forgets the conversation (the cache keeps its pages for reuse).
  void reset();
  // Keeps the tokens at positions < n_keep (under the full policy: the first n_keep).
  void truncate(int32_t n_keep);

  const kv::KvCache& cache() const { return engine_->cache(); }
  const kv::KvPolicy& policy() const { return engine_->policy(seq_); }
  // The policy's describe() plus the cell storage when quantized, e.g. "full+int8(group=32, residual=128)".
  std::string describe_kv() const { return engine_->describe_kv(seq_); }
  Engine& engine() { return *engine_; }
  kv::SeqId sequence() const { return seq_; }
  // Key cells the conversation's decode tokens read, and the cells held then (Engine::keys_read).
  model::AttentionPlan::KeysRead keys_read() const { return engine_->keys_read(seq_); }

 private:
  friend class SessionLogits;
  Session(std::unique_ptr<Engine> engine, kv::SeqId seq);
  std::unique_ptr<Engine> engine_;
  kv::SeqId seq_;
  std::vector<float> logits_;  // [n_vocab] of the last token
};

}  // namespace longhaul::generate
