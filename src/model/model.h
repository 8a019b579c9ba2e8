// A loaded model: configuration, weights (views into the mapped GGUF file) and
// the forward pass. The model itself is immutable after load and can be shared by
// sessions; everything a step mutates lives in the KV cache and the ForwardState.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "base/huge_page_buffer.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "gguf/gguf_file.h"
#include "kernels/quant.h"
#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "model/attention.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/sublayers.h"
#include "model/weights.h"

namespace longhaul::model {

class Architecture;

// Buffers reused across steps so that a decode step allocates nothing: every scratch buffer of the forward pass,
// per-thread ones included, lives here (no thread_local), so one thread pool can serve several engines.
// One per engine; grown to the largest step seen.
struct ForwardState {
  std::vector<float> x;         // [n_tokens, n_embd] residual stream
  std::vector<float> xn;        // [n_tokens, n_embd] normalised input of a block
  std::vector<float> q;         // [n_tokens, n_head * head_dim_k]
  std::vector<float> k;         // [n_tokens, n_head_kv * head_dim_k]
  std::vector<float> v;         // [n_tokens, n_head_kv * head_dim_v]
  std::vector<float> attn;      // [n_tokens, n_head * head_dim_v] attention output before W_o
  std::vector<float> proj;      // [n_tokens, n_embd] output of W_o / W_down
  std::vector<float> gate;      // [n_tokens, n_ff]
  std::vector<float> up;        // [n_tokens, n_ff]
  std::vector<int32_t> cells;   // [n_tokens] KV cell of each token (in every layer)
  std::vector<int32_t> out_rows;  // [n_outputs] batch index of each token whose logits / embedding is returned
  AttentionPlan plan;                              // which cells each query of the step sees
  std::vector<AttentionScratch> attention_threads;  // [n_threads] scratch of the attention passes
  std::vector<float> attention_partials;            // flash partial results, AttentionTask::partial
  std::vector<AttentionTask> attention_tasks;       // [tasks] of the flash pass, unit by unit
  std::vector<int64_t> attention_unit_tasks;        // [n_units + 1] the first task of each unit
  std::vector<std::atomic<int32_t>> attention_pending;  // [n_units] tasks of each unit not yet done
  kernels::RopeAngles rope_global;  // angles for the step's positions at the global base
  kernels::RopeAngles rope_local;   // ... at the local (sliding-window) base
  std::vector<kernels::MatmulScratch> matmul;  // [1] scratch of the matrix products
};

class Model {
 public:
  // Opens and validates the GGUF file, reads the configuration with the
  // architecture's rules, and binds every tensor (names, types, shapes checked).
  static Result<std::unique_ptr<Model>> load(const std::string& path);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const gguf::GgufFile& file() const { return file_; }

  // The KV layout this model needs.
  kv::KvShape kv_shape() const;

  // Runs one step. Appends the batch's tokens to their sequences in `cache` and writes the outputs the batch asks
  // for, in batch order, to `out` (resized): logits of the kLogits tokens, final normalised hidden states of the
  // kEmbedding tokens. Fails, leaving the cache unchanged, for token ids outside the vocabulary, unknown
  // sequences, bad tree parents or a full context.
  // policies[seq] (indexed by SeqId; missing or null = none) gives each sequence's head spans and page selection
  // and, when observe is set, hears its attention probabilities; eviction is the caller's business and happens
  // between steps. `skip`: the sub-layers the pass leaves out (model/sublayers.h; made for this model or empty).
  struct Outputs {
    std::vector<float> logits;      // [n_logits, n_vocab]
    std::vector<float> embeddings;  // [n_embeddings, n_embd]
  };
  Status forward(const Batch& batch, kv::KvCache& cache, ForwardState& state, ThreadPool& pool, Outputs& out,
                 std::span<const StepPolicy> policies = {}, const SublayerSkip& skip = {}) const;

  // Bytes of weights one decode step reads (all matrices but those of the skipped sub-layers; the embedding row is
  // negligible).
  int64_t weight_bytes_per_token(const SublayerSkip& skip = {}) const;

 private:
  Model(gguf::GgufFile file, ModelConfig config, ModelWeights weights, const Architecture* arch);
  // Stores the matrices the active ISA reads faster interleaved (kernels::prefers_interleaved) in that layout, in
  // one huge-page buffer. Fails only when that buffer cannot be mapped.
  Status interleave_weights();

  gguf::GgufFile file_;
  ModelConfig config_;
  ModelWeights weights_;
  const Architecture* arch_;
  HugePageBuffer interleaved_;  // the interleaved copies the weights point into, one after the other
};

}  // namespace longhaul::model
