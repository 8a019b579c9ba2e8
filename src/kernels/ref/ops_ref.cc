// Scalar twins of the float ops (kernels/ops.h, namespace ref): the generic ISA's table and the reference the
// SIMD versions are tested against.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/ops.h"
#include "tensor/half.h"

namespace longhaul::kernels::ref {

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float s = 1.0f / std::sqrt(mean + eps);
  if (w != nullptr) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s * w[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s;
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void gelu_mul(const float* gate, const float* up, float* out, int64_t n) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
  constexpr float kCoef = 0.044715f;
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float gelu = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * g * (1.0f + kCoef * g * g)));
    out[i] = gelu * up[i];
  }
}

float softmax(float* x, int64_t n) {
  float max_v = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max_v = std::max(max_v, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_v);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
  return static_cast<float>(sum);
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  float best_value = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > best_value) {  // false for NaN, and for a tie
      best = i;
      best_value = x[i];
    }
  }
  return best;
}

float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += tensor::f16_to_f32(a[i]) * b[i];
  return sum;
}

void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * tensor::f16_to_f32(x[i]);
}

void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = tensor::f32_to_f16(x[i]);
}

void dot_f16_rows(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores) {
  for (int64_t r = 0; r < n_rows; ++r) scores[r] = dot_f16_f32(k + r * stride, q, d);
}

void accumulate_f16_rows(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d, float* out) {
  for (int64_t r = 0; r < n_rows; ++r) axpy_f16(p[r], v + r * stride, out, d);
}

namespace {
// The online-softmax update of attention_update for keys and values given by accessors: score(i, j) is q_i . k_j,
// add_value(p, j, out) adds p * v_j to out [dv].
// The keys are taken in passes of kAttentionPassKeys, so that a call split at a multiple of it gives the same bits.
template <typename Score, typename AddValue>
void flash_update(int32_t n_q, int32_t n_k, const AttentionMask& mask, int32_t dv, float* m, float* l, float* o,
                  int64_t o_stride, Score&& score, AddValue&& add_value) {
  float s[kAttentionPassKeys];  // one query's scores over the pass
  for (int32_t i = 0; i < n_q; ++i) {
    for (int32_t j0 = 0; j0 < n_k; j0 += kAttentionPassKeys) {
      const int32_t n = std::min(kAttentionPassKeys, n_k - j0);
      // Scores of the visible keys; -infinity for the others. The twin asks key_visible for every key, so the
      // block fast paths of the SIMD kernels (block_visibility, block_maybe_visible) are tested against the rule.
      float pass_max = -INFINITY;
      for (int32_t j = 0; j < n; ++j) {
        s[j] = key_visible(mask, i, j0 + j) ? score(i, j0 + j) : -INFINITY;
        pass_max = std::max(pass_max, s[j]);
      }
      if (pass_max == -INFINITY) continue;  // nothing visible in this pass
      const float m_new = std::max(m[i], pass_max);
      const float alpha = m[i] == -INFINITY ? 0.0f : std::exp(m[i] - m_new);
      float* oi = o + i * o_stride;
      for (int32_t c = 0; c < dv; ++c) oi[c] *= alpha;
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) {
        if (s[j] == -INFINITY) continue;
        const float p = std::exp(s[j] - m_new);
        sum += p;
        add_value(p, j0 + j, oi);
      }
      l[i] = l[i] * alpha + sum;
      m[i] = m_new;
    }
  }
}

// Element c of a row of d channels stored as `bits`-bit codes (4 bits: planar, ops.h).
float code_at(const uint8_t* codes, int32_t c, int32_t d, int32_t bits) {
  if (bits == 8) return static_cast<float>(codes[c]);
  const int32_t half = d / 2;
  return static_cast<float>(c < half ? codes[c] & 0x0f : codes[c - half] >> 4);
}
}  // namespace

void attention_update(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                      const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                      int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  flash_update(
      n_q, n_k, mask, dv, m, l, o, o_stride,
      [&](int32_t i, int32_t j) { return dot_f16_f32(k + j * k_stride, q + i * q_stride, dk); },
      [&](float p, int32_t j, float* out) { axpy_f16(p, v + j * v_stride, out, dv); });
}

// The same update, each key and value dequantized to f32 (code * scale + zero) first.
void attention_update_quantized(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv, int32_t n_k,
                                const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                int64_t o_stride) {
  const int64_t key_bytes = static_cast<int64_t>(dk) * kv.bits / 8;
  const int64_t value_bytes = static_cast<int64_t>(dv) * kv.bits / 8;
  const int32_t n_value_groups = (dv + kQuantizedValueGroup - 1) / kQuantizedValueGroup;
  std::vector<float> keys(static_cast<size_t>(n_k) * dk), values(static_cast<size_t>(n_k) * dv);  // [n_k, dk / dv]
  int32_t g = 0;
  for (int32_t j = 0; j < n_k; ++j) {
    while (kv.group_end[g] <= j) ++g;
    const uint16_t* scale = kv.key_params + static_cast<int64_t>(g) * 2 * dk;
    const uint16_t* zero = scale + dk;
    for (int32_t c = 0; c < dk; ++c)
      keys[static_cast<size_t>(j) * dk + c] = code_at(kv.key_codes + j * key_bytes, c, dk, kv.bits) *
                                                  tensor::f16_to_f32(scale[c]) +
                                              tensor::f16_to_f32(zero[c]);
    const uint16_t* params = kv.value_params + static_cast<int64_t>(j) * n_value_groups * 2;
    for (int32_t c = 0; c < dv; ++c) {
      const int32_t vg = c / kQuantizedValueGroup;
      values[static_cast<size_t>(j) * dv + c] = code_at(kv.value_codes + j * value_bytes, c, dv, kv.bits) *
                                                    tensor::f16_to_f32(params[2 * vg]) +
                                                tensor::f16_to_f32(params[2 * vg + 1]);
    }
  }
  flash_update(
      n_q, n_k, mask, dv, m, l, o, o_stride,
      [&](int32_t i, int32_t j) {
        float dot = 0.0f;
        for (int32_t c = 0; c < dk; ++c) dot += q[i * q_stride + c] * keys[static_cast<size_t>(j) * dk + c];
        return dot;
      },
      [&](float p, int32_t j, float* out) {
        for (int32_t c = 0; c < dv; ++c) out[c] += p * values[static_cast<size_t>(j) * dv + c];
      });
}

float key_bound(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub) {
  float best = -std::numeric_limits<float>::infinity();
  for (int32_t s = 0; s < n_sub; ++s) {
    const float* lo_s = lo + static_cast<int64_t>(s) * d;
    const float* hi_s = hi + static_cast<int64_t>(s) * d;
    for (int32_t i = 0; i < n_q; ++i) {
      const float* qi = q + static_cast<int64_t>(i) * d;
      float bound = 0.0f;
      for (int32_t c = 0; c < d; ++c) bound += std::max(qi[c] * lo_s[c], qi[c] * hi_s[c]);
      best = std::max(best, bound);
    }
  }
  return best;
}

void key_bounds_f16_blocked(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                            float* bounds) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint16_t* lo = blocks + b * 2 * d * 16;  // [d, 16]
    const uint16_t* hi = lo + static_cast<int64_t>(d) * 16;
    for (int32_t lane = 0; lane < 16; ++lane) {
      float best = -std::numeric_limits<float>::infinity();
      for (int32_t i = 0; i < n_q; ++i) {
        const float* qi = q + static_cast<int64_t>(i) * d;
        float p = 0.0f, n = 0.0f;
        for (int32_t c = 0; c < d; ++c) {
          const bool negative = std::signbit(qi[c]);
          p = std::fma(negative ? 0.0f : qi[c], tensor::f16_to_f32(hi[c * 16 + lane]), p);
          n = std::fma(negative ? qi[c] : 0.0f, tensor::f16_to_f32(lo[c * 16 + lane]), n);
        }
        best = std::max(best, p + n);
      }
      bounds[b * 16 + lane] = best;
    }
  }
}

}  // namespace longhaul::kernels::ref
