// Internal: x86 dot products of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with their Q8_0 / Q8_1
// activations. Included by the per-ISA translation units after x86_common.h.
//
// Each weight type is a small struct whose unpack() turns a block into 32 quant bytes and its f32 scales;
// dot_weights() multiplies those with one activation block. dot_rows_32 unpacks each weight block once and uses it
// for up to 4 activation rows, so a prefill tile pays for the weight loads and the unpacking once.
#pragma once

#include "kernels/x86/x86_common.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

// Weights as unsigned quants with an offset: x = d * q + m, q in 0..31. Q4_1 / Q5_1 store m; Q4_0 / Q5_0 are the
// same with m = -8 d / -16 d, which lets them skip the sign trick of signed bytes. The offset contributes
// m * s per block, s = d_a * sum(a): stored in Q8_1 activations, computed once per call for Q8_0 ones.
struct OffsetW32 {
  __m256i q;  // unsigned bytes
  float d;
  float m;
};

// Signed weights (Q8_0): x = d * q with q in -127..127; |q| and the sign trick keep maddubs inputs in range.
struct SignedW32 {
  __m256i abs_q;  // |q| as unsigned bytes
  __m256i q;      // q as signed bytes
  float d;
  float m;        // unused (0); lets the tile code treat both kinds alike
};

template <class ABlock>
inline __m256i dot_weights(const OffsetW32& w, const ABlock& a) {
  return dot_u8s8(_mm256_setzero_si256(), w.q, load256(a.qs));
}
inline __m256i dot_weights(const SignedW32& w, const tensor::BlockQ8_0& a) {
  return dot_u8s8(_mm256_setzero_si256(), w.abs_q, _mm256_sign_epi8(load256(a.qs), w.q));
}

// The f16 pair (d, m) at the start of a Q4_1 / Q5_1 block, converted with one instruction.
inline OffsetW32 offset_weights(__m256i q, const void* block) {
  const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(static_cast<const uint8_t*>(block)))));
  return {q, _mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm))};
}

struct Q4_0Kernel {
  using WBlock = tensor::BlockQ4_0;
  using ABlock = tensor::BlockQ8_0;
  using W = OffsetW32;
  static constexpr bool kHasOffset = true;
  static W unpack(const WBlock& b) {
    const float d = f16_scalar(b.d);
    return {nibbles_32(b.qs), d, -8.0f * d};
  }
};

struct Q5_0Kernel {
  using WBlock = tensor::BlockQ5_0;
  using ABlock = tensor::BlockQ8_0;
  using W = OffsetW32;
  static constexpr bool kHasOffset = true;
  static W unpack(const WBlock& b) {
    const __m256i high = _mm256_and_si256(bits_to_bytes(load_u32(b.qh)), _mm256_set1_epi8(0x10));
    const float d = f16_scalar(b.d);
    return {_mm256_or_si256(nibbles_32(b.qs), high), d, -16.0f * d};
  }
};

struct Q8_0Kernel {
  using WBlock = tensor::BlockQ8_0;
  using ABlock = tensor::BlockQ8_0;
  using W = SignedW32;
  static constexpr bool kHasOffset = false;
  static W unpack(const WBlock& b) {
    const __m256i q = load256(b.qs);
    return {_mm256_sign_epi8(q, q), q, f16_scalar(b.d), 0.0f};
  }
};

struct Q4_1Kernel {
  using WBlock = tensor::BlockQ4_1;
  using ABlock = tensor::BlockQ8_1;
  using W = OffsetW32;
  static constexpr bool kHasOffset = true;
  static W unpack(const WBlock& b) { return offset_weights(nibbles_32(b.qs), &b); }
};

struct Q5_1Kernel {
  using WBlock = tensor::BlockQ5_1;
  using ABlock = tensor::BlockQ8_1;
  using W = OffsetW32;
  static constexpr bool kHasOffset = true;
  static W unpack(const WBlock& b) {
    const __m256i high = _mm256_and_si256(bits_to_bytes(load_u32(b.qh)), _mm256_set1_epi8(0x10));
    return offset_weights(_mm256_or_si256(nibbles_32(b.qs), high), &b);
  }
};

// s = d_a * sum(a) of an activation block: stored by Q8_1, summed here for Q8_0.
inline float act_s(const tensor::BlockQ8_1& a) { return f16_scalar(a.s); }
inline float act_s(const tensor::BlockQ8_0& a) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), load256(a.qs));
  return f16_scalar(a.d) * static_cast<float>(hsum_epi32(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))));
}

// Lane `a` of p in all 8 lanes.
template <int a>
inline __m256 lane_broadcast(__m128 p) {
  if constexpr (a == 0) return _mm256_broadcastss_ps(p);
  return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(p), _mm256_set1_epi32(a));
}

// Activation blocks whose scales are converted up front per call (n up to 8192); longer rows run in segments.
constexpr int64_t kScaleSegmentBlocks = 256;

template <class K, int NA>
struct Tile32 {
  const typename K::ABlock* acts[NA];  // [NA][nb]
  const float (*ad)[4];                // [segment][4] activation d per block, one lane per activation row
  const float (*as)[4];                // [segment][4] activation s (Q8_1)

  // Adds block ib (index ib - seg into the scale arrays) of the weight row to every activation row's sums.
  template <int a>
  void add_act(const typename K::W& u, int64_t ib, __m128 prod, __m256* acc) const {
    if constexpr (a < NA) {
      acc[a] = _mm256_fmadd_ps(lane_broadcast<a>(prod), _mm256_cvtepi32_ps(dot_weights(u, acts[a][ib])), acc[a]);
      add_act<a + 1>(u, ib, prod, acc);
    }
  }
  void add_block(const typename K::W& u, int64_t ib, int64_t is, __m256* acc, __m128& extra) const {
    if constexpr (NA == 1) {
      // Decode: scalar scale products are cheaper than a vector product and a lane broadcast.
      const __m256 sums = _mm256_cvtepi32_ps(dot_weights(u, acts[0][ib]));
      acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(u.d * ad[is][0]), sums, acc[0]);
      if constexpr (K::kHasOffset) extra = _mm_add_ss(extra, _mm_set_ss(u.m * as[is][0]));
    } else {
      // d_w d_a for all activation rows at once; the offset term m_w s_a likewise.
      const __m128 prod = _mm_mul_ps(_mm_set1_ps(u.d), _mm_load_ps(ad[is]));
      if constexpr (K::kHasOffset) extra = _mm_fmadd_ps(_mm_set1_ps(u.m), _mm_load_ps(as[is]), extra);
      add_act<0>(u, ib, prod, acc);
    }
  }
};

template <class K, int NA>
void dot_rows_32_n(int64_t n, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                   int64_t act_stride, float* y, int64_t ldy) {
  using WBlock = typename K::WBlock;
  using ABlock = typename K::ABlock;
  const int64_t nb = n / tensor::kQk32;
  alignas(16) float ad[kScaleSegmentBlocks][4];
  alignas(16) float as[kScaleSegmentBlocks][4];
  Tile32<K, NA> tile;
  for (int a = 0; a < NA; ++a) tile.acts[a] = reinterpret_cast<const ABlock*>(act + a * act_stride);
  tile.ad = ad;
  tile.as = as;
  for (int64_t seg = 0; seg < nb; seg += kScaleSegmentBlocks) {
    const int64_t seg_end = nb < seg + kScaleSegmentBlocks ? nb : seg + kScaleSegmentBlocks;
    for (int64_t ib = seg; ib < seg_end; ++ib) {
      for (int a = 0; a < 4; ++a) {
        ad[ib - seg][a] = a < NA ? f16_scalar(tile.acts[a][ib].d) : 0.0f;
        as[ib - seg][a] = K::kHasOffset && a < NA ? act_s(tile.acts[a][ib]) : 0.0f;
      }
    }
    for (int64_t r = 0; r < n_rows; ++r) {
      const auto* wb = reinterpret_cast<const WBlock*>(w + r * w_stride);  // [nb]
      // Two sets of accumulators (even and odd blocks): one block's work is about as long as the latency of the
      // FMA that adds it, so a single chain would stall on every block.
      __m256 acc0[NA], acc1[NA];
      for (int a = 0; a < NA; ++a) acc0[a] = acc1[a] = _mm256_setzero_ps();
      __m128 extra0 = _mm_setzero_ps(), extra1 = _mm_setzero_ps();
      int64_t ib = seg;
      for (; ib + 2 <= seg_end; ib += 2) {
        tile.add_block(K::unpack(wb[ib]), ib, ib - seg, acc0, extra0);
        tile.add_block(K::unpack(wb[ib + 1]), ib + 1, ib + 1 - seg, acc1, extra1);
      }
      if (ib < seg_end) tile.add_block(K::unpack(wb[ib]), ib, ib - seg, acc0, extra0);
      alignas(16) float extra[4];
      _mm_store_ps(extra, _mm_add_ps(extra0, extra1));
      for (int a = 0; a < NA; ++a) {
        const float sum = hsum_ps(_mm256_add_ps(acc0[a], acc1[a])) + extra[a];
        y[a * ldy + r] = seg == 0 ? sum : y[a * ldy + r] + sum;
      }
    }
  }
}

template <class K>
void dot_rows_32(int64_t n, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                 int64_t act_stride, int n_act, float* y, int64_t ldy) {
  switch (n_act) {
    case 1: return dot_rows_32_n<K, 1>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    case 2: return dot_rows_32_n<K, 2>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    case 3: return dot_rows_32_n<K, 3>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    default: return dot_rows_32_n<K, 4>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
