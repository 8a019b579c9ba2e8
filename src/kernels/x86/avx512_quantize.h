// Internal: AVX-512 quantization of activations for the matrix kernels of gemm_avx512.cc, sixteen blocks (or
// groups) per vector operation: pack_act_32_avx512 for the 32-element-block kernels (the interleaved x16 kernels),
// quantize_block_q8_k_avx512 for the K-quant kernels. They replace the AVX2 helpers of x86_quantize.h there and
// give their bytes exactly: the same scalar rule per block, evaluated in the lanes of a vector
// (InterleavedPacking.EveryIsaPacksTheTwinsBytes).
#pragma once

#include "kernels/x86/x86_quantize.h"

namespace longhaul::kernels::detail {
namespace {

// Reduces 16 vectors to one whose lane b is the reduction of vector b's 16 lanes: 15 operations and 30 shuffles,
// where 16 separate horizontal reductions take 64 of each, each on its block's critical path. `op` combines two
// vectors lane by lane (on float bits; an integer op casts); it must be associative and commutative over the
// values it meets (the maximum of floats, the sum of small integers), since the lanes meet in another order than
// a sequential loop's. v: [16 vectors][16 lanes], overwritten.
template <typename Op>
inline __m512 reduce16(__m512 (&v)[16], Op op) {
  // 16 -> 8: in each 128-bit lane, partials of v[2i] and v[2i+1], interleaved (a b a b).
  for (int i = 0; i < 8; ++i)
    v[i] = op(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  // 8 -> 4: in each 128-bit lane, the partials of v[4j .. 4j+3], in order.
  for (int j = 0; j < 4; ++j) {
    const __m512d a = _mm512_castps_pd(v[2 * j]), b = _mm512_castps_pd(v[2 * j + 1]);
    v[j] = op(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // 4 -> 2 -> 1, across the 128-bit lanes: 128-bit lane j of the result holds v[4j .. 4j+3], whole.
  for (int k = 0; k < 2; ++k)
    v[k] = op(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x88), _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xdd));
  return op(_mm512_shuffle_f32x4(v[0], v[1], 0x88), _mm512_shuffle_f32x4(v[0], v[1], 0xdd));
}

// roundf (half away from zero) of 16 floats, as round_away_epi32 does for 8.
inline __m512i round_away_epi32_x16(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
  const __m512 sign = _mm512_and_ps(v, _mm512_set1_ps(-0.0f));
  const __m512 step = _mm512_or_ps(_mm512_set1_ps(1.0f), sign);
  const __mmask16 bump = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, bump, t, step));
}

// Packs blocks [ib, ib + n) of a row (n <= 16) in the layout of pack_act_32 (x86_quantize.h): each block's lane
// of the vectors below does what quantize_block_32 and pack_act_32 do for it, so the bytes are the same. Missing
// blocks (n < 16) read as zeros and are not stored.
template <ActExtra kExtra>
inline void pack_16_blocks(const float* x, int64_t nb, int64_t ib, int n, uint8_t* dst) {
  const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1u);
  __m512 amax_of[16];  // [block][16 lanes]: the larger |x| of the block's two halves
  for (int b = 0; b < 16; ++b) {
    if (b < n) {
      const float* xb = x + (ib + b) * tensor::kQk32;
      amax_of[b] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb)), _mm512_abs_ps(_mm512_loadu_ps(xb + 16)));
    } else {
      amax_of[b] = _mm512_setzero_ps();
    }
  }
  const __m512 amax = reduce16(amax_of, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); });  // [16 blocks]
  const __m512 d = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
  const __mmask16 nonzero = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_OQ);
  alignas(64) float id[16];
  _mm512_store_ps(id, _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0f), d));
  __m512 sum_of[16];  // [block][16 lanes]: i32 bits, the quants of the block's halves added lane by lane
  for (int b = 0; b < 16; ++b) {
    if (b >= n) {
      sum_of[b] = _mm512_setzero_ps();
      continue;
    }
    const float* xb = x + (ib + b) * tensor::kQk32;
    const __m512 idb = _mm512_set1_ps(id[b]);
    const __m512i q0 = round_away_epi32_x16(_mm512_mul_ps(_mm512_loadu_ps(xb), idb));
    const __m512i q1 = round_away_epi32_x16(_mm512_mul_ps(_mm512_loadu_ps(xb + 16), idb));
    uint8_t* qs = dst + 32 * (ib + b);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16), _mm512_cvtsepi32_epi8(q1));
    sum_of[b] = _mm512_castsi512_ps(_mm512_add_epi32(q0, q1));
  }
  const __m512i sum = _mm512_castps_si512(reduce16(sum_of, [](__m512 a, __m512 b) {  // [16 blocks]
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  }));
  // The dot products use the f16-rounded scale; s (Q8_1) is f16(sum * d) with the f32 d.
  const __m512 d_stored = _mm512_cvtph_ps(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  _mm512_mask_storeu_ps(dst + 32 * nb + 4 * ib, valid, d_stored);
  if constexpr (kExtra == ActExtra::kSum) {
    _mm512_mask_storeu_epi32(dst + 36 * nb + 4 * ib, valid, sum);
  } else {
    const __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), d);
    _mm512_mask_storeu_ps(dst + 36 * nb + 4 * ib, valid,
                          _mm512_cvtph_ps(_mm512_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
  }
}

// pack_act_32 sixteen blocks at a time: the same bytes. Quantizing activations one block at a time took 9% of a
// SmolLM2 prompt step on an AMD EPYC (Zen 4), most of it in each block's two horizontal reductions.
template <ActExtra kExtra>
void pack_act_32_avx512(const float* x, int64_t n_in, uint8_t* dst) {
  pack_row_32<16, pack_16_blocks<kExtra>>(x, n_in, dst);
}

// quantize_block_q8_k (x86_quantize.h) with one group of 16 elements per vector: the same block, byte for byte.
// The sixteen group sums come out of one reduce16, and the first element of largest magnitude (the scalar rule's
// sign of the scale) is found by vector compares instead of a scalar scan of up to 256 elements.
inline void quantize_block_q8_k_avx512(const float* x, tensor::BlockQ8_K& b) {
  __m512 v[16];  // [group of 16][16 elements]
  __m512 amax_v = _mm512_setzero_ps();
  for (int g = 0; g < 16; ++g) {
    v[g] = _mm512_loadu_ps(x + 16 * g);
    amax_v = _mm512_max_ps(amax_v, _mm512_abs_ps(v[g]));
  }
  const float amax = _mm512_reduce_max_ps(amax_v);
  if (amax == 0.0f) {
    std::memset(&b, 0, sizeof(b));
    return;
  }
  float max = 0.0f;  // the first element of largest magnitude, with its sign
  const __m512 amax_b = _mm512_set1_ps(amax);
  for (int g = 0; g < 16; ++g) {
    const __mmask16 at = _mm512_cmp_ps_mask(_mm512_abs_ps(v[g]), amax_b, _CMP_EQ_OQ);
    if (at != 0) {
      max = x[16 * g + __builtin_ctz(at)];
      break;
    }
  }
  const float iscale = -127.0f / max;
  const __m512 is = _mm512_set1_ps(iscale);
  __m512 sum_of[16];  // [group][16 lanes]: i32 quants of the group
  for (int g = 0; g < 16; ++g) {
    // Round to nearest even (the default MXCSR mode), as the twin's magic-number nearest_int does.
    const __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v[g], is)), _mm512_set1_epi32(127));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(b.qs + 16 * g), _mm512_cvtsepi32_epi8(q));
    sum_of[g] = _mm512_castsi512_ps(q);
  }
  const __m512i bsums = _mm512_castps_si512(reduce16(sum_of, [](__m512 a, __m512 c) {  // [16 groups]
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(c)));
  }));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.bsums), _mm512_cvtepi32_epi16(bsums));
  b.d = 1.0f / iscale;
}

}  // namespace
}  // namespace longhaul::kernels::detail
