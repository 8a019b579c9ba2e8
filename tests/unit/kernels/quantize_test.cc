// quantize_row: exact bytes against gguf-py's quantizers (fixtures) where gguf-py has one, hand-worked blocks for
// Q8_1 and Q8_K (which gguf-py cannot produce). Each check runs the scalar twin and every supported ISA.
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/quant.h"
#include "quant_test_util.h"
#include "tensor/half.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels {
namespace {

using tensor::DType;

class QuantizeFixture : public ::testing::TestWithParam<DType> {};

TEST_P(QuantizeFixture, MatchesGgufPyBytes) {
  const DType type = GetParam();
  const std::string name = tensor::dtype_name(type);
  const std::vector<uint8_t> in_bytes = testing::read_fixture("quantize_" + name + ".in.f32");
  const std::vector<uint8_t> expected = testing::read_fixture("quantize_" + name + ".bytes");
  ASSERT_FALSE(in_bytes.empty()) << "missing fixture quantize_" << name << ".in.f32";
  const int64_t n = static_cast<int64_t>(in_bytes.size() / sizeof(float));
  std::vector<float> x(n);
  std::memcpy(x.data(), in_bytes.data(), in_bytes.size());
  ASSERT_EQ(static_cast<int64_t>(expected.size()), tensor::row_size_bytes(type, n));

  std::vector<uint8_t> got(expected.size());
  ref::quantize_row(type, x.data(), got.data(), n);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expected[i]) << name << " ref byte " << i;
  for (Isa isa : supported_isas()) {
    std::fill(got.begin(), got.end(), 0xAA);
    quantize_row(isa, type, x.data(), got.data(), n);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], expected[i]) << name << " " << isa_name(isa) << " byte " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(GgufPyTypes, QuantizeFixture,
                         ::testing::Values(DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::F16,
                                           DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(tensor::dtype_name(info.param));
                         });

// Q8_1 with amax = 127 so d = 1 exactly: the quants are x rounded half away from zero (roundf), and s = d * sum.
TEST(Quantize, Q8_1HandWorked) {
  float x[32] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.49f, -100.2f};
  const int8_t expected_qs[7] = {127, 3, -3, 1, -1, 1, -100};  // remaining 25 are 0
  for (Isa isa : supported_isas()) {
    tensor::BlockQ8_1 b;
    std::memset(&b, 0xAA, sizeof(b));
    quantize_row(isa, DType::Q8_1, x, &b, 32);
    EXPECT_EQ(b.d, 0x3c00) << isa_name(isa);  // f16 1.0
    for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], j < 7 ? expected_qs[j] : 0) << isa_name(isa) << " " << j;
    EXPECT_EQ(b.s, tensor::f32_to_f16(28.0f)) << isa_name(isa);  // 127 + 3 - 3 + 1 - 1 + 1 - 100
  }
}

// Q8_K: the signed extreme maps to -127, quants round half to even, d = 1 / iscale, bsums are group sums.
TEST(Quantize, Q8_KHandWorked) {
  std::vector<float> x(512, 0.0f);
  // Block 0: extreme -127 -> iscale = 1.
  x[0] = -127.0f;
  x[1] = 2.5f;   // -> 2 (tie to even)
  x[2] = -2.5f;  // -> -2
  x[3] = 3.5f;   // -> 4
  x[17] = 127.0f;
  // Block 1: extreme +254 -> iscale = -0.5, d = -2.
  x[256] = 254.0f;  // -> -127
  x[257] = 5.0f;    // -2.5 -> -2
  x[258] = -7.0f;   // 3.5 -> 4
  x[300] = -254.0f;  // -> 127
  for (Isa isa : supported_isas()) {
    tensor::BlockQ8_K b[2];
    std::memset(b, 0xAA, sizeof(b));
    quantize_row(isa, DType::Q8_K, x.data(), b, 512);
    EXPECT_EQ(b[0].d, 1.0f) << isa_name(isa);
    EXPECT_EQ(b[0].qs[0], -127);
    EXPECT_EQ(b[0].qs[1], 2);
    EXPECT_EQ(b[0].qs[2], -2);
    EXPECT_EQ(b[0].qs[3], 4);
    EXPECT_EQ(b[0].qs[17], 127);
    EXPECT_EQ(b[0].qs[4], 0);
    EXPECT_EQ(b[0].bsums[0], -127 + 2 - 2 + 4) << isa_name(isa);
    EXPECT_EQ(b[0].bsums[1], 127);
    EXPECT_EQ(b[0].bsums[2], 0);
    EXPECT_EQ(b[1].d, -2.0f) << isa_name(isa);
    EXPECT_EQ(b[1].qs[0], -127);
    EXPECT_EQ(b[1].qs[1], -2);
    EXPECT_EQ(b[1].qs[2], 4);
    EXPECT_EQ(b[1].qs[44], 127);
    EXPECT_EQ(b[1].bsums[0], -127 - 2 + 4);
    EXPECT_EQ(b[1].bsums[2], 127);
  }
}

TEST(Quantize, AllZeroBlocksGiveZeroScaleAndQuants) {
  const std::vector<float> x(256, 0.0f);
  for (Isa isa : supported_isas()) {
    for (DType type : {DType::Q8_0, DType::Q8_1, DType::Q8_K}) {
      std::vector<uint8_t> out(tensor::row_size_bytes(type, 256), 0xAA);
      quantize_row(isa, type, x.data(), out.data(), 256);
      for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0) << tensor::dtype_name(type) << " byte " << i;
    }
  }
}

// Every SIMD quantizer gives the scalar twin's bytes on long random rows (many blocks, many magnitudes).
TEST(Quantize, IsasMatchScalarTwinOnRandomRows) {
  for (DType type : {DType::Q8_0, DType::Q8_1, DType::Q8_K, DType::F16, DType::BF16, DType::F32}) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      const int64_t n = 2048;
      const std::vector<float> x = testing::random_activations(n, seed, seed * 0.7f);
      std::vector<uint8_t> expected(tensor::row_size_bytes(type, n)), got(expected.size());
      ref::quantize_row(type, x.data(), expected.data(), n);
      for (Isa isa : supported_isas()) {
        quantize_row(isa, type, x.data(), got.data(), n);
        ASSERT_EQ(got, expected) << tensor::dtype_name(type) << " " << isa_name(isa) << " seed " << seed;
      }
    }
  }
}

}  // namespace
}  // namespace longhaul::kernels
