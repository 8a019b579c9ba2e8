// AMX-BF16 prompt kernels for weights stored 16 rows interleaved (kernels/interleave.h): the amx ISA's products for
// prompt rows (MatmulRows::kPrompt, IsaKernels::gemm_interleaved_prompt), built with AMX-TILE / AMX-BF16 /
// AVX512-BF16.
//
// Why bf16 and not the int8 tiles: the quantized types scale every block of 32 (Q6_K: 16) elements on its own, so
// an int8 tile product covers one block and its integer sums must be stored and folded into float accumulators by
// AVX-512 before the next block, which costs more than the tile product itself (docs/benchmarks.md, "AMX on the
// interleaved layout tried"). Here each weight is dequantized once per call to bf16 with its scale applied, so the
// tile unit accumulates in float across the whole row and the results are stored once: one tile instruction does
// 16 tokens x 16 rows x 32 elements (8192 multiply-adds), 3.4x the VNNI rate per core on a 2-core Xeon (measured
// 600 against 179 G/s per thread). A prompt chunk's tokens amortize the dequantizing: a weight is read once per call.
//
// bf16 keeps 8 significant bits; a weight of a 4- to 6-bit type with its f16 scale applied needs up to 25, so the
// rounding adds up to 2^-9 of each weight and activation, below the types' own quantization step (2^-4 .. 2^-6 of
// the block's range) and near the 8-bit activation quantization of the VNNI kernels (2^-8 of the block's largest).
//
// B panel (one 16-row group): [n_in / 32 tiles][16 pair rows][16 rows][2 bf16]: pair row i of tile k holds
// elements 32k + 2i, 32k + 2i + 1 of each of the 16 rows, the layout TDPBF16PS reads. The interleaved layout keeps
// 4 consecutive quants of a row in each 32-bit lane of a 64-byte vector, so one vector gives two pair rows: its
// lanes' quants are widened to float, scaled, rounded to bf16 in pairs and the even and odd pairs gathered.
// Activations: one row of n_in bf16 per token (x rounded to nearest even), 64-byte aligned, padded to 16 tokens.
#include "kernels/isa_kernels.h"

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/x86/amx_tiles.h"
#include "kernels/x86/avx512_nibbles.h"
#include "tensor/quant_blocks.h"
#endif

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

constexpr int kTile = 16;             // tokens per A tile, rows per B tile
constexpr int64_t kTileK = 32;        // elements of K per tile product
constexpr int64_t kBTileBytes = 1024; // [16 pair rows][16 rows][2 bf16]

void pack_bf16(const float* x, int64_t n_in, uint8_t* dst) {
  int64_t i = 0;
  for (; i + 32 <= n_in; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_store_si512(dst + 2 * i, reinterpret_cast<const __m512i&>(v));
  }
  const int64_t used = 2 * i;
  std::memset(dst + used, 0, static_cast<size_t>(bf16_packed_row_bytes(n_in) - used));
}

// B panels of this many bytes at most are unpacked together (at least two groups'), and each pair of token tiles
// serves all of them while its activations are in L1: the panels stream from L2 (2 MB per core where AMX exists).
// One thread, 512 tokens, medians of 7 (longhaul_bench_kernels Gemm512X16, isa 3), two groups at a time against
// blocks of at most 512 KB: Q4_1 1536x576 1391-1778 -> 1068-1091 µs, Q5_0 2048x640 1893-2052 -> 1643-2081,
// Q4_K 640x2048 2426-2451 -> 1859-2025 (192 KB blocks, two groups at 2048 columns, left it at 2367-2444).
constexpr int64_t kPanelBlockBytes = 512 * 1024;

int64_t groups_per_block(int64_t n_in) {
  const int64_t group_panel = n_in / kTileK * kBTileBytes;
  return std::max<int64_t>(2, kPanelBlockBytes / group_panel / 2 * 2);
}

// Tile working memory per thread: a block of groups' B panels and a staging tile for a partial token tile.
int64_t work_bytes(int64_t n_in) {
  return groups_per_block(n_in) * (n_in / kTileK) * kBTileBytes + kTile * kTile * 4;
}

// ---- Dequantizing one group's quants into B pair rows.

// Per quarter j of a vector (lanes 4r' + e, r' < 4), the row 4j + r' of each lane.
struct QuarterIdx {
  __m512i idx[4];
  QuarterIdx() {
    for (int j = 0; j < 4; ++j) {
      alignas(64) int32_t v[16];
      for (int l = 0; l < 16; ++l) v[l] = 4 * j + l / 4;
      idx[j] = _mm512_load_si512(v);
    }
  }
};

// A row's scale and offset spread over the lanes of each quarter: x = u * scale + bias.
struct LaneScales {
  __m512 scale[4], bias[4];
  LaneScales(const QuarterIdx& q, __m512 scale_rows, __m512 bias_rows) {
    for (int j = 0; j < 4; ++j) {
      scale[j] = _mm512_permutexvar_ps(q.idx[j], scale_rows);
      bias[j] = _mm512_permutexvar_ps(q.idx[j], bias_rows);
    }
  }
};

// u: 64 unsigned quants, lane r = elements e .. e + 3 of row r (e even). Writes the pair rows (e, e + 1) at b and
// (e + 2, e + 3) at b + 64.
inline void quad_to_pairs(__m512i u, const LaneScales& s, uint8_t* b) {
  __m512 f[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512i wide = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, j));
    f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(wide), s.scale[j], s.bias[j]);
  }
  // Dword k of lo = bf16 pair k % 2 of row k / 2 (rows 0-7); of hi, rows 8-15.
  const __m512bh lo = _mm512_cvtne2ps_pbh(f[1], f[0]);
  const __m512bh hi = _mm512_cvtne2ps_pbh(f[3], f[2]);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i lo_i = reinterpret_cast<const __m512i&>(lo), hi_i = reinterpret_cast<const __m512i&>(hi);
  _mm512_store_si512(b, _mm512_permutex2var_epi32(lo_i, even, hi_i));
  _mm512_store_si512(b + 64, _mm512_permutex2var_epi32(lo_i, odd, hi_i));
}

inline __m512 f16_rows(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Q4_0, Q4_1, Q5_0, Q5_1: a group's block is [32 B d][32 B m if kHasM][64 B qh if kHasQh][4 x 64 B nibbles]; chunk c
// holds elements 4c .. 4c + 3 in its low nibbles and 16 + 4c .. 16 + 4c + 3 in its high ones.
template <bool kHasM, bool kHasQh, int kOffset>
struct NibbleGroups {
  static constexpr int64_t kQhAt = kHasM ? 64 : 32;
  static constexpr int64_t kQuantsAt = kQhAt + (kHasQh ? 64 : 0);
  static constexpr int64_t kBlockBytes = kQuantsAt + 256;  // per group and block of 32
  static void unpack(const uint8_t* group, int64_t n_in, const QuarterIdx& q, uint8_t* panel) {
    for (int64_t b = 0; b < n_in / 32; ++b) {
      const uint8_t* wb = group + b * kBlockBytes;
      const __m512 d = f16_rows(wb);
      const __m512 bias = kHasM ? f16_rows(wb + 32) : _mm512_mul_ps(d, _mm512_set1_ps(-static_cast<float>(kOffset)));
      const LaneScales s(q, d, bias);
      __m512i qh = _mm512_setzero_si512();
      if constexpr (kHasQh) qh = _mm512_loadu_si512(wb + kQhAt);
      uint8_t* tile = panel + b * kBTileBytes;
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        __m512i lo, hi;
        nibble_chunk<kHasQh>(_mm512_loadu_si512(wb + kQuantsAt + 64 * c), qh, c, lo, hi);
        quad_to_pairs(lo, s, tile + 2 * c * 64);
        quad_to_pairs(hi, s, tile + (8 + 2 * c) * 64);
      }
    }
  }
};

// Q8_0: [32 B d][8 x 64 B quants + 128]; chunk c holds elements 4c .. 4c + 3.
struct Q8Groups {
  static void unpack(const uint8_t* group, int64_t n_in, const QuarterIdx& q, uint8_t* panel) {
    for (int64_t b = 0; b < n_in / 32; ++b) {
      const uint8_t* wb = group + b * 544;
      const __m512 d = f16_rows(wb);
      const LaneScales s(q, d, _mm512_mul_ps(d, _mm512_set1_ps(-128.0f)));
      uint8_t* tile = panel + b * kBTileBytes;
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) quad_to_pairs(_mm512_loadu_si512(wb + 32 + 64 * c), s, tile + 2 * c * 64);
    }
  }
};

// Q4_K (2304 bytes per group and super-block): d at 0, dmin at 32, scales[12] as 3 vectors at 64, qs[128] as 32
// vectors at 256. Vector v holds elements 64 (v / 8) + 4 (v % 8) + 0..3 (sub-block 2 (v / 8)) in its low nibbles,
// and those + 32 (the next sub-block) in its high ones. Sub-block j of a row: x = d sc_j q - dmin m_j.
struct Q4KGroups {
  static void unpack(const uint8_t* group, int64_t n_in, const QuarterIdx& q, uint8_t* panel) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    for (int64_t sb = 0; sb < n_in / 256; ++sb) {
      const uint8_t* wb = group + sb * 2304;
      alignas(64) float d[16], dmin[16], scale[8][16], bias[8][16];
      _mm512_store_ps(d, f16_rows(wb));
      _mm512_store_ps(dmin, f16_rows(wb + 32));
      for (int r = 0; r < kTile; ++r) {
        uint8_t sc[12];
        for (int i = 0; i < 12; ++i) sc[i] = wb[64 + 64 * (i / 4) + 4 * r + i % 4];
        for (int j = 0; j < 8; ++j) {
          int s, m;
          if (j < 4) {
            s = sc[j] & 63;
            m = sc[j + 4] & 63;
          } else {
            s = (sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4);
            m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
          }
          scale[j][r] = d[r] * static_cast<float>(s);
          bias[j][r] = -(dmin[r] * static_cast<float>(m));
        }
      }
      for (int pair = 0; pair < 4; ++pair) {
        const LaneScales s_lo(q, _mm512_load_ps(scale[2 * pair]), _mm512_load_ps(bias[2 * pair]));
        const LaneScales s_hi(q, _mm512_load_ps(scale[2 * pair + 1]), _mm512_load_ps(bias[2 * pair + 1]));
        uint8_t* tile_lo = panel + (sb * 8 + 2 * pair) * kBTileBytes;
        uint8_t* tile_hi = tile_lo + kBTileBytes;
        for (int a = 0; a < 8; ++a) {
          const __m512i v = _mm512_loadu_si512(wb + 256 + 64 * (8 * pair + a));
          quad_to_pairs(_mm512_and_si512(v, low4), s_lo, tile_lo + 2 * a * 64);
          quad_to_pairs(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), s_hi, tile_hi + 2 * a * 64);
        }
      }
    }
  }
};

// Q6_K (3360 bytes per group and super-block): d at 0, scales[16] (i8) as 4 vectors at 32, ql[128] as 32 vectors
// at 288, qh[64] as 16 vectors at 2336. In half h, lane quad a (elements l = 4a .. 4a + 3): ql vectors 16h + a and
// 16h + 8 + a, qh vector 8h + a give elements 128h + 32m + l for m = 0..3, scale 8h + 2m + a / 4:
// q = (ql nibble) | (2 qh bits << 4), x = d sc (q - 32).
struct Q6KGroups {
  static void unpack(const uint8_t* group, int64_t n_in, const QuarterIdx& q, uint8_t* panel) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i two = _mm512_set1_epi8(0x30);
    for (int64_t sb = 0; sb < n_in / 256; ++sb) {
      const uint8_t* wb = group + sb * 3360;
      alignas(64) float d[16], scale[16][16], bias[16][16];
      _mm512_store_ps(d, f16_rows(wb));
      for (int r = 0; r < kTile; ++r) {
        for (int g = 0; g < 16; ++g) {
          const auto sc = static_cast<int8_t>(wb[32 + 64 * (g / 4) + 4 * r + g % 4]);
          scale[g][r] = d[r] * static_cast<float>(sc);
          bias[g][r] = -32.0f * scale[g][r];
        }
      }
      for (int h = 0; h < 2; ++h) {
        for (int a = 0; a < 8; ++a) {
          const __m512i l1 = _mm512_loadu_si512(wb + 288 + 64 * (16 * h + a));
          const __m512i l2 = _mm512_loadu_si512(wb + 288 + 64 * (16 * h + 8 + a));
          const __m512i qh = _mm512_loadu_si512(wb + 2336 + 64 * (8 * h + a));
          const __m512i u[4] = {
              _mm512_or_si512(_mm512_and_si512(l1, low4), _mm512_and_si512(_mm512_slli_epi16(qh, 4), two)),
              _mm512_or_si512(_mm512_and_si512(l2, low4), _mm512_and_si512(_mm512_slli_epi16(qh, 2), two)),
              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), low4), _mm512_and_si512(qh, two)),
              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l2, 4), low4),
                              _mm512_and_si512(_mm512_srli_epi16(qh, 2), two))};
          for (int m = 0; m < 4; ++m) {
            const int g = 8 * h + 2 * m + a / 4;
            const LaneScales s(q, _mm512_load_ps(scale[g]), _mm512_load_ps(bias[g]));
            quad_to_pairs(u[m], s, panel + (sb * 8 + 4 * h + m) * kBTileBytes + 2 * (a % 8) * 64);
          }
        }
      }
    }
  }
};

// ---- Tile products.

// Stores C tile `c` (16 tokens x 16 rows) at y, its first nt token rows only. The tile intrinsics take the tile
// number as a literal (they paste it into the instruction), hence the spelled-out branches.
template <int c>
inline void store_c(float* y, int64_t ldy, int64_t nt, float* stage) {
  float* dst = nt >= kTile ? y : stage;
  const int64_t stride = nt >= kTile ? ldy * 4 : kTile * 4;
  if constexpr (c == 0) _tile_stored(0, dst, stride);
  if constexpr (c == 1) _tile_stored(1, dst, stride);
  if constexpr (c == 2) _tile_stored(2, dst, stride);
  if constexpr (c == 3) _tile_stored(3, dst, stride);
  if (nt >= kTile) return;
  for (int64_t t = 0; t < nt; ++t) std::memcpy(y + t * ldy, stage + t * kTile, kTile * 4);
}

// NA token tiles (of the nt tokens at a) against NB row tiles (panels b0, b1): y[t * ldy + r].
template <int NA, int NB>
void tile_block(int64_t n_k, const uint8_t* a, int64_t a_stride, const uint8_t* b0, const uint8_t* b1, float* y,
                int64_t ldy, int64_t nt, float* stage) {
  _tile_zero(0);
  if constexpr (NB == 2) _tile_zero(1);
  if constexpr (NA == 2) _tile_zero(2);
  if constexpr (NA == 2 && NB == 2) _tile_zero(3);
  for (int64_t k = 0; k < n_k; ++k) {
    _tile_loadd(4, a + k * 64, a_stride);
    if constexpr (NA == 2) _tile_loadd(5, a + kTile * a_stride + k * 64, a_stride);
    _tile_loadd(6, b0 + k * kBTileBytes, 64);
    if constexpr (NB == 2) _tile_loadd(7, b1 + k * kBTileBytes, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NB == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (NA == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (NA == 2 && NB == 2) _tile_dpbf16ps(3, 5, 7);
  }
  store_c<0>(y, ldy, nt, stage);
  if constexpr (NB == 2) store_c<1>(y + kTile, ldy, nt, stage);
  if constexpr (NA == 2) store_c<2>(y + kTile * ldy, ldy, nt - kTile, stage);
  if constexpr (NA == 2 && NB == 2) store_c<3>(y + kTile * ldy + kTile, ldy, nt - kTile, stage);
}

// w: the first of n_rows / 16 groups (n_rows a multiple of 16); act: [n_tokens rounded up to 16][bf16_packed_row_bytes].
template <class G>
void amx_bf16_tile(int64_t n_in, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                   int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* work) {
  const int64_t n_k = n_in / kTileK;
  const int64_t group_bytes = kTile * w_stride;
  const int64_t panel_bytes = n_k * kBTileBytes;
  const int64_t block_groups = groups_per_block(n_in);
  auto* stage = reinterpret_cast<float*>(work + block_groups * panel_bytes);
  const QuarterIdx q;
  // Tiles 0-3: C of (token tile a, row tile b) at 2a + b; 4, 5: A of token tiles 0, 1; 6, 7: B of row tiles 0, 1.
  load_full_tiles_config();
  const int64_t n_groups = n_rows / kTile;
  for (int64_t g0 = 0; g0 < n_groups; g0 += block_groups) {
    const int64_t nb = std::min(block_groups, n_groups - g0);
    for (int64_t i = 0; i < nb; ++i) G::unpack(w + (g0 + i) * group_bytes, n_in, q, work + i * panel_bytes);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += 2 * kTile) {
      const int64_t nt = std::min<int64_t>(2 * kTile, n_tokens - t0);
      const uint8_t* a = act + t0 * act_stride;
      for (int64_t i = 0; i < nb; i += 2) {
        const uint8_t* b0 = work + i * panel_bytes;
        const uint8_t* b1 = b0 + panel_bytes;
        float* yt = y + t0 * ldy + (g0 + i) * kTile;
        const bool two_groups = i + 1 < nb;
        if (nt > kTile) {
          if (two_groups) {
            tile_block<2, 2>(n_k, a, act_stride, b0, b1, yt, ldy, nt, stage);
          } else {
            tile_block<2, 1>(n_k, a, act_stride, b0, nullptr, yt, ldy, nt, stage);
          }
        } else if (two_groups) {
          tile_block<1, 2>(n_k, a, act_stride, b0, b1, yt, ldy, nt, stage);
        } else {
          tile_block<1, 1>(n_k, a, act_stride, b0, nullptr, yt, ldy, nt, stage);
        }
      }
    }
  }
  _tile_release();
}

template <class G>
GemmKernel bf16_kernel() {
  GemmKernel k;
  k.pack_id = kPackBf16;
  k.packed_row_bytes = bf16_packed_row_bytes;
  k.pack = pack_bf16;
  k.tile = amx_bf16_tile<G>;
  k.tile_work_bytes = work_bytes;
  k.chunk_rows_multiple = 2 * kTile;
  k.chunk_tokens = 0;  // a chunk covers every token: its groups are dequantized once per call
  k.token_multiple = kTile;
  // From 128 tokens per thread the threads split the tokens: `longhaul bench -m smollm2-135m -t 2 -p P -n 0` on the
  // Intel Xeon, split by rows against by tokens: P = 128 3132, 3052 -> 3048, 2929 t/s; 256 3131, 3044 -> 3345,
  // 3256; 512 2708, 2711, 2660 -> 3056, 3187, 2985 (docs/benchmarks.md, "Prompt products split by tokens").
  k.split_tokens_from = 128;
  return k;
}

}  // namespace

void add_amx_bf16_kernels(IsaKernels& k) {
  using tensor::DType;
  k.gemm_interleaved_prompt[slot(DType::Q4_0)] = bf16_kernel<NibbleGroups<false, false, 8>>();
  k.gemm_interleaved_prompt[slot(DType::Q4_1)] = bf16_kernel<NibbleGroups<true, false, 0>>();
  k.gemm_interleaved_prompt[slot(DType::Q5_0)] = bf16_kernel<NibbleGroups<false, true, 16>>();
  k.gemm_interleaved_prompt[slot(DType::Q5_1)] = bf16_kernel<NibbleGroups<true, true, 0>>();
  k.gemm_interleaved_prompt[slot(DType::Q8_0)] = bf16_kernel<Q8Groups>();
  k.gemm_interleaved_prompt[slot(DType::Q4_K)] = bf16_kernel<Q4KGroups>();
  k.gemm_interleaved_prompt[slot(DType::Q6_K)] = bf16_kernel<Q6KGroups>();
}
#else
void add_amx_bf16_kernels(IsaKernels&) {}
#endif

}  // namespace longhaul::kernels::detail
