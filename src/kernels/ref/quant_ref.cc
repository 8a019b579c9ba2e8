// The public scalar entry points (kernels::ref in quant.h): a switch over the type onto the per-type twins.
#include "base/status.h"
#include "kernels/quant.h"
#include "kernels/ref/quant_ref.h"

namespace longhaul::kernels::ref {

namespace {
using tensor::DType;

void check_block_multiple(const char* what, DType type, int64_t n) {
  const tensor::DTypeInfo& ti = tensor::info(type);
  LH_CHECK_MSG(n % ti.block_size == 0, std::string(what) + ": n=" + std::to_string(n) + " is not a multiple of the " +
                                           ti.name + " block size " + std::to_string(ti.block_size));
}
}  // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  check_block_multiple("dequantize_row", type, n);
  switch (type) {
    case DType::F32: return dequantize_f32(src, dst, n);
    case DType::F16: return dequantize_f16(src, dst, n);
    case DType::BF16: return dequantize_bf16(src, dst, n);
    case DType::Q4_0: return dequantize_q4_0(src, dst, n);
    case DType::Q4_1: return dequantize_q4_1(src, dst, n);
    case DType::Q5_0: return dequantize_q5_0(src, dst, n);
    case DType::Q5_1: return dequantize_q5_1(src, dst, n);
    case DType::Q8_0: return dequantize_q8_0(src, dst, n);
    case DType::Q8_1: return dequantize_q8_1(src, dst, n);
    case DType::Q2_K: return dequantize_q2_k(src, dst, n);
    case DType::Q3_K: return dequantize_q3_k(src, dst, n);
    case DType::Q4_K: return dequantize_q4_k(src, dst, n);
    case DType::Q5_K: return dequantize_q5_k(src, dst, n);
    case DType::Q6_K: return dequantize_q6_k(src, dst, n);
    case DType::Q8_K: return dequantize_q8_k(src, dst, n);
  }
  LH_CHECK_MSG(false, std::string("dequantize_row: unsupported type ") + tensor::dtype_name(type));
}

void quantize_row(DType type, const float* x, void* dst, int64_t n) {
  check_block_multiple("quantize_row", type, n);
  switch (type) {
    case DType::F32: return quantize_f32(x, dst, n);
    case DType::F16: return quantize_f16(x, dst, n);
    case DType::BF16: return quantize_bf16(x, dst, n);
    case DType::Q4_0: return quantize_q4_0(x, dst, n);
    case DType::Q4_1: return quantize_q4_1(x, dst, n);
    case DType::Q5_0: return quantize_q5_0(x, dst, n);
    case DType::Q5_1: return quantize_q5_1(x, dst, n);
    case DType::Q8_0: return quantize_q8_0(x, dst, n);
    case DType::Q8_1: return quantize_q8_1(x, dst, n);
    case DType::Q8_K: return quantize_q8_k(x, dst, n);
    default: break;
  }
  LH_CHECK_MSG(false, std::string("quantize_row: no quantizer for ") + tensor::dtype_name(type));
}

float vec_dot(DType weight_type, int64_t n, const void* w_row, const void* act_row) {
  check_block_multiple("vec_dot", weight_type, n);
  switch (weight_type) {
    case DType::F32: return dot_f32_f32(n, w_row, act_row);
    case DType::F16: return dot_f16_f16(n, w_row, act_row);
    case DType::BF16: return dot_bf16_bf16(n, w_row, act_row);
    case DType::Q4_0: return dot_q4_0_q8_0(n, w_row, act_row);
    case DType::Q4_1: return dot_q4_1_q8_1(n, w_row, act_row);
    case DType::Q5_0: return dot_q5_0_q8_0(n, w_row, act_row);
    case DType::Q5_1: return dot_q5_1_q8_1(n, w_row, act_row);
    case DType::Q8_0: return dot_q8_0_q8_0(n, w_row, act_row);
    case DType::Q2_K: return dot_q2_k_q8_k(n, w_row, act_row);
    case DType::Q3_K: return dot_q3_k_q8_k(n, w_row, act_row);
    case DType::Q4_K: return dot_q4_k_q8_k(n, w_row, act_row);
    case DType::Q5_K: return dot_q5_k_q8_k(n, w_row, act_row);
    case DType::Q6_K: return dot_q6_k_q8_k(n, w_row, act_row);
    default: break;
  }
  LH_CHECK_MSG(false, std::string("vec_dot: no dot product for weight type ") + tensor::dtype_name(weight_type));
}

}  // namespace longhaul::kernels::ref
