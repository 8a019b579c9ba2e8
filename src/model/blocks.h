// Building blocks shared by the architecture files: normalisation, projections and the gated feed-forward
// network; self-attention over the paged KV cache is model/attention.h.
// Each works on all tokens of a step at once (matrix-matrix for prefill).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cache.h"
#include "kernels/quant.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/weights.h"

namespace longhaul::model {

struct ForwardState;

// Everything one forward step works with.
struct StepContext {
  const ModelConfig& config;
  const ModelWeights& weights;
  const Batch& batch;
  kv::KvCache& cache;
  ForwardState& state;
  ThreadPool& pool;
  int32_t n_tokens;
};

// out[r, :] = rms_norm(in[r, :]) * w   for r < n_rows; rows of length n.
void norm_rows(StepContext& step, const float* in, const Weight& w, float* out, int64_t n_rows, int64_t n);

// The fused products y_i = W_i in over the step's token rows, in runs of one kind (the batch's prompt tokens on
// the ISA's prompt kernels, the rest on the decode kernels: kernels::MatmulRows), so a token's bits are its own in
// any step. in: [n_tokens, n_in]; each target's y: [n_tokens, ldy]; at most 4 targets.
void step_products(StepContext& step, const kernels::MatmulTarget* targets, int n_targets, int64_t n_in,
                   const float* in);

// out[t, :] = W in[t, :] for the step's tokens (step_products)   in: [n_tokens, w.n_in], out: [n_tokens, w.n_out]
void project(StepContext& step, const Weight& w, const float* in, float* out);

// W as one output of a fused product writing [n_tokens, W.n_out] rows to `out`.
kernels::MatmulTarget matmul_target(const Weight& w, float* out);

// Gated FFN: reads state.xn, writes down(act(gate(xn)) * up(xn)) to state.proj.
void feed_forward(StepContext& step, int32_t il);

// x[r, :] += delta[r, :] for the step's rows.
void add_residual(StepContext& step, float* x, const float* delta);

// Binding helpers for architecture files. `dims` are GGUF dims (ne[0] first).
Result<Weight> bind_tensor(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims);
// The same, but a missing tensor yields an empty Weight (optional tensors).
Result<Weight> bind_optional_tensor(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims);
// Reads an integer key and checks it lies in [lo, hi]; the error names key and range.
Result<int32_t> read_int_key(const gguf::GgufFile& file, const std::string& key, int64_t lo, int64_t hi);
Result<int32_t> read_int_key_or(const gguf::GgufFile& file, const std::string& key, int64_t lo, int64_t hi,
                                int32_t fallback);
Result<float> read_float_key_or(const gguf::GgufFile& file, const std::string& key, float fallback);

}  // namespace longhaul::model

namespace longhaul::model {
// Binds the tensors every supported decoder shares (embeddings, per-layer attention
// and gated FFN), plus QK-norm and post-norm weights when the config asks for them.
// A missing output.weight means the output projection is tied to token_embd.
Status bind_decoder_weights(const gguf::GgufFile& file, const ModelConfig& config, ModelWeights& weights);
// Reads the keys every decoder shares under `<arch>.` (block_count, embedding_length, ...).
Status read_decoder_config(const gguf::GgufFile& file, const std::string& arch, ModelConfig& config);
}  // namespace longhaul::model
