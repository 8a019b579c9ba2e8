// Internal: AVX-512 (VNNI + VBMI) matrix kernels for the K-quants Q4_K and Q6_K with Q8_K activations. Included
// only by gemm_avx512.cc, after avx512_gemm32.h.
//
// A super-block of 256 elements is four 64-element vectors of unsigned quants (v0..v3). Per activation row:
//   p_i = vpdpbusd(0, v_i, a_i)          32-bit lane j: sum of 4 products, |p| <= 4 * 63 * 127 < 2^15
//   s  += vpdpwssd(s, p_i, scale_i)       the low 16 bits of p_i times the lane's group scale (high word 0)
// so two instructions apply the per-group scales of 64 elements; the offsets (Q4_K mins, Q6_K's -32) are
// coefficient-times-bsum terms, one vpmaddwd of the activation's 16 bsums per super-block.
//
// Packed activations, per super-block (kKActBytes = 384):
//   [0, 256)    i8 quants in the order of the weight vectors v0..v3 (see kQ4KOrder / natural order for Q6_K)
//   [256, 288)  i16 bsums[16] (sums of groups of 16, natural order)
//   [320, 384)  f32 d, replicated in 16 lanes
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/x86/avx512_quantize.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

constexpr int kKActBytes = 384;

inline int64_t packed_row_bytes_k(int64_t n_in) { return n_in / tensor::kQkK * kKActBytes; }

// Chunk (32 elements) order of the 8 chunk slots of a packed super-block: Q4_K's v0 holds chunks 0 and 2 (the low
// nibbles of qs[0:64]), v1 chunks 1 and 3, v2 chunks 4 and 6, v3 chunks 5 and 7.
constexpr int kQ4KOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};
constexpr int kNaturalOrder[8] = {0, 1, 2, 3, 4, 5, 6, 7};

template <const int* kOrder>
void pack_q8_k(const float* x, int64_t n_in, uint8_t* dst) {
  for (int64_t ib = 0; ib < n_in / tensor::kQkK; ++ib) {
    tensor::BlockQ8_K b;
    quantize_block_q8_k_avx512(x + ib * tensor::kQkK, b);
    uint8_t* out = dst + ib * kKActBytes;
    for (int slot = 0; slot < 8; ++slot) std::memcpy(out + 32 * slot, b.qs + 32 * kOrder[slot], 32);
    std::memcpy(out + 256, b.bsums, 32);
    std::memset(out + 288, 0, 32);
    for (int l = 0; l < 16; ++l) std::memcpy(out + 320 + 4 * l, &b.d, 4);
  }
}

// A scale vector for vpdpwssd from 16 bytes, one per group of 16 elements in packed order: 32-bit lane j of the
// vector that starts at group first_group gets the byte of its group, zero-extended.
inline __m512i lane_scales_u8(__m128i bytes16, int first_group) {
  // Lane j covers elements 4j..4j+3 of the vector: group first_group + j / 4.
  const __m512i idx = _mm512_add_epi32(_mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                                            13, 14, 15),
                                                         2),
                                       _mm512_set1_epi32(first_group));
  return _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, idx, _mm512_castsi128_si512(bytes16));
}

struct KGroup4 {
  __m512i v[4];      // u8 quants
  __m512i sc[4];     // per-lane scales (i16 in the low word)
  __m512i coef;      // [16] i16 coefficient per bsum group (Q4_K: mins; Q6_K: 32 * scale), upper half 0
  __m512 d;          // super-block scale, replicated
  __m512 c;          // scale of the coefficient term, replicated (Q4_K: dmin; Q6_K: d)
};

struct Q4_KUnpack {
  using WBlock = tensor::BlockQ4_K;
  static constexpr const int* kOrder = kQ4KOrder;
  static KGroup4 unpack(const WBlock& b) {
    KGroup4 g;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i z0 = _mm512_loadu_si512(b.qs);
    const __m512i z1 = _mm512_loadu_si512(b.qs + 64);
    g.v[0] = _mm512_and_si512(z0, low4);
    g.v[1] = _mm512_and_si512(_mm512_srli_epi16(z0, 4), low4);
    g.v[2] = _mm512_and_si512(z1, low4);
    g.v[3] = _mm512_and_si512(_mm512_srli_epi16(z1, 4), low4);
    // 6-bit scales and mins of the 8 chunks (the packing of k4_scale_min in the scalar twin).
    uint32_t a0, a1, a2;
    std::memcpy(&a0, b.scales, 4);
    std::memcpy(&a1, b.scales + 4, 4);
    std::memcpy(&a2, b.scales + 8, 4);
    const uint64_t sc = (a0 & 0x3f3f3f3fu) | uint64_t{(a2 & 0x0f0f0f0fu) | ((a0 >> 2) & 0x30303030u)} << 32;
    const uint64_t mn = (a1 & 0x3f3f3f3fu) | uint64_t{((a2 >> 4) & 0x0f0f0f0fu) | ((a1 >> 2) & 0x30303030u)} << 32;
    // Per vector i, lanes 0-7 take the scale of chunk kOrder[2i], lanes 8-15 that of kOrder[2i + 1]: reorder the
    // 8 scale bytes to slot order (each twice, groups of 16), then spread.
    const __m128i sc8 = _mm_cvtsi64_si128(static_cast<int64_t>(sc));
    const __m128i slot_pairs = _mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7));
    for (int i = 0; i < 4; ++i) g.sc[i] = lane_scales_u8(slot_pairs, 4 * i);
    // Mins per bsum group (natural order): group k uses the min of chunk k / 2.
    const __m128i m8 = _mm_cvtsi64_si128(static_cast<int64_t>(mn));
    g.coef = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8)));
    g.d = _mm512_set1_ps(f16_scalar(b.d));
    g.c = _mm512_set1_ps(f16_scalar(b.dmin));
    return g;
  }
};

struct Q6_KUnpack {
  using WBlock = tensor::BlockQ6_K;
  static constexpr const int* kOrder = kNaturalOrder;
  static KGroup4 unpack(const WBlock& b) {
    KGroup4 g;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i top2 = _mm512_set1_epi8(0x30);
    // Per half h (128 elements): v[2h] = elements 0..63 of the half (low nibbles of ql[0:64]; qh bits 0-1, 2-3),
    // v[2h + 1] = elements 64..127 (high nibbles; qh bits 4-5, 6-7). qh is read twice, once per 256-bit half.
    const __m512i shift_a = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);  // left
    const __m512i shift_b = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);  // right
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(b.ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h)));
      g.v[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_and_si512(_mm512_sllv_epi16(qh, shift_a), top2));
      g.v[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                       _mm512_and_si512(_mm512_srlv_epi16(qh, shift_b), top2));
    }
    const __m128i sc16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    // Signed scales: spread as bytes, then sign-extend within the low word (the high word stays 0).
    for (int i = 0; i < 4; ++i) {
      const __m512i u = lane_scales_u8(sc16, 4 * i);
      g.sc[i] = _mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(u, 24), 24), _mm512_set1_epi32(0xffff));
    }
    // The -32 offset: coefficient 32 * scale per group of 16.
    g.coef = _mm512_zextsi256_si512(_mm256_slli_epi16(_mm256_cvtepi8_epi16(sc16), 5));
    const float d = f16_scalar(b.d);
    g.d = _mm512_set1_ps(d);
    g.c = g.d;
    return g;
  }
};

template <class U, int NT>
inline void k_row(int64_t n_in, const uint8_t* w_row, const uint8_t* act, int64_t act_stride, float* y, int64_t ldy) {
  using WBlock = typename U::WBlock;
  const int64_t nb = n_in / tensor::kQkK;
  const auto* wb = reinterpret_cast<const WBlock*>(w_row);  // [nb]
  __m512 acc[NT];
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t ib = 0; ib < nb; ++ib) {
    if constexpr (NT == 1) {
      // Decode: prefetch ahead in the weight stream, as the 32-block kernels do.
      const auto* p = reinterpret_cast<const char*>(wb + ib);
      for (int off = 0; off < static_cast<int>(sizeof(WBlock)); off += 64)
        _mm_prefetch(p + kPrefetchBytes + off, _MM_HINT_T0);
    }
    const KGroup4 g = U::unpack(wb[ib]);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const uint8_t* a = act + t * act_stride + ib * kKActBytes;
      __m512i s = _mm512_setzero_si512();
      for (int i = 0; i < 4; ++i) {
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), g.v[i], _mm512_load_si512(a + 64 * i));
        s = _mm512_dpwssd_epi32(s, p, g.sc[i]);
      }
      // coef . bsums in 8 lanes (the upper half of coef is 0).
      const __m512i corr = _mm512_madd_epi16(_mm512_zextsi256_si512(_mm256_load_si256(
                                                 reinterpret_cast<const __m256i*>(a + 256))),
                                             g.coef);
      const __m512 da = _mm512_load_ps(reinterpret_cast<const float*>(a + 320));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(g.d, da), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(g.c, da), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) y[t * ldy] = _mm512_reduce_add_ps(acc[t]);
}

// Tokens per pass over a row: the unpacked superblock (11 registers) is reused by every token of the pass.
constexpr int kKTileTokens = 8;

template <class U, int NT>
void k_tile_rows(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                 int64_t act_stride, float* y, int64_t ldy) {
  for (int64_t r = 0; r < n_rows; ++r) k_row<U, NT>(n_in, w + r * w_stride, act, act_stride, y + r, ldy);
}

template <class U>
void gemm_k_tile(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                 int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  if (n_tokens == 1) prefetch_start(w, n_rows * w_stride);
  int64_t t = 0;
  for (; t + kKTileTokens <= n_tokens; t += kKTileTokens)
    k_tile_rows<U, kKTileTokens>(n_in, w, w_stride, n_rows, act + t * act_stride, act_stride, y + t * ldy, ldy);
  const uint8_t* a = act + t * act_stride;
  float* yt = y + t * ldy;
  switch (n_tokens - t) {
    case 0: break;
    case 1: k_tile_rows<U, 1>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 2: k_tile_rows<U, 2>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 3: k_tile_rows<U, 3>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 4: k_tile_rows<U, 4>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 5: k_tile_rows<U, 5>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 6: k_tile_rows<U, 6>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    default: k_tile_rows<U, 7>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
