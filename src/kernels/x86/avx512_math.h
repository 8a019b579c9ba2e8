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

// Four row sums at once: the totals of a, b, c, d in lanes 0..3.
inline __m128 reduce4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Halve twice across 256 / 128-bit lanes while interleaving the four vectors, then finish inside 128 bits.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
  // ab: [a0+a2, a1+a3, b0+b2, b1+b3] in 128-bit lanes.
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
  // abcd: [a, b, c, d] partial sums of 4 floats per 128-bit lane.
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
