// Llama family (Llama 2/3, SmolLM2, Mistral without sliding window): pre-norm
// decoder with RMSNorm, rotary embeddings on adjacent pairs (the GGUF converter
// permutes Q/K rows for this), grouped-query attention and a SwiGLU FFN.
#include "model/arch/architecture.h"
#include "model/model.h"

namespace longhaul::model {
namespace {

class LlamaArchitecture final : public Architecture {
 public:
  std::string_view name() const override { return "llama"; }

  Result<ModelConfig> read_config(const gguf::GgufFile& file) const override {
    ModelConfig c;
    LH_RETURN_IF_ERROR(read_decoder_config(file, "llama", c));
    c.rope_style = kernels::RopeStyle::kNormal;
    c.activation = FfnActivation::kSilu;
    return c;
  }

  Status bind_weights(const gguf::GgufFile& file, const ModelConfig& config, ModelWeights& weights) const override {
    return bind_decoder_weights(file, config, weights);
  }

  void attention_sublayer(StepContext& step, int32_t il) const override {
    const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
    ForwardState& st = step.state;
    norm_rows(step, st.x.data(), lw.attn_norm, st.xn.data(), step.n_tokens, step.config.n_embd);
    self_attention(step, il);
    add_residual(step, st.x.data(), st.proj.data());
  }

  void feed_forward_sublayer(StepContext& step, int32_t il) const override {
    const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
    ForwardState& st = step.state;
    norm_rows(step, st.x.data(), lw.ffn_norm, st.xn.data(), step.n_tokens, step.config.n_embd);
    feed_forward(step, il);
    add_residual(step, st.x.data(), st.proj.data());
  }
};

}  // namespace

const Architecture& llama_architecture() {
  static const LlamaArchitecture arch;
  return arch;
}

}  // namespace longhaul::model
