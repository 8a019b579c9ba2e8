// Internal: AVX2 kernels for weights stored 16 rows interleaved (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; layout and packed
// activations in kernels/interleave.h). Included only by gemm_avx2.cc, after avx2_gemm32.h.
//
// A 64-byte chunk of the layout is two ymm of 8 rows each (rows 0-7, then 8-15), each lane r holding 4 consecutive
// quants of row r: the repacked form of the long-batch tiles (avx2_gemm.h), already in memory. So both kernels
// here are the long-batch tiles' arithmetic (tile_tokens_32: vpmaddubsw into i16 sums, vpmaddwd with ones, one
// float multiply-add per block for 8 rows, no horizontal sums) reading a different weight source:
//   short calls (decode, batched decode): straight from the layout, unpacking the nibbles (and fifth bits, and
//     Q8_0's sign) on each pass of up to 4 tokens; nothing is copied.
//   calls of kLargeMinTokens tokens or more (prompts): each 8-row half-group is unpacked once per segment into
//     Repacked32 (no transpose needed) and every token of the chunk passes over it, as gemm_large does for rows.
// Q8_0's stored u = q + 128 would overflow vpmaddubsw's i16 pairs (2 * 255 * 127), so the source flips the top
// bits back (q) and the tiles take |q| and the activation with q's sign (pairs <= 2 * 128 * 127). The integer block
// sums are exact and the float steps are the scalar twin's (interleave.cc), so the results are equal bit for bit.
#pragma once

#include "kernels/x86/avx2_gemm.h"
#include "kernels/x86/avx2_gemm32.h"

namespace longhaul::kernels::detail {
namespace {

constexpr int64_t kX16GroupRows = 16;

// Byte offsets of a group block's parts for weight type W (kernels/interleave.h).
template <class W>
struct X16Parts {
  static constexpr int64_t kQhAt = W::kHasMin ? 64 : 32;
  static constexpr int64_t kQuantsAt = kQhAt + (W::kHighBits ? 64 : 0);
  static constexpr int64_t kGroupBlockBytes = kQuantsAt + (W::kSigned ? 512 : 256);
};

// Half `half` (rows 8 half .. 8 half + 7) of one group, read in place: the weight source of tile_tokens_32.
template <class W>
struct X16HalfGroup {
  using P = X16Parts<W>;
  const uint8_t* w = nullptr;  // the group's first block
  int64_t half = 0;

  const uint8_t* block(int64_t j) const { return w + j * P::kGroupBlockBytes; }
  // Steps k = 0..3 are the low nibbles of chunks 0..3 (elements 4k ..), k = 4..7 the high ones (16 + 4(k - 4) ..).
  __m256i quants(int64_t j, int k) const {
    if constexpr (W::kSigned) {
      const __m256i q = signs(j, k);
      return _mm256_sign_epi8(q, q);
    } else {
      const __m256i v = load256(block(j) + P::kQuantsAt + 64 * (k % 4) + 32 * half);
      const __m256i low4 = _mm256_set1_epi8(0x0f);
      __m256i q = k < 4 ? _mm256_and_si256(v, low4) : _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      if constexpr (W::kHighBits) {
        // Bit c of a qh byte is the fifth bit of chunk c's low-nibble element, bit 4 + c of its high one.
        const __m256i qh = load256(block(j) + P::kQhAt + 32 * half);
        const __m256i bit = k < 4 ? _mm256_slli_epi16(qh, 4 - k) : _mm256_srli_epi16(qh, k - 4);
        q = _mm256_or_si256(q, _mm256_and_si256(bit, _mm256_set1_epi8(0x10)));
      }
      return q;
    }
  }
  // Q8_0: the signed quants (the stored u with its top bit flipped back).
  __m256i signs(int64_t j, int k) const {
    return _mm256_xor_si256(load256(block(j) + 32 + 64 * k + 32 * half), _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  __m256 scales(int64_t j) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block(j) + 16 * half)));
  }
  __m256 mins(int64_t j) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block(j) + 32 + 16 * half)));
  }
  // Decode streams the weights from memory: while block j is worked on, ask for the lines kPrefetchAhead bytes on
  // in the layout (past a group's last block, the next group's first ones). Every pass asks; after the first the
  // lines are already near. Measured with LONGHAUL_ISA=avx2 on an Intel Xeon (docs/benchmarks.md, "Weight prefetch
  // in batched decode"): SmolLM2 decodes 22% faster alone and 8% faster eight at a time.
  void prefetch(int64_t j) const {
    const uint8_t* p = block(j) + kPrefetchAhead;
    for (int64_t off = 0; off < P::kGroupBlockBytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
  }
  static constexpr int64_t kPrefetchAhead = 2048;
};

template <class W>
X16HalfGroup<W> half_group(const uint8_t* w, int64_t w_stride, int64_t r0) {
  return {w + r0 / kX16GroupRows * kX16GroupRows * w_stride, r0 % kX16GroupRows / kTileRows};
}

// Tiles (avx2_gemm.h) that read the layout in place: the "repacked" tile is the half-group itself, one segment
// spans the whole row.
template <class W>
struct X16DirectTiles {
  using Repacked = X16HalfGroup<W>;
  static constexpr int64_t kBlockElems = tensor::kQk32;
  static constexpr int64_t kSegBlocks = int64_t{1} << 40;
  static constexpr int kTokens = 4;  // the register budget of tile_tokens_32 (Tiles32)
  static void repack(const uint8_t* w, int64_t w_stride, int64_t r0, int, int64_t, int64_t, Repacked& rp) {
    rp = half_group<W>(w, w_stride, r0);
  }
  template <int NT>
  static void tokens(const Repacked& rp, int64_t ib0, int64_t n, int64_t nb, const uint8_t* act, int64_t stride,
                     __m256* acc) {
    tile_tokens_32<W, NT>(rp, ib0, n, nb, act, stride, acc);
  }
};

// Tiles that unpack a half-group's segment into Repacked32 once for all the chunk's tokens.
template <class W>
struct X16RepackedTiles : Tiles32<W> {
  using Repacked = Repacked32<W>;
  static void repack(const uint8_t* w, int64_t w_stride, int64_t r0, int, int64_t ib0, int64_t n, Repacked& rp) {
    const X16HalfGroup<W> src = half_group<W>(w, w_stride, r0);
    for (int64_t j = 0; j < n; ++j) {
      for (int k = 0; k < 8; ++k) {
        rp.q[j][k] = src.quants(ib0 + j, k);
        if constexpr (W::kSigned) rp.sign[j][k] = src.signs(ib0 + j, k);
      }
      rp.d[j] = src.scales(ib0 + j);
      if constexpr (W::kHasMin) rp.m[j] = src.mins(ib0 + j);
    }
  }
};

// The tile function of gemm_interleaved: n_rows is whole groups.
template <class W>
void x16_tile_avx2(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                   int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  if (n_tokens >= kLargeMinTokens) {
    gemm_tile_avx2<X16RepackedTiles<W>>(n_in, w, w_stride, n_rows, act, act_stride, n_tokens, y, ldy, nullptr);
  } else {
    gemm_tile_avx2<X16DirectTiles<W>>(n_in, w, w_stride, n_rows, act, act_stride, n_tokens, y, ldy, nullptr);
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
