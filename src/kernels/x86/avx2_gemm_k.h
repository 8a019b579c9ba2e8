// Internal: AVX2 matrix kernels for the K-quants Q4_K and Q6_K with Q8_K activations (see avx2_gemm.h for the
// repacked-weight scheme). Included only by gemm_avx2.cc, after avx2_gemm.h and x86_quantize.h.
//
// A super-block of 256 is 8 chunks of 32 with small integer scales, so a tile sums a whole super-block in i32:
//   Q4_K: s16 of a chunk = its 8 vpmaddubsw steps (q <= 15), then vpmaddwd with the chunk's 6-bit scale;
//         the mins are sum_j min_j * bsum32_j, four vpmaddwd of (min pair) x (activation bsum32 pair).
//   Q6_K: q <= 63, so i16 sums run over 2 steps; each group of 16 has its own signed scale; the -32 offset is
//         sum_g 32 sc_g bsum16_g, eight vpmaddwd, subtracted in i32 (both terms share d_w d_a).
// These are the integers the dot_rows kernels (x86_dot_k.h) compute, so results differ only in float rounding order.
//
// Packed activations, per super-block (kKActBytesAvx2 = 320):
//   [0, 256)    i8 quants in natural order (as Q8_K stores them)
//   [256, 288)  i16 bsums[16] (sums of groups of 16)
//   [288, 304)  i16 bsum32[8] (sums of the chunks of 32), so a 32-bit load gives the pair of chunks 2i, 2i + 1
//   [304, 308)  f32 d
//   [308, 320)  zero
#pragma once

#include "kernels/x86/avx2_gemm.h"
#include "kernels/x86/x86_common.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

constexpr int kKActBytesAvx2 = 320;

inline int64_t packed_row_bytes_k_avx2(int64_t n_in) { return n_in / tensor::kQkK * kKActBytesAvx2; }

void pack_act_k(const float* x, int64_t n_in, uint8_t* dst) {
  for (int64_t ib = 0; ib < n_in / tensor::kQkK; ++ib) {
    tensor::BlockQ8_K b;
    quantize_block_q8_k(x + ib * tensor::kQkK, b);
    uint8_t* out = dst + ib * kKActBytesAvx2;
    std::memcpy(out, b.qs, 256);
    std::memcpy(out + 256, b.bsums, 32);
    int16_t b32[8];
    for (int i = 0; i < 8; ++i) b32[i] = static_cast<int16_t>(b.bsums[2 * i] + b.bsums[2 * i + 1]);
    std::memcpy(out + 288, b32, 16);
    std::memcpy(out + 304, &b.d, 4);
    std::memset(out + 308, 0, 12);
  }
}

// Two i16 in one 32-bit lane: the vpmaddwd operand that multiplies the lane's pair of i16 sums.
inline int32_t i16_pair(int lo, int hi) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
}

constexpr int64_t kSegSuper = 8;  // super-blocks per repacked segment (n_in = 2048): 16 KB of quants

// ---- Q4_K

struct Q4_KRepacked {
  __m256i q[kSegSuper][8][8];  // [super-block][chunk][step] lane r = quants 4k..4k+3 of the chunk, row r
  __m256i sc[kSegSuper][8];    // [super-block][chunk] lane r = the chunk's scale for row r, in both i16 halves
  __m256i mins[kSegSuper][4];  // [super-block][i] lane r = (min of chunk 2i, min of chunk 2i + 1) of row r
  __m256 d[kSegSuper];         // lane r = d of row r
  __m256 dmin[kSegSuper];      // lane r = dmin of row r
};

inline void repack_q4_k(const uint8_t* w, int64_t w_stride, int n_rows, int64_t ib0, int64_t n_super,
                        Q4_KRepacked& rp) {
  for (int64_t j = 0; j < n_super; ++j) {
    alignas(32) int32_t sc[8][8] = {}, mins[4][8] = {};  // [chunk or pair][row]
    alignas(16) uint16_t d16[8] = {}, dmin16[8] = {};
    const tensor::BlockQ4_K* b[8];
    for (int r = 0; r < kTileRows; ++r) {
      b[r] = r < n_rows ? reinterpret_cast<const tensor::BlockQ4_K*>(w + r * w_stride) + ib0 + j : nullptr;
      if (b[r] == nullptr) continue;
      // 6-bit scales and mins of the 8 chunks (the unpacking of k4_scale_min in the scalar twin).
      const uint8_t* s = b[r]->scales;
      uint8_t scale[8], min[8];
      for (int k = 0; k < 4; ++k) {
        scale[k] = s[k] & 63;
        min[k] = s[k + 4] & 63;
        scale[k + 4] = static_cast<uint8_t>((s[k + 8] & 0x0f) | ((s[k] >> 6) << 4));
        min[k + 4] = static_cast<uint8_t>((s[k + 8] >> 4) | ((s[k + 4] >> 6) << 4));
      }
      for (int k = 0; k < 8; ++k) sc[k][r] = i16_pair(scale[k], scale[k]);
      for (int i = 0; i < 4; ++i) mins[i][r] = i16_pair(min[2 * i], min[2 * i + 1]);
      d16[r] = b[r]->d;
      dmin16[r] = b[r]->dmin;
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int k = 0; k < 8; ++k) {
      // Chunk k: the low (even k) or high (odd k) nibbles of qs[32 (k / 2) ..], in element order.
      __m256i rows[8];
      for (int r = 0; r < kTileRows; ++r) {
        if (b[r] == nullptr) {
          rows[r] = _mm256_setzero_si256();
          continue;
        }
        const __m256i q = load256(b[r]->qs + 32 * (k / 2));
        rows[r] = _mm256_and_si256(k % 2 == 0 ? q : _mm256_srli_epi16(q, 4), low4);
      }
      transpose_8x8_epi32(rows, rp.q[j][k]);
      rp.sc[j][k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sc[k]));
    }
    for (int i = 0; i < 4; ++i) rp.mins[j][i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(mins[i]));
    rp.d[j] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(d16)));
    rp.dmin[j] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dmin16)));
  }
}

template <int NT>
inline void tile_tokens_q4_k(const Q4_KRepacked& rp, int64_t ib0, int64_t n_super, const uint8_t* act,
                             int64_t act_stride, __m256* acc) {
  const uint8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = act + t * act_stride;
  for (int64_t j = 0; j < n_super; ++j) {
    const int64_t off = (ib0 + j) * kKActBytesAvx2;
    __m256i isum[NT], s16[NT];
    for (int t = 0; t < NT; ++t) isum[t] = s16[t] = _mm256_setzero_si256();  // only to quiet -Wmaybe-uninitialized
    for (int k = 0; k < 8; ++k) {
      for (int s = 0; s < 8; ++s) {
        const __m256i w = _mm256_load_si256(&rp.q[j][k][s]);
        for (int t = 0; t < NT; ++t) {
          const __m256i p = _mm256_maddubs_epi16(w, broadcast_u32(a[t] + off + 32 * k + 4 * s));
          s16[t] = s == 0 ? p : _mm256_add_epi16(s16[t], p);  // 8 steps: |sum| <= 8 * 2 * 15 * 128 < 32767
          pin(s16[t]);
        }
      }
      for (int t = 0; t < NT; ++t) {
        const __m256i s = _mm256_madd_epi16(s16[t], rp.sc[j][k]);
        isum[t] = k == 0 ? s : _mm256_add_epi32(isum[t], s);
      }
    }
    for (int t = 0; t < NT; ++t) {
      __m256i imin = _mm256_madd_epi16(rp.mins[j][0], broadcast_u32(a[t] + off + 288));
      for (int i = 1; i < 4; ++i)
        imin = _mm256_add_epi32(imin, _mm256_madd_epi16(rp.mins[j][i], broadcast_u32(a[t] + off + 288 + 4 * i)));
      const __m256 da = _mm256_set1_ps(load_f32(a[t] + off + 304));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(rp.d[j], da), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin), _mm256_mul_ps(rp.dmin[j], da), acc[t]);
    }
  }
}

// ---- Q6_K

struct Q6_KRepacked {
  __m256i q[kSegSuper][8][8];  // [super-block][chunk][step] lane r = quants (0..63) 4k..4k+3 of the chunk, row r
  __m256i sc[kSegSuper][16];   // [super-block][group of 16] lane r = the group's signed scale, both i16 halves
  __m256i coef[kSegSuper][8];  // [super-block][i] lane r = (32 sc of group 2i, 32 sc of group 2i + 1) of row r
  __m256 d[kSegSuper];         // lane r = d of row r
};

inline void repack_q6_k(const uint8_t* w, int64_t w_stride, int n_rows, int64_t ib0, int64_t n_super,
                        Q6_KRepacked& rp) {
  for (int64_t j = 0; j < n_super; ++j) {
    alignas(32) int32_t sc[16][8] = {}, coef[8][8] = {};  // [group or pair][row]
    alignas(16) uint16_t d16[8] = {};
    const tensor::BlockQ6_K* b[8];
    for (int r = 0; r < kTileRows; ++r) {
      b[r] = r < n_rows ? reinterpret_cast<const tensor::BlockQ6_K*>(w + r * w_stride) + ib0 + j : nullptr;
      if (b[r] == nullptr) continue;
      for (int g = 0; g < 16; ++g) sc[g][r] = i16_pair(b[r]->scales[g], b[r]->scales[g]);
      for (int i = 0; i < 8; ++i) coef[i][r] = i16_pair(32 * b[r]->scales[2 * i], 32 * b[r]->scales[2 * i + 1]);
      d16[r] = b[r]->d;
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i top2 = _mm256_set1_epi8(0x30);
    for (int k = 0; k < 8; ++k) {
      // Chunk k (the layout of Q6_KKernel::chunk in x86_dot_k.h): half h = k / 4; chunks 0 and 1 of a half take the
      // low nibbles of ql[0:32] and ql[32:64], chunks 2 and 3 the high nibbles; qh bits 2c..2c+1 are the top bits.
      const int h = k / 4, c = k % 4;
      __m256i rows[8];
      for (int r = 0; r < kTileRows; ++r) {
        if (b[r] == nullptr) {
          rows[r] = _mm256_setzero_si256();
          continue;
        }
        const __m256i ql = load256(b[r]->ql + 64 * h + 32 * (c % 2));
        const __m256i low = _mm256_and_si256(c < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
        const __m256i qh = load256(b[r]->qh + 32 * h);
        __m256i high;
        switch (c) {
          case 0: high = _mm256_slli_epi16(qh, 4); break;
          case 1: high = _mm256_slli_epi16(qh, 2); break;
          case 2: high = qh; break;
          default: high = _mm256_srli_epi16(qh, 2); break;
        }
        high = _mm256_and_si256(high, top2);
        rows[r] = _mm256_or_si256(low, high);
      }
      transpose_8x8_epi32(rows, rp.q[j][k]);
    }
    for (int g = 0; g < 16; ++g) rp.sc[j][g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sc[g]));
    for (int i = 0; i < 8; ++i) rp.coef[j][i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(coef[i]));
    rp.d[j] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(d16)));
  }
}

template <int NT>
inline void tile_tokens_q6_k(const Q6_KRepacked& rp, int64_t ib0, int64_t n_super, const uint8_t* act,
                             int64_t act_stride, __m256* acc) {
  const uint8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = act + t * act_stride;
  for (int64_t j = 0; j < n_super; ++j) {
    const int64_t off = (ib0 + j) * kKActBytesAvx2;
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) {
      // The -32 offset, started negative so the quant sums add onto it.
      __m256i corr = _mm256_madd_epi16(rp.coef[j][0], broadcast_u32(a[t] + off + 256));
      for (int i = 1; i < 8; ++i)
        corr = _mm256_add_epi32(corr, _mm256_madd_epi16(rp.coef[j][i], broadcast_u32(a[t] + off + 256 + 4 * i)));
      isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), corr);
    }
    for (int k = 0; k < 8; ++k) {
      for (int pair = 0; pair < 4; ++pair) {
        // Steps 2 pair, 2 pair + 1: |sum| <= 2 * 2 * 63 * 128 < 32767. Steps 0-3 are group 2k, 4-7 group 2k + 1.
        const __m256i w0 = _mm256_load_si256(&rp.q[j][k][2 * pair]);
        const __m256i w1 = _mm256_load_si256(&rp.q[j][k][2 * pair + 1]);
        const __m256i scale = rp.sc[j][2 * k + pair / 2];
        for (int t = 0; t < NT; ++t) {
          const uint8_t* x = a[t] + off + 32 * k + 8 * pair;
          const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(w0, broadcast_u32(x)),
                                               _mm256_maddubs_epi16(w1, broadcast_u32(x + 4)));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16, scale));
          pin(isum[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m256 da = _mm256_set1_ps(load_f32(a[t] + off + 304));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(rp.d[j], da), acc[t]);
    }
  }
}

// ---- The tile functions.

struct Q4_KTiles {
  using Repacked = Q4_KRepacked;
  static constexpr int64_t kBlockElems = tensor::kQkK;
  static constexpr int64_t kSegBlocks = kSegSuper;
  static constexpr int kTokens = 4;
  static void repack(const uint8_t* w, int64_t w_stride, int64_t r0, int n_rows, int64_t ib0, int64_t n,
                     Repacked& rp) {
    repack_q4_k(w + r0 * w_stride, w_stride, n_rows, ib0, n, rp);
  }
  template <int NT>
  static void tokens(const Repacked& rp, int64_t ib0, int64_t n, int64_t, const uint8_t* act, int64_t stride,
                     __m256* acc) {
    tile_tokens_q4_k<NT>(rp, ib0, n, act, stride, acc);
  }
};

struct Q6_KTiles {
  using Repacked = Q6_KRepacked;
  static constexpr int64_t kBlockElems = tensor::kQkK;
  static constexpr int64_t kSegBlocks = kSegSuper;
  static constexpr int kTokens = 4;
  static void repack(const uint8_t* w, int64_t w_stride, int64_t r0, int n_rows, int64_t ib0, int64_t n,
                     Repacked& rp) {
    repack_q6_k(w + r0 * w_stride, w_stride, n_rows, ib0, n, rp);
  }
  template <int NT>
  static void tokens(const Repacked& rp, int64_t ib0, int64_t n, int64_t, const uint8_t* act, int64_t stride,
                     __m256* acc) {
    tile_tokens_q6_k<NT>(rp, ib0, n, act, stride, acc);
  }
};

}  // namespace
}  // namespace longhaul::kernels::detail
