// Per-type scalar kernels behind kernels::ref (quant.h). The ISA tables (kernels/isa_kernels.h) point at these for
// every type an ISA has no SIMD version of.
#pragma once

#include <cstdint>

#include "tensor/quant_blocks.h"

namespace longhaul::kernels::ref {

// Dequantize n elements (n a multiple of the block size).
void dequantize_f32(const void* src, float* dst, int64_t n);
void dequantize_f16(const void* src, float* dst, int64_t n);
void dequantize_bf16(const void* src, float* dst, int64_t n);
void dequantize_q4_0(const void* src, float* dst, int64_t n);
void dequantize_q4_1(const void* src, float* dst, int64_t n);
void dequantize_q5_0(const void* src, float* dst, int64_t n);
void dequantize_q5_1(const void* src, float* dst, int64_t n);
void dequantize_q8_0(const void* src, float* dst, int64_t n);
void dequantize_q8_1(const void* src, float* dst, int64_t n);
void dequantize_q2_k(const void* src, float* dst, int64_t n);
void dequantize_q3_k(const void* src, float* dst, int64_t n);
void dequantize_q4_k(const void* src, float* dst, int64_t n);
void dequantize_q5_k(const void* src, float* dst, int64_t n);
void dequantize_q6_k(const void* src, float* dst, int64_t n);
void dequantize_q8_k(const void* src, float* dst, int64_t n);

// Quantize n elements with llama.cpp's reference rounding.
void quantize_f32(const float* x, void* dst, int64_t n);
void quantize_f16(const float* x, void* dst, int64_t n);
void quantize_bf16(const float* x, void* dst, int64_t n);
void quantize_q4_0(const float* x, void* dst, int64_t n);
void quantize_q4_1(const float* x, void* dst, int64_t n);
void quantize_q5_0(const float* x, void* dst, int64_t n);
void quantize_q5_1(const float* x, void* dst, int64_t n);
void quantize_q8_0(const float* x, void* dst, int64_t n);
void quantize_q8_1(const float* x, void* dst, int64_t n);
void quantize_q8_k(const float* x, void* dst, int64_t n);

// Dot products: weight row (first) with an activation row in the paired type (second).
float dot_f32_f32(int64_t n, const void* w, const void* a);
float dot_f16_f16(int64_t n, const void* w, const void* a);
float dot_bf16_bf16(int64_t n, const void* w, const void* a);
float dot_q4_0_q8_0(int64_t n, const void* w, const void* a);
float dot_q4_1_q8_1(int64_t n, const void* w, const void* a);
float dot_q5_0_q8_0(int64_t n, const void* w, const void* a);
float dot_q5_1_q8_1(int64_t n, const void* w, const void* a);
float dot_q8_0_q8_0(int64_t n, const void* w, const void* a);
float dot_q2_k_q8_k(int64_t n, const void* w, const void* a);
float dot_q3_k_q8_k(int64_t n, const void* w, const void* a);
float dot_q4_k_q8_k(int64_t n, const void* w, const void* a);
float dot_q5_k_q8_k(int64_t n, const void* w, const void* a);
float dot_q6_k_q8_k(int64_t n, const void* w, const void* a);

// The 6-bit scale and min of group j (0..7) of a Q4_K / Q5_K block, unpacked from the 12 packed bytes: groups 0-3
// keep theirs in the low 6 bits of bytes j and j + 4; groups 4-7 split theirs into a nibble of byte j + 4 and the
// top two bits of bytes j - 4 (scale) and j (min).
inline void k4_scale_min(int j, const uint8_t* packed, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((packed[j + 4] & 0xf) | ((packed[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

// The 16 6-bit scales of a Q3_K block, minus their offset of 32. Bytes 0-7 hold the low nibbles (groups 0-7 in the
// low halves, 8-15 in the high halves); bytes 8-11 hold the top two bits, four groups per byte.
inline void q3k_scales(const uint8_t* packed, int8_t* out /* [16] */) {
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? (packed[j] & 0xf) : (packed[j - 8] >> 4);
    const int high = (packed[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    out[j] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
}

}  // namespace longhaul::kernels::ref
