// Public kernel entry points: argument checks, then a call through the active ISA's table.
#include "kernels/quant.h"

#include <string>

#include "base/status.h"
#include "kernels/isa_kernels.h"

namespace longhaul::kernels {

using tensor::DType;

DType vec_dot_type(DType weight_type) {
  switch (weight_type) {
    case DType::Q4_0:
    case DType::Q5_0:
    case DType::Q8_0: return DType::Q8_0;
    case DType::Q4_1:
    case DType::Q5_1: return DType::Q8_1;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return DType::Q8_K;
    case DType::F16: return DType::F16;
    case DType::BF16: return DType::BF16;
    case DType::F32: return DType::F32;
    default: break;
  }
  LH_CHECK_MSG(false, std::string("vec_dot_type: ") + tensor::dtype_name(weight_type) + " is not a weight type");
}

namespace {
void check_block_multiple(const char* what, DType type, int64_t n) {
  const tensor::DTypeInfo& ti = tensor::info(type);
  LH_CHECK_MSG(n % ti.block_size == 0, std::string(what) + ": n=" + std::to_string(n) + " is not a multiple of the " +
                                           ti.name + " block size " + std::to_string(ti.block_size));
}

const detail::IsaKernels& table_for(Isa isa) {
  LH_CHECK_MSG(cpu_supports(isa), std::string("kernels: this CPU cannot run ISA ") + isa_name(isa));
  return detail::kernels_for(isa);
}
}  // namespace

bool can_quantize(DType type) { return detail::generic_kernels().quantize[detail::slot(type)] != nullptr; }

void dequantize_row(Isa isa, DType type, const void* src, float* dst, int64_t n) {
  check_block_multiple("dequantize_row", type, n);
  table_for(isa).dequantize[detail::slot(type)](src, dst, n);
}

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  check_block_multiple("dequantize_row", type, n);
  detail::kernels_for(active_isa()).dequantize[detail::slot(type)](src, dst, n);
}

void quantize_row(Isa isa, DType type, const float* x, void* dst, int64_t n) {
  check_block_multiple("quantize_row", type, n);
  const detail::QuantizeFn fn = table_for(isa).quantize[detail::slot(type)];
  LH_CHECK_MSG(fn != nullptr, std::string("quantize_row: no quantizer for ") + tensor::dtype_name(type));
  fn(x, dst, n);
}

void quantize_row(DType type, const float* x, void* dst, int64_t n) { quantize_row(active_isa(), type, x, dst, n); }

float vec_dot(Isa isa, DType weight_type, int64_t n, const void* w_row, const void* act_row) {
  check_block_multiple("vec_dot", weight_type, n);
  const detail::DotRowsFn fn = table_for(isa).dot_rows[detail::slot(weight_type)];
  LH_CHECK_MSG(fn != nullptr,
               std::string("vec_dot: no dot product for weight type ") + tensor::dtype_name(weight_type));
  float out = 0.0f;
  fn(n, static_cast<const uint8_t*>(w_row), 0, 1, static_cast<const uint8_t*>(act_row), 0, 1, &out, 1);
  return out;
}

float vec_dot(DType weight_type, int64_t n, const void* w_row, const void* act_row) {
  return vec_dot(active_isa(), weight_type, n, w_row, act_row);
}

void get_rows(DType type, const void* w, int64_t n_cols, const int32_t* ids, int64_t n_ids, float* dst) {
  check_block_multiple("get_rows", type, n_cols);
  const detail::DequantizeFn fn = detail::kernels_for(active_isa()).dequantize[detail::slot(type)];
  const int64_t row_bytes = tensor::row_size_bytes(type, n_cols);
  const auto* rows = static_cast<const uint8_t*>(w);  // [n_rows, row_bytes]
  for (int64_t i = 0; i < n_ids; ++i) {
    LH_CHECK_MSG(ids[i] >= 0, "get_rows: negative id " + std::to_string(ids[i]));
    fn(rows + static_cast<int64_t>(ids[i]) * row_bytes, dst + i * n_cols, n_cols);
  }
}

}  // namespace longhaul::kernels
