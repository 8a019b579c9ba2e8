// AVX2 flash attention (kernels::attention_update), built with the flags of ops_avx2.cc.
//
// Keys arrive in blocks of 16 (one page run is many blocks). A block is converted from f16 once, into rows of f32
// that stay in L1, and then serves every query of the call: a query's 16 scores are four-row dot products reduced
// together, its probabilities come from one online-softmax update (Dao et al., 2022: running maximum m, running
// sum l, output rescaled by e^(m_old - m_new)), and its output row takes the 16 value rows with up to 8
// accumulators in registers. Conversion is the cost that a decode step (few queries per key) pays per key; the
// multiply-adds per key and query are dk / 8 for the score and dv / 8 for the output, the minimum for 8 lanes.
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/ops_isa.h"
#include "kernels/x86/avx2_math.h"

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

constexpr int kBlock = 16;  // keys per block

template <int KV, int VV>  // dk = 8 KV, dv = 8 VV
void attention_update_sized(const float* q, int64_t q_stride, const int32_t* q_pos, int32_t n_q, const uint16_t* k,
                            int64_t k_stride, const uint16_t* v, int64_t v_stride, const int32_t* k_pos, int32_t n_k,
                            int32_t window, float* m, float* l, float* o, int64_t o_stride) {
  constexpr int kDk = 8 * KV, kDv = 8 * VV;
  alignas(32) float kf[kBlock * kDk];  // [16][dk] keys of the block
  alignas(32) float vf[kBlock * kDv];  // [16][dv] values of the block
  alignas(32) float sbuf[kBlock];      // one query's scores, then its probabilities
  alignas(32) int32_t kp[kBlock];      // key positions; INT32_MAX past the block's end (never visible)
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  const __m256i all_ones = _mm256_set1_epi32(-1);
  int32_t min_qp = INT32_MAX, max_qp = INT32_MIN;
  for (int32_t i = 0; i < n_q; ++i) {
    min_qp = std::min(min_qp, q_pos[i]);
    max_qp = std::max(max_qp, q_pos[i]);
  }
  for (int32_t kb = 0; kb < n_k; kb += kBlock) {
    const int32_t nk = std::min(kBlock, n_k - kb);
    int32_t min_kp = INT32_MAX, max_kp = INT32_MIN;
    for (int32_t j = 0; j < kBlock; ++j) {
      kp[j] = j < nk ? k_pos[kb + j] : INT32_MAX;
      if (j < nk) {
        min_kp = std::min(min_kp, kp[j]);
        max_kp = std::max(max_kp, kp[j]);
      }
    }
    // A block no query sees (all in the future, or all behind every query's window) is not even converted: long
    // sliding-window layers skip most of the cache this way.
    if (min_kp > max_qp || (window > 0 && static_cast<int64_t>(min_qp) - max_kp >= window)) continue;
    const __m256i kp0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(kp));
    const __m256i kp1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(kp + 8));
    bool converted = false;
    for (int32_t i = 0; i < n_q; ++i) {
      const int32_t qp = q_pos[i];
      if (qp < min_kp || (window > 0 && static_cast<int64_t>(qp) - max_kp >= window)) continue;
      const __m256i qpv = _mm256_set1_epi32(qp);
      // Visible: key position <= query position (and, with a window, query - key < window).
      __m256i vis0 = _mm256_andnot_si256(_mm256_cmpgt_epi32(kp0, qpv), all_ones);
      __m256i vis1 = _mm256_andnot_si256(_mm256_cmpgt_epi32(kp1, qpv), all_ones);
      if (window > 0) {
        const __m256i w = _mm256_set1_epi32(window);
        vis0 = _mm256_and_si256(vis0, _mm256_cmpgt_epi32(w, _mm256_sub_epi32(qpv, kp0)));
        vis1 = _mm256_and_si256(vis1, _mm256_cmpgt_epi32(w, _mm256_sub_epi32(qpv, kp1)));
      }
      if (_mm256_testz_si256(_mm256_or_si256(vis0, vis1), all_ones)) continue;
      if (!converted) {
        // Rows of missing keys are zero (their scores are masked, their probabilities 0).
        for (int32_t j = 0; j < kBlock; ++j) {
          for (int c = 0; c < KV; ++c)
            _mm256_store_ps(kf + j * kDk + 8 * c, j < nk ? load_f16x8(k + (kb + j) * k_stride + 8 * c) : _mm256_setzero_ps());
          for (int c = 0; c < VV; ++c)
            _mm256_store_ps(vf + j * kDv + 8 * c, j < nk ? load_f16x8(v + (kb + j) * v_stride + 8 * c) : _mm256_setzero_ps());
        }
        converted = true;
      }
      // Scores, four keys at a time.
      const float* qi = q + i * q_stride;
      for (int32_t j4 = 0; j4 < kBlock; j4 += 4) {
        if (j4 >= nk) {
          _mm_store_ps(sbuf + j4, _mm_setzero_ps());
          continue;
        }
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int c = 0; c < KV; ++c) {
          const __m256 qc = _mm256_loadu_ps(qi + 8 * c);
          for (int jj = 0; jj < 4; ++jj) acc[jj] = _mm256_fmadd_ps(_mm256_load_ps(kf + (j4 + jj) * kDk + 8 * c), qc, acc[jj]);
        }
        _mm_store_ps(sbuf + j4, reduce4_ps(acc[0], acc[1], acc[2], acc[3]));
      }
      const __m256 s0 = _mm256_blendv_ps(neg_inf, _mm256_load_ps(sbuf), _mm256_castsi256_ps(vis0));
      const __m256 s1 = _mm256_blendv_ps(neg_inf, _mm256_load_ps(sbuf + 8), _mm256_castsi256_ps(vis1));
      // Online softmax: new maximum, rescale factor of the old sums, this block's probabilities.
      const float m_old = m[i];
      const float m_new = std::max(m_old, hmax_ps(_mm256_max_ps(s0, s1)));
      const float alpha = m_old == -INFINITY ? 0.0f : _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(m_old - m_new)));
      const __m256 mv = _mm256_set1_ps(m_new);
      const __m256 p0 = exp_ps(_mm256_sub_ps(s0, mv));  // masked lanes: exp(-inf) = 0
      const __m256 p1 = exp_ps(_mm256_sub_ps(s1, mv));
      l[i] = l[i] * alpha + hsum_ps(_mm256_add_ps(p0, p1));
      m[i] = m_new;
      _mm256_store_ps(sbuf, p0);
      _mm256_store_ps(sbuf + 8, p1);
      // o = o * alpha + sum_j p_j v_j, 64 dimensions at a time.
      float* oi = o + i * o_stride;
      const __m256 av = _mm256_set1_ps(alpha);
      for (int cb = 0; cb < VV; cb += 8) {
        const int nv = VV - cb < 8 ? VV - cb : 8;
        __m256 acc[8];
        for (int c = 0; c < 8; ++c) acc[c] = c < nv ? _mm256_mul_ps(_mm256_loadu_ps(oi + 8 * (cb + c)), av) : _mm256_setzero_ps();
        for (int32_t j = 0; j < nk; ++j) {
          const __m256 pj = _mm256_set1_ps(sbuf[j]);
          for (int c = 0; c < 8; ++c) {
            if (c < nv) acc[c] = _mm256_fmadd_ps(pj, _mm256_load_ps(vf + j * kDv + 8 * (cb + c)), acc[c]);
          }
        }
        for (int c = 0; c < nv; ++c) _mm256_storeu_ps(oi + 8 * (cb + c), acc[c]);
      }
    }
  }
}

}  // namespace

void attention_update_avx2(const float* q, int64_t q_stride, const int32_t* q_pos, int32_t n_q, const uint16_t* k,
                           int64_t k_stride, const uint16_t* v, int64_t v_stride, const int32_t* k_pos, int32_t n_k,
                           int32_t window, int32_t dk, int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  if (dk == 64 && dv == 64)
    return attention_update_sized<8, 8>(q, q_stride, q_pos, n_q, k, k_stride, v, v_stride, k_pos, n_k, window, m, l, o,
                                        o_stride);
  if (dk == 128 && dv == 128)
    return attention_update_sized<16, 16>(q, q_stride, q_pos, n_q, k, k_stride, v, v_stride, k_pos, n_k, window, m, l,
                                          o, o_stride);
  if (dk == 256 && dv == 256)
    return attention_update_sized<32, 32>(q, q_stride, q_pos, n_q, k, k_stride, v, v_stride, k_pos, n_k, window, m, l,
                                          o, o_stride);
  ref::attention_update(q, q_stride, q_pos, n_q, k, k_stride, v, v_stride, k_pos, n_k, window, dk, dv, m, l, o,
                        o_stride);
}

#else
void attention_update_avx2(const float* q, int64_t q_stride, const int32_t* q_pos, int32_t n_q, const uint16_t* k,
                           int64_t k_stride, const uint16_t* v, int64_t v_stride, const int32_t* k_pos, int32_t n_k,
                           int32_t window, int32_t dk, int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  ref::attention_update(q, q_stride, q_pos, n_q, k, k_stride, v, v_stride, k_pos, n_k, window, dk, dv, m, l, o,
                        o_stride);
}
#endif

}  // namespace longhaul::kernels::detail
