// Internal: the table of per-type kernels each ISA provides. quant.cc and matmul.cc call through the table of the
// active ISA; quant_generic.cc fills it with the scalar twins and each SIMD translation unit overrides the types it
// has a faster version of.
//
// The SIMD translation units are compiled with ISA flags, so they must not define (or instantiate) inline functions
// that other translation units also use: the linker could keep their AVX copy. They keep everything in anonymous
// namespaces and export only the table getter.
#pragma once

#include <cstdint>

#include "kernels/quant.h"

namespace longhaul::kernels::detail {

// y[a * ldy + r] = dot(weight row r, activation row a) for r < n_rows, a < n_act (n_act <= kMaxActs).
//   w: [n_rows, n] with row stride w_stride_bytes; act: [n_act, n] in the paired type, row stride act_stride_bytes.
// The kernel visits each weight row once and uses it for all n_act activation rows.
using DotRowsFn = void (*)(int64_t n, const uint8_t* w, int64_t w_stride_bytes, int64_t n_rows, const uint8_t* act,
                           int64_t act_stride_bytes, int n_act, float* y, int64_t ldy);
using QuantizeFn = void (*)(const float* x, void* dst, int64_t n);
using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);

constexpr int kMaxActs = 4;        // activation rows one weight-row visit serves
constexpr int kNumTypeSlots = 31;  // DType values are GGUF ids, the largest we support is BF16 = 30

// The fast path of matmul for a weight type (AVX-512 with VBMI, see gemm_avx512.cc; AVX2 for long batches, see
// gemm_avx2.cc): the activations are quantized
// once per call into a layout of the kernel's own ("packed"), which the tile function reads with whole-vector loads.
// The packed values are those of the paired vec_dot_type (same quants, same scales), so results match the
// dot_rows path up to float rounding order.
struct GemmKernel {
  // Weights whose kernels share a pack_id read the same packed activations: one packing serves them all.
  int pack_id = 0;
  // Bytes of one packed activation row of n_in elements (a multiple of 64).
  int64_t (*packed_row_bytes)(int64_t n_in) = nullptr;
  // Packs one activation row: x [n_in] f32 -> dst [packed_row_bytes(n_in)], 64-byte aligned.
  void (*pack)(const float* x, int64_t n_in, uint8_t* dst) = nullptr;
  // y[t * ldy + r] = dot(weight row r, activation row t) for r < n_rows, t < n_tokens.
  //   w: [n_rows, n_in] with row stride w_stride_bytes; act: [n_tokens, packed_row_bytes(n_in)] packed rows;
  //   work: the calling thread's tile_work_bytes(n_in) bytes, 64-byte aligned (nullptr when tile_work_bytes is).
  void (*tile)(int64_t n_in, const uint8_t* w, int64_t w_stride_bytes, int64_t n_rows, const uint8_t* act,
               int64_t act_stride_bytes, int64_t n_tokens, float* y, int64_t ldy, uint8_t* work) = nullptr;
  // Working memory tile() needs per thread (the AMX kernels' unpacked weight tiles); nullptr: none. matmul keeps it
  // in MatmulScratch, one slice per pool thread.
  int64_t (*tile_work_bytes)(int64_t n_in) = nullptr;
  // How matmul splits a call into tile() calls: rows per chunk are a multiple of chunk_rows_multiple, and a chunk
  // covers chunk_tokens tokens (0 = all of them). The packed activation buffer holds n_tokens rounded up to
  // token_multiple rows (the extra rows zero), which tile() may read.
  int64_t chunk_rows_multiple = 4;
  int64_t chunk_tokens = 64;
  int64_t token_multiple = 1;
  // > 0: a call of at least this many tokens per thread is split between the threads by tokens, each chunk a
  // thread's share of the tokens against every row, instead of by rows. For kernels that unpack each weight once
  // per call (the AMX prompt kernels): split by rows, every chunk of rows reads all the call's activations again;
  // split by tokens, each thread reads its own once per block of unpacked weights, and unpacks every weight itself.
  // Each output is computed on its own, so results do not depend on the split. 0: by rows (and chunk_tokens).
  int64_t split_tokens_from = 0;
};

struct IsaKernels {
  Isa isa = Isa::kGeneric;
  DotRowsFn dot_rows[kNumTypeSlots] = {};      // by weight type
  QuantizeFn quantize[kNumTypeSlots] = {};     // by destination type
  DequantizeFn dequantize[kNumTypeSlots] = {};  // by source type
  GemmKernel gemm[kNumTypeSlots] = {};         // by weight type; tile == nullptr: matmul uses dot_rows
  // By weight type, for calls of at least kLargeMinTokens tokens (prompt processing); tile == nullptr: use gemm.
  GemmKernel gemm_large[kNumTypeSlots] = {};
  // By weight type, for matrices stored 16 rows interleaved (kernels/interleave.h); the generic table holds the
  // scalar twins, which every ISA without a faster kernel inherits. tile() gets whole groups: w at a group's first
  // row, n_rows a multiple of 16.
  GemmKernel gemm_interleaved[kNumTypeSlots] = {};
  // By weight type, for matrices stored interleaved, for prompt rows (MatmulRows::kPrompt) of any count; tile ==
  // nullptr: gemm_interleaved. The amx ISA's AMX-BF16 tile kernels (gemm_amx_bf16.cc).
  GemmKernel gemm_interleaved_prompt[kNumTypeSlots] = {};
  // True where this ISA's gemm_interleaved kernel beats its row-major kernels (gemm, gemm_large and dot_rows) at
  // every batch size: models store such matrices interleaved at load (prefers_interleaved).
  bool interleave_at_load[kNumTypeSlots] = {};
};

constexpr int64_t kLargeMinTokens = 32;

// pack_id of the interleaved kernels of every ISA (their packings are equal byte for byte: kernels/interleave.h),
// apart from every other kernel's.
constexpr int kPackInterleavedSum = 1001;  // Q4_0, Q5_0, Q8_0: i32 sum of each block's quants
constexpr int kPackInterleavedS = 1002;    // Q4_1, Q5_1: f32 s of each block
constexpr int kPackInterleavedK = 1003;    // Q4_K, Q6_K: Q8_K super-blocks (quants, bsums, d)
constexpr int kPackBf16 = 1004;            // every type of the AMX-BF16 kernels and their twin: x rounded to bf16

inline int slot(tensor::DType type) { return static_cast<int>(type); }

const IsaKernels& generic_kernels();
const IsaKernels& avx2_kernels();    // quant_avx2.cc
const IsaKernels& avx512_kernels();  // quant_avx512.cc
const IsaKernels& amx_kernels();     // gemm_amx.cc: avx512_kernels() plus gemm_large and gemm_interleaved_prompt
// gemm_avx512.cc: fills `k.gemm` for the types it covers when this CPU has the extra AVX-512 features those kernels
// use (VBMI byte permutes, BITALG bit shuffles); leaves it untouched otherwise.
void add_avx512_gemm_kernels(IsaKernels& k);
// interleave.cc: the scalar twins of the interleaved-layout kernels (gemm_interleaved of the generic table).
void add_interleaved_twins(IsaKernels& k);
// gemm_avx2.cc: fills `k.gemm_large` (calls of at least kLargeMinTokens tokens) for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q4_K and Q6_K with kernels that need AVX2 + FMA + F16C only; decode and short batches keep dot_rows.
void add_avx2_gemm_kernels(IsaKernels& k);
const IsaKernels& kernels_for(Isa isa);
// gemm_amx.cc calls this (gemm_amx_bf16.cc): fills `k.gemm_interleaved_prompt` with the AMX-BF16 kernels.
void add_amx_bf16_kernels(IsaKernels& k);
// gemm_bf16_twin.cc: the scalar twin of the AMX-BF16 kernels for `type` (tile == nullptr: none): the same bf16
// weights and activations, added in element order (the tile unit's own order differs by float rounding).
const GemmKernel& bf16_interleaved_twin(tensor::DType type);
// Bytes of one packed bf16 activation row of n_in elements (the kPackBf16 layout), a multiple of 64; defined in
// gemm_bf16_twin.cc, out of line, so the AMX translation unit calls the same code.
int64_t bf16_packed_row_bytes(int64_t n_in);

}  // namespace longhaul::kernels::detail
