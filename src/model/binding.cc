// Reading the hyper-parameters and tensors that all supported decoders share.
#include <cmath>

#include "model/blocks.h"

namespace longhaul::model {

Status read_decoder_config(const gguf::GgufFile& file, const std::string& arch, ModelConfig& c) {
  c.arch = arch;
  c.name = file.get_string("general.name").value_or(arch);
  const std::string p = arch + ".";
  constexpr int64_t kMaxDim = 1 << 20;
  LH_ASSIGN_OR_RETURN(c.n_layer, read_int_key(file, p + "block_count", 1, 4096));
  LH_ASSIGN_OR_RETURN(c.n_embd, read_int_key(file, p + "embedding_length", 1, kMaxDim));
  LH_ASSIGN_OR_RETURN(c.n_ff, read_int_key(file, p + "feed_forward_length", 1, kMaxDim));
  LH_ASSIGN_OR_RETURN(c.n_head, read_int_key(file, p + "attention.head_count", 1, 4096));
  LH_ASSIGN_OR_RETURN(c.n_head_kv, read_int_key_or(file, p + "attention.head_count_kv", 1, 4096, c.n_head));
  LH_ASSIGN_OR_RETURN(c.n_ctx_train, read_int_key_or(file, p + "context_length", 1, 1 << 24, 2048));
  LH_ASSIGN_OR_RETURN(c.head_dim_k, read_int_key_or(file, p + "attention.key_length", 1, 4096, c.n_embd / c.n_head));
  LH_ASSIGN_OR_RETURN(c.head_dim_v, read_int_key_or(file, p + "attention.value_length", 1, 4096, c.head_dim_k));
  LH_ASSIGN_OR_RETURN(c.n_rot, read_int_key_or(file, p + "rope.dimension_count", 2, 4096, c.head_dim_k));
  LH_ASSIGN_OR_RETURN(c.rms_eps, read_float_key_or(file, p + "attention.layer_norm_rms_epsilon", 1e-5f));
  LH_ASSIGN_OR_RETURN(c.rope_freq_base, read_float_key_or(file, p + "rope.freq_base", 10000.0f));
  if (c.n_head % c.n_head_kv != 0)
    return Status::error("attention.head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                         std::to_string(c.n_head_kv));
  if (c.n_rot > c.head_dim_k || c.n_rot % 2 != 0)
    return Status::error("rope.dimension_count " + std::to_string(c.n_rot) + " must be even and <= key_length " +
                         std::to_string(c.head_dim_k));
  if (!(c.rms_eps > 0.0f) || !(c.rope_freq_base > 0.0f))
    return Status::error("layer_norm_rms_epsilon and rope.freq_base must be positive");
  // The vocabulary size is the row count of the embedding matrix.
  const gguf::TensorInfo* embd = file.find_tensor("token_embd.weight");
  if (embd == nullptr) return Status::error("missing tensor 'token_embd.weight'");
  if (embd->dims.size() != 2 || embd->dims[0] != c.n_embd || embd->dims[1] < 1 || embd->dims[1] > (1 << 22))
    return Status::error("tensor 'token_embd.weight' must be [" + std::to_string(c.n_embd) + ", n_vocab]");
  c.n_vocab = static_cast<int32_t>(embd->dims[1]);
  c.tied_output = file.find_tensor("output.weight") == nullptr;
  if (const auto type = file.get_string(p + "rope.scaling.type"); type && *type != "none") {
    if (*type != "linear") return Status::error("rope scaling type '" + *type + "' is not supported (only linear)");
    LH_ASSIGN_OR_RETURN(const float factor, read_float_key_or(file, p + "rope.scaling.factor", 1.0f));
    if (!(factor > 0.0f)) return Status::error("rope.scaling.factor must be positive");
    c.rope_freq_scale = 1.0f / factor;
  }
  return Status::ok();
}

Status bind_decoder_weights(const gguf::GgufFile& file, const ModelConfig& c, ModelWeights& w) {
  const int64_t e = c.n_embd, v = c.n_vocab;
  LH_ASSIGN_OR_RETURN(w.token_embd, bind_tensor(file, "token_embd.weight", {e, v}));
  LH_ASSIGN_OR_RETURN(w.output_norm, bind_tensor(file, "output_norm.weight", {e}));
  LH_ASSIGN_OR_RETURN(w.output, bind_optional_tensor(file, "output.weight", {e, v}));
  if (!w.output.present()) w.output = w.token_embd;

  const int64_t q = int64_t{c.n_head} * c.head_dim_k, k = int64_t{c.n_head_kv} * c.head_dim_k;
  const int64_t vv = int64_t{c.n_head_kv} * c.head_dim_v, o = int64_t{c.n_head} * c.head_dim_v, f = c.n_ff;
  w.layers.resize(static_cast<size_t>(c.n_layer));
  for (int32_t il = 0; il < c.n_layer; ++il) {
    LayerWeights& l = w.layers[static_cast<size_t>(il)];
    const std::string b = "blk." + std::to_string(il) + ".";
    LH_ASSIGN_OR_RETURN(l.attn_norm, bind_tensor(file, b + "attn_norm.weight", {e}));
    LH_ASSIGN_OR_RETURN(l.attn_q, bind_tensor(file, b + "attn_q.weight", {e, q}));
    LH_ASSIGN_OR_RETURN(l.attn_k, bind_tensor(file, b + "attn_k.weight", {e, k}));
    LH_ASSIGN_OR_RETURN(l.attn_v, bind_tensor(file, b + "attn_v.weight", {e, vv}));
    LH_ASSIGN_OR_RETURN(l.attn_output, bind_tensor(file, b + "attn_output.weight", {o, e}));
    LH_ASSIGN_OR_RETURN(l.ffn_norm, bind_tensor(file, b + "ffn_norm.weight", {e}));
    LH_ASSIGN_OR_RETURN(l.ffn_gate, bind_tensor(file, b + "ffn_gate.weight", {e, f}));
    LH_ASSIGN_OR_RETURN(l.ffn_up, bind_tensor(file, b + "ffn_up.weight", {e, f}));
    LH_ASSIGN_OR_RETURN(l.ffn_down, bind_tensor(file, b + "ffn_down.weight", {f, e}));
    if (c.qk_norm) {
      LH_ASSIGN_OR_RETURN(l.attn_q_norm, bind_tensor(file, b + "attn_q_norm.weight", {c.head_dim_k}));
      LH_ASSIGN_OR_RETURN(l.attn_k_norm, bind_tensor(file, b + "attn_k_norm.weight", {c.head_dim_k}));
    }
    if (c.post_norms) {
      LH_ASSIGN_OR_RETURN(l.attn_post_norm, bind_tensor(file, b + "post_attention_norm.weight", {e}));
      LH_ASSIGN_OR_RETURN(l.ffn_post_norm, bind_tensor(file, b + "post_ffw_norm.weight", {e}));
    }
  }
  return Status::ok();
}

}  // namespace longhaul::model
