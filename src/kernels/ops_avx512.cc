// AVX-512 versions of the float ops (built with -mavx512f/bw/dq/vl -mfma -mf16c), except flash attention
// (attention_avx512.cc). Element-wise ops use a vector exp accurate to about 2 ulp; reductions sum in other orders
// than the scalar twins.

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops_isa.h"
#include "kernels/x86/avx512_math.h"
#include "tensor/half.h"

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

inline __m512 loadu_masked(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first_lanes(n), p); }

void rms_norm_avx512(const float* x, const float* w, float* y, int64_t n, float eps) {
  // Double sums, like the scalar twin: 8 lanes of each half of 16 floats.
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = i + 16 <= n ? _mm512_loadu_ps(x + i) : loadu_masked(x + i, n - i);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    acc0 = _mm512_fmadd_pd(lo, lo, acc0);
    acc1 = _mm512_fmadd_pd(hi, hi, acc1);
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const __m512 s = _mm512_set1_ps(1.0f / std::sqrt(mean + eps));
  // (x * s) * w, rounded as the scalar twin does.
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), s);
    if (w != nullptr) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

// g * sigmoid(a * g) * up for every element: silu is a = 1, and gelu_tanh(g) = g * sigmoid(2u) with
// u = sqrt(2/pi) (g + 0.044715 g^3), since (1 + tanh u) / 2 = sigmoid(2u).
template <bool kGelu>
void gated_avx512(const float* gate, const float* up, float* out, int64_t n) {
  constexpr float kTwoSqrt2OverPi = 2.0f * 0.79788456080286535587989211986876f;
  constexpr float kCoef = 0.044715f;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    __m512 z;  // the sigmoid's argument, negated
    if constexpr (kGelu) {
      const __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(kCoef), g), g, one);
      z = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-kTwoSqrt2OverPi), g), inner);
    } else {
      z = _mm512_sub_ps(_mm512_setzero_ps(), g);
    }
    const __m512 act = _mm512_div_ps(g, _mm512_add_ps(one, exp_ps(z)));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(act, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

float softmax_avx512(float* x, int64_t n) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 max_v = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), max_v)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  const float total = _mm512_reduce_add_ps(sum);
  const __m512 inv = _mm512_set1_ps(1.0f / total);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
  return total;
}

// Two passes over the row (it sits in L2): the largest value, then its first index. vmaxps returns its second
// operand when either is NaN, so max(x, running) skips NaN entries; comparing equal to the maximum is false for
// NaN, and -0 == +0 finds the first zero of either sign, as the scalar twin keeps the first.
int64_t argmax_avx512(const float* x, int64_t n) {
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  __m512 mx0 = neg_inf, mx1 = neg_inf;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    mx0 = _mm512_max_ps(_mm512_loadu_ps(x + i), mx0);
    mx1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), mx1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    mx0 = _mm512_mask_max_ps(mx0, m, _mm512_maskz_loadu_ps(m, x + i), mx0);
  }
  const float best = _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1));
  if (!(best > -INFINITY)) return 0;
  const __m512 target = _mm512_set1_ps(best);
  for (i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    const __mmask16 hit = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, x + i), target, _CMP_EQ_OQ);
    if (hit != 0) return i + __builtin_ctz(hit);
  }
  return 0;  // not reached: the maximum is one of the entries
}

float dot_f16_f32_avx512(const uint16_t* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(load_f16x16(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(load_f16x16(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) acc0 = _mm512_fmadd_ps(load_f16x16_masked(a + i, n - i), loadu_masked(b + i, n - i), acc0);
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

void axpy_f16_avx512(float alpha, const uint16_t* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    const __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i));
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, v, _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void f32_to_f16_row_avx512(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = i + 16 <= n ? __mmask16(0xffff) : first_lanes(n - i);
    const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(y + i, m, h);
  }
}

template <int NV>
void dot_f16_rows_n(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, float* scores) {
  __m512 qv[NV];
  for (int j = 0; j < NV; ++j) qv[j] = _mm512_loadu_ps(q + 16 * j);
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) {
    __m512 acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = _mm512_setzero_ps();
    for (int j = 0; j < NV; ++j) {
      for (int i = 0; i < 4; ++i) acc[i] = _mm512_fmadd_ps(load_f16x16(k + (r + i) * stride + 16 * j), qv[j], acc[i]);
    }
    _mm_storeu_ps(scores + r, reduce4_ps(acc[0], acc[1], acc[2], acc[3]));
  }
  for (; r < n_rows; ++r) {
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < NV; ++j) acc = _mm512_fmadd_ps(load_f16x16(k + r * stride + 16 * j), qv[j], acc);
    scores[r] = _mm512_reduce_add_ps(acc);
  }
}

void dot_f16_rows_avx512(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores) {
  switch (d) {
    case 64: return dot_f16_rows_n<4>(q, k, stride, n_rows, scores);
    case 128: return dot_f16_rows_n<8>(q, k, stride, n_rows, scores);
    case 256: return dot_f16_rows_n<16>(q, k, stride, n_rows, scores);
    default: break;
  }
  for (int64_t r = 0; r < n_rows; ++r) scores[r] = dot_f16_f32_avx512(k + r * stride, q, d);
}

// out[0, 16 NV) += sum_r p[r] v[r][0, 16 NV) with the NV accumulators in registers across all rows.
template <int NV>
void accumulate_block(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, float* out) {
  __m512 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm512_loadu_ps(out + 16 * j);
  for (int64_t r = 0; r < n_rows; ++r) {
    const __m512 pr = _mm512_set1_ps(p[r]);
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_fmadd_ps(load_f16x16(v + r * stride + 16 * j), pr, acc[j]);
  }
  for (int j = 0; j < NV; ++j) _mm512_storeu_ps(out + 16 * j, acc[j]);
}

void accumulate_f16_rows_avx512(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d,
                                float* out) {
  if (d % 16 != 0) {
    for (int64_t r = 0; r < n_rows; ++r) axpy_f16_avx512(p[r], v + r * stride, out, d);
    return;
  }
  // Column blocks of up to 16 vectors (256 floats), so the accumulators stay in registers.
  for (int32_t c = 0; c < d; c += 256) {
    const int nv = (d - c) / 16 < 16 ? (d - c) / 16 : 16;
    switch (nv) {
      case 4: accumulate_block<4>(p, v + c, stride, n_rows, out + c); break;
      case 8: accumulate_block<8>(p, v + c, stride, n_rows, out + c); break;
      case 16: accumulate_block<16>(p, v + c, stride, n_rows, out + c); break;
      default:
        for (int j = 0; j < nv; ++j) accumulate_block<1>(p, v + c + 16 * j, stride, n_rows, out + c + 16 * j);
        break;
    }
  }
}

// key_bound: per logical page, up to four queries at a time share each loaded chunk of lo and hi.
// The largest horizontal sum of v[0, n), n <= 16: the 16 vectors are summed together in a transposing tree (45
// shuffles and adds instead of 16 reductions of 8), each vector's lanes in _mm512_reduce_add_ps's order.
inline float max_of_sums(__m512 (&v)[16], int n) {
  for (int i = n; i < 16; ++i) v[i] = _mm512_set1_ps(-INFINITY);  // lanes of different vectors never mix
  __m512 w[8], u[4], z[2];
  for (int i = 0; i < 8; ++i)  // 256-bit halves: [a.l0 + a.l2, a.l1 + a.l3, b.l0 + b.l2, b.l1 + b.l3]
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 4; ++i)  // 128-bit lane L: the four partial sums of v[4i + L]
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int i = 0; i < 2; ++i)
    z[i] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_reduce_max_ps(r);  // lane 4L + m: the sum of v[4m + L]
}

// The same for n <= 4 vectors (a Quest page: one summary, a GQA group's queries): a tree of 4.
inline float max_of_sums4(const __m512* v, int n) {
  __m512 a[4];
  for (int i = 0; i < 4; ++i) a[i] = i < n ? v[i] : _mm512_set1_ps(-INFINITY);
  const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a[0], a[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a[2], a[3], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)));  // lane L: a[L]'s 4 partials
  const __m512 z = _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_reduce_max_ps(_mm512_add_ps(z, _mm512_permute_ps(z, _MM_SHUFFLE(1, 0, 3, 2))));
}

// key_bound for heads of 16 NC dimensions and NQ <= 4 queries (NQ * NC <= 16): the queries stay in registers for
// every logical page, and the pages' sums are reduced 16 at a time (the last 4 or fewer in a tree of 4).
template <int NC, int NQ>
float key_bound_in_registers(const float* q, int32_t d, const float* lo, const float* hi, int32_t n_sub) {
  __m512 qv[NQ][NC];
  for (int j = 0; j < NQ; ++j)
    for (int c = 0; c < NC; ++c) qv[j][c] = _mm512_loadu_ps(q + static_cast<int64_t>(j) * d + 16 * c);
  float best = -INFINITY;
  __m512 sums[16];
  int n_sums = 0;
  for (int32_t s = 0; s < n_sub; ++s) {
    const float* lo_s = lo + static_cast<int64_t>(s) * d;
    const float* hi_s = hi + static_cast<int64_t>(s) * d;
    __m512 acc[NQ];
    for (int j = 0; j < NQ; ++j) acc[j] = _mm512_setzero_ps();
    for (int c = 0; c < NC; ++c) {
      const __m512 l = _mm512_loadu_ps(lo_s + 16 * c);
      const __m512 h = _mm512_loadu_ps(hi_s + 16 * c);
      for (int j = 0; j < NQ; ++j)
        acc[j] = _mm512_add_ps(acc[j], _mm512_max_ps(_mm512_mul_ps(qv[j][c], l), _mm512_mul_ps(qv[j][c], h)));
    }
    for (int j = 0; j < NQ; ++j) sums[n_sums++] = acc[j];
    if (n_sums > 16 - NQ) {
      best = std::max(best, max_of_sums(sums, n_sums));
      n_sums = 0;
    }
  }
  if (n_sums > 4) {
    best = std::max(best, max_of_sums(sums, n_sums));
  } else if (n_sums > 0) {
    best = std::max(best, max_of_sums4(sums, n_sums));
  }
  return best;
}

float key_bound_avx512(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub) {
  if (d == 64 && n_q >= 1 && n_q <= 4) {
    switch (n_q) {
      case 1: return key_bound_in_registers<4, 1>(q, d, lo, hi, n_sub);
      case 2: return key_bound_in_registers<4, 2>(q, d, lo, hi, n_sub);
      case 3: return key_bound_in_registers<4, 3>(q, d, lo, hi, n_sub);
      default: return key_bound_in_registers<4, 4>(q, d, lo, hi, n_sub);
    }
  }
  if (d == 128 && n_q >= 1 && n_q <= 2) {
    return n_q == 1 ? key_bound_in_registers<8, 1>(q, d, lo, hi, n_sub)
                    : key_bound_in_registers<8, 2>(q, d, lo, hi, n_sub);
  }
  float best = -INFINITY;
  for (int32_t s = 0; s < n_sub; ++s) {
    const float* lo_s = lo + static_cast<int64_t>(s) * d;
    const float* hi_s = hi + static_cast<int64_t>(s) * d;
    for (int32_t i0 = 0; i0 < n_q; i0 += 4) {
      const int32_t n = n_q - i0 < 4 ? n_q - i0 : 4;
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int32_t c = 0; c < d; c += 16) {
        const __mmask16 m = c + 16 <= d ? __mmask16(0xffff) : first_lanes(d - c);
        const __m512 l = _mm512_maskz_loadu_ps(m, lo_s + c), h = _mm512_maskz_loadu_ps(m, hi_s + c);
        for (int32_t j = 0; j < n; ++j) {
          const __m512 qj = _mm512_maskz_loadu_ps(m, q + static_cast<int64_t>(i0 + j) * d + c);
          acc[j] = _mm512_add_ps(acc[j], _mm512_max_ps(_mm512_mul_ps(qj, l), _mm512_mul_ps(qj, h)));
        }
      }
      for (int32_t j = 0; j < n; ++j) best = std::max(best, _mm512_reduce_add_ps(acc[j]));
    }
  }
  return best;
}

// key_bounds_f16_blocked, one group of queries (ops_isa.h drives it): NB blocks of 16 logical pages and NQ <= 4
// queries at a time, with P and N in separate accumulators: 2 NB NQ independent chains of fused multiply-adds hide
// their latency. qp, qn: [NQ, d] (the twin's split of the queries by sign). combine: max into bounds (a later group
// of queries) instead of storing.
template <int NQ, int NB>
void bounds_of_blocks(const float* qp, const float* qn, int32_t d, const uint16_t* blocks, float* bounds,
                      bool combine) {
  __m512 p[NB][NQ], n[NB][NQ];
  for (int b = 0; b < NB; ++b)
    for (int i = 0; i < NQ; ++i) p[b][i] = n[b][i] = _mm512_setzero_ps();
  for (int32_t c = 0; c < d; ++c) {
    for (int b = 0; b < NB; ++b) {
      const uint16_t* lo = blocks + (static_cast<int64_t>(b) * 2 * d + c) * 16;
      const __m512 l = load_f16x16(lo), h = load_f16x16(lo + static_cast<int64_t>(d) * 16);
      for (int i = 0; i < NQ; ++i) {
        p[b][i] = _mm512_fmadd_ps(_mm512_set1_ps(qp[i * d + c]), h, p[b][i]);
        n[b][i] = _mm512_fmadd_ps(_mm512_set1_ps(qn[i * d + c]), l, n[b][i]);
      }
    }
  }
  for (int b = 0; b < NB; ++b) {
    __m512 best = _mm512_add_ps(p[b][0], n[b][0]);
    for (int i = 1; i < NQ; ++i) best = _mm512_max_ps(best, _mm512_add_ps(p[b][i], n[b][i]));
    float* out = bounds + 16 * b;
    if (combine) best = _mm512_max_ps(_mm512_loadu_ps(out), best);
    _mm512_storeu_ps(out, best);
  }
}

template <int NQ>
void bounds_of_all_blocks(const float* qp, const float* qn, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                          float* bounds, bool combine) {
  const int64_t block_elems = static_cast<int64_t>(2) * d * 16;
  int64_t b = 0;
  for (; b + 2 <= n_blocks; b += 2)
    bounds_of_blocks<NQ, 2>(qp, qn, d, blocks + b * block_elems, bounds + 16 * b, combine);
  if (b < n_blocks) bounds_of_blocks<NQ, 1>(qp, qn, d, blocks + b * block_elems, bounds + 16 * b, combine);
}

void key_bounds_f16_blocked_avx512(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                                   float* bounds) {
  static constexpr BlockedBoundsGroup kByCount[4] = {bounds_of_all_blocks<1>, bounds_of_all_blocks<2>,
                                                     bounds_of_all_blocks<3>, bounds_of_all_blocks<4>};
  key_bounds_f16_blocked_in_groups(kByCount, q, n_q, d, blocks, n_blocks, bounds);
}

}  // namespace

const FloatOps& avx512_float_ops(const FloatOps& generic) {
  static const FloatOps table = [&] {
    FloatOps t = generic;
    t.rms_norm = rms_norm_avx512;
    t.silu_mul = gated_avx512<false>;
    t.gelu_mul = gated_avx512<true>;
    t.softmax = softmax_avx512;
    t.argmax = argmax_avx512;
    t.dot_f16_f32 = dot_f16_f32_avx512;
    t.axpy_f16 = axpy_f16_avx512;
    t.f32_to_f16_row = f32_to_f16_row_avx512;
    t.dot_f16_rows = dot_f16_rows_avx512;
    t.accumulate_f16_rows = accumulate_f16_rows_avx512;
    // On AMD (measured on an EPYC, Zen 4) the decode kernel's requests for the next block's rows slow a head's
    // pages down once they lie back to back (kv_cache.cc, add_fresh_spares): SmolLM2 `full` at depth 16384
    // decoded 17% faster without them (39.0 -> 45.7 t/s). The Intel Xeon measured faster with them, before the
    // pages lay back to back, and keeps them (docs/benchmarks.md, "KV pages of a head back to back, and decode
    // attention without row requests on AMD").
    t.attention_update = __builtin_cpu_is("amd") ? attention_update_avx512_streamed : attention_update_avx512;
    t.attention_update_quantized = attention_update_quantized_avx512;
    t.key_bound = key_bound_avx512;
    t.key_bounds_f16_blocked = key_bounds_f16_blocked_avx512;
    return t;
  }();
  return table;
}
#else
const FloatOps& avx512_float_ops(const FloatOps& generic) { return generic; }
#endif

}  // namespace longhaul::kernels::detail
