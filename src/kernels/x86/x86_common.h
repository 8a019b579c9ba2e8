// Internal x86 helpers for the per-ISA kernel translation units (quant_avx2.cc, quant_avx512.cc).
//
// Included only by those files, each compiled with its own ISA flags. Everything lives in an anonymous namespace so
// that each translation unit keeps its own copy and no AVX-512 instruction can leak into code the AVX2 (or generic)
// path runs. LH_X86_VNNI selects the VNNI dot-product instruction (_mm256_dpbusd_epi32) over maddubs + madd.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace longhaul::kernels::detail {
namespace {

inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t f16_from(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// acc + the sums of four products of unsigned bytes u with signed bytes s, in 8 i32 lanes. Without VNNI the
// intermediate i16 pair sums saturate above 32767, so callers keep u * |s| pairs below that (u <= 127).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(LH_X86_VNNI)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// Sum of products of signed bytes a and b (|a| <= 127): a's magnitude times b carrying a's sign.
inline __m256i dot_s8s8(__m256i acc, __m256i a, __m256i b) {
  return dot_u8s8(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

// The 32 nibbles of a legacy 4-bit block as bytes in element order: low nibbles are elements 0-15, high 16-31.
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// 0xFF in byte j where bit j of the 32-bit word is set, else 0.
inline __m256i bits_to_bytes(uint32_t bits) {
#if defined(LH_X86_AVX512)
  return _mm256_movm_epi8(static_cast<__mmask32>(bits));
#else
  // Byte j gets the byte of `bits` holding bit j, OR-ed with every bit but bit (j % 8): all ones iff that bit is set.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int32_t>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
  return _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
#endif
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

}  // namespace
}  // namespace longhaul::kernels::detail
