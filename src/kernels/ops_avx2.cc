// AVX2 + FMA + F16C versions of the float ops (built with -mavx2 -mfma -mf16c), except flash attention
// (attention_avx2.cc). Element-wise ops use the vector exp of kernels/x86/avx2_math.h (about 2 ulp); reductions sum
// in other orders than the scalar twins. The shapes follow ops_avx512.cc with 8 lanes instead of 16.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops_isa.h"
#include "kernels/x86/avx2_math.h"
#include "tensor/half.h"

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

inline __m256 loadu_partial(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_lanes8(n));
}
inline void storeu_partial(float* p, __m256 v, int64_t n) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, first_lanes8(n), v);
  }
}
// f16 tails have no masked load: copy the remaining halves into a zeroed block.
inline __m256 load_f16_partial(const uint16_t* p, int64_t n) {
  if (n >= 8) return load_f16x8(p);
  alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) tmp[i] = p[i];
  return load_f16x8(tmp);
}

void rms_norm_avx2(const float* x, const float* w, float* y, int64_t n, float eps) {
  // Double sums, like the scalar twin: four lanes of each half of 8 floats.
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 v = loadu_partial(x + i, n - i);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    acc0 = _mm256_fmadd_pd(lo, lo, acc0);
    acc1 = _mm256_fmadd_pd(hi, hi, acc1);
  }
  const __m256d a = _mm256_add_pd(acc0, acc1);
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  const double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const __m256 s = _mm256_set1_ps(1.0f / std::sqrt(mean + eps));
  // (x * s) * w, rounded as the scalar twin does.
  for (int64_t i = 0; i < n; i += 8) {
    __m256 v = _mm256_mul_ps(loadu_partial(x + i, n - i), s);
    if (w != nullptr) v = _mm256_mul_ps(v, loadu_partial(w + i, n - i));
    storeu_partial(y + i, v, n - i);
  }
}

// g * sigmoid(a * g) * up for every element: silu is a = 1, and gelu_tanh(g) = g * sigmoid(2u) with
// u = sqrt(2/pi) (g + 0.044715 g^3), since (1 + tanh u) / 2 = sigmoid(2u).
template <bool kGelu>
void gated_avx2(const float* gate, const float* up, float* out, int64_t n) {
  constexpr float kTwoSqrt2OverPi = 2.0f * 0.79788456080286535587989211986876f;
  constexpr float kCoef = 0.044715f;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 g = loadu_partial(gate + i, n - i);
    __m256 z;  // the sigmoid's argument, negated
    if constexpr (kGelu) {
      const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(kCoef), g), g, one);
      z = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-kTwoSqrt2OverPi), g), inner);
    } else {
      z = _mm256_sub_ps(_mm256_setzero_ps(), g);
    }
    const __m256 act = _mm256_div_ps(g, _mm256_add_ps(one, exp_ps(z)));
    storeu_partial(out + i, _mm256_mul_ps(act, loadu_partial(up + i, n - i)), n - i);
  }
}

float softmax_avx2(float* x, int64_t n) {
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  __m256 mx = neg_inf;
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i)
                                : _mm256_blendv_ps(neg_inf, loadu_partial(x + i, n - i),
                                                   _mm256_castsi256_ps(first_lanes8(n - i)));
    mx = _mm256_max_ps(mx, v);
  }
  const __m256 max_v = _mm256_set1_ps(hmax_ps(mx));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    __m256 e = exp_ps(_mm256_sub_ps(loadu_partial(x + i, n - i), max_v));
    if (n - i < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(first_lanes8(n - i)));
    storeu_partial(x + i, e, n - i);
    sum = _mm256_add_ps(sum, e);
  }
  const float total = hsum_ps(sum);
  const __m256 inv = _mm256_set1_ps(1.0f / total);
  for (int64_t i = 0; i < n; i += 8) storeu_partial(x + i, _mm256_mul_ps(loadu_partial(x + i, n - i), inv), n - i);
  return total;
}

// The AVX-512 version's two passes (ops_avx512.cc), 8 lanes at a time and the tail in scalar code.
int64_t argmax_avx2(const float* x, int64_t n) {
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  __m256 mx0 = neg_inf, mx1 = neg_inf;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    mx0 = _mm256_max_ps(_mm256_loadu_ps(x + i), mx0);  // NaN in x: keeps the running maximum
    mx1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), mx1);
  }
  for (; i + 8 <= n; i += 8) mx0 = _mm256_max_ps(_mm256_loadu_ps(x + i), mx0);
  float best = hmax_ps(_mm256_max_ps(mx0, mx1));
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  if (!(best > -INFINITY)) return 0;
  const __m256 target = _mm256_set1_ps(best);
  for (i = 0; i + 8 <= n; i += 8) {
    const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), target, _CMP_EQ_OQ));
    if (hit != 0) return i + __builtin_ctz(static_cast<unsigned>(hit));
  }
  for (; i < n; ++i)
    if (x[i] == best) return i;
  return 0;  // not reached: the maximum is one of the entries
}

float dot_f16_f32_avx2(const uint16_t* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load_f16x8(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(load_f16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i < n; i += 8) acc0 = _mm256_fmadd_ps(load_f16_partial(a + i, n - i), loadu_partial(b + i, n - i), acc0);
  return hsum_ps(_mm256_add_ps(acc0, acc1));
}

void axpy_f16_avx2(float alpha, const uint16_t* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  for (int64_t i = 0; i < n; i += 8)
    storeu_partial(y + i, _mm256_fmadd_ps(va, load_f16_partial(x + i, n - i), loadu_partial(y + i, n - i)), n - i);
}

void f32_to_f16_row_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
  }
  for (; i < n; ++i) y[i] = tensor::f32_to_f16(x[i]);
}

// Scores of four key rows at a time against one query held in NV registers (d = 8 NV).
template <int NV>
void dot_f16_rows_n(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, float* scores) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int j = 0; j < NV; ++j) {
      const __m256 qj = _mm256_loadu_ps(q + 8 * j);
      for (int i = 0; i < 4; ++i) acc[i] = _mm256_fmadd_ps(load_f16x8(k + (r + i) * stride + 8 * j), qj, acc[i]);
    }
    _mm_storeu_ps(scores + r, reduce4_ps(acc[0], acc[1], acc[2], acc[3]));
  }
  for (; r < n_rows; ++r) {
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < NV; ++j) acc = _mm256_fmadd_ps(load_f16x8(k + r * stride + 8 * j), _mm256_loadu_ps(q + 8 * j), acc);
    scores[r] = hsum_ps(acc);
  }
}

void dot_f16_rows_avx2(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores) {
  switch (d) {
    case 64: return dot_f16_rows_n<8>(q, k, stride, n_rows, scores);
    case 128: return dot_f16_rows_n<16>(q, k, stride, n_rows, scores);
    case 256: return dot_f16_rows_n<32>(q, k, stride, n_rows, scores);
    default: break;
  }
  for (int64_t r = 0; r < n_rows; ++r) scores[r] = dot_f16_f32_avx2(k + r * stride, q, d);
}

// out[0, 8 NV) += sum_r p[r] v[r][0, 8 NV) with the NV accumulators in registers across all rows.
template <int NV>
void accumulate_block(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, float* out) {
  __m256 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_loadu_ps(out + 8 * j);
  for (int64_t r = 0; r < n_rows; ++r) {
    const __m256 pr = _mm256_set1_ps(p[r]);
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(load_f16x8(v + r * stride + 8 * j), pr, acc[j]);
  }
  for (int j = 0; j < NV; ++j) _mm256_storeu_ps(out + 8 * j, acc[j]);
}

void accumulate_f16_rows_avx2(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d,
                              float* out) {
  if (d % 8 != 0) {
    for (int64_t r = 0; r < n_rows; ++r) axpy_f16_avx2(p[r], v + r * stride, out, d);
    return;
  }
  // Column blocks of up to 8 vectors (64 floats): the accumulators stay in 8 of the 16 registers.
  for (int32_t c = 0; c < d; c += 64) {
    const int nv = (d - c) / 8 < 8 ? (d - c) / 8 : 8;
    if (nv == 8) {
      accumulate_block<8>(p, v + c, stride, n_rows, out + c);
    } else {
      for (int j = 0; j < nv; ++j) accumulate_block<1>(p, v + c + 8 * j, stride, n_rows, out + c + 8 * j);
    }
  }
}

// key_bound: per logical page, up to four queries at a time share each loaded chunk of lo and hi
// (the partial tail loads zeros, which add max(0, 0) = 0).
float key_bound_avx2(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub) {
  float best = -INFINITY;
  for (int32_t s = 0; s < n_sub; ++s) {
    const float* lo_s = lo + static_cast<int64_t>(s) * d;
    const float* hi_s = hi + static_cast<int64_t>(s) * d;
    for (int32_t i0 = 0; i0 < n_q; i0 += 4) {
      const int32_t n = n_q - i0 < 4 ? n_q - i0 : 4;
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int32_t c = 0; c < d; c += 8) {
        const __m256 l = loadu_partial(lo_s + c, d - c), h = loadu_partial(hi_s + c, d - c);
        for (int32_t j = 0; j < n; ++j) {
          const __m256 qj = loadu_partial(q + static_cast<int64_t>(i0 + j) * d + c, d - c);
          acc[j] = _mm256_add_ps(acc[j], _mm256_max_ps(_mm256_mul_ps(qj, l), _mm256_mul_ps(qj, h)));
        }
      }
      for (int32_t j = 0; j < n; ++j) best = std::max(best, hsum_ps(acc[j]));
    }
  }
  return best;
}

// key_bounds_f16_blocked, one group of queries (ops_isa.h drives it): a half block (8 of the 16 logical pages, one
// per lane) and NQ <= 4 queries at a time, P and N in separate accumulators (2 NQ independent chains of fused
// multiply-adds). qp, qn: [NQ, d]; combine: max into bounds.
template <int NQ>
void bounds_of_half_blocks(const float* qp, const float* qn, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                           float* bounds, bool combine) {
  for (int64_t h = 0; h < 2 * n_blocks; ++h) {
    const uint16_t* lo = blocks + (h / 2) * 2 * d * 16 + (h % 2) * 8;
    __m256 p[NQ], n[NQ];
    for (int i = 0; i < NQ; ++i) p[i] = n[i] = _mm256_setzero_ps();
    for (int32_t c = 0; c < d; ++c) {
      const __m256 l = load_f16x8(lo + static_cast<int64_t>(c) * 16);
      const __m256 hv = load_f16x8(lo + (static_cast<int64_t>(d) + c) * 16);
      for (int i = 0; i < NQ; ++i) {
        p[i] = _mm256_fmadd_ps(_mm256_set1_ps(qp[i * d + c]), hv, p[i]);
        n[i] = _mm256_fmadd_ps(_mm256_set1_ps(qn[i * d + c]), l, n[i]);
      }
    }
    __m256 best = _mm256_add_ps(p[0], n[0]);
    for (int i = 1; i < NQ; ++i) best = _mm256_max_ps(best, _mm256_add_ps(p[i], n[i]));
    float* out = bounds + 8 * h;
    if (combine) best = _mm256_max_ps(_mm256_loadu_ps(out), best);
    _mm256_storeu_ps(out, best);
  }
}

void key_bounds_f16_blocked_avx2(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                                 float* bounds) {
  static constexpr BlockedBoundsGroup kByCount[4] = {bounds_of_half_blocks<1>, bounds_of_half_blocks<2>,
                                                     bounds_of_half_blocks<3>, bounds_of_half_blocks<4>};
  key_bounds_f16_blocked_in_groups(kByCount, q, n_q, d, blocks, n_blocks, bounds);
}

}  // namespace

const FloatOps& avx2_float_ops(const FloatOps& generic) {
  static const FloatOps table = [&] {
    FloatOps t = generic;
    t.rms_norm = rms_norm_avx2;
    t.silu_mul = gated_avx2<false>;
    t.gelu_mul = gated_avx2<true>;
    t.softmax = softmax_avx2;
    t.argmax = argmax_avx2;
    t.dot_f16_f32 = dot_f16_f32_avx2;
    t.axpy_f16 = axpy_f16_avx2;
    t.f32_to_f16_row = f32_to_f16_row_avx2;
    t.dot_f16_rows = dot_f16_rows_avx2;
    t.accumulate_f16_rows = accumulate_f16_rows_avx2;
    t.attention_update = attention_update_avx2;
    t.attention_update_quantized = attention_update_quantized_avx2;
    t.key_bound = key_bound_avx2;
    t.key_bounds_f16_blocked = key_bounds_f16_blocked_avx2;
    return t;
  }();
  return table;
}
#else
const FloatOps& avx2_float_ops(const FloatOps& generic) { return generic; }
#endif

}  // namespace longhaul::kernels::detail
