// Internal: AVX-512 (VNNI + VBMI + BITALG) matrix kernels for the 32-element block types Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0. Included only by gemm_avx512.cc.
//
// Work unit: a "group" of 4 consecutive blocks (128 elements) of one weight row. Two 64-byte loads cover the group
// (four for Q8_0), and byte permutes (vpermt2b) gather from them
//   lo: [64] u8 quants, 128-bit lane k = elements 0..15 of block k
//   hi: [64] u8 quants, 128-bit lane k = elements 16..31 of block k
//   d, m: [16] f32, lane i = the scale (offset) of block i / 4
// so that one vpdpbusd of lo (hi) with the matching packed activations gives, in 32-bit lane i, a partial sum of
// block i / 4 alone, and one multiply by d_w * d_a (both replicated per lane) scales every block at once.
//
// Packed activations (one row, per group of 4 blocks, 256 bytes; see pack_q8_group):
//   [0, 64)    i8 quants, lane k = elements 0..15 of block k      [64, 128)  elements 16..31
//   [128, 192) f32 d_a of block i / 4 in lane i
//   [192, 256) Q4_1 / Q5_1: f32 s_a (= f16(d_a * sum q), as Q8_1 stores it) of block k in lane 4k, 0 elsewhere;
//              Q4_0 / Q5_0 / Q8_0: i32 -offset * sum(q) of block k in lane 4k, 0 elsewhere, where the weights are
//              read as unsigned q + offset (8, 16, 128): starting the integer sum there makes it exact.
// A partial last group is zero-filled on the activation side and read with masked loads on the weight side, so
// it adds exactly 0 and no byte past the end of a row is touched.
#pragma once

#include <immintrin.h>

#include <array>
#include <cstdint>

#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

constexpr int kGroupBlocks = 4;
constexpr int kGroupActBytes = 256;

// ---- Compile-time byte-permute tables.

// Index for vpermt2b over two loads a (at byte a_off of the group) and b (at b_off): selects absolute byte `pos`.
constexpr uint8_t select2(int pos, int a_off, int b_off) {
  if (pos >= a_off && pos < a_off + 64) return static_cast<uint8_t>(pos - a_off);
  return static_cast<uint8_t>(64 + (pos - b_off));  // pos must lie in b; the layout tables are checked in tests
}

// Layout of a 32-element block type inside one block: byte offsets of each field (-1 = absent).
struct BlockLayout {
  int bytes;
  int d_off;
  int m_off;
  int qh_off;
  int qs_off;
};

constexpr BlockLayout kLayoutQ4_0{18, 0, -1, -1, 2};
constexpr BlockLayout kLayoutQ4_1{20, 0, 2, -1, 4};
constexpr BlockLayout kLayoutQ5_0{22, 0, -1, 2, 6};
constexpr BlockLayout kLayoutQ5_1{24, 0, 2, 4, 8};

// Two loads per group for every type whose group fits in 128 bytes: a at 0, b ending at the group's end.
constexpr int second_load(const BlockLayout& l) { return kGroupBlocks * l.bytes - 64; }

// Packed nibbles: byte 16k + i = qs[i] of block k.
constexpr std::array<uint8_t, 64> qs_index(const BlockLayout& l) {
  std::array<uint8_t, 64> idx{};
  for (int p = 0; p < 64; ++p) idx[p] = select2((p / 16) * l.bytes + l.qs_off + p % 16, 0, second_load(l));
  return idx;
}

// Scales as f16 words: word w < 16 = d of block w / 4; word 16 + w = m of block w / 4 (or d again if absent).
constexpr std::array<uint8_t, 64> scale_index(const BlockLayout& l) {
  std::array<uint8_t, 64> idx{};
  for (int p = 0; p < 64; ++p) {
    const int w = p / 2;
    const int field = w < 16 || l.m_off < 0 ? l.d_off : l.m_off;
    idx[p] = select2(((w % 16) / 4) * l.bytes + field + p % 2, 0, second_load(l));
  }
  return idx;
}

// High bits: 64-bit lanes 2k and 2k + 1 both hold qh of block k in their low 4 bytes.
constexpr std::array<uint8_t, 64> qh_index(const BlockLayout& l) {
  std::array<uint8_t, 64> idx{};
  for (int p = 0; p < 64; ++p) idx[p] = select2((p / 16) * l.bytes + l.qh_off + p % 4, 0, second_load(l));
  return idx;
}

// Bit-shuffle controls: byte p of the lo (hi) vector takes bit p % 16 (16 + p % 16) of its 64-bit lane.
constexpr std::array<uint8_t, 64> qh_bit_index(int first_bit) {
  std::array<uint8_t, 64> idx{};
  for (int p = 0; p < 64; ++p) idx[p] = static_cast<uint8_t>(first_bit + p % 16);
  return idx;
}

// Q8_0 (34-byte blocks, 136 per group): lo from loads at 0 and 64, hi from loads at 8 and 72, d from 0 and 64.
constexpr int kQ8Bytes = 34;
constexpr std::array<uint8_t, 64> q8_half_index(int half, int a_off, int b_off) {
  std::array<uint8_t, 64> idx{};
  for (int p = 0; p < 64; ++p) idx[p] = select2((p / 16) * kQ8Bytes + 2 + 16 * half + p % 16, a_off, b_off);
  return idx;
}
constexpr std::array<uint8_t, 64> q8_scale_index() {
  std::array<uint8_t, 64> idx{};
  for (int p = 0; p < 64; ++p) idx[p] = select2(((p / 2) % 16 / 4) * kQ8Bytes + p % 2, 0, 64);
  return idx;
}

inline __m512i table(const std::array<uint8_t, 64>& t) { return _mm512_loadu_si512(t.data()); }

// ---- Weight groups.

struct WGroup {
  __m512i lo, hi;  // u8 quants
  __m512 d, m;     // per-lane block scale and offset (m only for Q4_1 / Q5_1)
};

// Byte masks of the valid part of a group with n_valid blocks, for loads at a_off / b_off.
inline __mmask64 valid_mask(int64_t n_valid_bytes, int64_t off) {
  const int64_t n = n_valid_bytes - off;
  if (n <= 0) return 0;
  if (n >= 64) return ~__mmask64{0};
  return (__mmask64{1} << n) - 1;
}

template <bool kMasked>
inline __m512i load_group(const uint8_t* p, __mmask64 mask) {
  if constexpr (kMasked) return _mm512_maskz_loadu_epi8(mask, p);
  return _mm512_loadu_si512(p);
}

// Q4_0, Q4_1, Q5_0, Q5_1: two loads, nibbles split into lo / hi, fifth bits from qh by bit shuffles.
template <const BlockLayout& kL>
struct NibbleGroup {
  static constexpr std::array<uint8_t, 64> kQs = qs_index(kL);
  static constexpr std::array<uint8_t, 64> kScales = scale_index(kL);
  static constexpr std::array<uint8_t, 64> kQh = kL.qh_off >= 0 ? qh_index(kL) : std::array<uint8_t, 64>{};
  static constexpr std::array<uint8_t, 64> kBitsLo = qh_bit_index(0);
  static constexpr std::array<uint8_t, 64> kBitsHi = qh_bit_index(16);
  static constexpr int kBlockBytes = kL.bytes;
  static constexpr bool kHasM = kL.m_off >= 0;

  template <bool kMasked>
  static WGroup unpack(const uint8_t* p, int64_t n_valid_bytes) {
    constexpr int b_off = second_load(kL);
    __mmask64 ma = 0, mb = 0;
    if constexpr (kMasked) {
      ma = valid_mask(n_valid_bytes, 0);
      mb = valid_mask(n_valid_bytes, b_off);
    }
    const __m512i a = load_group<kMasked>(p, ma);
    const __m512i b = load_group<kMasked>(p + b_off, mb);
    const __m512i nib = _mm512_permutex2var_epi8(a, table(kQs), b);
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    WGroup g;
    g.lo = _mm512_and_si512(nib, low4);
    g.hi = _mm512_and_si512(_mm512_srli_epi16(nib, 4), low4);
    if constexpr (kL.qh_off >= 0) {
      const __m512i qh = _mm512_permutex2var_epi8(a, table(kQh), b);
      const __m512i bit4 = _mm512_set1_epi8(0x10);
      g.lo = _mm512_mask_add_epi8(g.lo, _mm512_bitshuffle_epi64_mask(qh, table(kBitsLo)), g.lo, bit4);
      g.hi = _mm512_mask_add_epi8(g.hi, _mm512_bitshuffle_epi64_mask(qh, table(kBitsHi)), g.hi, bit4);
    }
    const __m512i sc = _mm512_permutex2var_epi8(a, table(kScales), b);
    g.d = _mm512_cvtph_ps(_mm512_castsi512_si256(sc));
    if constexpr (kHasM) g.m = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(sc, 1));
    return g;
  }
};

// Q8_0: four loads; the signed quants become unsigned by flipping the top bit (q + 128).
struct Q8Group {
  static constexpr std::array<uint8_t, 64> kLo = q8_half_index(0, 0, 64);
  static constexpr std::array<uint8_t, 64> kHi = q8_half_index(1, 8, 72);
  static constexpr std::array<uint8_t, 64> kScales = q8_scale_index();
  static constexpr int kBlockBytes = kQ8Bytes;
  static constexpr bool kHasM = false;

  template <bool kMasked>
  static WGroup unpack(const uint8_t* p, int64_t n_valid_bytes) {
    __mmask64 m0 = 0, m1 = 0, m2 = 0, m3 = 0;
    if constexpr (kMasked) {
      m0 = valid_mask(n_valid_bytes, 0);
      m1 = valid_mask(n_valid_bytes, 64);
      m2 = valid_mask(n_valid_bytes, 8);
      m3 = valid_mask(n_valid_bytes, 72);
    }
    const __m512i l0 = load_group<kMasked>(p, m0);
    const __m512i l1 = load_group<kMasked>(p + 64, m1);
    const __m512i l2 = load_group<kMasked>(p + 8, m2);
    const __m512i l3 = load_group<kMasked>(p + 72, m3);
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    WGroup g;
    g.lo = _mm512_xor_si512(_mm512_permutex2var_epi8(l0, table(kLo), l1), flip);
    g.hi = _mm512_xor_si512(_mm512_permutex2var_epi8(l2, table(kHi), l3), flip);
    g.d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi8(l0, table(kScales), l1)));
    return g;
  }
};

using Q4_0Group = NibbleGroup<kLayoutQ4_0>;
using Q4_1Group = NibbleGroup<kLayoutQ4_1>;
using Q5_0Group = NibbleGroup<kLayoutQ5_0>;
using Q5_1Group = NibbleGroup<kLayoutQ5_1>;

// ---- The tile: NT activation rows against one weight row at a time.

// Decode (one token) streams each weight once from memory; software prefetches this far ahead in the weight stream
// (rows of a chunk are consecutive) keep more lines in flight than the hardware prefetcher does: +25% bandwidth
// on a 178 MB matrix with two threads here.
constexpr int kPrefetchBytes = 2048;

// The first kPrefetchBytes of a chunk's weights, which the running prefetch of the rows before it did not cover
// (the chunk before it in memory went to another thread, or the matrix just started).
inline void prefetch_start(const uint8_t* w, int64_t n_bytes) {
  const int64_t end = n_bytes < kPrefetchBytes ? n_bytes : kPrefetchBytes;
  for (int64_t off = 0; off < end; off += 64) _mm_prefetch(reinterpret_cast<const char*>(w + off), _MM_HINT_T0);
}

// R weight rows against NT activation rows. Each group of activations is loaded once and serves the R rows, and
// the offset term (Q4_1 / Q5_1: m_w * s_a) goes into the same accumulator as the block sums, so R = 2 rows of
// NT = 8 tokens keep their 16 accumulators, the 2 unpacked groups and the activations in the 32 registers:
// -23% time per 8-token call on 576x1536 Q4_1 (batched decode) against one row at a time with a second
// accumulator per token.
template <class G, int NT, int R>
struct Tile32 {
  // Adds group w[r] (at activation byte offset a_off of every row) of the R weight rows to acc[r][t].
  static inline void add_group(const WGroup (&w)[R], const uint8_t* act, int64_t act_stride, int64_t a_off,
                               __m512 (&acc)[R][NT]) {
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const uint8_t* a = act + t * act_stride + a_off;
      const __m512i a_lo = _mm512_load_si512(a);
      const __m512i a_hi = _mm512_load_si512(a + 64);
      const __m512 a_d = _mm512_load_ps(a + 128);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        __m512i isum = G::kHasM ? _mm512_setzero_si512() : _mm512_load_si512(a + 192);
        isum = _mm512_dpbusd_epi32(isum, w[r].lo, a_lo);
        isum = _mm512_dpbusd_epi32(isum, w[r].hi, a_hi);
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(w[r].d, a_d), acc[r][t]);
        if constexpr (G::kHasM) acc[r][t] = _mm512_fmadd_ps(w[r].m, _mm512_load_ps(a + 192), acc[r][t]);
      }
    }
  }

  // Dot products of R weight rows (w_stride apart) with NT packed activation rows; writes y[t * ldy + r].
  static inline void rows(int64_t n_in, const uint8_t* w_row, int64_t w_stride, const uint8_t* act,
                          int64_t act_stride, float* y, int64_t ldy) {
    const int64_t nb = n_in / tensor::kQk32;
    const int64_t n_full = nb / kGroupBlocks;
    const int64_t rest = nb % kGroupBlocks;
    __m512 acc[R][NT];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    WGroup w[R];
    for (int64_t g = 0; g < n_full; ++g) {
      const uint8_t* p = w_row + g * kGroupBlocks * G::kBlockBytes;
      if constexpr (NT == 1 && R == 1) {
        for (int off = 0; off < kGroupBlocks * G::kBlockBytes; off += 64)
          _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + off), _MM_HINT_T0);
      }
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) w[r] = G::template unpack<false>(p + r * w_stride, 0);
      add_group(w, act, act_stride, g * kGroupActBytes, acc);
    }
    if (rest != 0) {
      const int64_t off = n_full * kGroupBlocks * G::kBlockBytes;
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) w[r] = G::template unpack<true>(w_row + r * w_stride + off, rest * G::kBlockBytes);
      add_group(w, act, act_stride, n_full * kGroupActBytes, acc);
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
    }
  }
};

// Tokens per tile: accumulators for 2 rows of 8 tokens plus the 2 unpacked groups fit in the 32 vector registers.
constexpr int kTileTokens = 8;

// One token streams the weights from memory: one row at a time, with prefetches. Several tokens are compute
// bound: rows go in pairs, sharing each activation load.
template <class G, int NT>
void tile_rows(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
               int64_t act_stride, float* y, int64_t ldy) {
  constexpr int kRows = NT == 1 ? 1 : 2;
  int64_t r = 0;
  for (; r + kRows <= n_rows; r += kRows)
    Tile32<G, NT, kRows>::rows(n_in, w + r * w_stride, w_stride, act, act_stride, y + r, ldy);
  for (; r < n_rows; ++r) Tile32<G, NT, 1>::rows(n_in, w + r * w_stride, w_stride, act, act_stride, y + r, ldy);
}

template <class G>
void gemm32_tile(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                 int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  if (n_tokens == 1) prefetch_start(w, n_rows * w_stride);
  // Token tiles outermost: a tile's activations stay in L1 while every row of the chunk passes over them.
  int64_t t = 0;
  for (; t + kTileTokens <= n_tokens; t += kTileTokens)
    tile_rows<G, kTileTokens>(n_in, w, w_stride, n_rows, act + t * act_stride, act_stride, y + t * ldy, ldy);
  const uint8_t* a = act + t * act_stride;
  float* yt = y + t * ldy;
  switch (n_tokens - t) {
    case 0: break;
    case 1: tile_rows<G, 1>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 2: tile_rows<G, 2>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 3: tile_rows<G, 3>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 4: tile_rows<G, 4>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 5: tile_rows<G, 5>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    case 6: tile_rows<G, 6>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
    default: tile_rows<G, 7>(n_in, w, w_stride, n_rows, a, act_stride, yt, ldy); break;
  }
}

// ---- Activation packing (see the layout at the top). kOffset = 0: Q8_1-style s; else the integer offset term.

inline int64_t packed_row_bytes_32(int64_t n_in) {
  const int64_t nb = n_in / tensor::kQk32;
  return (nb + kGroupBlocks - 1) / kGroupBlocks * kGroupActBytes;
}

template <int kOffset>
void pack_q8_group(const float* x, int64_t n_in, uint8_t* dst) {
  const int64_t nb = n_in / tensor::kQk32;
  const int64_t n_groups = (nb + kGroupBlocks - 1) / kGroupBlocks;
  for (int64_t g = 0; g < n_groups; ++g) {
    uint8_t* out = dst + g * kGroupActBytes;
    alignas(64) int8_t q[kGroupBlocks][32] = {};
    alignas(64) float dv[16] = {};
    alignas(64) int32_t extra[16] = {};  // f32 or i32 bits, lane 4k
    for (int k = 0; k < kGroupBlocks && g * kGroupBlocks + k < nb; ++k) {
      int32_t sum;
      const float d = quantize_block_32(x + (g * kGroupBlocks + k) * tensor::kQk32, q[k], &sum);
      const float d_stored = f16_scalar(f16_from(d));  // the dot products use the f16-rounded scale
      for (int l = 0; l < 4; ++l) dv[4 * k + l] = d_stored;
      if constexpr (kOffset == 0) {
        const float s = f16_scalar(f16_from(static_cast<float>(sum) * d));
        std::memcpy(&extra[4 * k], &s, 4);
      } else {
        extra[4 * k] = -kOffset * sum;
      }
    }
    for (int k = 0; k < kGroupBlocks; ++k) {
      std::memcpy(out + 16 * k, q[k], 16);
      std::memcpy(out + 64 + 16 * k, q[k] + 16, 16);
    }
    std::memcpy(out + 128, dv, 64);
    std::memcpy(out + 192, extra, 64);
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
