// Internal: AVX-512 VNNI kernels for weights stored 16 rows interleaved (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; layout and
// packed activations (pack_act_32 of x86_quantize.h) in kernels/interleave.h). Included only by gemm_avx512.cc,
// after x86_quantize.h.
//
// Lane r of every vector is row r of a group. Per block of 32 and token, eight vpdpbusd (each: 4 quants of 16 rows
// against 4 activation bytes broadcast to every lane) build the 16 integer block sums, and one convert, one scale
// multiply and one multiply-add (two with a minimum) fold them into the token's 16 float accumulators, which are
// stored as they are: no horizontal sums. Equal bit for bit to the scalar twin in interleave.cc, which adds in this order.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/x86/avx512_nibbles.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

constexpr int64_t kX16Rows = 16;

inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline __m512i broadcast_4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The 4- and 5-bit layouts: a group's block is [32 B d][32 B m if kHasM][64 B qh if kHasQh][4 x 64 B nibbles].
template <bool kHasMin, bool kHasQh, int32_t kOff>
struct X16Nibbles {
  static constexpr bool kHasM = kHasMin;
  static constexpr int32_t kOffset = kOff;  // u = q + kOffset
  static constexpr int64_t kQhAt = kHasM ? 64 : 32;
  static constexpr int64_t kQuantsAt = kQhAt + (kHasQh ? 64 : 0);
  static constexpr int64_t kGroupBlockBytes = kQuantsAt + 256;
  // isum[t] += the 16 rows' block sums with activation block a[t] (32 i8 each).
  template <int NT>
  static inline void block_sums(const uint8_t* wb, const int8_t* const (&a)[NT], __m512i (&isum)[NT]) {
    __m512i qh = _mm512_setzero_si512();
    if constexpr (kHasQh) qh = _mm512_loadu_si512(wb + kQhAt);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      __m512i lo, hi;
      nibble_chunk<kHasQh>(_mm512_loadu_si512(wb + kQuantsAt + 64 * c), qh, c, lo, hi);
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        isum[t] = _mm512_dpbusd_epi32(isum[t], lo, broadcast_4(a[t] + 4 * c));
        isum[t] = _mm512_dpbusd_epi32(isum[t], hi, broadcast_4(a[t] + 16 + 4 * c));
      }
    }
  }
};

using X16Q4_0 = X16Nibbles<false, false, 8>;
using X16Q4_1 = X16Nibbles<true, false, 0>;
using X16Q5_0 = X16Nibbles<false, true, 16>;
using X16Q5_1 = X16Nibbles<true, true, 0>;

// Q8_0: [32 B d][8 x 64 B quants + 128].
struct X16Q8_0 {
  static constexpr int64_t kGroupBlockBytes = 544;
  static constexpr bool kHasM = false;
  static constexpr int32_t kOffset = 128;
  template <int NT>
  static inline void block_sums(const uint8_t* wb, const int8_t* const (&a)[NT], __m512i (&isum)[NT]) {
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m512i v = _mm512_loadu_si512(wb + 32 + 64 * c);
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) isum[t] = _mm512_dpbusd_epi32(isum[t], v, broadcast_4(a[t] + 4 * c));
    }
  }
};

// Decode and batched decode stream the weights from memory: every pass asks for the lines this far ahead in the
// group's block stream (past its last block, the next group's). Asking at 8 tokens too, not only at 1 and 2, made
// `longhaul batch --parallel 8` 22% faster on SmolLM2 and 13% on Gemma 3 (docs/benchmarks.md, "Weight prefetch in
// batched decode"); prompts, whose tiles pass over a group again and again, were unchanged.
constexpr int64_t kX16PrefetchBytes = 2048;

// NT tokens against one group of 16 rows (w at the group's first block); y[t * ldy + r] for r < 16.
template <class L, int NT>
void x16_group(int64_t nb, const uint8_t* w, const uint8_t* act, int64_t act_stride, float* y, int64_t ldy) {
  __m512 acc[NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const int64_t d_off = 32 * nb;
  const int64_t extra_off = 36 * nb;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* wb = w + b * L::kGroupBlockBytes;
    for (int64_t off = 0; off < L::kGroupBlockBytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(wb + kX16PrefetchBytes + off), _MM_HINT_T0);
    const int8_t* a[NT];
    __m512i isum[NT];
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const uint8_t* row = act + t * act_stride;
      a[t] = reinterpret_cast<const int8_t*>(row + 32 * b);
      // Offset types: the sums start at -offset * sum(a), which cancels the offset of the stored weights.
      isum[t] = L::kOffset == 0 ? _mm512_setzero_si512()
                                : _mm512_set1_epi32(-L::kOffset * load_i32(row + extra_off + 4 * b));
    }
    L::template block_sums<NT>(wb, a, isum);
    const __m512 d_w = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb)));
    __m512 m_w = _mm512_setzero_ps();
    if constexpr (L::kHasM) m_w = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + 32)));
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const uint8_t* row = act + t * act_stride;
      const __m512 d_a = _mm512_set1_ps(load_f32(row + d_off + 4 * b));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d_w, d_a), acc[t]);
      if constexpr (L::kHasM)
        acc[t] = _mm512_fmadd_ps(m_w, _mm512_set1_ps(load_f32(row + extra_off + 4 * b)), acc[t]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + t * ldy, acc[t]);
}

// The K-quant layouts (avx512_gemm_x16_k.h, included after this header) have super-blocks of 256 elements and a
// group kernel of their own.
template <class L>
concept X16SuperBlocks = requires { L::kSuperBlockElements; };

template <class L, int NT>
void x16_k_group(int64_t nb, const uint8_t* w, const uint8_t* act, int64_t act_stride, float* y, int64_t ldy);

template <class L, int NT>
void x16_groups(int64_t nb, const uint8_t* w, int64_t group_bytes, int64_t n_groups, const uint8_t* act,
                int64_t act_stride, float* y, int64_t ldy) {
  for (int64_t g = 0; g < n_groups; ++g) {
    if constexpr (X16SuperBlocks<L>) {
      x16_k_group<L, NT>(nb, w + g * group_bytes, act, act_stride, y + g * kX16Rows, ldy);
    } else {
      x16_group<L, NT>(nb, w + g * group_bytes, act, act_stride, y + g * kX16Rows, ldy);
    }
  }
}

// Tokens per tile: 8 accumulators and 8 integer sums, the two unpacked weight vectors and the scales fit in the
// 32 registers.
constexpr int kX16TileTokens = 8;

template <class L>
void x16_tile(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
              int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  int64_t nb = n_in / tensor::kQk32;
  if constexpr (X16SuperBlocks<L>) nb = n_in / L::kSuperBlockElements;
  const int64_t group_bytes = kX16Rows * w_stride;
  const int64_t n_groups = n_rows / kX16Rows;
  for (int64_t off = 0; off < kX16PrefetchBytes && off < n_groups * group_bytes; off += 64)
    _mm_prefetch(reinterpret_cast<const char*>(w + off), _MM_HINT_T0);
  // Token tiles outermost: a tile's activations stay in L1 while every group of the chunk passes over them.
  int64_t t = 0;
  for (; t + kX16TileTokens <= n_tokens; t += kX16TileTokens)
    x16_groups<L, kX16TileTokens>(nb, w, group_bytes, n_groups, act + t * act_stride, act_stride, y + t * ldy, ldy);
  const uint8_t* a = act + t * act_stride;
  float* yt = y + t * ldy;
  switch (n_tokens - t) {
    case 0: break;
    case 1: x16_groups<L, 1>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
    case 2: x16_groups<L, 2>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
    case 3: x16_groups<L, 3>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
    case 4: x16_groups<L, 4>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
    case 5: x16_groups<L, 5>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
    case 6: x16_groups<L, 6>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
    default: x16_groups<L, 7>(nb, w, group_bytes, n_groups, a, act_stride, yt, ldy); break;
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
