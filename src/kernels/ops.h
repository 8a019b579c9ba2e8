// Float operations of the transformer block other than matrix products:
// norms, rotary embeddings, activations, softmax, and the f16 vector helpers
// attention uses over the KV cache. Shapes are given per call.
#pragma once

#include <cstdint>
#include <vector>

namespace longhaul::kernels {

// y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]   (w may be null: no scale)
// The sum of squares is accumulated in double, as llama.cpp does, so long rows
// (n_embd up to a few thousand) lose no precision.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

enum class RopeStyle {
  kNormal,  // rotate adjacent pairs (x[2i], x[2i+1]): Llama-family GGUFs (Q/K rows permuted by the converter)
  kNeox,    // rotate (x[i], x[i + n_rot/2]): Gemma, Qwen, GPT-NeoX
};

// cos/sin table for one position: theta_i = pos * base^(-2i/n_rot), i < n_rot/2.
// theta is formed by repeated multiplication in float, as llama.cpp's rope cache does,
// so angles at long positions round the same way as the reference.
struct RopeAngles {
  std::vector<float> cos_sin;  // [n_positions, n_rot/2, 2]
  void compute(const int32_t* positions, int64_t n_positions, int32_t n_rot, float freq_base, float freq_scale);
};

// Rotates the first n_rot dims of each of n_heads vectors of length head_dim in place.
// x: [n_heads, head_dim]; angles: [n_rot/2, 2] for this token's position.
void rope(float* x, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float* angles, RopeStyle style);

// out[i] = silu(gate[i]) * up[i]   (SwiGLU, Shazeer 2020)
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
// out[i] = gelu_tanh(gate[i]) * up[i]   (GeGLU with the tanh approximation, as Gemma uses)
void gelu_mul(const float* gate, const float* up, float* out, int64_t n);

// In-place softmax over n values; returns the sum of exponentials before normalisation.
float softmax(float* x, int64_t n);

void add(const float* a, const float* b, float* out, int64_t n);
void scale(float* x, float s, int64_t n);

// f16 vector helpers (x86 F16C when the active ISA has it, scalar otherwise).
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n);   // sum a[i] * b[i]
void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n);  // y += alpha * x
void f32_to_f16_row(const float* x, uint16_t* y, int64_t n);

}  // namespace longhaul::kernels
