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
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace longhaul::generate {

struct SessionOptions {
  int32_t n_ctx = 4096;    // tokens the KV cache holds (0 = the model's training context)
  int32_t n_batch = 512;   // prompt tokens per forward step
  int32_t n_threads = 0;   // worker threads including the caller (0 = all cores this process may use)
};

// Called after each prefill chunk with (tokens done, tokens total).
using ProgressFn = std::function<void(int64_t, int64_t)>;

class Session {
 public:
  static Result<std::unique_ptr<Session>> create(const model::Model& model, const SessionOptions& options);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const model::Model& model() const { return model_; }
  int32_t n_ctx() const { return n_ctx_; }
  int32_t n_threads() const { return pool_.n_threads(); }
  // Tokens held in the cache (the next token's position).
  int32_t n_past() const { return cache_.next_position(seq_); }

  // Appends tokens to the conversation; afterwards logits() are those of the last token.
  Status feed(std::span<const int32_t> tokens, const ProgressFn& progress = nullptr);
  // Logits of the last token fed: [n_vocab].
  const float* logits() const { return logits_.data(); }
  // Logits of every token of the last feed() when it was called with all_logits: [n_tokens, n_vocab].
  Status feed_all_logits(std::span<const int32_t> tokens, std::vector<float>& out);

  // Forgets the conversation (the cache keeps its pages for reuse).
  void reset();
  // Keeps the first n_keep tokens of the conversation.
  void truncate(int32_t n_keep) { cache_.truncate(seq_, n_keep); }

  const kv::KvCache& cache() const { return cache_; }

 private:
  Session(const model::Model& model, const SessionOptions& options, kv::KvCache cache, kv::SeqId seq, int32_t n_ctx,
          int n_threads);
  Status run(std::span<const int32_t> tokens, bool all_logits, std::vector<float>* out, const ProgressFn& progress);

  const model::Model& model_;
  SessionOptions options_;
  kv::KvCache cache_;
  kv::SeqId seq_;
  int32_t n_ctx_;
  ThreadPool pool_;
  model::ForwardState state_;
  model::Batch batch_;
  std::vector<float> logits_;  // [n_vocab] of the last token
  std::vector<float> step_logits_;
};

}  // namespace longhaul::generate
