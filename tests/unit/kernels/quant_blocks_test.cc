// Block layouts and the f16 / bf16 conversions.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tensor/dtype.h"
#include "tensor/half.h"
#include "tensor/quant_blocks.h"

namespace longhaul::tensor {
namespace {

TEST(QuantBlocks, SizesMatchDTypeInfo) {
  EXPECT_EQ(sizeof(BlockQ4_0), static_cast<size_t>(info(DType::Q4_0).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ4_1), static_cast<size_t>(info(DType::Q4_1).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ5_0), static_cast<size_t>(info(DType::Q5_0).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ5_1), static_cast<size_t>(info(DType::Q5_1).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ8_0), static_cast<size_t>(info(DType::Q8_0).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ8_1), static_cast<size_t>(info(DType::Q8_1).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ2_K), static_cast<size_t>(info(DType::Q2_K).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ3_K), static_cast<size_t>(info(DType::Q3_K).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ4_K), static_cast<size_t>(info(DType::Q4_K).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ5_K), static_cast<size_t>(info(DType::Q5_K).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ6_K), static_cast<size_t>(info(DType::Q6_K).type_size_bytes));
  EXPECT_EQ(sizeof(BlockQ8_K), static_cast<size_t>(info(DType::Q8_K).type_size_bytes));
  EXPECT_EQ(info(DType::Q4_0).block_size, kQk32);
  EXPECT_EQ(info(DType::Q6_K).block_size, kQkK);
}

// Hand-worked f16 encodings (IEEE 754 binary16).
TEST(Half, KnownValues) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                 // halfway to 2^16 rounds to even: infinity
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);     // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);     // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie, rounds down to even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, rounds up to even
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);  // 2^-2 * (1 + 341 / 1024)
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x03ff), 1023.0f * std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::quiet_NaN()) & 0x7e00, 0x7e00);
}

// Every f16 value survives f16 -> f32 -> f16 (NaNs stay NaN).
TEST(Half, RoundTripsAllValues) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_EQ(back & 0x7c00, 0x7c00) << h;
      EXPECT_NE(back & 0x03ff, 0) << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(BFloat16, KnownValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie to even (down)
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie to even (up)
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()) & 0x7fc0, 0x7fc0);
}

}  // namespace
}  // namespace longhaul::tensor
