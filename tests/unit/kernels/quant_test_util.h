// Helpers shared by the quant kernel tests: fixture loading and random rows of a given type.
#pragma once

#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "kernels/quant.h"
#include "tensor/dtype.h"

namespace longhaul::kernels::testing {

// Bytes of tests/testdata/quant/<name>; empty if the file is missing (the test then fails on the size check).
inline std::vector<uint8_t> read_fixture(const std::string& name) {
  std::ifstream in(std::string(LONGHAUL_TESTDATA_DIR) + "/quant/" + name, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Activations as a transformer produces them: roughly normal with a few larger outliers.
inline std::vector<float> random_activations(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 0; i < n; i += 97) x[i] *= 6.0f;
  return x;
}

// A row of `type` with random quants and sane (finite, modest) scales: random bytes, then every f16 scale field
// overwritten. For the types we can quantize, quantize random floats instead, which also gives realistic scales.
std::vector<uint8_t> random_weight_row(tensor::DType type, int64_t n, uint32_t seed);

// The naive matmul the kernels are checked against: each token quantized by the scalar twin, dotted with each row
// of w ([n_out, n_in] row-major) by the scalar twin: expected[t * n_out + o]. magnitude[t * n_out + o] = sum
// |w||a| over the dequantized values, the scale of a tolerance.
void naive_matmul(tensor::DType type, const std::vector<uint8_t>& w, int64_t n_out, int64_t n_in,
                  const std::vector<float>& x, int64_t n_tokens, std::vector<float>& expected,
                  std::vector<float>& magnitude);

}  // namespace longhaul::kernels::testing
