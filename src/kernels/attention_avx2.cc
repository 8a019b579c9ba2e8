// AVX2 flash attention (kernels::attention_update, and attention_update_quantized over KIVI codes through the same
// kernel with another reader), built with the flags of ops_avx2.cc.
//
// Keys arrive in blocks of 16 (one page run is many blocks), taken in passes of up to kPassBlocks blocks. A block
// is converted from f16 once, into rows of f32 that stay in L1, and then serves every query of the call: a query's
// scores are four-row dot products reduced together, its probabilities over the pass come from one online-softmax
// update (Dao et al., 2022: running maximum m, running sum l, output rescaled by e^(m_old - m_new)), and its output
// row takes the pass's value rows with up to 8 accumulators in registers. Conversion is the cost that a decode
// step (few queries per key) pays per key; the multiply-adds per key and query are dk / 8 for the score and dv / 8
// for the output, the minimum for 8 lanes. A prompt chunk's queries take the tiled kernel (attention_update_tiled),
// which shares each loaded key and value vector among six queries.
// Which keys a query sees comes only from kernels/attention_mask.h: block_maybe_visible skips a block before it is
// converted, and block_visibility gives a query's 16 bits (whole blocks decided from their position bounds), which
// become the lane masks of the scores.
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/attention_mask.h"
#include "kernels/ops_isa.h"
#include "kernels/attention_prefetch.h"
#include "kernels/quantized_cursor.h"
#include "kernels/x86/avx2_math.h"

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

constexpr int kBlock = 16;  // keys per block

// Where the kernel's keys and values come from. A reader hands out key / value vectors of 8 channels as f32 (key
// j's channels [8 c, 8 c + 8)). block_end(kb, n_k) is where the block starting at key kb ends (at most kBlock keys);
// begin_block(kb, nk) comes before the vectors of a block are asked for; prefetch(j0, j1) asks for rows ahead.
//
// f16 rows (the cache's f16 pages), read in place.
template <int KV, int VV>  // dk = 8 KV, dv = 8 VV
struct F16Rows {
  const uint16_t* k;
  int64_t k_stride;
  const uint16_t* v;
  int64_t v_stride;
  int32_t block_end(int32_t kb, int32_t n_k) const { return std::min(n_k, kb + kBlock); }
  void begin_block(int32_t, int32_t) {}
  __m256 key(int32_t j, int c) const { return load_f16x8(k + j * k_stride + 8 * c); }
  __m256 value(int32_t j, int c) const { return load_f16x8(v + j * v_stride + 8 * c); }
  LONGHAUL_PREFETCH_INLINE void prefetch(int32_t j0, int32_t j1) const {
    prefetch_kv_rows(k, k_stride, v, v_stride, 16 * KV, 16 * VV, j0, j1);
  }
};

// KIVI codes (kernels::QuantizedRows), dequantized as a block is converted: code * scale + zero. A block stays
// inside one key group, whose scales and zeros are converted to f32 once; the value scales and zeros of a block's
// keys are converted together when the block begins.
template <int Bits, int KV, int VV>
struct QuantizedReader {
  static constexpr int kDk = 8 * KV, kDv = 8 * VV;
  static constexpr int kKeyBytes = kDk * Bits / 8, kValueBytes = kDv * Bits / 8;
  static constexpr int kValueGroups = kDv / kQuantizedValueGroup;
  static_assert(kDv % kQuantizedValueGroup == 0 && (Bits == 8 || KV % 2 == 0), "whole value groups, whole bytes");
  QuantizedCursor at;
  alignas(32) float scale[kDk];
  alignas(32) float zero[kDk];
  alignas(32) float value_params[kBlock * kValueGroups * 2];  // [kBlock keys, value groups, (scale, zero)]

  explicit QuantizedReader(const QuantizedRows& r) : at{r} {}
  int32_t block_end(int32_t kb, int32_t n_k) { return at.block_end(kb, n_k, kBlock); }
  [[gnu::always_inline]] void begin_block(int32_t kb, int32_t nk) {
    if (at.begin_block(kb, kDk)) {
      const uint16_t* params = at.key_params(kDk);
      for (int c = 0; c < KV; ++c) {
        _mm256_store_ps(scale + 8 * c, load_f16x8(params + 8 * c));
        _mm256_store_ps(zero + 8 * c, load_f16x8(params + kDk + 8 * c));
      }
    }
    const int32_t n = nk * kValueGroups * 2;
    const uint16_t* params = at.value_params(kValueGroups);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_store_ps(value_params + i, load_f16x8(params + i));
    if (i < n) {  // a tail of 4 (an odd nk): no 16-bit masked load on AVX2
      alignas(16) uint16_t tail[8] = {};
      std::copy(params + i, params + n, tail);
      _mm256_store_ps(value_params + i, load_f16x8(tail));
    }
  }
  // Channels [8 c, 8 c + 8) of a row of codes of d = 8 * NVec channels, as f32 codes.
  template <int NVec>
  static __m256 codes(const uint8_t* row, int c) {
    if constexpr (Bits == 8) {
      return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * c))));
    } else {  // planar nibbles: the first half of the channels in the low nibbles
      const bool low = c < NVec / 2;
      const __m256i bytes = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + (low ? 8 * c : 8 * c - 4 * NVec))));
      return _mm256_cvtepi32_ps(low ? _mm256_and_si256(bytes, _mm256_set1_epi32(0x0f)) : _mm256_srli_epi32(bytes, 4));
    }
  }
  __m256 key(int32_t j, int c) const {
    return _mm256_fmadd_ps(codes<KV>(at.rows.key_codes + static_cast<int64_t>(j) * kKeyBytes, c),
                           _mm256_load_ps(scale + 8 * c), _mm256_load_ps(zero + 8 * c));
  }
  __m256 value(int32_t j, int c) const {
    const float* p = value_params + ((j - at.block_begin) * kValueGroups + c * 8 / kQuantizedValueGroup) * 2;
    return _mm256_fmadd_ps(codes<VV>(at.rows.value_codes + static_cast<int64_t>(j) * kValueBytes, c),
                           _mm256_broadcast_ss(p), _mm256_broadcast_ss(p + 1));
  }
  LONGHAUL_PREFETCH_INLINE void prefetch(int32_t j0, int32_t j1) const {
    at.prefetch(j0, j1, kKeyBytes, kValueBytes, kValueGroups);
  }
};

// The least and greatest position of keys [kb, kb + nk): a block's bounds for block_maybe_visible and
// block_visibility.
inline void key_position_bounds(const AttentionMask& mask, int32_t kb, int32_t nk, int32_t& lo, int32_t& hi) {
  lo = INT32_MAX;
  hi = INT32_MIN;
  for (int32_t j = 0; j < nk; ++j) {
    lo = std::min(lo, mask.k_pos[kb + j]);
    hi = std::max(hi, mask.k_pos[kb + j]);
  }
}

// Blocks per softmax pass. A pass converts its blocks first (the ones some query sees), and then each query takes
// one online-softmax update over all of them: one maximum, one rescale of its output row (skipped where the maximum
// did not rise) and one read and write of that row per pass instead of per block. Heads of up to 64 dimensions
// take two blocks (32 keys: 8 KB of f32 keys and 8 KB of values, which stay in L1); larger heads one.
template <int KV, int VV>
constexpr int kPassBlocks = (KV <= 8 && VV <= 8) ? 2 : 1;

// Never inlined, so that each reader's kernel is one function of its own name, which the ctest
// kernels_prefetch_kept reads for its prefetches (GCC inlined some instantiations into their callers and not others).
template <int KV, int VV, typename Rows>  // dk = 8 KV, dv = 8 VV
[[gnu::noinline]] void attention_update_sized(const float* q, int64_t q_stride, int32_t n_q, Rows& rows, int32_t n_k,
                            const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  constexpr int kDk = 8 * KV, kDv = 8 * VV;
  constexpr int kPass = kPassBlocks<KV, VV>;
  alignas(32) float kf[kPass * kBlock * kDk];  // [pass blocks][16][dk] keys of the pass
  alignas(32) float vf[kPass * kBlock * kDv];  // [pass blocks][16][dv] values of the pass
  alignas(32) float sbuf[kPass * kBlock];      // one query's scores over the pass, then its probabilities
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  // Lane j of the low / high half of a block holds bit j / j + 8 of the block's visibility bits.
  const __m256i lane_bit0 = _mm256_setr_epi32(1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7);
  const __m256i lane_bit1 = _mm256_slli_epi32(lane_bit0, 8);
  const QueryBounds qb = query_bounds(mask, n_q);
  for (int32_t kb = 0, kb_end = 0; kb < n_k;) {
    // The pass: those of the next kPass blocks that some query may see (a block none sees, all in the future or all
    // behind every query's window, is not even converted: long sliding-window layers skip most of the cache this
    // way). The passes are fixed runs of blocks, whatever the queries see, so that a query's result depends only on
    // its own keys: a step of several tokens gives each token what a step of that token alone gives.
    int32_t first[kPass], count[kPass], min_kp[kPass], max_kp[kPass];
    bool converted[kPass];
    int n_blocks = 0;
    for (int slot = 0; slot < kPass && kb < n_k; ++slot, kb = kb_end) {
      kb_end = rows.block_end(kb, n_k);
      const int32_t nk = kb_end - kb;
      int32_t lo, hi;
      key_position_bounds(mask, kb, nk, lo, hi);
      if (!block_maybe_visible(mask, qb, kb, nk, lo, hi)) continue;
      first[n_blocks] = kb;
      count[n_blocks] = nk;
      min_kp[n_blocks] = lo;
      max_kp[n_blocks] = hi;
      converted[n_blocks] = false;
      ++n_blocks;
    }
    if (n_blocks == 0) continue;  // no query may see any key of these blocks
    for (int32_t i = 0; i < n_q; ++i) {
      // Bits of the keys this query sees in each block (decided for the whole block from its position bounds
      // unless it is mixed); missing keys past a block's count have no bit, so they are masked too.
      uint32_t bits[kPass];
      bool any = false;
      for (int b = 0; b < n_blocks; ++b) {
        bits[b] = block_visibility(mask, i, first[b], count[b], min_kp[b], max_kp[b]);
        any = any || bits[b] != 0;
      }
      if (!any) continue;
      // Scores, four keys at a time, 8 stored together; blocks this query does not see are left out below.
      const float* qi = q + i * q_stride;
      __m256 mx = neg_inf;
      for (int b = 0; b < n_blocks; ++b) {
        if (bits[b] == 0) continue;
        float* kfb = kf + b * kBlock * kDk;
        float* vfb = vf + b * kBlock * kDv;
        if (!converted[b]) {
          // Converted when the first query that sees the block comes (a sparse prefill leaves most blocks unseen by
          // most queries). Rows of missing keys are zero (their scores are masked, their probabilities 0).
          const int32_t kb0 = first[b], nk = count[b];
          rows.begin_block(kb0, nk);
          for (int32_t j = 0; j < kBlock; ++j) {
            // The next block's row j, one per row converted (attention_prefetch.h), for heads of up to 64 dimensions.
            if (KV <= 8 && VV <= 8 && kb0 + kBlock + j < n_k) rows.prefetch(kb0 + kBlock + j, kb0 + kBlock + j + 1);
            for (int c = 0; c < KV; ++c)
              _mm256_store_ps(kfb + j * kDk + 8 * c, j < nk ? rows.key(kb0 + j, c) : _mm256_setzero_ps());
            for (int c = 0; c < VV; ++c)
              _mm256_store_ps(vfb + j * kDv + 8 * c, j < nk ? rows.value(kb0 + j, c) : _mm256_setzero_ps());
          }
          converted[b] = true;
        }
        const __m256i bitv = _mm256_set1_epi32(static_cast<int32_t>(bits[b]));
        for (int32_t j8 = 0; j8 < kBlock; j8 += 8) {
          __m128 half[2];
          for (int h = 0; h < 2; ++h) {
            const int32_t j4 = j8 + 4 * h;
            if (j4 >= count[b]) {
              half[h] = _mm_setzero_ps();
              continue;
            }
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int c = 0; c < KV; ++c) {
              const __m256 qc = _mm256_loadu_ps(qi + 8 * c);
              for (int jj = 0; jj < 4; ++jj)
                acc[jj] = _mm256_fmadd_ps(_mm256_load_ps(kfb + (j4 + jj) * kDk + 8 * c), qc, acc[jj]);
            }
            half[h] = reduce4_ps(acc[0], acc[1], acc[2], acc[3]);
          }
          const __m256i lane_bit = j8 == 0 ? lane_bit0 : lane_bit1;
          const __m256i vis = _mm256_cmpeq_epi32(_mm256_and_si256(bitv, lane_bit), lane_bit);
          const __m256 s = _mm256_blendv_ps(neg_inf, _mm256_set_m128(half[1], half[0]), _mm256_castsi256_ps(vis));
          _mm256_store_ps(sbuf + b * kBlock + j8, s);
          mx = _mm256_max_ps(mx, s);
        }
      }
      // Online softmax over the pass: new maximum, rescale factor of the old sums (only if the maximum rose), the
      // probabilities.
      const float m_old = m[i];
      const float m_new = std::max(m_old, hmax_ps(mx));
      const bool rescale = m_new > m_old;
      const float alpha = m_old == -INFINITY ? 0.0f : _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(m_old - m_new)));
      const __m256 mv = _mm256_set1_ps(m_new);
      __m256 sum = _mm256_setzero_ps();
      for (int b = 0; b < n_blocks; ++b) {
        if (bits[b] == 0) continue;
        for (int32_t j8 = 0; j8 < kBlock; j8 += 8) {
          const __m256 p = exp_ps(_mm256_sub_ps(_mm256_load_ps(sbuf + b * kBlock + j8), mv));  // masked: exp(-inf) = 0
          sum = _mm256_add_ps(sum, p);
          _mm256_store_ps(sbuf + b * kBlock + j8, p);
        }
      }
      l[i] = (rescale ? l[i] * alpha : l[i]) + hsum_ps(sum);
      m[i] = m_new;
      // o = o * alpha + sum_j p_j v_j, 64 dimensions at a time. dv is a multiple of 64 in every instantiation, so
      // every pass uses all 8 accumulators with constant indices: with a variable count GCC 12 kept the array on the
      // stack (a store of all 8 per key) and copied it to o with rep movs.
      static_assert(VV % 8 == 0, "dv must be a multiple of 64");
      float* oi = o + i * o_stride;
      const __m256 av = _mm256_set1_ps(alpha);
      for (int cb = 0; cb < VV; cb += 8) {
        __m256 acc[8];
        for (int c = 0; c < 8; ++c) {
          acc[c] = _mm256_loadu_ps(oi + 8 * (cb + c));
          if (rescale) acc[c] = _mm256_mul_ps(acc[c], av);
        }
        for (int b = 0; b < n_blocks; ++b) {
          if (bits[b] == 0) continue;
          const float* vfb = vf + b * kBlock * kDv;
          for (int32_t j = 0; j < count[b]; ++j) {
            const __m256 pj = _mm256_set1_ps(sbuf[b * kBlock + j]);
            for (int c = 0; c < 8; ++c)
              acc[c] = _mm256_fmadd_ps(pj, _mm256_load_ps(vfb + j * kDv + 8 * (cb + c)), acc[c]);
          }
        }
        for (int c = 0; c < 8; ++c) _mm256_storeu_ps(oi + 8 * (cb + c), acc[c]);
      }
    }
  }
}

// Prompt chunks (attention_update_any says which calls): the row-at-a-time kernel above reads every key
// and value vector once per query, as many loads as multiply-adds. This one converts a pass of kTiledPassBlocks
// blocks (64 keys) once, keys transposed to kt [dk][64] f32 and values to vf [64][dv], and takes the call's queries
// kTileQueries at a time: per dimension 2 key vectors and 6 broadcasts serve 12 multiply-adds for a block's scores,
// and per key 2 value vectors and 6 broadcasts serve 12 for the outputs. One online-softmax update per pass and
// query, as above. A query's sums depend on its own keys only (a block no query of a tile sees is skipped: its
// probabilities would be 0), and passes start at multiples of 64 keys for f16 rows, so a call split there gives the
// same bits (FlashAttention.CallSplitAtPassKeysKeepsBits, PromptQueryResultIsIndependentOfItsCallmates).
constexpr int kTileQueries = 6;  // 6 x 2 accumulators, 2 key or value vectors and a broadcast: 15 of 16 registers
constexpr int kTiledPassBlocks = 4;

// Transposes an 8 x 8 block of floats held as 8 row vectors: r[i] becomes column i.
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

template <int KV, int VV, typename Rows>  // dk = 8 KV, dv = 8 VV
void attention_update_tiled(const float* q, int64_t q_stride, int32_t n_q, Rows& rows, int32_t n_k,
                            const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  constexpr int kDk = 8 * KV, kDv = 8 * VV, kQt = kTileQueries, kKeys = kTiledPassBlocks * kBlock;
  static_assert(VV % 2 == 0, "dv must be a multiple of 16");
  // The converted pass (2 x 64 KiB at 256 dimensions) lives on the stack: kernel calls never nest.
  alignas(32) float kt[kDk * kKeys];  // [dk][64]: key 16 b + j's channel d at kt[d * 64 + 16 b + j]
  alignas(32) float vf[kKeys * kDv];  // [64][dv]; rows past a block's keys are zero
  alignas(32) float pbuf[kQt][kKeys];  // the tile's scores over the pass, then its probabilities
  alignas(32) float o_dummy[kDv] = {};  // the output row of a query that sees nothing
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  // Lane j of the low / high half of a block holds bit j / j + 8 of the block's visibility bits.
  const __m256i lane_bit0 = _mm256_setr_epi32(1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7);
  const __m256i lane_bit1 = _mm256_slli_epi32(lane_bit0, 8);
  const QueryBounds qb = query_bounds(mask, n_q);
  for (int32_t kb = 0, kb_end = 0; kb < n_k;) {
    int32_t first[kTiledPassBlocks], count[kTiledPassBlocks], min_kp[kTiledPassBlocks], max_kp[kTiledPassBlocks];
    int nb = 0;
    for (int slot = 0; slot < kTiledPassBlocks && kb < n_k; ++slot, kb = kb_end) {
      kb_end = rows.block_end(kb, n_k);
      const int32_t nk = kb_end - kb;
      int32_t lo, hi;
      key_position_bounds(mask, kb, nk, lo, hi);
      if (!block_maybe_visible(mask, qb, kb, nk, lo, hi)) continue;
      first[nb] = kb;
      count[nb] = nk;
      min_kp[nb] = lo;
      max_kp[nb] = hi;
      rows.begin_block(kb, nk);
      for (int c = 0; c < KV; ++c) {
        for (int h = 0; h < 2; ++h) {  // keys 8 h .. 8 h + 7 of the block
          __m256 block[8];
          for (int j = 0; j < 8; ++j) block[j] = 8 * h + j < nk ? rows.key(kb + 8 * h + j, c) : _mm256_setzero_ps();
          transpose8(block);
          for (int i = 0; i < 8; ++i) _mm256_store_ps(kt + (8 * c + i) * kKeys + kBlock * nb + 8 * h, block[i]);
        }
      }
      for (int32_t j = 0; j < kBlock; ++j) {
        float* row = vf + (kBlock * nb + j) * kDv;
        for (int c = 0; c < VV; ++c) _mm256_store_ps(row + 8 * c, j < nk ? rows.value(kb + j, c) : _mm256_setzero_ps());
      }
      ++nb;
    }
    if (nb == 0) continue;
    for (int32_t i0 = 0; i0 < n_q; i0 += kQt) {
      // The tile's query rows, visibility bits, and output rows (null: the query sees no key of the pass).
      const float* qr[kQt];
      uint32_t bits[kQt][kTiledPassBlocks];
      float* orow[kQt];
      bool block_seen[kTiledPassBlocks] = {};
      bool any = false;
      for (int i = 0; i < kQt; ++i) {
        qr[i] = q + i0 * q_stride;
        orow[i] = nullptr;
        for (int b = 0; b < kTiledPassBlocks; ++b) bits[i][b] = 0;
        if (i0 + i >= n_q) continue;
        qr[i] = q + (i0 + i) * q_stride;
        uint32_t seen = 0;
        for (int b = 0; b < nb; ++b) {
          bits[i][b] = block_visibility(mask, i0 + i, first[b], count[b], min_kp[b], max_kp[b]);
          seen |= bits[i][b];
          block_seen[b] = block_seen[b] || bits[i][b] != 0;
        }
        if (seen != 0) orow[i] = o + (i0 + i) * o_stride;
        any = any || seen != 0;
      }
      if (!any) continue;
      // Scores, a block at a time (a block none of the tile's queries sees is left at -inf).
      __m256 mx[kQt];
      for (int i = 0; i < kQt; ++i) mx[i] = neg_inf;
      for (int b = 0; b < nb; ++b) {
        if (!block_seen[b]) {
          for (int i = 0; i < kQt; ++i) {
            _mm256_store_ps(pbuf[i] + kBlock * b, neg_inf);
            _mm256_store_ps(pbuf[i] + kBlock * b + 8, neg_inf);
          }
          continue;
        }
        __m256 s[kQt][2];
        for (int i = 0; i < kQt; ++i) s[i][0] = s[i][1] = _mm256_setzero_ps();
        const float* kcol = kt + kBlock * b;
        for (int d = 0; d < kDk; ++d) {
          const __m256 k0 = _mm256_load_ps(kcol + d * kKeys), k1 = _mm256_load_ps(kcol + d * kKeys + 8);
          for (int i = 0; i < kQt; ++i) {
            const __m256 qd = _mm256_broadcast_ss(qr[i] + d);
            s[i][0] = _mm256_fmadd_ps(qd, k0, s[i][0]);
            s[i][1] = _mm256_fmadd_ps(qd, k1, s[i][1]);
          }
        }
        for (int i = 0; i < kQt; ++i) {
          const __m256i bitv = _mm256_set1_epi32(static_cast<int32_t>(bits[i][b]));
          for (int h = 0; h < 2; ++h) {
            const __m256i lane_bit = h == 0 ? lane_bit0 : lane_bit1;
            const __m256i vis = _mm256_cmpeq_epi32(_mm256_and_si256(bitv, lane_bit), lane_bit);
            const __m256 sv = _mm256_blendv_ps(neg_inf, s[i][h], _mm256_castsi256_ps(vis));
            _mm256_store_ps(pbuf[i] + kBlock * b + 8 * h, sv);
            mx[i] = _mm256_max_ps(mx[i], sv);
          }
        }
      }
      // Online softmax per query over the pass; alpha is 0 where nothing was seen before (m = -inf, so l and o are
      // still 0) and exactly 1 where the maximum stayed.
      float alpha[kQt];
      for (int i = 0; i < kQt; ++i) {
        alpha[i] = 1.0f;
        if (orow[i] == nullptr) {  // the query sees no key of the pass: its slot's products go to o_dummy
          for (int j = 0; j < kBlock * nb; j += 8) _mm256_store_ps(pbuf[i] + j, _mm256_setzero_ps());
          continue;
        }
        const float m_old = m[i0 + i];
        const float m_new = std::max(m_old, hmax_ps(mx[i]));
        if (m_new > m_old)
          alpha[i] = m_old == -INFINITY ? 0.0f : _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(m_old - m_new)));
        const __m256 mv = _mm256_set1_ps(m_new);
        __m256 sum = _mm256_setzero_ps();
        for (int b = 0; b < nb; ++b) {
          for (int h = 0; h < 2; ++h) {
            float* pv = pbuf[i] + kBlock * b + 8 * h;
            const __m256 p = exp_ps(_mm256_sub_ps(_mm256_load_ps(pv), mv));  // masked: exp(-inf) = 0
            sum = _mm256_add_ps(sum, p);
            _mm256_store_ps(pv, p);
          }
        }
        l[i0 + i] = l[i0 + i] * alpha[i] + hsum_ps(sum);
        m[i0 + i] = m_new;
      }
      // o = o * alpha + sum_j p_j v_j, 16 dimensions of the tile's queries at a time (12 accumulators).
      float* out[kQt];
      for (int i = 0; i < kQt; ++i) out[i] = orow[i] != nullptr ? orow[i] : o_dummy;
      for (int cb = 0; cb < VV; cb += 2) {
        __m256 acc[kQt][2];
        for (int i = 0; i < kQt; ++i) {
          const __m256 a = _mm256_set1_ps(alpha[i]);
          acc[i][0] = _mm256_mul_ps(_mm256_loadu_ps(out[i] + 8 * cb), a);
          acc[i][1] = _mm256_mul_ps(_mm256_loadu_ps(out[i] + 8 * cb + 8), a);
        }
        for (int b = 0; b < nb; ++b) {
          if (!block_seen[b]) continue;
          for (int32_t j = kBlock * b; j < kBlock * b + count[b]; ++j) {
            const __m256 v0 = _mm256_load_ps(vf + j * kDv + 8 * cb), v1 = _mm256_load_ps(vf + j * kDv + 8 * cb + 8);
            for (int i = 0; i < kQt; ++i) {
              const __m256 p = _mm256_broadcast_ss(pbuf[i] + j);
              acc[i][0] = _mm256_fmadd_ps(p, v0, acc[i][0]);
              acc[i][1] = _mm256_fmadd_ps(p, v1, acc[i][1]);
            }
          }
        }
        for (int i = 0; i < kQt; ++i) {
          if (orow[i] == nullptr) continue;
          _mm256_storeu_ps(out[i] + 8 * cb, acc[i][0]);
          _mm256_storeu_ps(out[i] + 8 * cb + 8, acc[i][1]);
        }
      }
    }
  }
}

// A call's kernel, chosen as on AVX-512 (attention_avx512.cc, attention_update_sized): the row kernel for decode
// (up to 4 queries), for steps of up to 18 queries with 64-dimension heads (12 with sparse key sets), so that an
// ordinary step of up to 6 SmolLM2 tokens gives each token a step of its own's bits, and for calls that keep their
// queries apart (a verification step's tokens get plain decoding's bits); the tiled kernel for the rest.
template <int KV, int VV, typename Rows>
void attention_update_any(const float* q, int64_t q_stride, int32_t n_q, Rows& rows, int32_t n_k,
                          const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  constexpr bool kSmallHeads = KV <= 8;  // dk = 8 KV <= 64
  const int32_t row_max = !kSmallHeads ? 4 : mask.q_sparse != nullptr ? 2 * kTileQueries : 3 * kTileQueries;
  if (n_q > row_max && !mask.queries_apart)
    return attention_update_tiled<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
  attention_update_sized<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
}

template <int KV, int VV>
void f16_sized(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride, const uint16_t* v,
               int64_t v_stride, int32_t n_k, const AttentionMask& mask, float* m, float* l, float* o,
               int64_t o_stride) {
  F16Rows<KV, VV> rows{k, k_stride, v, v_stride};
  attention_update_any<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
}

template <int KV, int VV>
void quantized_sized(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv, int32_t n_k,
                     const AttentionMask& mask, float* m, float* l, float* o, int64_t o_stride) {
  if (kv.bits == 8) {
    QuantizedReader<8, KV, VV> rows(kv);
    return attention_update_any<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
  }
  QuantizedReader<4, KV, VV> rows(kv);
  attention_update_any<KV, VV>(q, q_stride, n_q, rows, n_k, mask, m, l, o, o_stride);
}

}  // namespace

void attention_update_avx2(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                           const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                           int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  if (dk == 64 && dv == 64)
    return f16_sized<8, 8>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, m, l, o, o_stride);
  if (dk == 128 && dv == 128)
    return f16_sized<16, 16>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, m, l, o, o_stride);
  if (dk == 256 && dv == 256)
    return f16_sized<32, 32>(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, m, l, o, o_stride);
  ref::attention_update(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}

void attention_update_quantized_avx2(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                     int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l,
                                     float* o, int64_t o_stride) {
  if (dk == 64 && dv == 64) return quantized_sized<8, 8>(q, q_stride, n_q, kv, n_k, mask, m, l, o, o_stride);
  if (dk == 128 && dv == 128) return quantized_sized<16, 16>(q, q_stride, n_q, kv, n_k, mask, m, l, o, o_stride);
  if (dk == 256 && dv == 256) return quantized_sized<32, 32>(q, q_stride, n_q, kv, n_k, mask, m, l, o, o_stride);
  ref::attention_update_quantized(q, q_stride, n_q, kv, n_k, mask, dk, dv, m, l, o, o_stride);
}

#else
void attention_update_avx2(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                           const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                           int32_t dv, float* m, float* l, float* o, int64_t o_stride) {
  ref::attention_update(q, q_stride, n_q, k, k_stride, v, v_stride, n_k, mask, dk, dv, m, l, o, o_stride);
}
void attention_update_quantized_avx2(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                     int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l,
                                     float* o, int64_t o_stride) {
  ref::attention_update_quantized(q, q_stride, n_q, kv, n_k, mask, dk, dv, m, l, o, o_stride);
}
#endif

}  // namespace longhaul::kernels::detail
