// AVX-512 matrix kernels with packed activations (the fast path of matmul), built with VNNI, VBMI and BITALG on
// top of the AVX-512 base. Used only on CPUs that report all of them (Ice Lake and later); elsewhere matmul keeps
// the dot_rows kernels of quant_avx512.cc.
#include "kernels/isa_kernels.h"

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#if defined(__x86_64__) || defined(__i386__)
#include "kernels/x86/x86_common.h"
#include "kernels/x86/x86_quantize.h"
#include "kernels/x86/avx512_quantize.h"
#include "kernels/x86/avx512_gemm32.h"
#include "kernels/x86/avx512_gemm_k.h"
#include "kernels/x86/avx512_gemm_x16.h"
#include "kernels/x86/avx512_gemm_x16_k.h"
#endif

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

// pack_id values: kernels with the same id read identical packed activations.
enum PackId : int {
  kPackQ8Group1 = 1,    // Q4_1, Q5_1 (s of Q8_1)
  kPackQ8Group8,        // Q4_0
  kPackQ8Group16,       // Q5_0
  kPackQ8Group128,      // Q8_0
  kPackQ8KQ4K,          // Q4_K (chunks reordered to match its nibble layout)
  kPackQ8KNatural,      // Q6_K
};

using PackFn = void (*)(const float*, int64_t, uint8_t*);
using TileFn = decltype(GemmKernel::tile);

GemmKernel gemm_kernel(int pack_id, int64_t (*packed_row_bytes)(int64_t), PackFn pack, TileFn tile,
                       int64_t chunk_rows_multiple = 4) {
  GemmKernel k;
  k.pack_id = pack_id;
  k.packed_row_bytes = packed_row_bytes;
  k.pack = pack;
  k.tile = tile;
  k.chunk_rows_multiple = chunk_rows_multiple;
  return k;
}

// Interleaved weights (kernels/interleave.h) read the packing of the AVX2 long-batch kernels, with the pack_id
// every ISA's interleaved kernels share.
template <class L>
GemmKernel gemm_x16() {
  const PackFn pack = L::kHasM ? &pack_act_32_avx512<ActExtra::kS> : &pack_act_32_avx512<ActExtra::kSum>;
  return gemm_kernel(L::kHasM ? kPackInterleavedS : kPackInterleavedSum, packed_row_bytes_act_32, pack, x16_tile<L>,
                     kX16Rows);
}

// Interleaved K-quants read the natural-order Q8_K packing under the pack_id every ISA's interleaved K kernels share.
template <class L>
GemmKernel gemm_x16_k() {
  return gemm_kernel(kPackInterleavedK, packed_row_bytes_k, pack_q8_k<kNaturalOrder>, x16_tile<L>, kX16Rows);
}

template <class U>
GemmKernel gemm_k(int pack_id) {
  return gemm_kernel(pack_id, packed_row_bytes_k, pack_q8_k<U::kOrder>, gemm_k_tile<U>);
}

template <class G>
GemmKernel gemm32(int pack_id, PackFn pack) {
  return gemm_kernel(pack_id, packed_row_bytes_32, pack, gemm32_tile<G>);
}

bool cpu_has_gemm_features() {
  return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bitalg") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
}

}  // namespace

void add_avx512_gemm_kernels(IsaKernels& k) {
  if (!cpu_has_gemm_features()) return;
  using tensor::DType;
  k.gemm[slot(DType::Q4_0)] = gemm32<Q4_0Group>(kPackQ8Group8, pack_q8_group<8>);
  k.gemm[slot(DType::Q4_1)] = gemm32<Q4_1Group>(kPackQ8Group1, pack_q8_group<0>);
  k.gemm[slot(DType::Q5_0)] = gemm32<Q5_0Group>(kPackQ8Group16, pack_q8_group<16>);
  k.gemm[slot(DType::Q5_1)] = gemm32<Q5_1Group>(kPackQ8Group1, pack_q8_group<0>);
  k.gemm[slot(DType::Q8_0)] = gemm32<Q8Group>(kPackQ8Group128, pack_q8_group<128>);
  k.gemm[slot(DType::Q4_K)] = gemm_k<Q4_KUnpack>(kPackQ8KQ4K);
  k.gemm[slot(DType::Q6_K)] = gemm_k<Q6_KUnpack>(kPackQ8KNatural);
  k.gemm_interleaved[slot(DType::Q4_0)] = gemm_x16<X16Q4_0>();
  k.gemm_interleaved[slot(DType::Q4_1)] = gemm_x16<X16Q4_1>();
  k.gemm_interleaved[slot(DType::Q5_0)] = gemm_x16<X16Q5_0>();
  k.gemm_interleaved[slot(DType::Q5_1)] = gemm_x16<X16Q5_1>();
  k.gemm_interleaved[slot(DType::Q8_0)] = gemm_x16<X16Q8_0>();
  k.gemm_interleaved[slot(DType::Q4_K)] = gemm_x16_k<X16Q4_K>();
  k.gemm_interleaved[slot(DType::Q6_K)] = gemm_x16_k<X16Q6_K>();
  for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q6_K})
    k.interleave_at_load[slot(type)] = true;
}
#else
void add_avx512_gemm_kernels(IsaKernels&) {}
#endif

}  // namespace longhaul::kernels::detail
