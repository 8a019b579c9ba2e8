// Hyper-parameters of a model, read from GGUF keys by the architecture's file in arch/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace longhaul::model {

enum class FfnActivation {
  kSilu,  // SwiGLU: down(silu(gate(x)) * up(x))  (Llama, Qwen, Mistral)
  kGelu,  // GeGLU:  down(gelu(gate(x)) * up(x))  (Gemma)
};

struct ModelConfig {
  std::string arch;          // general.architecture: "llama", "gemma3"
  std::string name;          // general.name, for display
  int32_t n_vocab = 0;
  int32_t n_ctx_train = 0;   // context length the model was trained at
  int32_t n_embd = 0;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim_k = 0;    // per-head key/query size
  int32_t head_dim_v = 0;    // per-head value size
  int32_t n_ff = 0;
  int32_t n_rot = 0;         // leading dims of each head that RoPE rotates
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;        // global-attention layers
  float rope_freq_base_local = 10000.0f;  // sliding-window layers (Gemma 3 uses 10K locally, 1M globally)
  float rope_freq_scale = 1.0f;           // linear position scaling; 1 = off
  kernels::RopeStyle rope_style = kernels::RopeStyle::kNormal;
  int32_t sliding_window = 0;             // tokens a local layer sees (itself included); 0 = no local layers
  std::vector<uint8_t> layer_is_local;    // [n_layer] 1 = sliding-window layer
  float embedding_scale = 1.0f;           // token embeddings are multiplied by this (Gemma: sqrt(n_embd))
  float attention_scale = 0.0f;           // scale of q.k; 0 = 1/sqrt(head_dim_k)
  FfnActivation activation = FfnActivation::kSilu;
  bool qk_norm = false;                   // RMSNorm on each query/key head before RoPE (Gemma 3, Qwen 3)
  bool post_norms = false;                // RMSNorm after attention and after the FFN (Gemma 2/3)
  float final_logit_softcap = 0.0f;       // logits = cap * tanh(logits / cap); 0 = off
  bool tied_output = false;               // output projection shares token_embd

  bool is_local(int32_t il) const { return !layer_is_local.empty() && layer_is_local[static_cast<size_t>(il)] != 0; }
};

}  // namespace longhaul::model
