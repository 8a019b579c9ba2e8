// Internal: the shared shape of the AVX2 matrix kernels (gemm_avx2.cc), included before avx2_gemm32.h and
// avx2_gemm_k.h.
//
// Without VNNI the dot product of unsigned weight bytes and signed activation bytes is vpmaddubsw (pairs -> i16)
// and vpmaddwd (i16 pairs -> i32). The dot_rows kernels run both on 32 elements of one weight row and one
// activation row and then need a float conversion, a scale multiply and an add per block and pair of rows. Here a
// tile works on 8 weight rows at once, interleaved ("repacked") so that one ymm holds 4 consecutive quants of each of
// the 8 rows (lane r = row r), and the activation's matching 4 bytes are broadcast to all lanes:
//   p   = vpmaddubsw(w_k, broadcast(a[4k..4k+3]))   i16 pairs, lanes of row r: partial sums of 2 products
//   s16 += p over the steps k of a block            (as many as the weights' range allows without overflow)
//   s32 = vpmaddwd(s16, ones or the group scales)   lane r: row r's integer dot product over the block
// so the i32 lanes are already per-row sums: no horizontal reduction, and one float conversion and multiply-add per
// block serves 8 rows. Repacking costs a transpose per block of 8 rows, paid once per tile and reused for every
// token of the chunk. The 8 float lanes of a token's accumulator are y[t, r0 .. r0 + 7], stored contiguously.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace longhaul::kernels::detail {
namespace {

constexpr int kTileRows = 8;  // weight rows per repacked tile: one per 32-bit lane of a ymm

// 8x8 transpose of 32-bit elements: out[k] lane r = in[r] lane k. With in[r] = 32 quant bytes of row r in element
// order, out[k] holds bytes 4k..4k+3 of every row, the repacked form.
inline void transpose_8x8_epi32(const __m256i in[8], __m256i out[8]) {
  const __m256i t0 = _mm256_unpacklo_epi32(in[0], in[1]);  // r0.0 r1.0 r0.1 r1.1 | r0.4 r1.4 r0.5 r1.5
  const __m256i t1 = _mm256_unpackhi_epi32(in[0], in[1]);  // .2 .3 | .6 .7
  const __m256i t2 = _mm256_unpacklo_epi32(in[2], in[3]);
  const __m256i t3 = _mm256_unpackhi_epi32(in[2], in[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(in[4], in[5]);
  const __m256i t5 = _mm256_unpackhi_epi32(in[4], in[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(in[6], in[7]);
  const __m256i t7 = _mm256_unpackhi_epi32(in[6], in[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2);  // r0..r3 .0 | .4
  const __m256i u1 = _mm256_unpackhi_epi64(t0, t2);  // .1 | .5
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3);  // .2 | .6
  const __m256i u3 = _mm256_unpackhi_epi64(t1, t3);  // .3 | .7
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6);  // r4..r7
  const __m256i u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7);
  const __m256i u7 = _mm256_unpackhi_epi64(t5, t7);
  out[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  out[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  out[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  out[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  out[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  out[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  out[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  out[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// An empty asm that makes the compiler treat v as rewritten here. GCC otherwise reassociates a running sum of
// vpmaddubsw results into a tree, computing all the products of a block first, and the live products of 4 tokens
// spill out of the 16 ymm registers (Q4_1 576x576, 512 tokens: 3.8 ms with the spills, 2.5 ms without).
inline void pin(__m256i& v) { asm("" : "+x"(v)); }

// 4 activation bytes (or two i16) at p, in every 32-bit lane.
inline __m256i broadcast_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// Lane mask of the first n_rows (1..8) rows, for the last tile of a chunk whose row count is not a multiple of 8.
inline __m256i row_mask(int n_rows) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The first n_rows (1..8) lanes of y; the rest zero. Never reads y[n_rows ..).
inline __m256 load_rows(const float* y, int n_rows) {
  return n_rows == kTileRows ? _mm256_loadu_ps(y) : _mm256_maskload_ps(y, row_mask(n_rows));
}

// y[0 .. n_rows) = v; never touches y[n_rows ..).
inline void store_rows(float* y, __m256 v, int n_rows) {
  if (n_rows == kTileRows) {
    _mm256_storeu_ps(y, v);
    return;
  }
  _mm256_maskstore_ps(y, row_mask(n_rows), v);
}

// NT tokens (starting at act) against one repacked tile; writes y[t * ldy + r] for r < n_rows. A later segment of
// a long row continues the earlier segments' sums stored in y, so every row adds its blocks in order, one after
// the other, as the scalar twins of the interleaved kernels do.
template <class Tiles, int NT>
inline void run_tokens(const typename Tiles::Repacked& rp, int64_t ib0, int64_t n_blocks, int64_t nb,
                       const uint8_t* act, int64_t act_stride, float* y, int64_t ldy, int n_rows) {
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = ib0 > 0 ? load_rows(y + t * ldy, n_rows) : _mm256_setzero_ps();
  Tiles::template tokens<NT>(rp, ib0, n_blocks, nb, act, act_stride, acc);
  for (int t = 0; t < NT; ++t) store_rows(y + t * ldy, acc[t], n_rows);
}

// The tile function of GemmKernel for a Tiles type, which provides
//   Repacked                      the repacked weights of 8 rows over a segment of at most kSegBlocks blocks
//   kBlockElems, kSegBlocks       elements per block (32 or 256), blocks per segment
//   kTokens                       tokens per pass over the repacked tile (its register budget)
//   repack(w, w_stride, r0, n_rows, ib0, n_blocks, rp)             rows r0 .. r0 + n_rows of w; rows n_rows..7 zero
//   tokens<NT>(rp, ib0, n_blocks, nb, act, act_stride, acc[NT])   acc[t] lane r += dot(row r, token t)
// Loop order: 8-row tiles outermost, then segments of the row, then every token of the chunk, so each repacked
// segment (16-34 KB, on the stack) is built once and read from L1 (or L2) for all the chunk's tokens.
template <class Tiles>
void gemm_tile_avx2(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                    int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  const int64_t nb = n_in / Tiles::kBlockElems;
  alignas(32) typename Tiles::Repacked rp;
  constexpr int kT = Tiles::kTokens;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kTileRows) {
    const int nr = static_cast<int>(n_rows - r0 < kTileRows ? n_rows - r0 : kTileRows);
    for (int64_t ib0 = 0; ib0 < nb; ib0 += Tiles::kSegBlocks) {
      const int64_t n_blocks = nb - ib0 < Tiles::kSegBlocks ? nb - ib0 : Tiles::kSegBlocks;
      Tiles::repack(w, w_stride, r0, nr, ib0, n_blocks, rp);
      int64_t t = 0;
      for (; t + kT <= n_tokens; t += kT)
        run_tokens<Tiles, kT>(rp, ib0, n_blocks, nb, act + t * act_stride, act_stride, y + t * ldy + r0, ldy, nr);
      if constexpr (kT >= 4) {
        if (n_tokens - t >= kT / 2) {
          run_tokens<Tiles, kT / 2>(rp, ib0, n_blocks, nb, act + t * act_stride, act_stride, y + t * ldy + r0, ldy,
                                    nr);
          t += kT / 2;
        }
      }
      for (; t < n_tokens; ++t)
        run_tokens<Tiles, 1>(rp, ib0, n_blocks, nb, act + t * act_stride, act_stride, y + t * ldy + r0, ldy, nr);
    }
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
