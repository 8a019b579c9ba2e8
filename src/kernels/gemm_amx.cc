// AMX-INT8 matrix kernels for long batches over matrices kept in row layout (the "amx" ISA: avx512 plus these and
// the AMX-BF16 kernels of gemm_amx_bf16.cc for interleaved matrices), built with AMX-TILE / AMX-INT8 on top of the
// flags of gemm_avx512.cc. A model loaded under amx interleaves what avx512 interleaves, so these serve only the
// matrices whose row count is off the 16-row groups.
//
// One tile product C[16 tokens, 16 rows] += A[16 tokens, K] . B[K, 16 rows] covers one chunk of K elements that
// share a scale: a 32-element block of Q4_0 .. Q8_0, a 32-element chunk of Q4_K, a 16-element group of Q6_K
// (8192 or 4096 multiply-adds in one instruction). C is zeroed per chunk, stored, and added to float accumulators
// with d_w d_a (and an offset term m_w s_a for Q4_1 / Q5_1 / Q4_K) by AVX-512, while the tile unit works on the
// next chunk.
//
// Weights: for each tile of 16 rows the kernel unpacks the chunks into signed (Q4_0, Q5_0, Q8_0: q - offset;
// Q6_K: q - 32) or unsigned (Q4_1, Q5_1, Q4_K) bytes in element order, with a float scale (and offset) per chunk,
// and rearranges them into the tile unit's B layout (4 consecutive K elements of one row per 32-bit column). This
// costs about as much as a few tokens' products, so a chunk of work covers all tokens of the call.
// Activations, one packed row per token (rows padded to a multiple of 16 tokens, the padding zero):
//   [n_chunks][K] i8 quants in element order | [n_chunks] f32 d_a | [n_chunks] f32 s_a = d_a * sum of the chunk's q
// quantized as the paired vec_dot_type quantizes (Q8_0 / Q8_1 per 32 elements, Q8_K per 256).
#include "kernels/isa_kernels.h"

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels/x86/x86_common.h"
#include "kernels/x86/x86_quantize.h"
#include "kernels/x86/avx512_gemm32.h"
#include "kernels/x86/amx_tiles.h"
#endif

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

constexpr int kTile = 16;  // tokens per A tile; weight rows per B tile

// ---- Packed activations: [n_chunks][kChunk] i8 quants | [n_chunks] f32 d_a | [n_chunks] f32 s_a.

template <int kChunk>
int64_t amx_row_bytes(int64_t n_in) {
  const int64_t n_chunks = n_in / kChunk;
  return (n_chunks * (kChunk + 8) + 63) / 64 * 64;
}

// 32-element block types: Q8_0 / Q8_1 quantization (the same quants and f16-rounded scales; s as Q8_1 stores it).
void pack_amx_q8(const float* x, int64_t n_in, uint8_t* dst) {
  const int64_t nb = n_in / tensor::kQk32;
  auto* q = reinterpret_cast<int8_t*>(dst);           // [nb][32]
  auto* d = reinterpret_cast<float*>(dst + nb * 32);  // [nb]
  float* s = d + nb;                                  // [nb]
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sum;
    const float db = quantize_block_32(x + b * tensor::kQk32, q + b * 32, &sum);
    d[b] = f16_scalar(f16_from(db));
    s[b] = f16_scalar(f16_from(static_cast<float>(sum) * db));
  }
  const int64_t used = nb * 40;
  std::memset(dst + used, 0, static_cast<size_t>(amx_row_bytes<32>(n_in) - used));
}

// K-quants: Q8_K quantization (one f32 scale per 256); each chunk carries that scale and d_a times its quant sum.
template <int kChunk>
void pack_amx_q8k(const float* x, int64_t n_in, uint8_t* dst) {
  const int64_t n_chunks = n_in / kChunk;
  constexpr int kPerBlock = tensor::kQkK / kChunk;
  auto* q = reinterpret_cast<int8_t*>(dst);                     // [n_chunks][kChunk]
  auto* d = reinterpret_cast<float*>(dst + n_chunks * kChunk);  // [n_chunks]
  float* s = d + n_chunks;                                      // [n_chunks]
  for (int64_t ib = 0; ib < n_in / tensor::kQkK; ++ib) {
    tensor::BlockQ8_K b;
    quantize_block_q8_k(x + ib * tensor::kQkK, b);
    std::memcpy(q + ib * tensor::kQkK, b.qs, tensor::kQkK);
    for (int c = 0; c < kPerBlock; ++c) {
      int32_t sum = 0;
      for (int g = c * kChunk / 16; g < (c + 1) * kChunk / 16; ++g) sum += b.bsums[g];
      d[ib * kPerBlock + c] = b.d;
      s[ib * kPerBlock + c] = b.d * static_cast<float>(sum);
    }
  }
  const int64_t used = n_chunks * (kChunk + 8);
  std::memset(dst + used, 0, static_cast<size_t>(amx_row_bytes<kChunk>(n_in) - used));
}

// ---- Weight rows in element order, with a scale (and offset) per chunk:
//   x = d[c] * q (+ m[c]) for the elements of chunk c, q as the tile unit reads it (signed or unsigned bytes).

alignas(64) constexpr uint8_t kNaturalIdx[2][64] = {
    // Blocks 0 and 1 of a group in element order: lo lane k (elements 0-15), then hi lane k (16-31).
    {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 64, 65, 66, 67, 68, 69,
     70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
     28, 29, 30, 31, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95},
    {32, 33, 34, 35, 36, 37, 38, 39, 40,  41,  42,  43,  44,  45,  46,  47,  96,  97,  98,  99,  100, 101,
     102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58,  59,
     60,  61,  62,  63,  112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127}};

// Q4_0 .. Q8_0 through the AVX-512 group unpackers: symmetric types as signed q - offset, Q4_1 / Q5_1 unsigned.
template <class G, int kOffset>
struct Rows32 {
  static constexpr int kChunk = 32;
  static constexpr bool kHasM = G::kHasM;
  static constexpr bool kUnsigned = G::kHasM;
  static void unpack(const uint8_t* w_row, int64_t n_in, uint8_t* q, float* d, float* m) {
    const int64_t nb = n_in / tensor::kQk32;
    const int64_t n_full = nb / kGroupBlocks;
    const int64_t n_groups = (nb + kGroupBlocks - 1) / kGroupBlocks;
    const __m512i idx0 = _mm512_load_si512(kNaturalIdx[0]);
    const __m512i idx1 = _mm512_load_si512(kNaturalIdx[1]);
    const __m512i offset = _mm512_set1_epi8(static_cast<char>(kOffset));
    for (int64_t g = 0; g < n_groups; ++g) {
      const int valid = g < n_full ? kGroupBlocks : static_cast<int>(nb - n_full * kGroupBlocks);
      const uint8_t* p = w_row + g * kGroupBlocks * G::kBlockBytes;
      const WGroup wg = valid == kGroupBlocks ? G::template unpack<false>(p, 0)
                                              : G::template unpack<true>(p, valid * G::kBlockBytes);
      __m512i lo = wg.lo, hi = wg.hi;
      if constexpr (kOffset != 0) {
        lo = _mm512_sub_epi8(lo, offset);
        hi = _mm512_sub_epi8(hi, offset);
      }
      _mm512_store_si512(q + g * 128, _mm512_permutex2var_epi8(lo, idx0, hi));
      _mm512_store_si512(q + g * 128 + 64, _mm512_permutex2var_epi8(lo, idx1, hi));
      alignas(64) float dv[16], mv[16];
      _mm512_store_ps(dv, wg.d);
      if constexpr (kHasM) _mm512_store_ps(mv, wg.m);
      for (int k = 0; k < valid; ++k) {
        d[g * kGroupBlocks + k] = dv[4 * k];
        m[g * kGroupBlocks + k] = kHasM ? mv[4 * k] : 0.0f;
      }
    }
  }
};

// Q4_K: unsigned nibbles; chunk k has scale d * sc_k and offset -dmin * min_k (k4_scale_min in the scalar twin).
struct RowsQ4K {
  static constexpr int kChunk = 32;
  static constexpr bool kHasM = true;
  static constexpr bool kUnsigned = true;
  static void unpack(const uint8_t* w_row, int64_t n_in, uint8_t* q, float* d, float* m) {
    const auto* blocks = reinterpret_cast<const tensor::BlockQ4_K*>(w_row);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int64_t ib = 0; ib < n_in / tensor::kQkK; ++ib) {
      const tensor::BlockQ4_K& b = blocks[ib];
      for (int j = 0; j < 4; ++j) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
        _mm256_store_si256(reinterpret_cast<__m256i*>(q + ib * 256 + 64 * j), _mm256_and_si256(x, low4));
        _mm256_store_si256(reinterpret_cast<__m256i*>(q + ib * 256 + 64 * j + 32),
                           _mm256_and_si256(_mm256_srli_epi16(x, 4), low4));
      }
      const float dd = f16_scalar(b.d), dmin = f16_scalar(b.dmin);
      for (int k = 0; k < 8; ++k) {
        int sc, mn;
        if (k < 4) {
          sc = b.scales[k] & 63;
          mn = b.scales[k + 4] & 63;
        } else {
          sc = (b.scales[k + 4] & 0xf) | ((b.scales[k - 4] >> 6) << 4);
          mn = (b.scales[k + 4] >> 4) | ((b.scales[k] >> 6) << 4);
        }
        d[ib * 8 + k] = dd * static_cast<float>(sc);
        m[ib * 8 + k] = -dmin * static_cast<float>(mn);
      }
    }
  }
};

// Q6_K: signed q - 32; each group of 16 has scale d * sc_g, so its chunks are 16 elements.
struct RowsQ6K {
  static constexpr int kChunk = 16;
  static constexpr bool kHasM = false;
  static constexpr bool kUnsigned = false;
  static void unpack(const uint8_t* w_row, int64_t n_in, uint8_t* q, float* d, float* m) {
    const auto* blocks = reinterpret_cast<const tensor::BlockQ6_K*>(w_row);
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i top2 = _mm512_set1_epi8(0x30);
    const __m512i off = _mm512_set1_epi8(32);
    // As Q6_KUnpack (avx512_gemm_k.h): per half, elements 0..63 and 64..127 in order.
    const __m512i shift_a = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shift_b = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    for (int64_t ib = 0; ib < n_in / tensor::kQkK; ++ib) {
      const tensor::BlockQ6_K& b = blocks[ib];
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(b.ql + 64 * h);
        const __m512i qh =
            _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h)));
        const __m512i v0 =
            _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_and_si512(_mm512_sllv_epi16(qh, shift_a), top2));
        const __m512i v1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                           _mm512_and_si512(_mm512_srlv_epi16(qh, shift_b), top2));
        _mm512_store_si512(q + ib * 256 + 128 * h, _mm512_sub_epi8(v0, off));
        _mm512_store_si512(q + ib * 256 + 128 * h + 64, _mm512_sub_epi8(v1, off));
      }
      const float dd = f16_scalar(b.d);
      for (int g = 0; g < 16; ++g) {
        d[ib * 16 + g] = dd * static_cast<float>(b.scales[g]);
        m[ib * 16 + g] = 0.0f;
      }
    }
  }
};

// Tiles: 0, 1 = C of even / odd chunks; 2, 3 = A; 4, 5 = B. A chunk of kChunk elements is the K of one product.
template <int kChunk>
void configure_tiles() {
  TileConfig c{};
  c.palette_id = 1;
  for (int t : {0, 1}) {
    c.rows[t] = kTile;
    c.colsb[t] = kTile * 4;
  }
  for (int t : {2, 3}) {
    c.rows[t] = kTile;
    c.colsb[t] = kChunk;
  }
  for (int t : {4, 5}) {
    c.rows[t] = kChunk / 4;
    c.colsb[t] = kTile * 4;
  }
  load_tile_config(c);
}

// One row tile's weights in B layout with their per-chunk scales.
struct RowTile {
  int8_t* b;  // [n_chunks][kChunk / 4][64]
  float* d;   // [n_chunks][16]
  float* m;   // [n_chunks][16]
};

// Row tiles prepared together: each token tile's scales are gathered once for all of them.
constexpr int kRowTilesPerGroup = 8;

// A thread's working memory (matmul's MatmulScratch::work), 64-byte aligned pieces:
//   rows   [16][row_bytes]          element-order quants of the tile being prepared
//   row_d, row_m [16][scale_floats] their per-chunk scales
//   tiles  kRowTilesPerGroup x (B tiles [n_chunks][kChunk / 4][64], d, m [n_chunks][16])
//   da, sa [n_chunks][16]           the current token tile's activation scales, chunk-major
struct Scratch {
  uint8_t* rows;
  float* row_d;
  float* row_m;
  RowTile tiles[kRowTilesPerGroup];
  float* da;
  float* sa;
};

// The sizes of a Scratch's pieces for rows of n_in elements (each piece keeps the 64-byte alignment of the start).
template <int kChunk>
struct WorkLayout {
  explicit WorkLayout(int64_t n_in)
      : n_chunks(n_in / kChunk),
        row_bytes((n_in + 127) / 128 * 128),  // whole groups of 128
        scale_floats((n_chunks + 15) / 16 * 16),
        tile_bytes(n_chunks * (kChunk / 4) * 64 + 2 * n_chunks * kTile * 4) {}
  int64_t n_chunks, row_bytes, scale_floats, tile_bytes;
  int64_t total_bytes() const {
    return kTile * row_bytes + 2 * kTile * scale_floats * 4 + kRowTilesPerGroup * tile_bytes + 2 * n_chunks * kTile * 4;
  }
};

template <int kChunk>
int64_t work_bytes(int64_t n_in) {
  return WorkLayout<kChunk>(n_in).total_bytes();
}

// Cuts `work` (work_bytes<kChunk>(n_in) bytes, 64-byte aligned) into a Scratch.
template <int kChunk>
Scratch scratch_in(int64_t n_in, uint8_t* work) {
  const WorkLayout<kChunk> l(n_in);
  uint8_t* p = work;
  Scratch sc;
  sc.rows = p;
  p += kTile * l.row_bytes;
  sc.row_d = reinterpret_cast<float*>(p);
  sc.row_m = sc.row_d + kTile * l.scale_floats;
  p += 2 * kTile * l.scale_floats * 4;
  for (RowTile& t : sc.tiles) {
    t.b = reinterpret_cast<int8_t*>(p);
    t.d = reinterpret_cast<float*>(p + l.n_chunks * (kChunk / 4) * 64);
    t.m = t.d + l.n_chunks * kTile;
    p += l.tile_bytes;
  }
  sc.da = reinterpret_cast<float*>(p);
  sc.sa = sc.da + l.n_chunks * kTile;
  return sc;
}

// Unpacks weight rows [0, n_rows) of a tile (rows past n_rows are zero) and builds its B tiles in `t`.
template <class R>
void prepare_rows(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const Scratch& sc, RowTile t) {
  constexpr int kChunk = R::kChunk;
  const int64_t n_chunks = n_in / kChunk;
  const int64_t row_bytes = (n_in + 127) / 128 * 128;
  const int64_t scale_floats = (n_chunks + 15) / 16 * 16;
  for (int n = 0; n < kTile; ++n) {
    float* rd = sc.row_d + n * scale_floats;
    float* rm = sc.row_m + n * scale_floats;
    if (n < n_rows) {
      R::unpack(w + n * w_stride, n_in, sc.rows + n * row_bytes, rd, rm);
    } else {
      std::memset(sc.rows + n * row_bytes, 0, static_cast<size_t>(row_bytes));
      for (int64_t c = 0; c < n_chunks; ++c) rd[c] = rm[c] = 0.0f;
    }
  }
  for (int64_t c = 0; c < n_chunks; ++c) {
    for (int n = 0; n < kTile; ++n) {
      t.d[c * kTile + n] = sc.row_d[n * scale_floats + c];
      t.m[c * kTile + n] = sc.row_m[n * scale_floats + c];
    }
  }
  // B layout: row kk of chunk c's tile holds, for each weight row n, elements 4kk..4kk+3 of that row's chunk: a
  // transpose of the 16 x (kChunk / 4) matrix of 32-bit words.
  if constexpr (kChunk == 32) {
    // Registers hold rows n and n + 8 in their 256-bit halves; an 8 x 8 word transpose runs in both halves at once.
    const __m512i lo_pick = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi_pick = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    for (int64_t c = 0; c < n_chunks; ++c) {
      __m512i z[8], t8[8];
      for (int n = 0; n < 8; ++n) {
        const auto* lo = reinterpret_cast<const __m256i*>(sc.rows + n * row_bytes + c * kChunk);
        const auto* hi = reinterpret_cast<const __m256i*>(sc.rows + (n + 8) * row_bytes + c * kChunk);
        z[n] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256(lo)), _mm256_load_si256(hi), 1);
      }
      for (int i = 0; i < 4; ++i) {
        t8[2 * i] = _mm512_unpacklo_epi32(z[2 * i], z[2 * i + 1]);
        t8[2 * i + 1] = _mm512_unpackhi_epi32(z[2 * i], z[2 * i + 1]);
      }
      // u[k] (k < 4): word 4l + k of rows 0-3 in 128-bit lane l of each half; u[4 + k]: the same of rows 4-7.
      __m512i u[8];
      for (int g = 0; g < 2; ++g) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t8[4 * g], t8[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t8[4 * g], t8[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t8[4 * g + 1], t8[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t8[4 * g + 1], t8[4 * g + 3]);
      }
      int8_t* out = t.b + c * 8 * 64;
      for (int k = 0; k < 4; ++k) {
        _mm512_store_si512(out + k * 64, _mm512_permutex2var_epi64(u[k], lo_pick, u[4 + k]));
        _mm512_store_si512(out + (k + 4) * 64, _mm512_permutex2var_epi64(u[k], hi_pick, u[4 + k]));
      }
    }
  } else {
    const __m512i vindex = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int>(row_bytes)));
    for (int64_t c = 0; c < n_chunks; ++c) {
      for (int kk = 0; kk < kChunk / 4; ++kk) {
        const __m512i col = _mm512_i32gather_epi32(vindex, sc.rows + c * kChunk + 4 * kk, 1);
        _mm512_store_si512(t.b + (c * (kChunk / 4) + kk) * 64, col);
      }
    }
  }
}

// acc[t] += C[t] * d_w * d_a[t] (+ m_w * s_a[t]) for the 16 tokens of a tile; C was stored to c, the tokens'
// scales of this chunk are da[0, 16), sa[0, 16). (Two arrays of 8 accumulators: measured, not slower than one.)
template <bool kHasM>
__attribute__((always_inline)) inline void scale_chunk(const int32_t* c, const float* d, const float* m,
                                                       const float* da, const float* sa, __m512* acc_lo,
                                                       __m512* acc_hi) {
  const __m512 dv = _mm512_load_ps(d);
  __m512 mv = _mm512_setzero_ps();
  if constexpr (kHasM) mv = _mm512_load_ps(m);
  for (int t = 0; t < kTile; ++t) {
    __m512& acc = t < kTile / 2 ? acc_lo[t] : acc_hi[t - kTile / 2];
    const __m512 ci = _mm512_cvtepi32_ps(_mm512_load_si512(c + t * kTile));
    acc = _mm512_fmadd_ps(ci, _mm512_mul_ps(dv, _mm512_set1_ps(da[t])), acc);
    if constexpr (kHasM) acc = _mm512_fmadd_ps(mv, _mm512_set1_ps(sa[t]), acc);
  }
}

// C(c) += A(2 + c) . B(4 + c). The tile intrinsics paste their arguments into the instruction text, so the tile
// numbers are spelled out.
template <bool kUnsignedWeights, int c>
inline void tile_dot() {
  if constexpr (kUnsignedWeights && c == 0) _tile_dpbsud(0, 2, 4);
  if constexpr (kUnsignedWeights && c == 1) _tile_dpbsud(1, 3, 5);
  if constexpr (!kUnsignedWeights && c == 0) _tile_dpbssd(0, 2, 4);
  if constexpr (!kUnsignedWeights && c == 1) _tile_dpbssd(1, 3, 5);
}

// One row tile against one token tile: y[t * ldy + r] for t < nt tokens, the rows of row_mask.
template <class R>
void tile_product(int64_t n_chunks, const RowTile& rt, const uint8_t* a0, int64_t act_stride, const float* da,
                  const float* sa, float* y, int64_t ldy, int64_t nt, __mmask16 row_mask) {
  constexpr int kChunk = R::kChunk;
  constexpr int kBBytes = kChunk / 4 * 64;  // one chunk's B tile
  alignas(64) int32_t cbuf[2][kTile * kTile];
  __m512 acc_lo[kTile / 2], acc_hi[kTile / 2];
  for (int t = 0; t < kTile / 2; ++t) acc_lo[t] = acc_hi[t] = _mm512_setzero_ps();
  int64_t c = 0;
  // Two chunks per step in two accumulator tiles, so the tile unit computes one while AVX-512 scales the other.
  for (; c + 2 <= n_chunks; c += 2) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_loadd(2, a0 + c * kChunk, act_stride);
    _tile_loadd(4, rt.b + c * kBBytes, 64);
    _tile_loadd(3, a0 + (c + 1) * kChunk, act_stride);
    _tile_loadd(5, rt.b + (c + 1) * kBBytes, 64);
    tile_dot<R::kUnsigned, 0>();
    tile_dot<R::kUnsigned, 1>();
    _tile_stored(0, cbuf[0], kTile * 4);
    scale_chunk<R::kHasM>(cbuf[0], rt.d + c * kTile, rt.m + c * kTile, da + c * kTile, sa + c * kTile, acc_lo, acc_hi);
    _tile_stored(1, cbuf[1], kTile * 4);
    scale_chunk<R::kHasM>(cbuf[1], rt.d + (c + 1) * kTile, rt.m + (c + 1) * kTile, da + (c + 1) * kTile,
                          sa + (c + 1) * kTile, acc_lo, acc_hi);
  }
  if (c < n_chunks) {
    _tile_zero(0);
    _tile_loadd(2, a0 + c * kChunk, act_stride);
    _tile_loadd(4, rt.b + c * kBBytes, 64);
    tile_dot<R::kUnsigned, 0>();
    _tile_stored(0, cbuf[0], kTile * 4);
    scale_chunk<R::kHasM>(cbuf[0], rt.d + c * kTile, rt.m + c * kTile, da + c * kTile, sa + c * kTile, acc_lo, acc_hi);
  }
  for (int t = 0; t < kTile; ++t) {
    if (t < nt) _mm512_mask_storeu_ps(y + t * ldy, row_mask, t < kTile / 2 ? acc_lo[t] : acc_hi[t - kTile / 2]);
  }
}

template <class R>
void amx_tile(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
              int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* work) {
  constexpr int kChunk = R::kChunk;
  const int64_t n_chunks = n_in / kChunk;
  const int64_t da_off = n_in / 4;  // in floats from the start of a packed row
  const int64_t s_off = da_off + n_chunks;
  const Scratch sc = scratch_in<kChunk>(n_in, work);
  configure_tiles<kChunk>();
  for (int64_t g0 = 0; g0 < n_rows; g0 += kRowTilesPerGroup * kTile) {
    const int n_tiles = static_cast<int>(std::min<int64_t>(kRowTilesPerGroup, (n_rows - g0 + kTile - 1) / kTile));
    for (int i = 0; i < n_tiles; ++i) {
      const int64_t r0 = g0 + i * kTile;
      prepare_rows<R>(n_in, w + r0 * w_stride, w_stride, std::min<int64_t>(kTile, n_rows - r0), sc, sc.tiles[i]);
    }
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTile) {
      const uint8_t* a0 = act + t0 * act_stride;
      // The token tile's activation scales, chunk-major, shared by the group's row tiles.
      for (int t = 0; t < kTile; ++t) {
        const auto* row = reinterpret_cast<const float*>(a0 + t * act_stride);
        for (int64_t c = 0; c < n_chunks; ++c) {
          sc.da[c * kTile + t] = row[da_off + c];
          sc.sa[c * kTile + t] = row[s_off + c];
        }
      }
      const int64_t nt = std::min<int64_t>(kTile, n_tokens - t0);
      for (int i = 0; i < n_tiles; ++i) {
        const int64_t r0 = g0 + i * kTile;
        const __mmask16 row_mask = static_cast<__mmask16>((1u << std::min<int64_t>(kTile, n_rows - r0)) - 1u);
        tile_product<R>(n_chunks, sc.tiles[i], a0, act_stride, sc.da, sc.sa, y + t0 * ldy + r0, ldy, nt, row_mask);
      }
    }
  }
  _tile_release();
}

template <class R>
GemmKernel amx_kernel(int pack_id, void (*pack)(const float*, int64_t, uint8_t*)) {
  GemmKernel k;
  k.pack_id = pack_id;
  k.packed_row_bytes = amx_row_bytes<R::kChunk>;
  k.pack = pack;
  k.tile = amx_tile<R>;
  k.tile_work_bytes = work_bytes<R::kChunk>;
  k.chunk_rows_multiple = kTile;
  k.chunk_tokens = 0;
  k.token_multiple = kTile;
  return k;
}

// pack_id values (distinct from gemm_avx512.cc's).
enum AmxPackId : int {
  kPackAmxQ8 = 100,  // every 32-element block type
  kPackAmxQ8K32,     // Q4_K
  kPackAmxQ8K16,     // Q6_K
};

IsaKernels make_amx() {
  using tensor::DType;
  IsaKernels k = avx512_kernels();
  k.isa = Isa::kAmx;
  k.gemm_large[slot(DType::Q4_0)] = amx_kernel<Rows32<Q4_0Group, 8>>(kPackAmxQ8, pack_amx_q8);
  k.gemm_large[slot(DType::Q4_1)] = amx_kernel<Rows32<Q4_1Group, 0>>(kPackAmxQ8, pack_amx_q8);
  k.gemm_large[slot(DType::Q5_0)] = amx_kernel<Rows32<Q5_0Group, 16>>(kPackAmxQ8, pack_amx_q8);
  k.gemm_large[slot(DType::Q5_1)] = amx_kernel<Rows32<Q5_1Group, 0>>(kPackAmxQ8, pack_amx_q8);
  k.gemm_large[slot(DType::Q8_0)] = amx_kernel<Rows32<Q8Group, 128>>(kPackAmxQ8, pack_amx_q8);
  k.gemm_large[slot(DType::Q4_K)] = amx_kernel<RowsQ4K>(kPackAmxQ8K32, pack_amx_q8k<32>);
  k.gemm_large[slot(DType::Q6_K)] = amx_kernel<RowsQ6K>(kPackAmxQ8K16, pack_amx_q8k<16>);
  // Matrices stay interleaved as under avx512, for its decode kernels; prompts of many tokens take the AMX-BF16
  // kernels over that layout (gemm_amx_bf16.cc). The int8 row-layout kernels above serve the matrices a model keeps
  // in rows (a row count off the 16-row groups).
  add_amx_bf16_kernels(k);
  return k;
}

}  // namespace

const IsaKernels& amx_kernels() {
  static const IsaKernels table = make_amx();
  return table;
}
#else
const IsaKernels& amx_kernels() { return generic_kernels(); }
#endif

}  // namespace longhaul::kernels::detail
