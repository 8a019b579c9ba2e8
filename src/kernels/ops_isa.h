// Internal: the per-ISA tables of the float ops (kernels/ops.h). Each SIMD translation unit starts from the
// generic table it is handed and overrides the entries it has a faster version of.
#pragma once

#include "kernels/ops.h"

namespace longhaul::kernels::detail {

const FloatOps& avx2_float_ops(const FloatOps& generic);    // ops_avx2.cc
const FloatOps& avx512_float_ops(const FloatOps& generic);  // ops_avx512.cc

// attention_avx2.cc / attention_avx512.cc: FloatOps::attention_update of the avx2 / avx512 tables.
void attention_update_avx2(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                           const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                           int32_t dv, float* m, float* l, float* o, int64_t o_stride);
void attention_update_avx512(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                             const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                             int32_t dv, float* m, float* l, float* o, int64_t o_stride);

// The same files: FloatOps::attention_update_quantized of the avx2 / avx512 tables.
void attention_update_quantized_avx2(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                     int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l,
                                     float* o, int64_t o_stride);
void attention_update_quantized_avx512(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                       int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m,
                                       float* l, float* o, int64_t o_stride);

}  // namespace longhaul::kernels::detail
