// AVX-512 flash attention (kernels::attention_update, and attention_update_quantized over KIVI codes through the
// same kernels with another reader), built with the flags of ops_avx512.cc.
// Which keys a query sees comes only from kernels/attention_mask.h: block_maybe_visible skips a block before it is
// converted, and block_visibility's 16 bits are the __mmask16 of the query's scores.

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "kernels/attention_mask.h"
#include "kernels/ops_isa.h"
#include "kernels/attention_prefetch.h"
#include "kernels/quantized_cursor.h"
#include "kernels/x86/avx512_math.h"

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

// Transposes a 16 x 16 block of floats held as 16 row vectors: r[i] becomes column i.
inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Within each 128-bit lane L, r[4i + k] becomes column 4L + k of rows 4i..4i+3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  // Gather the four row blocks of each column across the 128-bit lanes.
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
    t[4 + k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xdd);
    t[8 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
    t[12 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xdd);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
    r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
    r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
    r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xdd);
  }
}

// Where a kernel's keys and values come from. A reader hands out key / value vectors of 16 channels as f32 (key
// j's channels [16 c, 16 c + 16)). block_end(kb, n_k) is where the block starting at key kb ends (at most 16 keys);
// begin_keys(kb) comes before the key vectors of a block are asked for, begin_values(kb, nk) before its value
// vectors (the decode kernel reads a pass's keys first and its values after), begin_block(kb, nk) before both;
// prefetch(j0, j1) asks for rows ahead.
//
// f16 rows (the cache's f16 pages), read in place. kAhead: the kernels ask for the next block's rows while they
// work on this one (attention_prefetch.h); without it they leave the streaming to the hardware prefetcher
// (attention_update_avx512_streamed).
template <int KV, int VV, bool kAhead = true>  // dk = 16 KV, dv = 16 VV
struct F16Rows {
  const uint16_t* k;
  int64_t k_stride;
  const uint16_t* v;
  int64_t v_stride;
  int32_t block_end(int32_t kb, int32_t n_k) const { return std::min(n_k, kb + 16); }
  void begin_keys(int32_t) {}
  void begin_values(int32_t, int32_t) {}
  void begin_block(int32_t, int32_t) {}
  __m512 key(int32_t j, int c) const { return load_f16x16(k + j * k_stride + 16 * c); }
  __m512 value(int32_t j, int c) const { return load_f16x16(v + j * v_stride + 16 * c); }
  LONGHAUL_PREFETCH_INLINE void prefetch(int32_t j0, int32_t j1) const {
    if constexpr (kAhead) prefetch_kv_rows(k, k_stride, v, v_stride, 32 * KV, 32 * VV, j0, j1);
  }
};

// KIVI codes (kernels::QuantizedRows), dequantized in registers: code * scale + zero. A block stays inside one key
// group, whose scales and zeros are converted to f32 once; the value scales and zeros of a block's keys are
// converted together when the block begins.
template <int Bits, int KV, int VV>
struct QuantizedReader {
  static constexpr int kDk = 16 * KV, kDv = 16 * VV;
  static constexpr int kKeyBytes = kDk * Bits / 8, kValueBytes = kDv * Bits / 8;
  static constexpr int kValueGroups = kDv / kQuantizedValueGroup;
  static_assert(kDv % kQuantizedValueGroup == 0 && (Bits == 8 || KV % 2 == 0), "whole value groups, whole bytes");
  QuantizedCursor at;
  alignas(64) float scale[kDk];
  alignas(64) float zero[kDk];
  alignas(64) float value_params[16 * kValueGroups * 2];  // [16 keys, value groups, (scale, zero)]

  explicit QuantizedReader(const QuantizedRows& r) : at{r} {}
  int32_t block_end(int32_t kb, int32_t n_k) { return at.block_end(kb, n_k, 16); }
  [[gnu::always_inline]] void begin_keys(int32_t kb) {
    if (at.begin_block(kb, kDk)) {
      const uint16_t* params = at.key_params(kDk);
      for (int c = 0; c < KV; ++c) {
        _mm512_store_ps(scale + 16 * c, load_f16x16(params + 16 * c));
        _mm512_store_ps(zero + 16 * c, load_f16x16(params + kDk + 16 * c));
      }
    }
  }
  [[gnu::always_inline]] void begin_block(int32_t kb, int32_t nk) {
    begin_keys(kb);
    begin_values(kb, nk);
  }
  // The value scales and zeros of keys [kb, kb + nk), nk <= 16, as f32.
  [[gnu::always_inline]] void begin_values(int32_t kb, int32_t nk) {
    at.block_begin = kb;
    const int32_t n = nk * kValueGroups * 2;
    const uint16_t* params = at.value_params(kValueGroups);
    for (int32_t i = 0; i < n; i += 16)
      _mm512_store_ps(value_params + i, load_f16x16_masked(params + i, std::min(16, n - i)));
  }
  // Channels [16 c, 16 c + 16) of a row of codes of d = 16 * n_vec channels, as f32 codes.
  template <int NVec>
  static __m512 codes(const uint8_t* row, int c) {
    if constexpr (Bits == 8) {
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * c))));
    } else {  // planar nibbles: the first half of the channels in the low nibbles
      const bool low = c < NVec / 2;
      const __m512i bytes = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + (low ? 16 * c : 16 * c - 8 * NVec))));
      return _mm512_cvtepi32_ps(low ? _mm512_and_si512(bytes, _mm512_set1_epi32(0x0f)) : _mm512_srli_epi32(bytes, 4));
    }
  }
  __m512 key(int32_t j, int c) const {
    return _mm512_fmadd_ps(codes<KV>(at.rows.key_codes + static_cast<int64_t>(j) * kKeyBytes, c),
                           _mm512_load_ps(scale + 16 * c), _mm512_load_ps(zero + 16 * c));
  }
  __m512 value(int32_t j, int c) const {
    const float* p = value_params + ((j - at.block_begin) * kValueGroups + c * 16 / kQuantizedValueGroup) * 2;
    return _mm512_fmadd_ps(codes<VV>(at.rows.value_codes + static_cast<int64_t>(j) * kValueBytes, c),
                           _mm512_set1_ps(p[0]), _mm512_set1_ps(p[1]));
  }
  LONGHAUL_PREFETCH_INLINE void prefetch(int32_t j0, int32_t j1) const {
    at.prefetch(j0, j1, kKeyBytes, kValueBytes, kValueGroups);
  }
};

// The least and greatest position of keys [kb, kb + nk), nk <= 16: a block's bounds for block_maybe_visible and
// block_visibility.
inline void key_position_bounds(const AttentionMask& mask, int32_t kb, int32_t nk, int32_t& min_kp, int32_t& max_kp) {
  const __mmask16 kmask = first_lanes(nk);
  const __m512i kp = _mm512_mask_loadu_epi32(_mm512_set1_epi32(INT32_MAX), kmask, mask.k_pos + kb);
  min_kp = _mm512_reduce_min_epi32(kp);
  max_kp = _mm512_mask_reduce_max_epi32(kmask, kp);
}

// Prompt chunks (many queries): flash attention over passes of kPassBlocks key blocks (64 keys), each pass's
// blocks converted once and shared by all the call's queries: keys transposed to kt [dk][64] f32, so that a
// query's scores over the pass are dk multiply-adds of a broadcast query element with 4 key vectors (no
// horizontal sums), values converted to vf [64][dv] f32. Queries go kTileQueries at a time: per dimension, 4 key
// loads and 6 broadcasts serve 24 multiply-adds, so the scores run at the multiply-add rate, not the load rate.
// The online softmax runs once per pass and query (one maximum, one rescale of the output row, one read and write
// of the row per 64 keys instead of per 16), as in the row kernel below. The passes are fixed runs of blocks,
// whatever the queries see, and a query's sums depend on its own keys only, never on its callmates; a pass
// starts at a multiple of 64 keys from the call's start for f16 rows, so a call split there gives the same bits
// (FlashAttention.CallSplitAtPassKeysKeepsBits).
constexpr int kPassBlocks = 4;  // 16-key blocks per softmax pass
constexpr int kTileQueries = 6;  // 6 x 4 score accumulators and 4 key vectors: 28 of the 32 registers

// The pass's converted blocks: slot b holds keys [kb[b], kb[b] + nk[b]); rows past nk[b] are zero.
template <int KV, int VV>
struct TiledPass {
  static constexpr int kDk = 16 * KV, kDv = 16 * VV, kKeys = 16 * kPassBlocks;
  alignas(64) float kt[kDk * kKeys];  // [dk][64]: key 16 b + j's channel d at kt[d * 64 + 16 b + j]
  alignas(64) float vf[kKeys * kDv];  // [64][dv]
  int32_t kb[kPassBlocks], nk[kPassBlocks];
  int32_t k_min[kPassBlocks], k_max[kPassBlocks];  // the blocks' key positions, for block_visibility
};

// One tile of kTileQueries queries (rows past the call's end see nothing) over a pass of NB blocks.
template <int KV, int VV, int NB>
void attention_tile(const TiledPass<KV, VV>& pass, const float* const* qr, const __mmask16 (*vis)[kPassBlocks],
                    float* m, float* l, float* const* orow) {
  constexpr int kDk = 16 * KV, kKeys = TiledPass<KV, VV>::kKeys, kDv = 16 * VV;
  constexpr int kQt = kTileQueries;
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  __m512 s[kQt][NB];
  for (int i = 0; i < kQt; ++i)
    for (int b = 0; b < NB; ++b) s[i][b] = _mm512_setzero_ps();
  for (int d = 0; d < kDk; ++d) {
    __m512 kv[NB];
    for (int b = 0; b < NB; ++b) kv[b] = _mm512_load_ps(pass.kt + d * kKeys + 16 * b);
    for (int i = 0; i < kQt; ++i) {
      const __m512 qd = _mm512_set1_ps(qr[i][d]);
      for (int b = 0; b < NB; ++b) s[i][b] = _mm512_fmadd_ps(qd, kv[b], s[i][b]);
    }
  }
  // Online softmax per query over the pass. alpha rescales the old sums: 0 where nothing was seen before (m = -inf,
  // so l and o are still 0), exactly 1 where the maximum stayed.
  alignas(64) float pbuf[kQt][kKeys];
  alignas(64) float alpha[kQt];
  for (int i = 0; i < kQt; ++i) {
    alpha[i] = 1.0f;
    if (orow[i] == nullptr) {  // the query sees no key of the pass: its slot's products go to o_dummy
      for (int b = 0; b < NB; ++b) _mm512_store_ps(pbuf[i] + 16 * b, _mm512_setzero_ps());
      continue;
    }
    __m512 mx = neg_inf;
    for (int b = 0; b < NB; ++b) {
      s[i][b] = _mm512_mask_mov_ps(neg_inf, vis[i][b], s[i][b]);
      mx = _mm512_max_ps(mx, s[i][b]);
    }
    const float m_old = m[i];
    const float m_new = std::max(m_old, _mm512_reduce_max_ps(mx));
    if (m_new > m_old) alpha[i] = m_old == -INFINITY ? 0.0f : _mm512_cvtss_f32(exp_ps(_mm512_set1_ps(m_old - m_new)));
    const __m512 mn = _mm512_set1_ps(m_new);
    __m512 sum = _mm512_setzero_ps();
    for (int b = 0; b < NB; ++b) {
      const __m512 p = exp_ps(_mm512_sub_ps(s[i][b], mn));  // masked lanes: exp(-inf) = 0
      sum = _mm512_add_ps(sum, p);
      _mm512_store_ps(pbuf[i] + 16 * b, p);
    }
    l[i] = l[i] * alpha[i] + _mm512_reduce_add_ps(sum);
    m[i] = m_new;
  }
  // o = o * alpha + sum_j p_j v_j, 64 dimensions of the tile's queries at a time (24 accumulators).
  alignas(64) float o_dummy[kDv] = {};  // the output row of a query that sees nothing
  float* out[kQt];
  for (int i = 0; i < kQt; ++i) out[i] = orow[i] != nullptr ? orow[i] : o_dummy;
  for (int cb = 0; cb < VV; cb += 4) {
    constexpr int kNv = VV < 4 ? VV : 4;  // VV is a multiple of 4 in every instantiation
    static_assert(VV % kNv == 0, "dv must be a multiple of 64");
    __m512 acc[kQt][kNv];
    for (int i = 0; i < kQt; ++i) {
      const __m512 a = _mm512_set1_ps(alpha[i]);
      for (int c = 0; c < kNv; ++c) acc[i][c] = _mm512_mul_ps(_mm512_loadu_ps(out[i] + 16 * (cb + c)), a);
    }
    for (int b = 0; b < NB; ++b) {
      for (int32_t j = 16 * b; j < 16 * b + pass.nk[b]; ++j) {
        __m512 vj[kNv];
        for (int c = 0; c < kNv; ++c) vj[c] = _mm512_load_ps(pass.vf + j * kDv + 16 * (cb + c));
        for (int i = 0; i < kQt; ++i) {
          const __m512 p = _mm512_set1_ps(pbuf[i][j]);
          for (int c = 0; c < kNv; ++c) acc[i][c] = _mm512_fmadd_ps(p, vj[c], acc[i][c]);
        }
      }
    }
    for (int i = 0; i < kQt; ++i) {
      if (orow[i] == nullptr) continue;
      for (int c = 0; c < kNv; ++c) _mm512_storeu_ps(out[i] + 16 * (cb + c), acc[i][c]);
    }
  }
}

template <int KV, int VV, typename Rows>  // dk = 16 KV, dv = 16 VV
void attention_update_tiled(const float* q, int64_t q_stride, int32_t n_q, Rows& rows, int32_t n_k,
                            const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  constexpr int kQt = kTileQueries;
  // The converted pass (2 x 64 KiB at 256 dimensions) lives on the stack: kernel calls never nest.
  TiledPass<KV, VV> pass;
  const QueryBounds qb = query_bounds(mask, n_q);
  for (int32_t kb = 0, kb_end = 0; kb < n_k;) {
    int nb = 0;
    for (int slot = 0; slot < kPassBlocks && kb < n_k; ++slot, kb = kb_end) {
      kb_end = rows.block_end(kb, n_k);
      const int32_t nk = kb_end - kb;
      int32_t min_kp, max_kp;
      key_position_bounds(mask, kb, nk, min_kp, max_kp);
      // A block no query sees (all in the future, or all behind every query's window) is not even converted: long
      // sliding-window layers skip most of the cache this way.
      if (!block_maybe_visible(mask, qb, kb, nk, min_kp, max_kp)) continue;
      pass.kb[nb] = kb;
      pass.nk[nb] = nk;
      pass.k_min[nb] = min_kp;
      pass.k_max[nb] = max_kp;
      // Keys: 16 x 16 blocks converted and transposed into the slot's columns; rows of missing keys are zero
      // (their scores are masked). Values: the slot's rows, zero past nk (their probabilities are 0).
      rows.begin_block(kb, nk);
      for (int c = 0; c < KV; ++c) {
        __m512 block[16];
        for (int j = 0; j < 16; ++j) block[j] = j < nk ? rows.key(kb + j, c) : _mm512_setzero_ps();
        transpose16(block);
        for (int i = 0; i < 16; ++i) _mm512_store_ps(pass.kt + (16 * c + i) * TiledPass<KV, VV>::kKeys + 16 * nb, block[i]);
      }
      for (int32_t j = 0; j < 16; ++j) {
        float* row = pass.vf + (16 * nb + j) * (16 * VV);
        for (int c = 0; c < VV; ++c) _mm512_store_ps(row + 16 * c, j < nk ? rows.value(kb + j, c) : _mm512_setzero_ps());
      }
      ++nb;
    }
    if (nb == 0) continue;
    for (int32_t i0 = 0; i0 < n_q; i0 += kQt) {
      // The tile's query rows, visibility bits and output rows (null: the query sees no key of the pass).
      const float* qr[kQt];
      __mmask16 vis[kQt][kPassBlocks];
      float* orow[kQt];
      bool any = false;
      for (int i = 0; i < kQt; ++i) {
        qr[i] = q + i0 * q_stride;
        orow[i] = nullptr;
        for (int b = 0; b < kPassBlocks; ++b) vis[i][b] = 0;
        if (i0 + i >= n_q) continue;
        qr[i] = q + (i0 + i) * q_stride;
        __mmask16 seen = 0;
        for (int b = 0; b < nb; ++b) {
          vis[i][b] = static_cast<__mmask16>(
              block_visibility(mask, i0 + i, pass.kb[b], pass.nk[b], pass.k_min[b], pass.k_max[b]));
          seen |= vis[i][b];
        }
        if (seen != 0) orow[i] = o + (i0 + i) * o_stride;
        any = any || seen != 0;
      }
      if (!any) continue;
      switch (nb) {
        case 1: attention_tile<KV, VV, 1>(pass, qr, vis, m + i0, l + i0, orow); break;
        case 2: attention_tile<KV, VV, 2>(pass, qr, vis, m + i0, l + i0, orow); break;
        case 3: attention_tile<KV, VV, 3>(pass, qr, vis, m + i0, l + i0, orow); break;
        default: attention_tile<KV, VV, 4>(pass, qr, vis, m + i0, l + i0, orow); break;
      }
    }
  }
}

// Few queries (decode: the query heads of one KV head for one token): converting and transposing a key block
// costs more than the scores it serves, so keys stay rows. Four keys are converted at a time and dotted with each
// query (one accumulator per key); the accumulators of a 16-key block are summed together (fold4_ps, sum16_ps).
// The online softmax runs once per pass of kPassBlocks blocks (64 keys; those some query sees), not per block: a
// pass takes one maximum per query, rescales the outputs only when a maximum rose (after the first few blocks it
// seldom does), and reads and writes the output rows once. Values are converted as they are accumulated.
// The query count NQ is a template parameter: with a run-time count GCC 12 kept the accumulators on the stack and
// tested the count inside every inner loop, which made this kernel slower than the AVX2 one.
// Up to kFewQueries queries: 6 x 4 score accumulators, 4 key vectors and a query vector fill 29 of the 32 registers.
constexpr int kFewQueries = 6;
// Calls of up to this many queries at 64 dimensions run the row kernel over parts of up to kFewQueries
// (attention_update_sized).
constexpr int kRowKernelMaxQueries = 3 * kFewQueries;
template <int KV, int VV, int NQ, typename Rows>  // dk = 16 KV, dv = 16 VV, NQ queries (1..kFewQueries)
void attention_update_few(const float* q, int64_t q_stride, Rows& rows, int32_t n_k, const AttentionMask& mask,
                          float* m, float* l, float* o, int64_t o_stride) {
  static_assert(NQ >= 1 && NQ <= kFewQueries, "NQ queries per call");
  constexpr int kPassKeys = 16 * kPassBlocks;
  // The pass's scores (-inf where a query does not see a key), then its probabilities.
  alignas(64) float sbuf[NQ][kPassKeys];
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  const QueryBounds qb = query_bounds(mask, NQ);
  int32_t pass_kb[kPassBlocks], pass_nk[kPassBlocks];  // the pass's blocks: first key, keys
  for (int32_t kb = 0, kb_end = 0; kb < n_k;) {
    // Scores of the pass's blocks: those of the next kPassBlocks blocks that some query sees. The passes are fixed
    // runs of blocks, whatever the queries see, so that a query's result depends only on its own keys: a step of
    // several tokens (verification, batched decode) gives each token what a step of that token alone gives.
    int n_blocks = 0;
    for (int slot = 0; slot < kPassBlocks && kb < n_k; ++slot, kb = kb_end) {
      kb_end = rows.block_end(kb, n_k);
      const int32_t nk = kb_end - kb;
      int32_t min_kp, max_kp;
      key_position_bounds(mask, kb, nk, min_kp, max_kp);
      if (!block_maybe_visible(mask, qb, kb, nk, min_kp, max_kp)) continue;
      // Visibility first: a block none of the queries sees (a sparse prefill's) costs no dot product.
      __mmask16 vis[NQ];
      bool any = false;
      for (int i = 0; i < NQ; ++i) {
        vis[i] = static_cast<__mmask16>(block_visibility(mask, i, kb, nk, min_kp, max_kp));
        any = any || vis[i] != 0;
      }
      if (!any) continue;
      rows.begin_keys(kb);
      // Four keys at a time; keys past nk are zero rows (masked below). Each group of four asks for the next
      // block's four rows (attention_prefetch.h: spread, not in one burst).
      __m512 folded[NQ][4];
      for (int32_t j4 = 0; j4 < 16; j4 += 4) {
        rows.prefetch(std::min(n_k, kb + 16 + j4), std::min(n_k, kb + 20 + j4));
        if (j4 >= nk) {
          for (int i = 0; i < NQ; ++i) folded[i][j4 / 4] = _mm512_setzero_ps();
          continue;
        }
        __m512 acc[NQ][4];
        for (int i = 0; i < NQ; ++i)
          for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
        for (int c = 0; c < KV; ++c) {
          __m512 kv[4];
          for (int j = 0; j < 4; ++j) kv[j] = j4 + j < nk ? rows.key(kb + j4 + j, c) : _mm512_setzero_ps();
          for (int i = 0; i < NQ; ++i) {
            const __m512 qc = _mm512_loadu_ps(q + i * q_stride + 16 * c);
            for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(kv[j], qc, acc[i][j]);
          }
        }
        for (int i = 0; i < NQ; ++i) folded[i][j4 / 4] = fold4_ps(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      }
      for (int i = 0; i < NQ; ++i) {
        const __m512 s = sum16_ps(folded[i][0], folded[i][1], folded[i][2], folded[i][3]);
        _mm512_store_ps(sbuf[i] + 16 * n_blocks, _mm512_mask_mov_ps(neg_inf, vis[i], s));
      }
      pass_kb[n_blocks] = kb;
      pass_nk[n_blocks] = nk;
      ++n_blocks;
    }
    if (n_blocks == 0) continue;  // no query sees any key of these blocks
    // Online softmax per query over the pass: new maximum, rescale factor of the old sums, probabilities.
    alignas(64) float m_old[16] = {}, m_new[16] = {};
    bool rescale = false;
    for (int i = 0; i < NQ; ++i) {
      __m512 mx = _mm512_load_ps(sbuf[i]);
      for (int b = 1; b < n_blocks; ++b) mx = _mm512_max_ps(mx, _mm512_load_ps(sbuf[i] + 16 * b));
      m_old[i] = m[i];
      m_new[i] = std::max(m[i], _mm512_reduce_max_ps(mx));
      rescale = rescale || m_new[i] > m_old[i];
    }
    // alpha = exp(m_old - m_new) for all queries at once; 0 where nothing was seen before (m_old = -inf, so l and
    // o are still 0), 1 where the maximum stayed (then the multiplies below are skipped altogether).
    alignas(64) float alpha[16];
    if (rescale) {
      const __m512 mo = _mm512_load_ps(m_old), mn = _mm512_load_ps(m_new);
      const __mmask16 seen = _mm512_cmp_ps_mask(mo, neg_inf, _CMP_NEQ_OQ);
      _mm512_store_ps(alpha, _mm512_maskz_mov_ps(seen, exp_ps(_mm512_sub_ps(mo, mn))));
    }
    for (int i = 0; i < NQ; ++i) {
      if (m_new[i] == -INFINITY) {  // the query has seen no key yet: its probabilities are 0
        for (int b = 0; b < n_blocks; ++b) _mm512_store_ps(sbuf[i] + 16 * b, _mm512_setzero_ps());
        continue;
      }
      const __m512 mn = _mm512_set1_ps(m_new[i]);
      __m512 sum = _mm512_setzero_ps();
      for (int b = 0; b < n_blocks; ++b) {
        const __m512 p = exp_ps(_mm512_sub_ps(_mm512_load_ps(sbuf[i] + 16 * b), mn));  // masked: exp(-inf) = 0
        sum = _mm512_add_ps(sum, p);
        _mm512_store_ps(sbuf[i] + 16 * b, p);
      }
      l[i] = (rescale ? l[i] * alpha[i] : l[i]) + _mm512_reduce_add_ps(sum);
      m[i] = m_new[i];
    }
    // o = o * alpha + sum_j p_j v_j, 64 dimensions at a time; each value vector is converted once per pass.
    for (int cb = 0; cb < VV; cb += 4) {
      constexpr int kNv = VV < 4 ? VV : 4;  // VV is a multiple of 4 in every instantiation
      static_assert(VV % kNv == 0, "dv must be a multiple of 64");
      __m512 acc[NQ][kNv];
      for (int i = 0; i < NQ; ++i) {
        for (int c = 0; c < kNv; ++c) acc[i][c] = _mm512_loadu_ps(o + i * o_stride + 16 * (cb + c));
        if (rescale) {
          const __m512 a = _mm512_set1_ps(alpha[i]);
          for (int c = 0; c < kNv; ++c) acc[i][c] = _mm512_mul_ps(acc[i][c], a);
        }
      }
      for (int b = 0; b < n_blocks; ++b) {
        const int32_t kb0 = pass_kb[b];
        rows.begin_values(kb0, pass_nk[b]);
        for (int32_t j = 0; j < pass_nk[b]; ++j) {
          for (int c = 0; c < kNv; ++c) {
            const __m512 vj = rows.value(kb0 + j, cb + c);
            for (int i = 0; i < NQ; ++i)
              acc[i][c] = _mm512_fmadd_ps(_mm512_set1_ps(sbuf[i][16 * b + j]), vj, acc[i][c]);
          }
        }
      }
      for (int i = 0; i < NQ; ++i) {
        for (int c = 0; c < kNv; ++c) _mm512_storeu_ps(o + i * o_stride + 16 * (cb + c), acc[i][c]);
      }
    }
  }
}

// Which kernel a call's queries take. Decode (the query heads of one KV head, 1-4) takes the kernel that keeps keys
// as rows, a prompt chunk the tiled one. Between them, a step of 2-6 tokens with 64-dimension heads (SmolLM2: 3
// query heads per KV head) runs the row kernel for up to 6 queries and over parts of up to 6 for up to
// kRowKernelMaxQueries (12 for a sparse prefill's calls). The row kernel gives a query the same bits whatever its
// callmates (FlashAttention.DecodeQueryResultIsIndependentOfItsCallmates), so on SmolLM2 an ordinary step of up to
// 6 tokens gives each token what a step of its own gives: the cells a tentative step's accepted tokens keep are
// then those an ordinary step of them computes (EngineRollback). The tiled kernel would be faster there (at 64
// dimensions over 4096 keys, 12 queries 137 us against 175 in two parts, 18 queries 185 against 244 in three;
// longhaul_bench_kernels FlashAttentionVerify), but such short steps are not where prefill spends its time. With
// 256-dimension heads (Gemma 3) the row kernel's halves were 2-8% slower than the prompt kernel at 8 and 12
// queries. A call that asks for it (AttentionMask::queries_apart: the engine's verification steps, whose tokens
// must get plain decoding's bits) runs the row kernel in parts at any query count and head size
// (FlashAttention.VerificationTokenGetsItsDecodeBits).
template <int KV, int VV, typename Rows>
void attention_update_sized(const float* q, int64_t q_stride, int32_t n_q, Rows& rows, int32_t n_k,
                            const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  constexpr bool kSmallHeads = KV <= 4;
  switch (n_q) {
    case 1: return attention_update_few<KV, VV, 1>(q, q_stride, rows, n_k, mask, m, l, o, o_stride);
    case 2: return attention_update_few<KV, VV, 2>(q, q_stride, rows, n_k, mask, m, l, o, o_stride);
    case 3: return attention_update_few<KV, VV, 3>(q, q_stride, rows, n_k, mask, m, l, o, o_stride);
    case 4: return attention_update_few<KV, VV, 4>(q, q_stride, rows, n_k, mask, m, l, o, o_stride);
    default: break;
  }
  if constexpr (kSmallHeads) {
    if (n_q == 5) return attention_update_few<KV, VV, 5>(q, q_stride, rows, n_k, mask, m, l, o, o_stride);
    if (n_q == 6) return attention_update_few<KV, VV, 6>(q, q_stride, rows, n_k, mask, m, l, o, o_stride);
  }
  if (mask.queries_apart) {
    // Parts of the row kernel's most queries, each from a reader as it was before any block.
    constexpr int32_t kPart = kSmallHeads ? kFewQueries : 4;
    const Rows fresh = rows;
    for (int32_t i = 0; i < n_q; i += kPart) {
      Rows part = fresh;
      attention_update_sized<KV, VV>(q + i * q_stride, q_stride, std::min(kPart, n_q - i), part, n_k,
                                     queries_from(mask, i), m + i, l + i, o + i * o_stride, o_stride);
    }
    return;
  }
  if constexpr (kSmallHeads) {
    // Sparse prefill calls (per-query key sets, prompt chunks) keep the transposing kernel above 12 queries, the
    // kernel a dense prompt chunk's queries take, so that a covering budget sums what dense prefill sums in the same
    // order. With the row kernel there, each call's results moved by up to 1.1e-5 (relative), and on SmolLM2's
    // random-token prompt of SparsePrefillEngineTest.CoveringBudgetGivesDenseLogits that grew to 1.2 in some logit.
    if (n_q <= kRowKernelMaxQueries && (n_q <= 2 * kFewQueries || mask.q_sparse == nullptr)) {
      const int32_t n_parts = (n_q + kFewQueries - 1) / kFewQueries;
      const int32_t first = (n_q + n_parts - 1) / n_parts;
      Rows again = rows;  // a reader as it was before any block
      attention_update_sized<KV, VV>(q, q_stride, first, rows, n_k, mask, m, l, o, o_stride);
      return attention_update_sized<KV, VV>(q + first * q_stride, q_stride, n_q - first, again, n_k,
                                            queries_from(mask, first), m + first, l + first, o + first * o_stride,
                                            o_stride);
    }
  }
  return attention_update_tiled<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
}

template <int KV, int VV, bool kAhead>
void f16_sized(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride, const uint16_t* v,
               int64_t v_stride, int32_t n_k, const AttentionMask& mask, float* m, float* l, float* o,
               int64_t o_stride) {
  F16Rows<KV, VV, kAhead> rows{k, k_stride, v, v_stride};
  attention_update_sized<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
}

template <bool kAhead>
void f16_attention(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                   const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv,
                   float* m, float* l, float* o, int64_t o_stride) {
  if (dk == 64 && dv == 64)
    return f16_sized<4, 4, kAhead>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, m, l, o, o_stride);
  if (dk == 128 && dv == 128)
    return f16_sized<8, 8, kAhead>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, m, l, o, o_stride);
  if (dk == 256 && dv == 256)
    return f16_sized<16, 16, kAhead>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, m, l, o, o_stride);
  ref::attention_update(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}

template <int KV, int VV>
void quantized_sized(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv, int32_t n_k,
                     const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  if (kv.bits == 8) {
    QuantizedReader<8, KV, VV> rows(kv);
    return attention_update_sized<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
  }
  QuantizedReader<4, KV, VV> rows(kv);
  attention_update_sized<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
}

}  // namespace

void attention_update_avx512(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                             const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                             int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  f16_attention<true>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}

void attention_update_avx512_streamed(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k,
                                      int64_t k_stride, const uint16_t* v, int64_t v_stride, int32_t n_k,
                                      const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                      int64_t o_stride) {
  f16_attention<false>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}

void attention_update_quantized_avx512(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                       int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m,
                                       float* l, float* o, int64_t o_stride) {
  if (dk == 64 && dv == 64) return quantized_sized<4, 4>(q, q_stride, n_q, kv, n_k, mask, m, l, o, o_stride);
  if (dk == 128 && dv == 128) return quantized_sized<8, 8>(q, q_stride, n_q, kv, n_k, mask, m, l, o, o_stride);
  if (dk == 256 && dv == 256) return quantized_sized<16, 16>(q, q_stride, n_q, kv, n_k, mask, m, l, o, o_stride);
  ref::attention_update_quantized(q, q_stride, n_q, kv, n_k, mask, dk, dv, m, l, o, o_stride);
}

#else
void attention_update_avx512(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                             const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                             int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  ref::attention_update(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}
void attention_update_avx512_streamed(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k,
                                      int64_t k_stride, const uint16_t* v, int64_t v_stride, int32_t n_k,
                                      const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                      int64_t o_stride) {
  ref::attention_update(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}
void attention_update_quantized_avx512(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                       int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m,
                                       float* l, float* o, int64_t o_stride) {
  ref::attention_update_quantized(q, q_stride, n_q, kv, n_k, mask, dk, dv, m, l, o, o_stride);
}
#endif

}  // namespace longhaul::kernels::detail
