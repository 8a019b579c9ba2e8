// AVX-512 kernel table (built with -mavx512f/bw/dq/vl/vnni): the x86 kernels of quant_avx2.cc, with the 32-block
// dot products on VNNI (_mm256_dpbusd_epi32: one instruction for 32 byte products, no i16 saturation) and the
// bit-to-byte expansion of Q5_0 / Q5_1 on mask registers.
#define LH_X86_VNNI 1
#define LH_X86_AVX512 1

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
IsaKernels make_avx512() {
  using tensor::DType;
  IsaKernels k = generic_kernels();
  k.isa = Isa::kAvx512;
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
  add_avx512_gemm_kernels(k);
  return k;
}
}  // namespace

const IsaKernels& avx512_kernels() {
  static const IsaKernels table = make_avx512();
  return table;
}
#else
// Not an x86 build: cpu_supports() never reports this ISA, so the table is never used; it is the generic one.
const IsaKernels& avx512_kernels() { return generic_kernels(); }
#endif

}  // namespace longhaul::kernels::detail
