// Views of a model's tensors: inside the mapped GGUF file, or in the model's interleaved copies.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/interleave.h"
#include "tensor/dtype.h"

namespace longhaul::model {

// A weight matrix W: [n_out, n_in] (GGUF dims [n_in, n_out]); a vector has n_out = 1.
struct Weight {
  tensor::DType type = tensor::DType::F32;
  const void* data = nullptr;
  int64_t n_in = 0;   // row length (GGUF ne[0])
  int64_t n_out = 0;  // rows (GGUF ne[1])
  std::string name;
  // kInterleaved16: `data` is the model's own copy in 16-row groups (kernels/interleave.h), made at load for the
  // kernels of the active ISA; kRows: the file's bytes.
  kernels::WeightLayout layout = kernels::WeightLayout::kRows;

  bool present() const { return data != nullptr; }
  const float* f32() const { return static_cast<const float*>(data); }  // only for F32 vectors (norm weights)
};

struct LayerWeights {
  Weight attn_norm;       // [n_embd]
  Weight attn_q;          // [n_head * head_dim_k, n_embd]
  Weight attn_k;          // [n_head_kv * head_dim_k, n_embd]
  Weight attn_v;          // [n_head_kv * head_dim_v, n_embd]
  Weight attn_output;     // [n_embd, n_head * head_dim_v]
  Weight attn_q_norm;     // [head_dim_k]        qk_norm only
  Weight attn_k_norm;     // [head_dim_k]        qk_norm only
  Weight attn_post_norm;  // [n_embd]            post_norms only
  Weight ffn_norm;        // [n_embd]
  Weight ffn_gate;        // [n_ff, n_embd]
  Weight ffn_up;          // [n_ff, n_embd]
  Weight ffn_down;        // [n_embd, n_ff]
  Weight ffn_post_norm;   // [n_embd]            post_norms only
};

struct ModelWeights {
  Weight token_embd;   // [n_vocab, n_embd]
  Weight output_norm;  // [n_embd]
  Weight output;       // [n_vocab, n_embd]; token_embd when tied
  std::vector<LayerWeights> layers;
};

}  // namespace longhaul::model
