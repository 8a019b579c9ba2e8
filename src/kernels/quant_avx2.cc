// AVX2 kernel table (built with -mavx2 -mfma -mf16c -mbmi2): SIMD dot products for every weight type and SIMD
// activation quantizers for Q8_0 / Q8_1 / Q8_K / F16; dequantization stays scalar (it runs for embedding rows only).
// Long batches (prompt processing) of the common weight types take the matrix kernels of gemm_avx2.cc.
#include "kernels/isa_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include "kernels/x86/x86_common.h"
#include "kernels/x86/x86_dot32.h"
#include "kernels/x86/x86_dot_k.h"
#include "kernels/x86/x86_float.h"
#endif

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {
IsaKernels make_avx2() {
  using tensor::DType;
  IsaKernels k = generic_kernels();
  k.isa = Isa::kAvx2;
  k.dot_rows[slot(DType::Q4_0)] = dot_rows_32<Q4_0Kernel>;
  k.dot_rows[slot(DType::Q4_1)] = dot_rows_32<Q4_1Kernel>;
  k.dot_rows[slot(DType::Q5_0)] = dot_rows_32<Q5_0Kernel>;
  k.dot_rows[slot(DType::Q5_1)] = dot_rows_32<Q5_1Kernel>;
  k.dot_rows[slot(DType::Q8_0)] = dot_rows_32<Q8_0Kernel>;
  k.dot_rows[slot(DType::Q2_K)] = dot_rows_k<Q2_KKernel>;
  k.dot_rows[slot(DType::Q3_K)] = dot_rows_k<Q3_KKernel>;
  k.dot_rows[slot(DType::Q4_K)] = dot_rows_k<Q4_KKernel>;
  k.dot_rows[slot(DType::Q5_K)] = dot_rows_k<Q5_KKernel>;
  k.dot_rows[slot(DType::Q6_K)] = dot_rows_k<Q6_KKernel>;
  k.dot_rows[slot(DType::F32)] = dot_rows_float<F32Load>;
  k.dot_rows[slot(DType::F16)] = dot_rows_float<F16Load>;
  k.dot_rows[slot(DType::BF16)] = dot_rows_float<BF16Load>;
  k.quantize[slot(DType::Q8_0)] = quantize_q8_0_x86;
  k.quantize[slot(DType::Q8_1)] = quantize_q8_1_x86;
  k.quantize[slot(DType::Q8_K)] = quantize_q8_k_x86;
  k.quantize[slot(DType::F16)] = quantize_f16_x86;
  add_avx2_gemm_kernels(k);
  return k;
}
}  // namespace

const IsaKernels& avx2_kernels() {
  static const IsaKernels table = make_avx2();
  return table;
}
#else
// Not an x86 build: cpu_supports() never reports this ISA, so the table is never used; it is the generic one.
const IsaKernels& avx2_kernels() { return generic_kernels(); }
#endif

}  // namespace longhaul::kernels::detail
