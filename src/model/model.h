// A loaded model: configuration, weights (views into the mapped GGUF file) and
// the forward pass. The model itself is immutable after load and can be shared by
// sessions; everything a step mutates lives in the KV cache and the ForwardState.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "gguf/gguf_file.h"
#include "kernels/quant.h"
#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/weights.h"

namespace longhaul::model {

class Architecture;

// Buffers reused across steps so that a decode step allocates nothing.
// One per session; grown to the largest step seen.
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
  std::vector<float> scores;    // [n_threads, max cells] attention scores, one row per thread
  std::vector<int32_t> cells;   // [n_tokens] KV cell of each token (in every layer)
  std::vector<int32_t> out_rows;  // [n_logits] batch index of each token whose logits are returned
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

  // Runs one step. Appends the batch's tokens to their sequences in `cache`,
  // and writes the logits of the tokens marked in batch.logits, in batch order,
  // to `logits`: [batch.n_logits(), n_vocab] (resized). Fails, leaving the cache
  // unchanged, for token ids outside the vocabulary, unknown sequences or a full context.
  // `policy` (may be null) observes attention probabilities during the step; eviction
  // is the caller's business and happens between steps.
  Status forward(const Batch& batch, kv::KvCache& cache, ForwardState& state, ThreadPool& pool,
                 std::vector<float>& logits, kv::KvPolicy* policy = nullptr) const;

  // Bytes of weights one decode step reads (all matrices; the embedding row is negligible).
  int64_t weight_bytes_per_token() const;

 private:
  Model(gguf::GgufFile file, ModelConfig config, ModelWeights weights, const Architecture* arch);

  gguf::GgufFile file_;
  ModelConfig config_;
  ModelWeights weights_;
  const Architecture* arch_;
};

}  // namespace longhaul::model
