// Internal: the per-ISA tables of the float ops (kernels/ops.h). Each SIMD translation unit starts from the
// generic table it is handed and overrides the entries it has a faster version of.
#pragma once

#include <algorithm>
#include <cmath>

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
// The avx512 kernel without its requests for the next block's rows, for CPUs whose hardware prefetcher streams
// a head's pages better alone (avx512_float_ops picks it once, on AMD); the same results bit for bit.
void attention_update_avx512_streamed(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k,
                                      int64_t k_stride, const uint16_t* v, int64_t v_stride, int32_t n_k,
                                      const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                      int64_t o_stride);

// The same files: FloatOps::attention_update_quantized of the avx2 / avx512 tables.
void attention_update_quantized_avx2(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                     int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l,
                                     float* o, int64_t o_stride);
void attention_update_quantized_avx512(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                       int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m,
                                       float* l, float* o, int64_t o_stride);

// FloatOps::key_bounds_f16_blocked of the SIMD tables: this driver splits the queries by sign (the twin's qp and
// qn) in groups of up to four and hands each group to by_count[group size - 1], an ISA's kernel over every block
// (combine: the maximum with what an earlier group stored). Heads of more than kBlockedBoundMaxDim dimensions take
// the twin (the split lives on the stack).
using BlockedBoundsGroup = void (*)(const float* qp, const float* qn, int32_t d, const uint16_t* blocks,
                                    int64_t n_blocks, float* bounds, bool combine);
constexpr int32_t kBlockedBoundMaxDim = 512;
inline void key_bounds_f16_blocked_in_groups(const BlockedBoundsGroup (&by_count)[4], const float* q, int32_t n_q,
                                             int32_t d, const uint16_t* blocks, int64_t n_blocks, float* bounds) {
  if (n_q <= 0 || d > kBlockedBoundMaxDim) {
    ref::key_bounds_f16_blocked(q, n_q, d, blocks, n_blocks, bounds);
    return;
  }
  alignas(64) float qp[4 * kBlockedBoundMaxDim], qn[4 * kBlockedBoundMaxDim];  // [4, d]
  for (int32_t i0 = 0; i0 < n_q; i0 += 4) {
    const int32_t nq = std::min(4, n_q - i0);
    for (int32_t i = 0; i < nq; ++i)
      for (int32_t c = 0; c < d; ++c) {
        const float x = q[static_cast<int64_t>(i0 + i) * d + c];
        const bool negative = std::signbit(x);
        qp[i * d + c] = negative ? 0.0f : x;
        qn[i * d + c] = negative ? x : 0.0f;
      }
    by_count[nq - 1](qp, qn, d, blocks, n_blocks, bounds, /*combine=*/i0 > 0);
  }
}

}  // namespace longhaul::kernels::detail
