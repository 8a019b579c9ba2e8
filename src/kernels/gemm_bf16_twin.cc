// The scalar twin of the AMX-BF16 prompt kernels (gemm_amx_bf16.cc), for their tests: each weight row is read back
// from the interleaved layout, dequantized by the scalar reference, rounded to bf16, and each token's row of
// activations rounded to bf16 (nearest even) is multiplied into it in element order.
//
// The two agree up to the order of float additions only: the tile unit sums a tile's products in an order and
// precision of its own (no sequential, pairwise or per-tile order reproduces it), a few units in the last place
// apart. The bf16 weights are equal bit for bit: the kernel's fused (u * scale + bias) rounds once, as the
// reference's dequantizing does (where it multiplies first, that product is exact).
#include <string>
#include <vector>

#include "kernels/interleave.h"
#include "kernels/isa_kernels.h"
#include "tensor/half.h"

namespace longhaul::kernels::detail {

int64_t bf16_packed_row_bytes(int64_t n_in) { return (n_in * 2 + 63) / 64 * 64; }

namespace {

void pack_bf16_twin(const float* x, int64_t n_in, uint8_t* dst) {
  auto* out = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n_in; ++i) out[i] = tensor::f32_to_bf16(x[i]);
  for (int64_t i = n_in; i < bf16_packed_row_bytes(n_in) / 2; ++i) out[i] = 0;
}

template <tensor::DType kType>
void bf16_twin_tile(int64_t n_in, const uint8_t* w, int64_t /*w_stride*/, int64_t n_rows, const uint8_t* act,
                    int64_t act_stride, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  const DequantizeFn dequantize = generic_kernels().dequantize[slot(kType)];
  std::vector<uint8_t> row_bytes(static_cast<size_t>(tensor::row_size_bytes(kType, n_in)));
  std::vector<float> row(static_cast<size_t>(n_in));
  for (int64_t r = 0; r < n_rows; ++r) {
    interleaved_row(kType, w, n_in, r, row_bytes.data());
    dequantize(row_bytes.data(), row.data(), n_in);
    for (float& v : row) v = tensor::bf16_to_f32(tensor::f32_to_bf16(v));
    for (int64_t t = 0; t < n_tokens; ++t) {
      const auto* a = reinterpret_cast<const uint16_t*>(act + t * act_stride);
      float acc = 0.0f;
      for (int64_t i = 0; i < n_in; ++i) acc += tensor::bf16_to_f32(a[i]) * row[i];
      y[t * ldy + r] = acc;
    }
  }
}

template <tensor::DType kType>
GemmKernel twin() {
  GemmKernel k;
  k.pack_id = kPackBf16;
  k.packed_row_bytes = bf16_packed_row_bytes;
  k.pack = pack_bf16_twin;
  k.tile = bf16_twin_tile<kType>;
  k.chunk_rows_multiple = 32;
  k.chunk_tokens = 0;
  k.token_multiple = 16;
  return k;
}

}  // namespace

const GemmKernel& bf16_interleaved_twin(tensor::DType type) {
  using tensor::DType;
  static const GemmKernel kNone{};
  static const GemmKernel kQ4_0 = twin<DType::Q4_0>(), kQ4_1 = twin<DType::Q4_1>(), kQ5_0 = twin<DType::Q5_0>(),
                          kQ5_1 = twin<DType::Q5_1>(), kQ8_0 = twin<DType::Q8_0>(), kQ4_K = twin<DType::Q4_K>(),
                          kQ6_K = twin<DType::Q6_K>();
  switch (type) {
    case DType::Q4_0: return kQ4_0;
    case DType::Q4_1: return kQ4_1;
    case DType::Q5_0: return kQ5_0;
    case DType::Q5_1: return kQ5_1;
    case DType::Q8_0: return kQ8_0;
    case DType::Q4_K: return kQ4_K;
    case DType::Q6_K: return kQ6_K;
    default: return kNone;
  }
}

}  // namespace longhaul::kernels::detail
