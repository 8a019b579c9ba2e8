#include "model/blocks.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/model.h"

namespace longhaul::model {

// Elementwise work of a step is shared by the threads in chunks of about this many elements; a step of a few tokens
// (decode, a batch of a few sequences) stays within one chunk and runs inline, without waking the pool. In a
// prompt chunk of 512 tokens, the norms and residual adds run on one thread took 2-3% of the step while the other
// thread waited.
constexpr int64_t kElementwiseGrain = 8192;

void norm_rows(StepContext& step, const float* in, const Weight& w, float* out, int64_t n_rows, int64_t n) {
  const float* wv = w.present() ? w.f32() : nullptr;
  const float eps = step.config.rms_eps;
  step.pool.parallel_for(n_rows, std::max<int64_t>(1, kElementwiseGrain / n), [&](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) kernels::rms_norm(in + r * n, wv, out + r * n, n, eps);
  });
}

kernels::MatmulTarget matmul_target(const Weight& w, float* out) {
  return {w.type, w.data, w.n_out, out, w.n_out, w.layout};
}

void step_products(StepContext& step, const kernels::MatmulTarget* targets, int n_targets, int64_t n_in,
                   const float* in) {
  const std::vector<uint8_t>& prompt = step.batch.prompt;
  const int32_t n = step.n_tokens;
  auto kind = [&](int32_t t) { return prompt.empty() ? uint8_t{0} : prompt[static_cast<size_t>(t)]; };
  constexpr int kMaxTargets = 4;
  LH_CHECK_MSG(n_targets >= 1 && n_targets <= kMaxTargets, "step_products: " + std::to_string(n_targets) + " targets");
  for (int32_t begin = 0; begin < n;) {
    int32_t end = begin + 1;
    while (end < n && kind(end) == kind(begin)) ++end;
    const kernels::MatmulRows rows = kind(begin) != 0 ? kernels::MatmulRows::kPrompt : kernels::MatmulRows::kGenerated;
    kernels::MatmulTarget run[kMaxTargets];
    for (int i = 0; i < n_targets; ++i) {
      run[i] = targets[i];
      run[i].y += static_cast<int64_t>(begin) * run[i].ldy;
    }
    kernels::matmul_fused(run, n_targets, n_in, in + static_cast<int64_t>(begin) * n_in, end - begin, step.pool,
                          step.state.matmul[0], rows);
    begin = end;
  }
}

void project(StepContext& step, const Weight& w, const float* in, float* out) {
  const kernels::MatmulTarget target = matmul_target(w, out);
  step_products(step, &target, 1, w.n_in, in);
}

void add_residual(StepContext& step, float* x, const float* delta) {
  step.pool.parallel_for(static_cast<int64_t>(step.n_tokens) * step.config.n_embd, kElementwiseGrain,
                         [&](int64_t b, int64_t e) { kernels::add(x + b, delta + b, x + b, e - b); });
}


void feed_forward(StepContext& step, int32_t il) {
  const ModelConfig& cfg = step.config;
  const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
  ForwardState& st = step.state;
  const int32_t n_tokens = step.n_tokens;
  const kernels::MatmulTarget gate_up[] = {matmul_target(lw.ffn_gate, st.gate.data()),
                                           matmul_target(lw.ffn_up, st.up.data())};
  step_products(step, gate_up, 2, lw.ffn_gate.n_in, st.xn.data());
  const int64_t n = static_cast<int64_t>(n_tokens) * cfg.n_ff;
  // Chunks of 4096 elements: a decode step's row (n_ff of a few thousand) runs inline, without waking the pool.
  step.pool.parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    if (cfg.activation == FfnActivation::kGelu) {
      kernels::gelu_mul(st.gate.data() + b, st.up.data() + b, st.gate.data() + b, e - b);
    } else {
      kernels::silu_mul(st.gate.data() + b, st.up.data() + b, st.gate.data() + b, e - b);
    }
  });
  project(step, lw.ffn_down, st.gate.data(), st.proj.data());
}

namespace {
std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

Result<Weight> bind_impl(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims,
                         bool optional) {
  const gguf::TensorInfo* t = file.find_tensor(name);
  if (t == nullptr) {
    if (optional) return Weight{};
    return Status::error("missing tensor '" + name + "'");
  }
  // Trailing dims of 1 are equivalent ([576] == [576, 1]).
  std::vector<int64_t> got = t->dims;
  while (got.size() > 1 && got.back() == 1) got.pop_back();
  while (dims.size() > 1 && dims.back() == 1) dims.pop_back();
  if (got != dims)
    return Status::error("tensor '" + name + "' has shape " + dims_string(t->dims) + ", expected " + dims_string(dims));
  if (dims.size() == 1 && t->type != tensor::DType::F32)
    return Status::error("tensor '" + name + "' is " + tensor::dtype_name(t->type) + ", expected f32 for a norm weight");
  Weight w;
  w.type = t->type;
  w.data = t->data;
  w.n_in = dims[0];
  w.n_out = dims.size() > 1 ? dims[1] : 1;
  w.name = name;
  return w;
}
}  // namespace

Result<Weight> bind_tensor(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims) {
  return bind_impl(file, name, std::move(dims), false);
}

Result<Weight> bind_optional_tensor(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims) {
  return bind_impl(file, name, std::move(dims), true);
}

Result<int32_t> read_int_key_or(const gguf::GgufFile& file, const std::string& key, int64_t lo, int64_t hi,
                                int32_t fallback) {
  if (file.find(key) == nullptr) return fallback;
  return read_int_key(file, key, lo, hi);
}

Result<int32_t> read_int_key(const gguf::GgufFile& file, const std::string& key, int64_t lo, int64_t hi) {
  const gguf::Value* v = file.find(key);
  if (v == nullptr) return Status::error("missing metadata key '" + key + "'");
  std::optional<int64_t> i = v->as_int();
  if (!i && v->as_array() != nullptr && !v->as_array()->elements.empty()) {
    // Per-layer arrays (e.g. head_count_kv) are accepted when all entries agree.
    i = v->as_array()->elements[0].as_int();
    for (const auto& e : v->as_array()->elements)
      if (e.as_int() != i) return Status::error("metadata key '" + key + "' varies per layer, which is not supported");
  }
  if (!i) return Status::error("metadata key '" + key + "' is " + gguf::value_type_name(v->type) + ", expected an integer");
  if (*i < lo || *i > hi)
    return Status::error("metadata key '" + key + "' = " + std::to_string(*i) + " is outside [" + std::to_string(lo) +
                         ", " + std::to_string(hi) + "]");
  return static_cast<int32_t>(*i);
}

Result<float> read_float_key_or(const gguf::GgufFile& file, const std::string& key, float fallback) {
  const gguf::Value* v = file.find(key);
  if (v == nullptr) return fallback;
  std::optional<double> f = v->as_float();
  if (!f || !std::isfinite(*f))
    return Status::error("metadata key '" + key + "' is not a finite number");
  return static_cast<float>(*f);
}

}  // namespace longhaul::model
