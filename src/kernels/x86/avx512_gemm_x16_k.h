// Internal: AVX-512 VNNI kernels for the K-quants Q4_K and Q6_K stored 16 rows interleaved (layout and packed
// activations in kernels/interleave.h). Included only by gemm_avx512.cc, after avx512_gemm_k.h (whose natural-order
// Q8_K packing these kernels read) and avx512_gemm_x16.h.
//
// Lane r of every vector is row r of a group. Per sub-block s of a super-block and token, vpdpbusd against 4
// activation bytes broadcast to every lane builds the 16 rows' integer sums of the sub-block (8 for Q4_K's 32
// elements, 4 for Q6_K's 16); one vpmulld by the rows' 6- or 8-bit scales and one add fold them into an integer
// total per row. The offsets (Q4_K's mins, Q6_K's -32) are one vpdpwssd per sub-block against the activation's
// 16-element sums. Only then does a super-block turn into floats: acc += float(total) * d_w * d_a (minus the
// Q4_K min term scaled by dmin_w * d_a). The integer part is exact, so the result does not depend on the order of
// the sub-blocks, and equals the scalar twin in interleave.cc bit for bit.
//
// Bounds (no i32 overflow): Q4_K |sum_s sc_s isum_s| <= 8 * 63 * 32 * 15 * 127 < 2^25; Q6_K, with the offset
// taken out, |sum_s sc_s (isum_s - 32 bsum_s)| <= 16 * 128 * 16 * 32 * 127 < 2^28.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

// Packed Q8_K activations (pack_q8_k<kNaturalOrder>): per super-block 256 i8 quants, 16 i16 bsums at 256, f32 d at
// 320. Four of their bytes (or two bsums) at p in every lane: load_i32 of avx512_gemm_x16.h, broadcast.
inline __m512i broadcast_i32(const uint8_t* p) { return _mm512_set1_epi32(load_i32(p)); }

// Byte `byte` (0..3) of each i32 lane, zero-extended.
inline __m512i byte_lanes(__m512i v, int byte) {
  return _mm512_and_si512(_mm512_srli_epi32(v, 8 * byte), _mm512_set1_epi32(0xff));
}

// Q4_K's 6-bit scale and min of sub-block s (0..7) of the 16 rows, one per i32 lane, from the three vectors of
// packed scale bytes (lane r of vector i: bytes 4i..4i+3 of row r's scales[12]).
inline void q4_k_scale_min(const __m512i (&sv)[3], int s, __m512i& sc, __m512i& mn) {
  const __m512i m6 = _mm512_set1_epi32(0x3f);
  if (s < 4) {
    sc = _mm512_and_si512(byte_lanes(sv[0], s), m6);
    mn = _mm512_and_si512(byte_lanes(sv[1], s), m6);
  } else {
    const __m512i hi = byte_lanes(sv[2], s - 4);  // q[s + 4]
    const __m512i top_sc = _mm512_slli_epi32(_mm512_srli_epi32(byte_lanes(sv[0], s - 4), 6), 4);
    const __m512i top_mn = _mm512_slli_epi32(_mm512_srli_epi32(byte_lanes(sv[1], s - 4), 6), 4);
    sc = _mm512_or_si512(_mm512_and_si512(hi, _mm512_set1_epi32(0x0f)), top_sc);
    mn = _mm512_or_si512(_mm512_srli_epi32(hi, 4), top_mn);
  }
}

// The layouts (byte offsets inside a group's super-block, interleave.h). accumulate() adds one super-block wb of
// the 16 rows against the tokens' packed super-blocks a[t] to acc[t].
struct X16Q4_K {
  static constexpr int64_t kGroupBlockBytes = 16 * static_cast<int64_t>(sizeof(tensor::BlockQ4_K));  // 2304
  static constexpr int64_t kSuperBlockElements = tensor::kQkK;
  static constexpr int64_t kDminAt = 32, kScalesAt = 64, kQuantsAt = 256;

  template <int NT>
  static void accumulate(const uint8_t* wb, const uint8_t* const (&a)[NT], __m512 (&acc)[NT]) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i sv[3] = {_mm512_loadu_si512(wb + kScalesAt), _mm512_loadu_si512(wb + kScalesAt + 64),
                           _mm512_loadu_si512(wb + kScalesAt + 128)};
    __m512i total[NT], mins[NT];
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) total[t] = mins[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
      // Sub-block s: the low (even s) or high (odd s) nibbles of quant vectors 8 (s / 2) .. 8 (s / 2) + 7.
      const uint8_t* qv = wb + kQuantsAt + 64 * 8 * (s / 2);
      __m512i isum[NT];
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        const __m512i v = _mm512_loadu_si512(qv + 64 * c);
        const __m512i u = s % 2 == 0 ? _mm512_and_si512(v, low4) : _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) isum[t] = _mm512_dpbusd_epi32(isum[t], u, broadcast_i32(a[t] + 32 * s + 4 * c));
      }
      __m512i sc, mn;
      q4_k_scale_min(sv, s, sc, mn);
      // The min's i16 copy in both halves of each lane meets the two bsums of the sub-block's 32 elements.
      const __m512i mn2 = _mm512_or_si512(mn, _mm512_slli_epi32(mn, 16));
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        total[t] = _mm512_add_epi32(total[t], _mm512_mullo_epi32(isum[t], sc));
        mins[t] = _mm512_dpwssd_epi32(mins[t], mn2, broadcast_i32(a[t] + 256 + 4 * s));
      }
    }
    const __m512 d_w = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb)));
    const __m512 dmin_w = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + kDminAt)));
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const __m512 da = _mm512_set1_ps(load_f32(a[t] + 320));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total[t]), _mm512_mul_ps(d_w, da), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins[t]), _mm512_mul_ps(dmin_w, da), acc[t]);
    }
  }
};

struct X16Q6_K {
  static constexpr int64_t kGroupBlockBytes = 16 * static_cast<int64_t>(sizeof(tensor::BlockQ6_K));  // 3360
  static constexpr int64_t kSuperBlockElements = tensor::kQkK;
  static constexpr int64_t kScalesAt = 32, kLowAt = 288, kHighAt = 2336;

  template <int NT>
  static void accumulate(const uint8_t* wb, const uint8_t* const (&a)[NT], __m512 (&acc)[NT]) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i bits45 = _mm512_set1_epi8(0x30);
    __m512i total[NT], offs[NT];
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) total[t] = offs[t] = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int s = 0; s < 16; ++s) {
      // Element e = 128 h + 32 k + l (l < 32) is, with q = ql[64 h + 32 (k % 2) + l] and hb = qh[32 h + l]: its low
      // nibble for k < 2, else its high one, plus bits 2k, 2k + 1 of hb as bits 4 and 5. Sub-block s = e / 16.
      const int h = s / 8, k = (s % 8) / 2, l0 = 16 * (s % 2);
      const uint8_t* lv = wb + kLowAt + 64 * (16 * h + 8 * (k % 2) + l0 / 4);
      const uint8_t* hv = wb + kHighAt + 64 * (8 * h + l0 / 4);
      __m512i isum[NT];
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m512i lo = _mm512_loadu_si512(lv + 64 * c);
        const __m512i hi = _mm512_loadu_si512(hv + 64 * c);
        const __m512i nib = k < 2 ? _mm512_and_si512(lo, low4) : _mm512_and_si512(_mm512_srli_epi16(lo, 4), low4);
        // Bits 2k, 2k + 1 of each qh byte to bits 4, 5 (16-bit shifts; the mask drops what crosses bytes).
        const __m512i top = k <= 2 ? _mm512_and_si512(_mm512_slli_epi16(hi, 4 - 2 * k), bits45)
                                   : _mm512_and_si512(_mm512_srli_epi16(hi, 2), bits45);
        const __m512i u = _mm512_or_si512(nib, top);
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t)
          isum[t] = _mm512_dpbusd_epi32(isum[t], u, broadcast_i32(a[t] + 16 * s + 4 * c));
      }
      // Signed 8-bit scale of sub-block s (lane r of scale vector s / 4: scales[4 (s / 4) .. 4 (s / 4) + 3] of row r).
      const __m512i sv = _mm512_loadu_si512(wb + kScalesAt + 64 * (s / 4));
      const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(sv, 24 - 8 * (s % 4)), 24);
      // The offset: sc times the sub-block's bsum, in the low i16 half of each lane (the high half of sc2 is 0).
      const __m512i sc2 = _mm512_and_si512(sc, _mm512_set1_epi32(0xffff));
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        total[t] = _mm512_add_epi32(total[t], _mm512_mullo_epi32(isum[t], sc));
        uint16_t bsum;  // bsums[s], as its i16 bits
        std::memcpy(&bsum, a[t] + 256 + 2 * s, 2);
        offs[t] = _mm512_dpwssd_epi32(offs[t], sc2, _mm512_set1_epi32(bsum));
      }
    }
    const __m512 d_w = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb)));
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const __m512i q = _mm512_sub_epi32(total[t], _mm512_slli_epi32(offs[t], 5));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_mul_ps(d_w, _mm512_set1_ps(load_f32(a[t] + 320))), acc[t]);
    }
  }
};

// NT tokens against one group of 16 rows (w at the group's first super-block); y[t * ldy + r] for r < 16. Called
// by x16_groups (avx512_gemm_x16.h) for the layouts with kSuperBlockElements.
template <class L, int NT>
void x16_k_group(int64_t nb, const uint8_t* w, const uint8_t* act, int64_t act_stride, float* y, int64_t ldy) {
  __m512 acc[NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* wb = w + b * L::kGroupBlockBytes;
    for (int64_t off = 0; off < L::kGroupBlockBytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(wb + kX16PrefetchBytes + off), _MM_HINT_T0);
    const uint8_t* a[NT];
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) a[t] = act + t * act_stride + b * kKActBytes;
    L::template accumulate<NT>(wb, a, acc);
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + t * ldy, acc[t]);
}

}  // namespace
}  // namespace longhaul::kernels::detail
