#include "kernels/ops.h"

#include <cmath>
#include <string>

#include "base/status.h"
#include "kernels/attention_prefetch.h"
#include "kernels/ops_isa.h"

namespace longhaul::kernels {

namespace {
const FloatOps& generic_ops() {
  static const FloatOps table{ref::rms_norm,       ref::silu_mul,     ref::gelu_mul,
                              ref::softmax,        ref::argmax,       ref::dot_f16_f32,  ref::axpy_f16,
                              ref::f32_to_f16_row, ref::dot_f16_rows, ref::accumulate_f16_rows,
                              ref::attention_update, ref::key_bound, ref::key_bounds_f16_blocked,
                              ref::attention_update_quantized};
  return table;
}

const FloatOps& active_ops() {
  static const FloatOps& table = float_ops(active_isa());
  return table;
}
}  // namespace

const FloatOps& float_ops(Isa isa) {
  LH_CHECK_MSG(cpu_supports(isa), std::string("float_ops: this CPU cannot run ISA ") + isa_name(isa));
  switch (isa) {
    case Isa::kGeneric: return generic_ops();
    case Isa::kAvx2: return detail::avx2_float_ops(generic_ops());
    case Isa::kAvx512:
    case Isa::kAmx: return detail::avx512_float_ops(generic_ops());
  }
  return generic_ops();
}

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  active_ops().rms_norm(x, w, y, n, eps);
}
void silu_mul(const float* gate, const float* up, float* out, int64_t n) { active_ops().silu_mul(gate, up, out, n); }
void gelu_mul(const float* gate, const float* up, float* out, int64_t n) { active_ops().gelu_mul(gate, up, out, n); }
float softmax(float* x, int64_t n) { return active_ops().softmax(x, n); }
int64_t argmax(const float* x, int64_t n) {
  LH_CHECK_MSG(n >= 1, "argmax: n = " + std::to_string(n) + ": must be >= 1");
  return active_ops().argmax(x, n);
}
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) { return active_ops().dot_f16_f32(a, b, n); }
void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n) { active_ops().axpy_f16(alpha, x, y, n); }
void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) { active_ops().f32_to_f16_row(x, y, n); }
void dot_f16_rows(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores) {
  active_ops().dot_f16_rows(q, k, stride, n_rows, d, scores);
}
void accumulate_f16_rows(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d, float* out) {
  active_ops().accumulate_f16_rows(p, v, stride, n_rows, d, out);
}

void attention_update(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                      const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                      int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  // Once per call, not per key: a tree mask without its query side would read q_node / ancestors through null.
  LH_CHECK_MSG(mask.k_node == nullptr || (mask.q_node != nullptr && mask.ancestors != nullptr &&
                                          mask.n_ancestor_words > 0),
               "attention_update: a mask with k_node needs q_node, ancestors and n_ancestor_words > 0");
  active_ops().attention_update(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}

void attention_update_quantized(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv, int32_t n_k,
                                const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                int64_t o_stride) {
  LH_CHECK_MSG(kv.bits == 8 || (kv.bits == 4 && dk % 2 == 0 && dv % 2 == 0),
               "attention_update_quantized: bits must be 8, or 4 with even head dims; got " + std::to_string(kv.bits));
  LH_CHECK_MSG(n_k == 0 || (kv.n_groups > 0 && kv.group_end[kv.n_groups - 1] >= n_k),
               "attention_update_quantized: the key groups end before key " + std::to_string(n_k));
  LH_CHECK_MSG(mask.k_node == nullptr || (mask.q_node != nullptr && mask.ancestors != nullptr &&
                                          mask.n_ancestor_words > 0),
               "attention_update_quantized: a mask with k_node needs q_node, ancestors and n_ancestor_words > 0");
  active_ops().attention_update_quantized(q, q_stride, n_q, kv, n_k, mask, dk, dv, m, l, o, o_stride);
}

void prefetch_attention_rows(const uint16_t* k, int64_t k_stride, const uint16_t* v, int64_t v_stride, int32_t n_rows,
                             int32_t dk, int32_t dv) {
  detail::prefetch_kv_rows(k, k_stride, v, v_stride, dk * 2, dv * 2, 0, n_rows);  // f16 rows: 2 bytes an element
}

void prefetch_quantized_rows(const QuantizedRows& kv, int32_t n_rows, int32_t dk, int32_t dv) {
  const int32_t n_value_groups = (dv + kQuantizedValueGroup - 1) / kQuantizedValueGroup;
  detail::prefetch_bytes(kv.key_codes, static_cast<int64_t>(n_rows) * dk * kv.bits / 8);
  detail::prefetch_bytes(kv.value_codes, static_cast<int64_t>(n_rows) * dv * kv.bits / 8);
  detail::prefetch_bytes(kv.value_params, static_cast<int64_t>(n_rows) * n_value_groups * 2 * 2);
  detail::prefetch_bytes(kv.key_params, static_cast<int64_t>(2) * dk * 2);
}

float key_bound(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub) {
  return active_ops().key_bound(q, n_q, d, lo, hi, n_sub);
}

void key_bounds_f16_blocked(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                            float* bounds) {
  active_ops().key_bounds_f16_blocked(q, n_q, d, blocks, n_blocks, bounds);
}

void RopeAngles::compute(const int32_t* positions, int64_t n_positions, int32_t n_rot, float freq_base,
                         float freq_scale) {
  const int32_t half = n_rot / 2;
  cos_sin.resize(static_cast<size_t>(n_positions * half * 2));
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(n_rot));
  for (int64_t t = 0; t < n_positions; ++t) {
    float theta = static_cast<float>(positions[t]) * freq_scale;
    float* cs = cos_sin.data() + t * half * 2;
    for (int32_t i = 0; i < half; ++i) {
      cs[2 * i] = std::cos(theta);
      cs[2 * i + 1] = std::sin(theta);
      theta *= theta_scale;
    }
  }
}

void rope(float* x, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float* angles, RopeStyle style) {
  const int32_t half = n_rot / 2;
  for (int32_t h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    if (style == RopeStyle::kNormal) {
      for (int32_t i = 0; i < half; ++i) {
        const float c = angles[2 * i], s = angles[2 * i + 1];
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
      }
    } else {
      for (int32_t i = 0; i < half; ++i) {
        const float c = angles[2 * i], s = angles[2 * i + 1];
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = a * s + b * c;
      }
    }
  }
}

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace longhaul::kernels
