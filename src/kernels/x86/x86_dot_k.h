// Internal: x86 dot products of the K-quants (Q2_K ... Q6_K) with Q8_K activations. Included by the per-ISA
// translation units after x86_common.h.
//
// Every K-quant is handled in one shape: a super-block of 256 is 8 chunks of 32 elements; chunk k yields 32 unsigned
// quant bytes and an i16 vector with each element pair's scale. The signed offset of a type (Q3_K's -4, Q6_K's -32)
// and the mins of Q2_K / Q4_K / Q5_K both reduce to "coefficient per group of 16 times the activation group sum",
// which Q8_K carries in bsums, so one madd per activation row and super-block applies them:
//   dot = d_w d_a sum_k sum(scale * q * a) - c_w d_a sum_g coef_g * bsums_g.
#pragma once

#include "kernels/x86/x86_common.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

// Scales for a chunk made of two groups of 16: s0 for elements 0-15, s1 for 16-31.
inline __m256i pair_scales(int s0, int s1) {
  return _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(s1)), _mm_set1_epi16(static_cast<int16_t>(s0)));
}

struct Q2_KKernel {
  using WBlock = tensor::BlockQ2_K;
  const WBlock& b;
  __m256i q_half[2];
  float d, c;
  __m256i coef;  // [16] i16 mins
  explicit Q2_KKernel(const WBlock& block) : b(block) {
    q_half[0] = load256(b.qs);
    q_half[1] = load256(b.qs + 32);
    d = f16_scalar(b.d);
    c = f16_scalar(b.dmin);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    coef = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0f)));
  }
  template <int k>
  __m256i chunk() const {
    return _mm256_and_si256(_mm256_srli_epi16(q_half[k / 4], 2 * (k % 4)), _mm256_set1_epi8(3));
  }
  template <int k>
  __m256i scales() const {
    return pair_scales(b.scales[2 * k] & 0xf, b.scales[2 * k + 1] & 0xf);
  }
};

struct Q3_KKernel {
  using WBlock = tensor::BlockQ3_K;
  const WBlock& b;
  __m256i q_half[2];
  __m256i hmask;
  int8_t sc[16];
  float d, c;
  __m256i coef;  // [16] i16: 4 * scale, for the -4 of elements whose high bit is clear
  explicit Q3_KKernel(const WBlock& block) : b(block) {
    q_half[0] = load256(b.qs);
    q_half[1] = load256(b.qs + 32);
    hmask = load256(b.hmask);
    unpack_scales(b.scales, sc);
    d = f16_scalar(b.d);
    c = d;
    coef = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc))), 2);
  }
  // The 16 6-bit scales minus 32 (same unpacking as the scalar twin, kernels/ref/quant_ref.h).
  static void unpack_scales(const uint8_t* packed, int8_t* out) {
    const uint32_t a0 = load_u32(packed), a1 = load_u32(packed + 4), high = load_u32(packed + 8);
    const uint32_t s[4] = {(a0 & 0x0f0f0f0f) | ((high & 0x03030303) << 4),
                           (a1 & 0x0f0f0f0f) | (((high >> 2) & 0x03030303) << 4),
                           ((a0 >> 4) & 0x0f0f0f0f) | (((high >> 4) & 0x03030303) << 4),
                           ((a1 >> 4) & 0x0f0f0f0f) | (((high >> 6) & 0x03030303) << 4)};
    std::memcpy(out, s, 16);
    for (int j = 0; j < 16; ++j) out[j] = static_cast<int8_t>(out[j] - 32);
  }
  template <int k>
  __m256i chunk() const {
    // Unsigned form low + 4 * high in 0..7; the -4 for a clear high bit is in coef.
    const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q_half[k / 4], 2 * (k % 4)), _mm256_set1_epi8(3));
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hmask, k), _mm256_set1_epi8(1));
    return _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
  }
  template <int k>
  __m256i scales() const {
    return pair_scales(sc[2 * k], sc[2 * k + 1]);
  }
};

// Q4_K / Q5_K scales and mins: 8 of each, 6 bits, packed in 12 bytes (see k4_scale_min in the scalar twin).
struct K4Scales {
  uint8_t sc[8];
  uint8_t mins[8];
  explicit K4Scales(const uint8_t* packed) {
    const uint32_t a0 = load_u32(packed), a1 = load_u32(packed + 4), a2 = load_u32(packed + 8);
    const uint32_t s[2] = {a0 & 0x3f3f3f3f, (a2 & 0x0f0f0f0f) | ((a0 >> 2) & 0x30303030)};
    const uint32_t m[2] = {a1 & 0x3f3f3f3f, ((a2 >> 4) & 0x0f0f0f0f) | ((a1 >> 2) & 0x30303030)};
    std::memcpy(sc, s, 8);
    std::memcpy(mins, m, 8);
  }
  // Each min twice: bsums come in groups of 16, mins in groups of 32.
  __m256i mins_per_16() const {
    uint64_t m8;
    std::memcpy(&m8, mins, 8);
    const __m128i m = _mm_cvtsi64_si128(static_cast<int64_t>(m8));
    return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
  }
};

struct Q4_KKernel {
  using WBlock = tensor::BlockQ4_K;
  const WBlock& b;
  K4Scales s;
  float d, c;
  __m256i coef;
  explicit Q4_KKernel(const WBlock& block) : b(block), s(block.scales) {
    d = f16_scalar(b.d);
    c = f16_scalar(b.dmin);
    coef = s.mins_per_16();
  }
  template <int k>
  __m256i chunk() const {
    const __m256i q = load256(b.qs + 32 * (k / 2));
    return _mm256_and_si256(k % 2 == 0 ? q : _mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0f));
  }
  template <int k>
  __m256i scales() const {
    return _mm256_set1_epi16(s.sc[k]);
  }
};

struct Q5_KKernel {
  using WBlock = tensor::BlockQ5_K;
  const WBlock& b;
  K4Scales s;
  __m256i qh;
  float d, c;
  __m256i coef;
  explicit Q5_KKernel(const WBlock& block) : b(block), s(block.scales) {
    qh = load256(b.qh);
    d = f16_scalar(b.d);
    c = f16_scalar(b.dmin);
    coef = s.mins_per_16();
  }
  template <int k>
  __m256i chunk() const {
    const __m256i q = load256(b.qs + 32 * (k / 2));
    const __m256i low = _mm256_and_si256(k % 2 == 0 ? q : _mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0f));
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, k), _mm256_set1_epi8(1));
    return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
  }
  template <int k>
  __m256i scales() const {
    return _mm256_set1_epi16(s.sc[k]);
  }
};

struct Q6_KKernel {
  using WBlock = tensor::BlockQ6_K;
  const WBlock& b;
  float d, c;
  __m256i coef;  // [16] i16: 32 * scale, for the -32 offset
  explicit Q6_KKernel(const WBlock& block) : b(block) {
    d = f16_scalar(b.d);
    c = d;
    coef = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales))), 5);
  }
  template <int k>
  __m256i chunk() const {
    // Half k / 4: chunk 0 and 1 take the low nibbles of ql[0:32] and ql[32:64], chunks 2 and 3 the high nibbles;
    // qh bits 2j..2j+1 are the top two bits of chunk j.
    constexpr int h = k / 4, j = k % 4;
    const __m256i ql = load256(b.ql + 64 * h + 32 * (j % 2));
    const __m256i low = _mm256_and_si256(j < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0f));
    const __m256i qh = load256(b.qh + 32 * h);
    __m256i high;
    if constexpr (j == 0) high = _mm256_slli_epi16(qh, 4);
    if constexpr (j == 1) high = _mm256_slli_epi16(qh, 2);
    if constexpr (j == 2) high = qh;
    if constexpr (j == 3) high = _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(low, _mm256_and_si256(high, _mm256_set1_epi8(0x30)));
  }
  template <int k>
  __m256i scales() const {
    return pair_scales(b.scales[2 * k], b.scales[2 * k + 1]);
  }
};

template <class K, int NA, int k>
inline void accumulate_chunk(const K& kern, const tensor::BlockQ8_K* const* ab, __m256i* sumi) {
  const __m256i q = kern.template chunk<k>();
  const __m256i sc = kern.template scales<k>();
  for (int a = 0; a < NA; ++a) {
    // q <= 63 and |a| <= 127: the i16 pair sums stay below 32767.
    const __m256i p = _mm256_maddubs_epi16(q, load256(ab[a]->qs + 32 * k));
    sumi[a] = _mm256_add_epi32(sumi[a], _mm256_madd_epi16(p, sc));
  }
}

template <class K, int NA>
void dot_rows_k_n(int64_t n, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                  int64_t act_stride, float* y, int64_t ldy) {
  using WBlock = typename K::WBlock;
  const int64_t nb = n / tensor::kQkK;
  const tensor::BlockQ8_K* acts[NA];  // [NA][nb]
  for (int a = 0; a < NA; ++a) acts[a] = reinterpret_cast<const tensor::BlockQ8_K*>(act + a * act_stride);
  for (int64_t r = 0; r < n_rows; ++r) {
    const auto* wb = reinterpret_cast<const WBlock*>(w + r * w_stride);  // [nb]
    __m256 acc[NA];
    for (int a = 0; a < NA; ++a) acc[a] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
      const K kern(wb[ib]);
      const tensor::BlockQ8_K* ab[NA];
      __m256i sumi[NA];
      for (int a = 0; a < NA; ++a) {
        ab[a] = acts[a] + ib;
        sumi[a] = _mm256_setzero_si256();
      }
      accumulate_chunk<K, NA, 0>(kern, ab, sumi);
      accumulate_chunk<K, NA, 1>(kern, ab, sumi);
      accumulate_chunk<K, NA, 2>(kern, ab, sumi);
      accumulate_chunk<K, NA, 3>(kern, ab, sumi);
      accumulate_chunk<K, NA, 4>(kern, ab, sumi);
      accumulate_chunk<K, NA, 5>(kern, ab, sumi);
      accumulate_chunk<K, NA, 6>(kern, ab, sumi);
      accumulate_chunk<K, NA, 7>(kern, ab, sumi);
      for (int a = 0; a < NA; ++a) {
        const __m256i corr = _mm256_madd_epi16(load256(ab[a]->bsums), kern.coef);
        const float da = ab[a]->d;
        acc[a] = _mm256_fmadd_ps(_mm256_set1_ps(kern.d * da), _mm256_cvtepi32_ps(sumi[a]), acc[a]);
        acc[a] = _mm256_fnmadd_ps(_mm256_set1_ps(kern.c * da), _mm256_cvtepi32_ps(corr), acc[a]);
      }
    }
    for (int a = 0; a < NA; ++a) y[a * ldy + r] = hsum_ps(acc[a]);
  }
}

template <class K>
void dot_rows_k(int64_t n, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act, int64_t act_stride,
                int n_act, float* y, int64_t ldy) {
  switch (n_act) {
    case 1: return dot_rows_k_n<K, 1>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    case 2: return dot_rows_k_n<K, 2>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    case 3: return dot_rows_k_n<K, 3>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    default: return dot_rows_k_n<K, 4>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
