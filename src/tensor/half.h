// IEEE binary16 (f16) and bfloat16 (bf16) <-> f32 conversions, exact and round-to-nearest-even, so that a value
// converted here has the same bits as the one ggml stores in a GGUF file or an activation buffer.
//
// The scalar versions are bit manipulation only (no floating-point arithmetic besides one exact power-of-two scale),
// so they give the same bits on every ISA and under every -ffp-contract setting. Translation units built with F16C
// use the hardware conversion, which rounds the same way.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace longhaul::tensor {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// f16 bits -> f32. Every f16 value (subnormals, infinities, NaN payloads) has an exact f32 image.
inline float f16_to_f32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in f32 because mantissa < 2^10.
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return f32_from_bits(f32_bits(magnitude) | sign);
  }
  if (exponent == 31) return f32_from_bits(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  return f32_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

// f32 -> f16 bits, rounding to nearest, ties to even; overflow gives infinity, NaN stays a (quiet) NaN.
inline uint16_t f32_to_f16(float f) {
#if defined(__F16C__)
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
  const uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {
    // Infinity stays infinity; a NaN keeps its top payload bits and is made quiet.
    return static_cast<uint16_t>(sign | (magnitude > 0x7f800000u ? (0x7e00u | ((magnitude >> 13) & 0x3ffu)) : 0x7c00u));
  }
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (magnitude < 0x38800000u) {
    // Below 2^-14 the result is an f16 subnormal: round(value * 2^24) with ties to even.
    const uint32_t exponent = magnitude >> 23;
    if (exponent < 102) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
    const uint32_t m = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rest = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias the exponent (127 -> 15) and round the mantissa from 23 to 10 bits; a carry into the
  // exponent is the correct result.
  uint32_t r = (magnitude - (112u << 23)) >> 13;
  const uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
#endif
}

// f32 -> f16 bits rounded toward -infinity: the largest f16 <= f (f not NaN; below -65504 that is -infinity). For
// bounds that must stay bounds once stored in f16 (a page's per-channel key minimum).
inline uint16_t f32_to_f16_down(float f) {
  uint16_t h = f32_to_f16(f);
  if (f16_to_f32(h) > f) {
    if ((h & 0x7fffu) == 0) return 0x8001u;  // +-0 above a tiny negative f: the smallest negative subnormal
    h = (h & 0x8000u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);  // one step toward -infinity
  }
  return h;
}
// Rounded toward +infinity: the smallest f16 >= f (a page's per-channel key maximum).
inline uint16_t f32_to_f16_up(float f) { return static_cast<uint16_t>(f32_to_f16_down(-f) ^ 0x8000u); }

inline float bf16_to_f32(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

// f32 -> bf16 bits, round to nearest even; NaN is made quiet (bit 6 of the bf16 mantissa set), as ggml does.
inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 64u);
  return static_cast<uint16_t>((x + (0x7fffu + ((x >> 16) & 1u))) >> 16);
}

}  // namespace longhaul::tensor
