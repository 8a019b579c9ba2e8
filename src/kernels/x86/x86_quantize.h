// Internal: x86 helpers that quantize activations exactly as the scalar twins do (bit-identical): one block at a
// time, and the packing of the matrix kernels eight blocks at a time. Included by the per-ISA translation units
// after x86_common.h.
#pragma once

#include <algorithm>

#include "kernels/x86/x86_common.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

// Each quantizer built on these computes the block scale with the same scalar operations as the scalar twin and
// rounds with an exact emulation of its rounding, so the bytes are identical.

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// roundf (half away from zero) of 8 floats: truncate, then step away from zero when the dropped part is >= 0.5.
// v - trunc(v) is exact, so the comparison decides exactly as roundf does.
inline __m256i round_away_epi32(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = abs_ps(_mm256_sub_ps(v, t));
  const __m256 step = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
  const __m256 bump = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step);
  return _mm256_cvttps_epi32(_mm256_add_ps(t, bump));
}

// 32 i32 (four vectors, in order) -> 32 i8, in order.
inline __m256i pack_32_i8(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
  const __m256i p01 = _mm256_packs_epi32(i0, i1);
  const __m256i p23 = _mm256_packs_epi32(i2, i3);
  const __m256i p = _mm256_packs_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Quantizes one block of 32 as Q8_0 / Q8_1 do; returns the f32 scale and writes the quants and their sum.
inline float quantize_block_32(const float* x, int8_t* qs, int32_t* sum) {
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    amax = _mm256_max_ps(amax, abs_ps(v[k]));
  }
  const float d = hmax_ps(amax) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m256 idv = _mm256_set1_ps(id);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) q[k] = round_away_epi32(_mm256_mul_ps(v[k], idv));
  *sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), pack_32_i8(q[0], q[1], q[2], q[3]));
  return d;
}

// Packed activations of the matrix kernels for 32-element blocks (the AVX2 long-batch tiles, the interleaved
// kernels of kernels/interleave.h), one row of nb = n_in / 32 blocks (rounded up to 64 bytes):
//   [0, 32 nb)          i8 quants, block after block (as Q8_0 / Q8_1 store them)
//   [32 nb, 36 nb)      f32 d_a per block: the f16-rounded scale the dot products of the paired type use
//   [36 nb, 40 nb)      kSum: i32 sum of the block's quants (for the offsets of Q4_0 / Q5_0 / unsigned Q8_0)
//                       kS:   f32 s_a = f16(d_a * sum), as Q8_1 stores it (for the mins of Q4_1 / Q5_1)
enum class ActExtra { kSum, kS };

inline int64_t packed_row_bytes_act_32(int64_t n_in) {
  const int64_t nb = n_in / tensor::kQk32;
  return (nb * 40 + 63) / 64 * 64;
}

// Reduces 8 vectors to one whose lane b is the reduction of vector b's 8 lanes: 7 operations and 14 shuffles,
// where 8 separate horizontal reductions take 24 of each. `op` combines two vectors lane by lane (on float bits;
// an integer op casts) and must be associative and commutative over the values it meets (the maximum of floats,
// the sum of small integers). v: [8 vectors][8 lanes], overwritten. The AVX-512 packer's reduce16
// (avx512_quantize.h) does the same for 16.
template <typename Op>
inline __m256 reduce8(__m256 (&v)[8], Op op) {
  // 8 -> 4: in each 128-bit lane, partials of v[2i] and v[2i+1], interleaved (a b a b).
  for (int i = 0; i < 4; ++i)
    v[i] = op(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  // 4 -> 2: in each 128-bit lane, the partials of v[4j .. 4j+3], in order.
  for (int j = 0; j < 2; ++j) {
    const __m256d a = _mm256_castps_pd(v[2 * j]), b = _mm256_castps_pd(v[2 * j + 1]);
    v[j] = op(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)), _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
  }
  // 2 -> 1, across the 128-bit lanes: lanes 0-3 hold v[0 .. 3] whole, lanes 4-7 v[4 .. 7].
  return op(_mm256_permute2f128_ps(v[0], v[1], 0x20), _mm256_permute2f128_ps(v[0], v[1], 0x31));
}

// Packs blocks [ib, ib + n) of a row (n <= 8), eight blocks per vector operation: each block's lane does what
// quantize_block_32 does for it, so the bytes are the same. Missing blocks (n < 8) read as zeros and are not stored.
template <ActExtra kExtra>
inline void pack_8_blocks(const float* x, int64_t nb, int64_t ib, int n, uint8_t* dst) {
  __m256 amax_of[8];  // [block][8 lanes]: the largest |x| of each lane's four elements
  for (int b = 0; b < 8; ++b) {
    amax_of[b] = _mm256_setzero_ps();
    if (b >= n) continue;
    const float* xb = x + (ib + b) * tensor::kQk32;
    for (int k = 0; k < 4; ++k) amax_of[b] = _mm256_max_ps(amax_of[b], abs_ps(_mm256_loadu_ps(xb + 8 * k)));
  }
  const __m256 amax = reduce8(amax_of, [](__m256 a, __m256 b) { return _mm256_max_ps(a, b); });  // [8 blocks]
  const __m256 d = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
  const __m256 nonzero = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_OQ);
  alignas(32) float id[8];
  _mm256_store_ps(id, _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0f), d)));
  __m256 sum_of[8];  // [block][8 lanes]: i32 bits, the block's quants added lane by lane
  for (int b = 0; b < 8; ++b) {
    sum_of[b] = _mm256_setzero_ps();
    if (b >= n) continue;
    const float* xb = x + (ib + b) * tensor::kQk32;
    const __m256 idb = _mm256_set1_ps(id[b]);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = round_away_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * k), idb));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 * (ib + b)), pack_32_i8(q[0], q[1], q[2], q[3]));
    sum_of[b] = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
  }
  const __m256i sum = _mm256_castps_si256(reduce8(sum_of, [](__m256 a, __m256 b) {  // [8 blocks]
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
  }));
  // The dot products use the f16-rounded scale; s (Q8_1) is f16(sum * d) with the f32 d.
  alignas(32) float d_stored[8], extra[8];
  _mm256_store_ps(d_stored, _mm256_cvtph_ps(_mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT)));
  if constexpr (kExtra == ActExtra::kSum) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(extra), sum);
  } else {
    const __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), d);
    _mm256_store_ps(extra, _mm256_cvtph_ps(_mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT)));
  }
  std::memcpy(dst + 32 * nb + 4 * ib, d_stored, 4 * static_cast<size_t>(n));
  std::memcpy(dst + 36 * nb + 4 * ib, extra, 4 * static_cast<size_t>(n));
}

// A row in the layout above, kBlocks blocks per call of kPackBlocks (blocks [ib, ib + n) of the row's nb), then
// the padding zeroed.
template <int kBlocks, void (*kPackBlocks)(const float* x, int64_t nb, int64_t ib, int n, uint8_t* dst)>
inline void pack_row_32(const float* x, int64_t n_in, uint8_t* dst) {
  const int64_t nb = n_in / tensor::kQk32;
  for (int64_t ib = 0; ib < nb; ib += kBlocks)
    kPackBlocks(x, nb, ib, static_cast<int>(std::min<int64_t>(kBlocks, nb - ib)), dst);
  const int64_t used = 40 * nb;
  std::memset(dst + used, 0, static_cast<size_t>(packed_row_bytes_act_32(n_in) - used));
}

// Eight blocks at a time: quantizing activations one block at a time, with two horizontal reductions per block,
// took 9-11% of a SmolLM2 prompt step (measured with the AVX-512 kernels, whose packer does sixteen at a time).
template <ActExtra kExtra>
void pack_act_32(const float* x, int64_t n_in, uint8_t* dst) {
  pack_row_32<8, pack_8_blocks<kExtra>>(x, n_in, dst);
}

// Quantizes one super-block of 256 as Q8_K does.
inline void quantize_block_q8_k(const float* x, tensor::BlockQ8_K& b) {
  __m256 amax_v = _mm256_setzero_ps();
  for (int k = 0; k < 32; ++k) amax_v = _mm256_max_ps(amax_v, abs_ps(_mm256_loadu_ps(x + 8 * k)));
  const float amax = hmax_ps(amax_v);
  if (amax == 0.0f) {
    std::memset(&b, 0, sizeof(b));
    return;
  }
  // The scalar twin keeps the first element of largest magnitude (with its sign), found 8 at a time.
  float max = 0.0f;
  const __m256 amax_b = _mm256_set1_ps(amax);
  for (int k = 0; k < 32; ++k) {
    const int at = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + 8 * k)), amax_b, _CMP_EQ_OQ));
    if (at != 0) {
      max = x[8 * k + __builtin_ctz(static_cast<unsigned>(at))];
      break;
    }
  }
  const float iscale = -127.0f / max;
  const __m256 is = _mm256_set1_ps(iscale);
  for (int k = 0; k < 8; ++k) {
    // Round to nearest even (the default MXCSR mode), as the twin's magic-number nearest_int does.
    __m256i q[4];
    for (int m = 0; m < 4; ++m) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * m), is);
      q[m] = _mm256_min_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127));
    }
    // bsums of the two groups of 16 in this chunk.
    b.bsums[2 * k] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(q[0], q[1])));
    b.bsums[2 * k + 1] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(q[2], q[3])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.qs + 32 * k), pack_32_i8(q[0], q[1], q[2], q[3]));
  }
  b.d = 1.0f / iscale;
}

}  // namespace
}  // namespace longhaul::kernels::detail
