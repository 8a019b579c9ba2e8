// Internal: AVX-512 helpers shared by the float-op translation units (ops_avx512.cc, attention_avx512.cc), which
// are built with the same AVX-512 flags. Everything is in an anonymous namespace: each unit keeps its own copy.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace longhaul::kernels::detail {
namespace {

// Lanes [0, n) of a 16-lane vector, n in [0, 16].
inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// e^x: x = k ln2 + r with |r| <= ln2 / 2 (ln2 split in two for an exact k ln2), e^r by its Taylor polynomial to
// degree 7 (truncation error below 2^-27 relative), times 2^k by vscalefps, which gives infinity for large inputs.
// Results below the smallest normal float (x < -87) are flushed to 0: subnormal results and operands cost a
// microcode assist each, and softmax rows of masked attention cells are full of them.
inline __m512 exp_ps(__m512 x) {
  const __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(89.0f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(normal, p, k);
}

inline __m512 load_f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load_f16x16_masked(const uint16_t* p, int64_t n) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first_lanes(n), p));
}

// Decode scores of 16 keys whose dot products are held as 16-lane partial sums (keys as rows): fold4_ps folds the
// accumulators of keys 4g..4g+3 into one vector whose 128-bit lane L holds four partial sums of key 4g + L (6
// operations), and sum16_ps finishes four such vectors into the 16 totals in key order (10 operations), 34 per 16
// keys against 56 for four reduce4_ps.
inline __m512 fold4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
  // ab: [a0+a2, a1+a3, b0+b2, b1+b3] in 128-bit lanes, cd likewise.
  return _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
}
inline __m512 sum16_ps(__m512 x0, __m512 x1, __m512 x2, __m512 x3) {
  // In every 128-bit lane L: s01 = [x0[0]+x0[2], x1[0]+x1[2], x0[1]+x0[3], x1[1]+x1[3]], s23 likewise.
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(x0, x1), _mm512_unpackhi_ps(x0, x1));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(x2, x3), _mm512_unpackhi_ps(x2, x3));
  // Lane L = [x0, x1, x2, x3 totals of key L of each group]: element 4L + g is key 4g + L.
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

// Four row sums at once: the totals of a, b, c, d in lanes 0..3.
inline __m128 reduce4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Halve twice across 256 / 128-bit lanes while interleaving the four vectors, then finish inside 128 bits.
  const __m512 abcd = fold4_ps(a, b, c, d);  // [a, b, c, d] partial sums of 4 floats per 128-bit lane
  const __m256 lo = _mm512_castps512_ps256(abcd);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1));
  const __m256 h = _mm256_hadd_ps(lo, hi);  // [a01 a23 c01 c23 | b01 b23 d01 d23]
  const __m256 h2 = _mm256_hadd_ps(h, h);   // lane 0: a, c; lane 1: b, d
  // h2 = [a c a c | b d b d]: pick a, b, c, d.
  const __m256 ordered = _mm256_permutevar8x32_ps(h2, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
  return _mm256_castps256_ps128(ordered);
}

}  // namespace
}  // namespace longhaul::kernels::detail
