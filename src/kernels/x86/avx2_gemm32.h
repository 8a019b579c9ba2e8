// Internal: AVX2 matrix kernels for the 32-element block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (see avx2_gemm.h for the
// repacked-weight scheme). Included only by gemm_avx2.cc, after avx2_gemm.h and x86_quantize.h.
//
// Packed activations: pack_act_32 (x86_quantize.h).
#pragma once

#include "kernels/x86/avx2_gemm.h"
#include "kernels/x86/x86_common.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

// ---- Weight types: each gives the 32 quants of a block in element order (unsigned, or signed for Q8_0), its
// scales, and how far i16 sums of vpmaddubsw results can run before they could overflow.

struct Q4_0Weights {
  using WBlock = tensor::BlockQ4_0;
  static constexpr int kStepsPerI16 = 8;  // pair sums <= 2 * 15 * 128: 8 of them stay below 32767
  static constexpr int kOffset = 8;       // x = d (q - 8)
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = false;
  static constexpr bool kHighBits = false;  // a fifth bit per quant
  static __m256i quants(const WBlock& b) { return nibbles_32(b.qs); }
  static uint16_t d(const WBlock& b) { return b.d; }
  static uint16_t m(const WBlock&) { return 0; }
};

struct Q4_1Weights {
  using WBlock = tensor::BlockQ4_1;
  static constexpr int kStepsPerI16 = 8;
  static constexpr int kOffset = 0;
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;  // x = d q + m
  static constexpr bool kHighBits = false;
  static __m256i quants(const WBlock& b) { return nibbles_32(b.qs); }
  static uint16_t d(const WBlock& b) { return b.d; }
  static uint16_t m(const WBlock& b) { return b.m; }
};

inline __m256i five_bit_quants(const uint8_t* qs, const uint8_t* qh) {
  const __m256i high = _mm256_and_si256(bits_to_bytes(load_u32(qh)), _mm256_set1_epi8(0x10));
  return _mm256_or_si256(nibbles_32(qs), high);
}

struct Q5_0Weights {
  using WBlock = tensor::BlockQ5_0;
  static constexpr int kStepsPerI16 = 4;  // pair sums <= 2 * 31 * 128
  static constexpr int kOffset = 16;
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = false;
  static constexpr bool kHighBits = true;
  static __m256i quants(const WBlock& b) { return five_bit_quants(b.qs, b.qh); }
  static uint16_t d(const WBlock& b) { return b.d; }
  static uint16_t m(const WBlock&) { return 0; }
};

struct Q5_1Weights {
  using WBlock = tensor::BlockQ5_1;
  static constexpr int kStepsPerI16 = 4;
  static constexpr int kOffset = 0;
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;
  static constexpr bool kHighBits = true;
  static __m256i quants(const WBlock& b) { return five_bit_quants(b.qs, b.qh); }
  static uint16_t d(const WBlock& b) { return b.d; }
  static uint16_t m(const WBlock& b) { return b.m; }
};

// Signed quants: vpmaddubsw takes |q| and the activation with q's sign, pair sums up to 2 * 127 * 127, so every
// step goes to i32 at once.
struct Q8_0Weights {
  using WBlock = tensor::BlockQ8_0;
  static constexpr int kStepsPerI16 = 1;
  static constexpr int kOffset = 0;
  static constexpr bool kSigned = true;
  static constexpr bool kHasMin = false;
  static constexpr bool kHighBits = false;
  static __m256i quants(const WBlock& b) { return load256(b.qs); }
  static uint16_t d(const WBlock& b) { return b.d; }
  static uint16_t m(const WBlock&) { return 0; }
};

// ---- Repacked weights of one tile (8 rows) over a segment of at most kSegBlocks blocks. A segment of 64 blocks
// (n_in = 2048) is 16 KB of quants (32 KB for Q8_0), which stays in L1 while the chunk's tokens pass over it.

constexpr int64_t kSegBlocks32 = 64;

template <class W>
struct Repacked32 {
  __m256i q[kSegBlocks32][8];                            // [block][step] lane r = quants 4k..4k+3 of row r (|q| for Q8_0)
  __m256i sign[W::kSigned ? kSegBlocks32 : 1][8];        // Q8_0: the signed quants, for the activation's sign flip
  __m256 d[kSegBlocks32];                                // [block] lane r = d of row r
  __m256 m[W::kHasMin ? kSegBlocks32 : 1];               // [block] lane r = m of row r

  // The weight source tile_tokens_32 reads (block j of the segment, step k).
  __m256i quants(int64_t j, int k) const { return _mm256_load_si256(&q[j][k]); }
  __m256i signs(int64_t j, int k) const { return _mm256_load_si256(&sign[j][k]); }
  __m256 scales(int64_t j) const { return d[j]; }
  __m256 mins(int64_t j) const { return m[j]; }
};

// Rows n_rows..7 of the tile are zero (zero quants and scales add nothing; their outputs are never stored).
template <class W>
void repack_32(const uint8_t* w, int64_t w_stride, int n_rows, int64_t ib0, int64_t n_blocks, Repacked32<W>& rp) {
  using WBlock = typename W::WBlock;
  for (int64_t j = 0; j < n_blocks; ++j) {
    __m256i rows[8];
    alignas(16) uint16_t d16[8] = {}, m16[8] = {};
    for (int r = 0; r < kTileRows; ++r) {
      if (r < n_rows) {
        const WBlock& b = reinterpret_cast<const WBlock*>(w + r * w_stride)[ib0 + j];
        rows[r] = W::quants(b);
        d16[r] = W::d(b);
        m16[r] = W::m(b);
      } else {
        rows[r] = _mm256_setzero_si256();
      }
    }
    if constexpr (W::kSigned) {
      transpose_8x8_epi32(rows, rp.sign[j]);
      for (int k = 0; k < 8; ++k) rp.q[j][k] = _mm256_sign_epi8(rp.sign[j][k], rp.sign[j][k]);
    } else {
      transpose_8x8_epi32(rows, rp.q[j]);
    }
    rp.d[j] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(d16)));
    if constexpr (W::kHasMin) rp.m[j] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(m16)));
  }
}

// One tile's dot products with NT activation rows over a segment: acc[t] lane r += dot(row r, token t). Src gives
// the tile's weights as Repacked32 stores them: quants(j, k) (lane r = quants 4k .. 4k + 3 of row r, |q| for
// Q8_0), signs(j, k) (Q8_0: the signed quants), scales(j), mins(j).
template <class W, int NT, class Src>
inline void tile_tokens_32(const Src& rp, int64_t ib0, int64_t n_blocks, int64_t nb, const uint8_t* act,
                           int64_t act_stride, __m256* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = act + t * act_stride;
  for (int64_t j = 0; j < n_blocks; ++j) {
    const int64_t ib = ib0 + j;
    if constexpr (requires { rp.prefetch(j); }) rp.prefetch(j);  // a source read in place from memory
    __m256i s32[NT], s16[NT];
    for (int t = 0; t < NT; ++t) s32[t] = s16[t] = _mm256_setzero_si256();  // only to quiet -Wmaybe-uninitialized
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m256i w = rp.quants(j, k);
      __m256i ws;
      if constexpr (W::kSigned) ws = rp.signs(j, k);
      for (int t = 0; t < NT; ++t) {
        __m256i x = broadcast_u32(a[t] + 32 * ib + 4 * k);
        if constexpr (W::kSigned) x = _mm256_sign_epi8(x, ws);
        const __m256i p = _mm256_maddubs_epi16(w, x);
        s16[t] = k % W::kStepsPerI16 == 0 ? p : _mm256_add_epi16(s16[t], p);
        pin(s16[t]);
        if (k % W::kStepsPerI16 == W::kStepsPerI16 - 1) {
          const __m256i s = _mm256_madd_epi16(s16[t], ones);
          s32[t] = k == W::kStepsPerI16 - 1 ? s : _mm256_add_epi32(s32[t], s);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      __m256i isum = s32[t];
      if constexpr (W::kOffset != 0) {
        // Unsigned quants q + offset: subtract offset * sum(a), exact in i32.
        int32_t sum;
        std::memcpy(&sum, a[t] + 36 * nb + 4 * ib, 4);
        isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(W::kOffset * sum));
      }
      const __m256 scale = _mm256_mul_ps(rp.scales(j), _mm256_set1_ps(load_f32(a[t] + 32 * nb + 4 * ib)));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
      if constexpr (W::kHasMin)
        acc[t] = _mm256_fmadd_ps(rp.mins(j), _mm256_set1_ps(load_f32(a[t] + 36 * nb + 4 * ib)), acc[t]);
    }
  }
}

template <class W>
struct Tiles32 {
  using Repacked = Repacked32<W>;
  static constexpr int64_t kBlockElems = tensor::kQk32;
  static constexpr int64_t kSegBlocks = kSegBlocks32;
  // Tokens per pass: 4 accumulators, 4 i16 (and for the 5- and 8-bit types 4 i32) partial sums and the weights
  // fit the 16 ymm registers. 6 tokens for the 4-bit types measured no faster: the vector ALU
  // ports bound the loop (llvm-mca -mcpu=znver3: ~32 cycles per block and 4 tokens, all four ports busy with
  // vpmaddubsw, vpaddw and the activation broadcasts).
  static constexpr int kTokens = 4;
  static void repack(const uint8_t* w, int64_t w_stride, int64_t r0, int n_rows, int64_t ib0, int64_t n,
                     Repacked& rp) {
    repack_32<W>(w + r0 * w_stride, w_stride, n_rows, ib0, n, rp);
  }
  template <int NT>
  static void tokens(const Repacked& rp, int64_t ib0, int64_t n, int64_t nb, const uint8_t* act, int64_t stride,
                     __m256* acc) {
    tile_tokens_32<W, NT>(rp, ib0, n, nb, act, stride, acc);
  }
};

}  // namespace
}  // namespace longhaul::kernels::detail
