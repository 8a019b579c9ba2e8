// AVX2 matrix kernels with packed activations and repacked weights (see x86/avx2_gemm.h), built with the AVX2 flags
// of quant_avx2.cc. They serve calls of at least kLargeMinTokens tokens (prompt processing): a tile repacks 8 weight
// rows once and runs every token of its chunk over them, which only pays off when there are many tokens. Shorter
// calls, decode above all, keep the dot_rows kernels of quant_avx2.cc.
#include "kernels/isa_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include "kernels/x86/x86_common.h"
#include "kernels/x86/x86_quantize.h"
#include "kernels/x86/avx2_gemm.h"
#include "kernels/x86/avx2_gemm32.h"
#include "kernels/x86/avx2_gemm_k.h"
#include "kernels/x86/avx2_gemm_x16.h"
#endif

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

// pack_id values: kernels with the same id read identical packed activations. Distinct from the AVX-512 ids only
// for readability; the two sets never meet in one table.
enum PackId : int {
  kPackQ8Sum = 101,  // Q4_0, Q5_0, Q8_0: Q8_0 quants, d, sum
  kPackQ8S,          // Q4_1, Q5_1: Q8_1 quants, d, s
  kPackQ8K,          // Q4_K, Q6_K: Q8_K quants, bsums, bsum32, d
};

// Chunks of this many tokens: the chunk's activations (128 rows of n_in bytes) stay in L2 while each repacked tile
// passes over them, and the repack (a transpose per block of 8 rows) is paid once per 128 tokens.
constexpr int64_t kChunkTokens = 128;

template <class W>
GemmKernel gemm32(int pack_id, void (*pack)(const float*, int64_t, uint8_t*)) {
  GemmKernel k;
  k.pack_id = pack_id;
  k.packed_row_bytes = packed_row_bytes_act_32;
  k.pack = pack;
  k.tile = gemm_tile_avx2<Tiles32<W>>;
  k.chunk_rows_multiple = kTileRows;
  k.chunk_tokens = kChunkTokens;
  return k;
}

template <class K>
GemmKernel gemm_k() {
  GemmKernel k;
  k.pack_id = kPackQ8K;
  k.packed_row_bytes = packed_row_bytes_k_avx2;
  k.pack = pack_act_k;
  k.tile = gemm_tile_avx2<K>;
  k.chunk_rows_multiple = kTileRows;
  k.chunk_tokens = kChunkTokens;
  return k;
}

// Interleaved weights (kernels/interleave.h): the pack_id and packing every ISA's interleaved kernels share.
template <class W>
GemmKernel gemm_x16() {
  GemmKernel k;
  k.pack_id = W::kHasMin ? kPackInterleavedS : kPackInterleavedSum;
  k.packed_row_bytes = packed_row_bytes_act_32;
  k.pack = W::kHasMin ? &pack_act_32<ActExtra::kS> : &pack_act_32<ActExtra::kSum>;
  k.tile = x16_tile_avx2<W>;
  k.chunk_rows_multiple = kX16GroupRows;
  k.chunk_tokens = kChunkTokens;
  return k;
}

}  // namespace

void add_avx2_gemm_kernels(IsaKernels& k) {
  using tensor::DType;
  k.gemm_large[slot(DType::Q4_0)] = gemm32<Q4_0Weights>(kPackQ8Sum, pack_act_32<ActExtra::kSum>);
  k.gemm_large[slot(DType::Q4_1)] = gemm32<Q4_1Weights>(kPackQ8S, pack_act_32<ActExtra::kS>);
  k.gemm_large[slot(DType::Q5_0)] = gemm32<Q5_0Weights>(kPackQ8Sum, pack_act_32<ActExtra::kSum>);
  k.gemm_large[slot(DType::Q5_1)] = gemm32<Q5_1Weights>(kPackQ8S, pack_act_32<ActExtra::kS>);
  k.gemm_large[slot(DType::Q8_0)] = gemm32<Q8_0Weights>(kPackQ8Sum, pack_act_32<ActExtra::kSum>);
  k.gemm_large[slot(DType::Q4_K)] = gemm_k<Q4_KTiles>();
  k.gemm_large[slot(DType::Q6_K)] = gemm_k<Q6_KTiles>();
  k.gemm_interleaved[slot(DType::Q4_0)] = gemm_x16<Q4_0Weights>();
  k.gemm_interleaved[slot(DType::Q4_1)] = gemm_x16<Q4_1Weights>();
  k.gemm_interleaved[slot(DType::Q5_0)] = gemm_x16<Q5_0Weights>();
  k.gemm_interleaved[slot(DType::Q5_1)] = gemm_x16<Q5_1Weights>();
  k.gemm_interleaved[slot(DType::Q8_0)] = gemm_x16<Q8_0Weights>();
  for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0})
    k.interleave_at_load[slot(type)] = true;
}
#else
void add_avx2_gemm_kernels(IsaKernels&) {}
#endif

}  // namespace longhaul::kernels::detail
