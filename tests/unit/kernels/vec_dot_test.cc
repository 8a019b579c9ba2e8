// vec_dot: every ISA against the scalar twin, and the scalar twin against a float dot of the dequantized operands.
//
// Tolerances are relative to M = sum_i |w_i| |a_i| (the dequantized magnitudes), the natural scale of a dot
// product's rounding error:
//   ISA vs scalar twin: 1e-5 M for quantized types (per-block integer sums are exact in both; only the order of the
//     float accumulation of block results and FMA use differ), 1e-4 M for F32/F16/BF16 (float vs double sums).
//   scalar twin vs dequantized float dot: 1e-5 M, except 2e-3 M for Q4_1 / Q5_1, whose Q8_1 partner carries
//     s = f16(d * sum q) while its dequantized values use f16(d): both f16 roundings (2^-11 each) enter the
//     offset term.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/quant.h"
#include "quant_test_util.h"

namespace longhaul::kernels {
namespace {

using tensor::DType;

const DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                              DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K,
                              DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_float_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

struct DotCase {
  std::vector<uint8_t> w;    // [n] of the weight type
  std::vector<uint8_t> act;  // [n] of vec_dot_type
  double magnitude = 0.0;    // sum |w_i| |a_i|
  double float_dot = 0.0;    // sum w_i a_i over dequantized values, in double
};

DotCase make_case(DType type, int64_t n, uint32_t seed) {
  DotCase c;
  c.w = testing::random_weight_row(type, n, seed);
  const DType act_type = vec_dot_type(type);
  const std::vector<float> x = testing::random_activations(n, seed * 7 + 1);
  c.act.resize(tensor::row_size_bytes(act_type, n));
  ref::quantize_row(act_type, x.data(), c.act.data(), n);
  std::vector<float> wf(n), af(n);
  ref::dequantize_row(type, c.w.data(), wf.data(), n);
  ref::dequantize_row(act_type, c.act.data(), af.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    c.magnitude += std::fabs(static_cast<double>(wf[i]) * af[i]);
    c.float_dot += static_cast<double>(wf[i]) * af[i];
  }
  return c;
}

class VecDot : public ::testing::TestWithParam<DType> {};

TEST_P(VecDot, EveryIsaMatchesScalarTwin) {
  const DType type = GetParam();
  const double tol = is_float_type(type) ? 1e-4 : 1e-5;
  // 9216 = 288 blocks of 32: the SIMD kernels convert activation scales in segments of 256 blocks.
  for (int64_t n : {256, 2048, 4096 + 512, 9216}) {
    for (uint32_t seed = 1; seed <= 3; ++seed) {
      const DotCase c = make_case(type, n, seed);
      const float expected = ref::vec_dot(type, n, c.w.data(), c.act.data());
      for (Isa isa : supported_isas()) {
        const float got = vec_dot(isa, type, n, c.w.data(), c.act.data());
        EXPECT_NEAR(got, expected, tol * c.magnitude)
            << tensor::dtype_name(type) << " " << isa_name(isa) << " n=" << n << " seed=" << seed;
      }
    }
  }
}

TEST_P(VecDot, ScalarTwinMatchesDequantizedFloatDot) {
  const DType type = GetParam();
  const double tol = (type == DType::Q4_1 || type == DType::Q5_1) ? 2e-3 : 1e-5;
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    const int64_t n = 1024;
    const DotCase c = make_case(type, n, seed);
    ASSERT_GT(c.magnitude, 0.0);
    const float got = ref::vec_dot(type, n, c.w.data(), c.act.data());
    EXPECT_NEAR(got, c.float_dot, tol * c.magnitude) << tensor::dtype_name(type) << " seed=" << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, VecDot, ::testing::ValuesIn(kWeightTypes),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(tensor::dtype_name(info.param));
                         });

// Hand-worked: Q8_0 x Q8_0 with d = 1 on both sides is the integer dot product.
TEST(VecDotHandWorked, Q8_0Integers) {
  std::vector<float> w(64), a(64);
  double expected = 0;
  for (int i = 0; i < 64; ++i) {
    w[i] = static_cast<float>((i * 37) % 255 - 127);
    a[i] = static_cast<float>((i * 11) % 255 - 127);
    expected += static_cast<double>(w[i]) * a[i];
  }
  w[0] = a[0] = 127;  // amax 127 in each block: d = 1
  w[32] = a[32] = -127;
  expected = 0;
  for (int i = 0; i < 64; ++i) expected += static_cast<double>(w[i]) * a[i];
  std::vector<uint8_t> wq(tensor::row_size_bytes(DType::Q8_0, 64)), aq(wq.size());
  ref::quantize_row(DType::Q8_0, w.data(), wq.data(), 64);
  ref::quantize_row(DType::Q8_0, a.data(), aq.data(), 64);
  for (Isa isa : supported_isas()) EXPECT_EQ(vec_dot(isa, DType::Q8_0, 64, wq.data(), aq.data()), expected);
}

TEST(VecDotType, PairsAsLlamaCpp) {
  EXPECT_EQ(vec_dot_type(DType::Q4_0), DType::Q8_0);
  EXPECT_EQ(vec_dot_type(DType::Q5_0), DType::Q8_0);
  EXPECT_EQ(vec_dot_type(DType::Q8_0), DType::Q8_0);
  EXPECT_EQ(vec_dot_type(DType::Q4_1), DType::Q8_1);
  EXPECT_EQ(vec_dot_type(DType::Q5_1), DType::Q8_1);
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    EXPECT_EQ(vec_dot_type(t), DType::Q8_K);
  }
  EXPECT_EQ(vec_dot_type(DType::F16), DType::F16);
  EXPECT_EQ(vec_dot_type(DType::BF16), DType::BF16);
  EXPECT_EQ(vec_dot_type(DType::F32), DType::F32);
}

}  // namespace
}  // namespace longhaul::kernels
