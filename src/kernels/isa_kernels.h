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

struct IsaKernels {
  Isa isa = Isa::kGeneric;
  DotRowsFn dot_rows[kNumTypeSlots] = {};      // by weight type
  QuantizeFn quantize[kNumTypeSlots] = {};     // by destination type
  DequantizeFn dequantize[kNumTypeSlots] = {};  // by source type
};

inline int slot(tensor::DType type) { return static_cast<int>(type); }

const IsaKernels& generic_kernels();
const IsaKernels& avx2_kernels();    // quant_avx2.cc
const IsaKernels& avx512_kernels();  // quant_avx512.cc
const IsaKernels& kernels_for(Isa isa);

}  // namespace longhaul::kernels::detail
