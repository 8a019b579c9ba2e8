// Gemma 3 (Gemma Team, 2025): interleaved sliding-window (local) and global
// attention layers — five local layers of window 512 per global layer — with
// RMSNorm on every query/key head (QK-norm), norms both before and after the
// attention and the FFN, a GeGLU FFN, embeddings scaled by sqrt(n_embd), and
// separate RoPE bases: 10K for local layers, 1M for global ones.
// GGUF norm weights already include Gemma's "1 + w" offset (added at conversion).
#include <cmath>

#include "model/arch/architecture.h"
#include "model/model.h"

namespace longhaul::model {
namespace {

constexpr int32_t kDefaultLocalPattern = 6;        // every 6th layer is global
constexpr float kDefaultLocalRopeBase = 10000.0f;  // RoPE base of the local layers

class Gemma3Architecture final : public Architecture {
 public:
  std::string_view name() const override { return "gemma3"; }

  Result<ModelConfig> read_config(const gguf::GgufFile& file) const override {
    ModelConfig c;
    LH_RETURN_IF_ERROR(read_decoder_config(file, "gemma3", c));
    c.rope_style = kernels::RopeStyle::kNeox;
    c.activation = FfnActivation::kGelu;
    c.qk_norm = true;
    c.post_norms = true;
    c.embedding_scale = std::sqrt(static_cast<float>(c.n_embd));
    LH_ASSIGN_OR_RETURN(c.sliding_window, read_int_key_or(file, "gemma3.attention.sliding_window", 1, 1 << 24, 4096));
    LH_ASSIGN_OR_RETURN(const int32_t pattern,
                        read_int_key_or(file, "gemma3.attention.sliding_window_pattern", 1, 4096, kDefaultLocalPattern));
    LH_ASSIGN_OR_RETURN(c.rope_freq_base_local, read_float_key_or(file, "gemma3.rope.freq_base_swa", kDefaultLocalRopeBase));
    c.layer_is_local.resize(static_cast<size_t>(c.n_layer));
    for (int32_t il = 0; il < c.n_layer; ++il)
      c.layer_is_local[static_cast<size_t>(il)] = (il % pattern) < (pattern - 1) ? 1 : 0;
    // Queries are scaled by query_pre_attn_scalar^-1/2: head_dim for every size but
    // the 27B model (62 layers), which uses n_embd / n_head.
    const float pre_attn = c.n_layer == 62 ? static_cast<float>(c.n_embd) / static_cast<float>(c.n_head)
                                           : static_cast<float>(c.head_dim_k);
    c.attention_scale = 1.0f / std::sqrt(pre_attn);
    return c;
  }

  Status bind_weights(const gguf::GgufFile& file, const ModelConfig& config, ModelWeights& weights) const override {
    return bind_decoder_weights(file, config, weights);
  }

  void attention_sublayer(StepContext& step, int32_t il) const override {
    const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
    ForwardState& st = step.state;
    const int64_t n = step.config.n_embd;
    norm_rows(step, st.x.data(), lw.attn_norm, st.xn.data(), step.n_tokens, n);
    self_attention(step, il);
    norm_rows(step, st.proj.data(), lw.attn_post_norm, st.proj.data(), step.n_tokens, n);
    add_residual(step, st.x.data(), st.proj.data());
  }

  void feed_forward_sublayer(StepContext& step, int32_t il) const override {
    const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
    ForwardState& st = step.state;
    const int64_t n = step.config.n_embd;
    norm_rows(step, st.x.data(), lw.ffn_norm, st.xn.data(), step.n_tokens, n);
    feed_forward(step, il);
    norm_rows(step, st.proj.data(), lw.ffn_post_norm, st.proj.data(), step.n_tokens, n);
    add_residual(step, st.x.data(), st.proj.data());
  }
};

}  // namespace

const Architecture& gemma3_architecture() {
  static const Gemma3Architecture arch;
  return arch;
}

}  // namespace longhaul::model
