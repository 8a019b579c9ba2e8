// dequantize_row against gguf-py's dequantize (fixtures from tools/gen_quant_fixtures.py), on every ISA this CPU
// supports: the values must be identical (same products in the same order as ggml, so no rounding slack).
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/quant.h"
#include "quant_test_util.h"
#include "tensor/half.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels {
namespace {

using tensor::DType;

class DequantizeFixture : public ::testing::TestWithParam<DType> {};

TEST_P(DequantizeFixture, MatchesGgufPy) {
  const DType type = GetParam();
  const std::string name = tensor::dtype_name(type);
  const std::vector<uint8_t> blocks = testing::read_fixture(name + ".blocks");
  const std::vector<uint8_t> expected_bytes = testing::read_fixture(name + ".f32");
  ASSERT_FALSE(blocks.empty()) << "missing fixture " << name << ".blocks; run tools/gen_quant_fixtures.py";
  const int64_t n = static_cast<int64_t>(expected_bytes.size() / sizeof(float));
  ASSERT_EQ(static_cast<int64_t>(blocks.size()), tensor::row_size_bytes(type, n));
  std::vector<float> expected(n);
  std::memcpy(expected.data(), expected_bytes.data(), expected_bytes.size());

  std::vector<float> got(n);
  ref::dequantize_row(type, blocks.data(), got.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], expected[i]) << name << " ref element " << i;
  for (Isa isa : supported_isas()) {
    std::fill(got.begin(), got.end(), -1.0f);
    dequantize_row(isa, type, blocks.data(), got.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], expected[i]) << name << " " << isa_name(isa) << " element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllStorageTypes, DequantizeFixture,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                           DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                                           DType::Q5_K, DType::Q6_K),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(tensor::dtype_name(info.param));
                         });

// gguf-py has no Q8_1 / Q8_K; these are worked by hand.
TEST(Dequantize, Q8_1HandWorked) {
  tensor::BlockQ8_1 b{};
  b.d = tensor::f32_to_f16(0.5f);
  b.s = tensor::f32_to_f16(123.0f);  // s does not enter dequantization
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  float out[32];
  dequantize_row(DType::Q8_1, &b, out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 0.5f * static_cast<float>(j - 16)) << j;
}

TEST(Dequantize, Q8_KHandWorked) {
  tensor::BlockQ8_K b{};
  b.d = -0.25f;
  for (int j = 0; j < 256; ++j) b.qs[j] = static_cast<int8_t>((j % 255) - 127);
  std::vector<float> out(256);
  dequantize_row(DType::Q8_K, &b, out.data(), 256);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(out[j], -0.25f * static_cast<float>((j % 255) - 127)) << j;
}

// A Q4_0 block worked by hand: d = 2, nibbles 0..15 give (q - 8) * 2.
TEST(Dequantize, Q4_0HandWorked) {
  tensor::BlockQ4_0 b{};
  b.d = tensor::f32_to_f16(2.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];
  dequantize_row(DType::Q4_0, &b, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * static_cast<float>(j - 8));
    EXPECT_EQ(out[j + 16], 2.0f * static_cast<float>(7 - j));
  }
}

TEST(GetRows, GathersDequantizedRows) {
  const int64_t n_cols = 64;
  std::vector<uint8_t> w;
  for (int r = 0; r < 5; ++r) {
    const std::vector<uint8_t> row = testing::random_weight_row(DType::Q8_0, n_cols, 100 + r);
    w.insert(w.end(), row.begin(), row.end());
  }
  const int32_t ids[] = {4, 0, 4, 2};
  std::vector<float> got(4 * n_cols), expected(n_cols);
  get_rows(DType::Q8_0, w.data(), n_cols, ids, 4, got.data());
  const int64_t row_bytes = tensor::row_size_bytes(DType::Q8_0, n_cols);
  for (int i = 0; i < 4; ++i) {
    ref::dequantize_row(DType::Q8_0, w.data() + ids[i] * row_bytes, expected.data(), n_cols);
    for (int64_t c = 0; c < n_cols; ++c) ASSERT_EQ(got[i * n_cols + c], expected[c]) << i << "," << c;
  }
}

}  // namespace
}  // namespace longhaul::kernels
