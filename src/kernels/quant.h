// Quantized kernels: dequantization, activation quantization, quantized dot products and the threaded matrix
// multiply that the forward pass spends its time in.
//
// Weight types are paired with an activation type the way llama.cpp's CPU backend pairs them (vec_dot_type), so a
// dot product multiplies small integers and applies the scales once per block: weights are never widened to float.
//
// ISA: every kernel has a scalar twin in kernels/ref/ (namespace ref), and SIMD versions in one translation unit per
// ISA (quant_avx2.cc, quant_avx512.cc, sharing kernels/x86/*.h). The ISA is chosen once per process (active_isa()).
// SIMD coverage:
//   dot products (vec_dot, and matmul where no gemm kernel below applies): all 13 weight types (Q4_0 Q4_1 Q5_0 Q5_1
//     Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K F16 BF16 F32) on avx2 and avx512 (avx512 adds VNNI for the 32-block types);
//   matmul on avx512 with VBMI + BITALG (gemm_avx512.cc): Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q6_K read activations packed
//     once per call for 512-bit loads (kernels/x86/avx512_gemm32.h, avx512_gemm_k.h);
//   matmul on amx: prompt rows over interleaved matrices on AMX-BF16 tiles (gemm_amx_bf16.cc), calls of 32 tokens or
//     more over matrices kept in rows on AMX-INT8 tiles (gemm_amx.cc);
//   activation quantizers: Q8_0 Q8_1 Q8_K F16 (bit-identical to the scalar twins);
//   scalar on every ISA: dequantize_row / get_rows, and quantize_row for BF16 and the weight types.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/interleave.h"
#include "kernels/isa.h"
#include "tensor/dtype.h"

namespace longhaul::kernels {

// The activation type a weight type's dot product consumes: Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1,
// Q2_K..Q6_K -> Q8_K, F16 -> F16, BF16 -> BF16, F32 -> F32.
tensor::DType vec_dot_type(tensor::DType weight_type);

// dst[0, n) = the values of a row of n elements stored as `type` (any of the 15 types, Q8_1 / Q8_K included).
// n must be a multiple of the type's block size.
void dequantize_row(tensor::DType type, const void* src, float* dst, int64_t n);

// Stores x[0, n) as `type`, rounding exactly as llama.cpp's reference quantizers (quantize_row_*_ref) do, so the
// bytes are equal to theirs. Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K; the K-quant weight
// types (whose reference quantizers search for scales) abort (LH_CHECK).
void quantize_row(tensor::DType type, const float* x, void* dst, int64_t n);
// Whether quantize_row accepts `type`.
bool can_quantize(tensor::DType type);

// Dot product of a weight row with an activation row already stored as vec_dot_type(weight_type), on the active ISA.
float vec_dot(tensor::DType weight_type, int64_t n, const void* w_row, const void* act_row);
// The same on an explicit ISA (tests and benchmarks); the CPU must support it.
float vec_dot(Isa isa, tensor::DType weight_type, int64_t n, const void* w_row, const void* act_row);
void quantize_row(Isa isa, tensor::DType type, const float* x, void* dst, int64_t n);
void dequantize_row(Isa isa, tensor::DType type, const void* src, float* dst, int64_t n);

// Reused buffers of matmul(); one per calling thread. Grows to the largest call and is then reused, so a forward
// pass does not allocate after warm-up.
struct MatmulScratch {
  std::vector<uint8_t> act;   // quantized activations of every format a call needs (64-byte aligned inside)
  std::vector<uint8_t> work;  // [n_threads][work bytes] the tile kernels' per-thread working memory, if any
};

// y[t, o] = dot(W[o, :], x[t, :]) for t < n_tokens, o < n_out.
//   w: [n_out, n_in] of weight_type, row-major, row stride row_size_bytes(weight_type, n_in)
//   x: [n_tokens, n_in] f32, contiguous
//   y: [n_tokens, n_out] f32 with row stride ldy >= n_out
// The activations are quantized once per call into `scratch` (as vec_dot_type(weight_type) quantizes them; on
// AVX-512 with VBMI, into the packed layout of kernels/x86/avx512_gemm32.h with the same values). Output rows (and,
// for long batches, blocks of tokens) are split into chunks that the pool's threads claim.
void matmul(tensor::DType weight_type, const void* w, int64_t n_out, int64_t n_in, const float* x, int64_t n_tokens,
            float* y, int64_t ldy, ThreadPool& pool, MatmulScratch& scratch);
// The same on an explicit ISA (tests and benchmarks).
void matmul(Isa isa, tensor::DType weight_type, const void* w, int64_t n_out, int64_t n_in, const float* x,
            int64_t n_tokens, float* y, int64_t ldy, ThreadPool& pool, MatmulScratch& scratch);

// One product of a fused matmul: y = W x.
struct MatmulTarget {
  tensor::DType type = tensor::DType::F32;
  const void* w = nullptr;  // [n_out, n_in] of `type`, stored as `layout` says
  int64_t n_out = 0;
  float* y = nullptr;       // [n_tokens, ldy]
  int64_t ldy = 0;          // >= n_out
  WeightLayout layout = WeightLayout::kRows;
};

// What the token rows of a product are. Prompt rows may take the ISA's prompt kernels for interleaved matrices
// (amx: AMX-BF16 tiles), whose bits differ from the decode kernels'; the choice follows the kind, never the count, so
// a token's result is the same whatever else its step carries (greedy speculation and batched requests rely on it).
enum class MatmulRows : uint8_t {
  kGenerated,  // decode, verification and re-fed accepted tokens; and any caller that does not say
  kPrompt,     // a prompt's tokens (a feed of more than one token)
};

// y_i = W_i x for every target (the Q, K, V projections of a layer; its gate and up projections). Equal to one
// matmul() per target, but the activations are quantized once per distinct format, and the rows of all targets
// are split across the pool in one parallel region: one wait for the threads instead of one per matrix.
void matmul_fused(const MatmulTarget* targets, int n_targets, int64_t n_in, const float* x, int64_t n_tokens,
                  ThreadPool& pool, MatmulScratch& scratch, MatmulRows rows = MatmulRows::kGenerated);
void matmul_fused(Isa isa, const MatmulTarget* targets, int n_targets, int64_t n_in, const float* x,
                  int64_t n_tokens, ThreadPool& pool, MatmulScratch& scratch,
                  MatmulRows rows = MatmulRows::kGenerated);

// Embedding lookup: dst[i, :] = dequantize(W[ids[i], :]).
//   w: [n_rows, n_cols] of `type`; ids: [n_ids], each in [0, n_rows) (the caller checks); dst: [n_ids, n_cols]
void get_rows(tensor::DType type, const void* w, int64_t n_cols, const int32_t* ids, int64_t n_ids, float* dst);

namespace ref {
// Scalar twins of the functions above (no SIMD, no threads); the reference the SIMD kernels are tested against.
void dequantize_row(tensor::DType type, const void* src, float* dst, int64_t n);
void quantize_row(tensor::DType type, const float* x, void* dst, int64_t n);
float vec_dot(tensor::DType weight_type, int64_t n, const void* w_row, const void* act_row);
}  // namespace ref

}  // namespace longhaul::kernels
