#include "quant_test_util.h"

#include <cmath>
#include <cstddef>
#include <cstring>

#include "tensor/half.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::testing {

std::vector<uint8_t> random_weight_row(tensor::DType type, int64_t n, uint32_t seed) {
  using tensor::DType;
  std::vector<uint8_t> row(tensor::row_size_bytes(type, n));
  if (type == DType::F32 || type == DType::F16 || type == DType::BF16) {
    const std::vector<float> x = random_activations(n, seed, 0.05f);
    ref::quantize_row(type, x.data(), row.data(), n);
    return row;
  }
  std::mt19937 rng(seed);
  for (auto& b : row) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> mag(0.001f, 0.02f);
  auto scale = [&] { return tensor::f32_to_f16(mag(rng) * (rng() & 1 ? 1.0f : -1.0f)); };
  auto positive = [&] { return tensor::f32_to_f16(mag(rng)); };
  const tensor::DTypeInfo& ti = tensor::info(type);
  for (int64_t ib = 0; ib < n / ti.block_size; ++ib) {
    uint8_t* p = row.data() + ib * ti.type_size_bytes;
    auto set = [&](size_t offset, uint16_t v) { std::memcpy(p + offset, &v, 2); };
    switch (type) {
      case DType::Q4_0: set(offsetof(tensor::BlockQ4_0, d), scale()); break;
      case DType::Q4_1:
        set(offsetof(tensor::BlockQ4_1, d), positive());
        set(offsetof(tensor::BlockQ4_1, m), scale());
        break;
      case DType::Q5_0: set(offsetof(tensor::BlockQ5_0, d), scale()); break;
      case DType::Q5_1:
        set(offsetof(tensor::BlockQ5_1, d), positive());
        set(offsetof(tensor::BlockQ5_1, m), scale());
        break;
      case DType::Q8_0: set(offsetof(tensor::BlockQ8_0, d), scale()); break;
      case DType::Q2_K:
        set(offsetof(tensor::BlockQ2_K, d), positive());
        set(offsetof(tensor::BlockQ2_K, dmin), positive());
        break;
      case DType::Q3_K: set(offsetof(tensor::BlockQ3_K, d), scale()); break;
      case DType::Q4_K:
        set(offsetof(tensor::BlockQ4_K, d), positive());
        set(offsetof(tensor::BlockQ4_K, dmin), positive());
        break;
      case DType::Q5_K:
        set(offsetof(tensor::BlockQ5_K, d), positive());
        set(offsetof(tensor::BlockQ5_K, dmin), positive());
        break;
      case DType::Q6_K: set(offsetof(tensor::BlockQ6_K, d), scale()); break;
      default: break;
    }
  }
  return row;
}

void naive_matmul(tensor::DType type, const std::vector<uint8_t>& w, int64_t n_out, int64_t n_in,
                  const std::vector<float>& x, int64_t n_tokens, std::vector<float>& expected,
                  std::vector<float>& magnitude) {
  const tensor::DType act_type = vec_dot_type(type);
  const int64_t w_row_bytes = tensor::row_size_bytes(type, n_in);
  const int64_t act_row_bytes = tensor::row_size_bytes(act_type, n_in);
  std::vector<uint8_t> act(n_tokens * act_row_bytes);
  expected.assign(n_tokens * n_out, 0.0f);
  magnitude.assign(n_tokens * n_out, 0.0f);
  std::vector<float> wf(n_in), af(n_in);
  for (int64_t t = 0; t < n_tokens; ++t) {
    ref::quantize_row(act_type, x.data() + t * n_in, act.data() + t * act_row_bytes, n_in);
    ref::dequantize_row(act_type, act.data() + t * act_row_bytes, af.data(), n_in);
    for (int64_t o = 0; o < n_out; ++o) {
      const uint8_t* w_row = w.data() + o * w_row_bytes;
      expected[t * n_out + o] = ref::vec_dot(type, n_in, w_row, act.data() + t * act_row_bytes);
      ref::dequantize_row(type, w_row, wf.data(), n_in);
      double m = 0;
      for (int64_t i = 0; i < n_in; ++i) m += std::fabs(static_cast<double>(wf[i]) * af[i]);
      magnitude[t * n_out + o] = static_cast<float>(m);
    }
  }
}

}  // namespace longhaul::kernels::testing
