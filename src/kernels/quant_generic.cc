// The generic (scalar) kernel table: every type, built from the scalar twins in kernels/ref/.
#include "base/status.h"
#include "kernels/isa_kernels.h"
#include "kernels/ref/quant_ref.h"

namespace longhaul::kernels {
namespace detail {

namespace {
using tensor::DType;

using DotFn = float (*)(int64_t n, const void* w, const void* a);

// A weight-row x activation-row tile from a one-pair dot product.
template <DotFn kDot>
void dot_rows_scalar(int64_t n, const uint8_t* w, int64_t w_stride_bytes, int64_t n_rows, const uint8_t* act,
                     int64_t act_stride_bytes, int n_act, float* y, int64_t ldy) {
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int a = 0; a < n_act; ++a) y[a * ldy + r] = kDot(n, w + r * w_stride_bytes, act + a * act_stride_bytes);
  }
}

IsaKernels make_generic() {
  IsaKernels k;
  k.isa = Isa::kGeneric;
  k.dot_rows[slot(DType::F32)] = dot_rows_scalar<ref::dot_f32_f32>;
  k.dot_rows[slot(DType::F16)] = dot_rows_scalar<ref::dot_f16_f16>;
  k.dot_rows[slot(DType::BF16)] = dot_rows_scalar<ref::dot_bf16_bf16>;
  k.dot_rows[slot(DType::Q4_0)] = dot_rows_scalar<ref::dot_q4_0_q8_0>;
  k.dot_rows[slot(DType::Q4_1)] = dot_rows_scalar<ref::dot_q4_1_q8_1>;
  k.dot_rows[slot(DType::Q5_0)] = dot_rows_scalar<ref::dot_q5_0_q8_0>;
  k.dot_rows[slot(DType::Q5_1)] = dot_rows_scalar<ref::dot_q5_1_q8_1>;
  k.dot_rows[slot(DType::Q8_0)] = dot_rows_scalar<ref::dot_q8_0_q8_0>;
  k.dot_rows[slot(DType::Q2_K)] = dot_rows_scalar<ref::dot_q2_k_q8_k>;
  k.dot_rows[slot(DType::Q3_K)] = dot_rows_scalar<ref::dot_q3_k_q8_k>;
  k.dot_rows[slot(DType::Q4_K)] = dot_rows_scalar<ref::dot_q4_k_q8_k>;
  k.dot_rows[slot(DType::Q5_K)] = dot_rows_scalar<ref::dot_q5_k_q8_k>;
  k.dot_rows[slot(DType::Q6_K)] = dot_rows_scalar<ref::dot_q6_k_q8_k>;

  k.quantize[slot(DType::F32)] = ref::quantize_f32;
  k.quantize[slot(DType::F16)] = ref::quantize_f16;
  k.quantize[slot(DType::BF16)] = ref::quantize_bf16;
  k.quantize[slot(DType::Q4_0)] = ref::quantize_q4_0;
  k.quantize[slot(DType::Q4_1)] = ref::quantize_q4_1;
  k.quantize[slot(DType::Q5_0)] = ref::quantize_q5_0;
  k.quantize[slot(DType::Q5_1)] = ref::quantize_q5_1;
  k.quantize[slot(DType::Q8_0)] = ref::quantize_q8_0;
  k.quantize[slot(DType::Q8_1)] = ref::quantize_q8_1;
  k.quantize[slot(DType::Q8_K)] = ref::quantize_q8_k;

  k.dequantize[slot(DType::F32)] = ref::dequantize_f32;
  k.dequantize[slot(DType::F16)] = ref::dequantize_f16;
  k.dequantize[slot(DType::BF16)] = ref::dequantize_bf16;
  k.dequantize[slot(DType::Q4_0)] = ref::dequantize_q4_0;
  k.dequantize[slot(DType::Q4_1)] = ref::dequantize_q4_1;
  k.dequantize[slot(DType::Q5_0)] = ref::dequantize_q5_0;
  k.dequantize[slot(DType::Q5_1)] = ref::dequantize_q5_1;
  k.dequantize[slot(DType::Q8_0)] = ref::dequantize_q8_0;
  k.dequantize[slot(DType::Q8_1)] = ref::dequantize_q8_1;
  k.dequantize[slot(DType::Q2_K)] = ref::dequantize_q2_k;
  k.dequantize[slot(DType::Q3_K)] = ref::dequantize_q3_k;
  k.dequantize[slot(DType::Q4_K)] = ref::dequantize_q4_k;
  k.dequantize[slot(DType::Q5_K)] = ref::dequantize_q5_k;
  k.dequantize[slot(DType::Q6_K)] = ref::dequantize_q6_k;
  k.dequantize[slot(DType::Q8_K)] = ref::dequantize_q8_k;
  add_interleaved_twins(k);
  return k;
}
}  // namespace

const IsaKernels& generic_kernels() {
  static const IsaKernels table = make_generic();
  return table;
}

const IsaKernels& kernels_for(Isa isa) {
  switch (isa) {
    case Isa::kGeneric: return generic_kernels();
    case Isa::kAvx2: return avx2_kernels();
    case Isa::kAvx512: return avx512_kernels();
    case Isa::kAmx: return amx_kernels();
  }
  LH_CHECK_MSG(false, "unknown Isa " + std::to_string(static_cast<int>(isa)));
}

}  // namespace detail

}  // namespace longhaul::kernels
