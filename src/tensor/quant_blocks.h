// Quantized block layouts, byte for byte as GGUF files store them (ggml's block_* structs).
//
// Scales are raw f16 bits (uint16_t); convert them with tensor/half.h. Every struct is packed by construction
// (only 1- and 2-byte members, except Q8_K whose float comes first). The sizes are static-asserted below and
// compared with tensor::info() (which is not constexpr) in tests/unit/kernels/quant_blocks_test.cc.
#pragma once

#include <cstdint>

namespace longhaul::tensor {

constexpr int kQk32 = 32;   // elements per block of the legacy types (Q4_0 ... Q8_1)
constexpr int kQkK = 256;   // elements per super-block of the K-quants
constexpr int kKScaleBytes = 12;  // packed 6-bit scales and mins of Q3_K / Q4_K / Q5_K

// 4-bit, symmetric: x = d * (q - 8). qs[j] holds element j (low nibble) and element j + 16 (high nibble).
struct BlockQ4_0 {
  uint16_t d;       // f16 scale
  uint8_t qs[16];   // [32] nibbles
};

// 4-bit with offset: x = d * q + m.
struct BlockQ4_1 {
  uint16_t d;       // f16 scale
  uint16_t m;       // f16 minimum
  uint8_t qs[16];   // [32] nibbles, as in Q4_0
};

// 5-bit, symmetric: x = d * (q - 16). Bit j of qh (little-endian u32) is the fifth bit of element j.
struct BlockQ5_0 {
  uint16_t d;       // f16 scale
  uint8_t qh[4];    // [32] high bits
  uint8_t qs[16];   // [32] low nibbles, as in Q4_0
};

// 5-bit with offset: x = d * q + m.
struct BlockQ5_1 {
  uint16_t d;       // f16 scale
  uint16_t m;       // f16 minimum
  uint8_t qh[4];    // [32] high bits
  uint8_t qs[16];   // [32] low nibbles
};

// 8-bit, symmetric: x = d * q. Weights and the activations paired with Q4_0 / Q5_0 / Q8_0.
struct BlockQ8_0 {
  uint16_t d;       // f16 scale
  int8_t qs[32];
};

// 8-bit activations paired with Q4_1 / Q5_1; s lets the dot product add the weights' offset term cheaply.
struct BlockQ8_1 {
  uint16_t d;       // f16 scale
  uint16_t s;       // f16 of d * sum(qs)
  int8_t qs[32];
};

// 2-bit K-quant: 16 groups of 16, each with a 4-bit scale (low nibble) and 4-bit min (high nibble).
// x = d * sc * q - dmin * m, q in 0..3.
struct BlockQ2_K {
  uint8_t scales[16];  // [16] scale | min << 4
  uint8_t qs[64];      // [256] 2-bit quants
  uint16_t d;          // f16 super-block scale of the scales
  uint16_t dmin;       // f16 super-block scale of the mins
};

// 3-bit K-quant: 2 low bits in qs, the third in hmask; 16 groups with 6-bit signed scales (offset 32).
struct BlockQ3_K {
  uint8_t hmask[32];   // [256] high bits
  uint8_t qs[64];      // [256] low 2 bits
  uint8_t scales[12];  // [16] 6-bit scales, packed
  uint16_t d;          // f16 super-block scale
};

// 4-bit K-quant: 8 groups of 32 with 6-bit scales and mins. x = d * sc * q - dmin * m.
struct BlockQ4_K {
  uint16_t d;          // f16 super-block scale of the scales
  uint16_t dmin;       // f16 super-block scale of the mins
  uint8_t scales[12];  // [8] scales + [8] mins, 6 bits each, packed
  uint8_t qs[128];     // [256] nibbles
};

// 5-bit K-quant: Q4_K plus one high bit per element in qh.
struct BlockQ5_K {
  uint16_t d;          // f16 super-block scale of the scales
  uint16_t dmin;       // f16 super-block scale of the mins
  uint8_t scales[12];  // [8] scales + [8] mins, packed as in Q4_K
  uint8_t qh[32];      // [256] high bits
  uint8_t qs[128];     // [256] low nibbles
};

// 6-bit K-quant: 16 groups of 16 with signed 8-bit scales. x = d * sc * (q - 32).
struct BlockQ6_K {
  uint8_t ql[128];     // [256] low nibbles
  uint8_t qh[64];      // [256] high 2 bits
  int8_t scales[16];   // [16]
  uint16_t d;          // f16 super-block scale
};

// 8-bit activations paired with the K-quants; bsums speed up the min terms of Q2_K / Q4_K / Q5_K.
struct BlockQ8_K {
  float d;             // f32 scale
  int8_t qs[256];
  int16_t bsums[16];   // [16] sum of each group of 16 qs
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

}  // namespace longhaul::tensor
