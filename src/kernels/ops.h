// Float operations of the transformer block other than matrix products:
// norms, rotary embeddings, activations, softmax, and the f16 vector helpers
// attention uses over the KV cache. Shapes are given per call.
//
// ISA: the functions marked [simd] run through the table of the active ISA (FloatOps below): the scalar twins in
// namespace ref (kernels/ref/ops_ref.cc) on generic, AVX2 + F16C versions of the f16 helpers on avx2
// (ops_avx2.cc), AVX-512 versions of all of them on avx512 (ops_avx512.cc). The SIMD versions round differently
// from the twins (vector exp, other summation orders); tests/unit/kernels/ops_test.cc bounds the difference.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/attention_mask.h"
#include "kernels/isa.h"

namespace longhaul::kernels {

// [simd] y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]   (w may be null: no scale)
// The sum of squares is accumulated in double, as llama.cpp does, so long rows
// (n_embd up to a few thousand) lose no precision.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

enum class RopeStyle {
  kNormal,  // rotate adjacent pairs (x[2i], x[2i+1]): Llama-family GGUFs (Q/K rows permuted by the converter)
  kNeox,    // rotate (x[i], x[i + n_rot/2]): Gemma, Qwen, GPT-NeoX
};

// cos/sin table for one position: theta_i = pos * base^(-2i/n_rot), i < n_rot/2.
// theta is formed by repeated multiplication in float, as llama.cpp's rope cache does,
// so angles at long positions round the same way as the reference.
struct RopeAngles {
  std::vector<float> cos_sin;  // [n_positions, n_rot/2, 2]
  void compute(const int32_t* positions, int64_t n_positions, int32_t n_rot, float freq_base, float freq_scale);
};

// Rotates the first n_rot dims of each of n_heads vectors of length head_dim in place.
// x: [n_heads, head_dim]; angles: [n_rot/2, 2] for this token's position.
void rope(float* x, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float* angles, RopeStyle style);

// [simd] out[i] = silu(gate[i]) * up[i]   (SwiGLU, Shazeer 2020)
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
// [simd] out[i] = gelu_tanh(gate[i]) * up[i]   (GeGLU with the tanh approximation, as Gemma uses)
void gelu_mul(const float* gate, const float* up, float* out, int64_t n);

// [simd] In-place softmax over n values; returns the sum of exponentials before normalisation.
// Entries of -infinity get probability 0; at least one entry must be finite.
float softmax(float* x, int64_t n);

// [simd] Index of the largest of x[0..n), n >= 1: NaN entries are skipped and ties go to the lowest index; 0 when
// no entry is above -infinity. Greedy sampling's pick over a vocabulary row (49152 logits on SmolLM2), which a
// scalar compare-and-select chain took 65 us to scan, 3% of a batched decode step of 8 sequences.
int64_t argmax(const float* x, int64_t n);

void add(const float* a, const float* b, float* out, int64_t n);
void scale(float* x, float s, int64_t n);

// f16 vector helpers.
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n);     // [simd] sum a[i] * b[i]
void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n);  // [simd] y += alpha * x
void f32_to_f16_row(const float* x, uint16_t* y, int64_t n);         // [simd] round to nearest even

// [simd] Quest's bound on q . k over pages of keys (Tang et al., 2024), from per-channel key summaries lo <= hi:
//   max over queries i < n_q and logical pages s < n_sub of sum_c max(q[i][c] * lo[s][c], q[i][c] * hi[s][c])
// q: [n_q, d] f32; lo, hi: [n_sub, d] f32. -infinity when n_q or n_sub is 0. Scoring every page of a long cache is
// on every sparse decode step's path (kv/policies/page_key_summaries.h).
float key_bound(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub);

// [simd] Quest's bound for every logical page of a (layer, KV head) at once, as a decode step scores them: f16
// summaries (rounded outward by the caller) in blocks of 16 logical pages, one page per SIMD lane, so that the
// summaries stream in order, each converted value serves every query of the group, and no sum is reduced across
// lanes. Per page the work is 2 d conversions shared by the queries and 2 d fused multiply-adds per query.
//   q:      [n_q, d] f32
//   blocks: [n_blocks, 2, d, 16] f16: block b's lo[c][lane] for c < d, then its hi[c][lane]
//   bounds: [n_blocks * 16] out: bounds[16 b + lane] = max over i < n_q of P_i + N_i, where
//     P_i = sum_c qp[i][c] * hi[c][lane] and N_i = sum_c qn[i][c] * lo[c][lane], each summed in channel order by fused
//     multiply-adds from 0; qp = q, qn = 0 where q's sign bit is clear, qp = 0, qn = q where it is set.
// For lo <= hi that is sum_c max(q lo, q hi), key_bound's value, rounded differently. -infinity when n_q is 0. The
// SIMD versions give the twin's bits exactly (the same products summed in the same order).
void key_bounds_f16_blocked(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                            float* bounds);

// Attention over rows of f16 (one head's keys or values in a KV page), n_rows rows of d elements, row stride
// `stride` elements:
//   [simd] scores[r] = dot(q, k[r])                  q: [d] f32, k: [n_rows, stride] f16, scores: [n_rows]
void dot_f16_rows(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores);
//   [simd] out += sum_r p[r] * v[r]                  p: [n_rows], v: [n_rows, stride] f16, out: [d]
void accumulate_f16_rows(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d, float* out);

// [simd] One step of flash attention (Dao et al., 2022: softmax computed online, key block by key block) for n_q
// queries over a run of n_k keys and values, updating each query's running maximum m, running sum of
// exponentials l and unnormalised output o; the attention output of a query is o / l once every key has been
// seen. Start with m = -infinity, l = 0, o = 0; a query that has seen no visible key keeps m = -infinity, l = 0.
//   q: [n_q, q_stride] f32 (already scaled)
//   k: [n_k, k_stride] f16, v: [n_k, v_stride] f16
//   mask: which key each query sees (kernels/attention_mask.h: positions, window, sinks, speculative tree);
//         its arrays are indexed by the call's queries [0, n_q) and keys [0, n_k). This function aborts on a tree
//         mask without its query side (k_node set, q_node or ancestors missing); the FloatOps entries do not check.
//   m, l: [n_q]; o: [n_q, o_stride] f32, dv used
// Every kernel (the twin too) takes its softmax passes in fixed runs of keys from the call's first key, runs that
// kAttentionPassKeys is a multiple of: two calls over keys [0, s) and [s, n_k), s a multiple of it, give each query
// the bits one call over [0, n_k) gives. A tree verification step splits a page there to lay a node's branch out as
// plain decoding does (model/attention_reads.cc).
constexpr int32_t kAttentionPassKeys = 64;
void attention_update(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                      const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                      int32_t dv, float* m, float* l, float* o, int64_t o_stride);
// One KV head's cells of a KIVI-quantized page (Liu et al., 2024; kv/quantized_page.h keeps them), as attention
// reads them in place. Keys are quantized per channel over key groups of consecutive cells, values per cell over
// groups of kQuantizedValueGroup channels; an element is code * scale + zero. With 4 bits two channels share a
// byte, planar: byte c holds channel c in its low nibble and channel c + d/2 in its high one.
constexpr int32_t kQuantizedValueGroup = 32;
struct QuantizedRows {
  int32_t bits = 8;                       // 8 or 4
  const uint8_t* key_codes = nullptr;     // [n_k, dk * bits / 8]
  const uint16_t* key_params = nullptr;   // [n_groups, 2, dk] f16: the group's scale row, then its zero row
  const int32_t* group_end = nullptr;     // [n_groups] ascending: key group g holds keys [group_end[g-1], group_end[g])
  int32_t n_groups = 0;                   // group_end[n_groups - 1] >= n_k
  const uint8_t* value_codes = nullptr;   // [n_k, dv * bits / 8]
  const uint16_t* value_params = nullptr; // [n_k, ceil(dv / 32), 2] f16: scale, zero of each channel group
};
// [simd] attention_update over quantized keys and values, dequantized in registers: a decode step reads a page's
// codes (a quarter or an eighth of the f32 bytes, half or a quarter of f16's) and no f16 copy is written.
// Elements are not rounded to f16 on the way, so results differ from attention over dequantize-then-round rows by
// that rounding (about 2^-11 relative per element).
void attention_update_quantized(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv, int32_t n_k,
                                const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                int64_t o_stride);
// Asks the cache for rows [0, n_rows) of a head's f16 keys and values (strides in elements, dk / dv used), ahead of
// the attention_update that will read them. Decode walks a head's pages one call each: the kernels ask for the next
// 16-key block of their own call, and this lets the caller ask for the next page's first rows while the current
// page is worked on. A hint only: nothing is read or written.
void prefetch_attention_rows(const uint16_t* k, int64_t k_stride, const uint16_t* v, int64_t v_stride, int32_t n_rows,
                             int32_t dk, int32_t dv);

// The same for the first n_rows rows of a quantized head (kernels::QuantizedRows): their key and value codes, their
// value scales and zeros, and the first key group's scales and zeros.
void prefetch_quantized_rows(const QuantizedRows& kv, int32_t n_rows, int32_t dk, int32_t dv);

// The [simd] functions of one ISA. Tests compare every supported ISA's table with namespace ref.
struct FloatOps {
  void (*rms_norm)(const float* x, const float* w, float* y, int64_t n, float eps);
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  void (*gelu_mul)(const float* gate, const float* up, float* out, int64_t n);
  float (*softmax)(float* x, int64_t n);
  int64_t (*argmax)(const float* x, int64_t n);
  float (*dot_f16_f32)(const uint16_t* a, const float* b, int64_t n);
  void (*axpy_f16)(float alpha, const uint16_t* x, float* y, int64_t n);
  void (*f32_to_f16_row)(const float* x, uint16_t* y, int64_t n);
  void (*dot_f16_rows)(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores);
  void (*accumulate_f16_rows)(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d,
                              float* out);
  void (*attention_update)(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                           const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                           int32_t dv, float* m, float* l, float* o, int64_t o_stride);
  float (*key_bound)(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub);
  void (*key_bounds_f16_blocked)(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                                 float* bounds);
  void (*attention_update_quantized)(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv,
                                     int32_t n_k, const AttentionMask& mask, int32_t dk, int32_t dv, float* m,
                                     float* l, float* o, int64_t o_stride);
};
// The table of `isa` (which this CPU must support).
const FloatOps& float_ops(Isa isa);

namespace ref {
// Scalar twins of the [simd] functions.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
void gelu_mul(const float* gate, const float* up, float* out, int64_t n);
float softmax(float* x, int64_t n);
int64_t argmax(const float* x, int64_t n);
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n);
void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n);
void f32_to_f16_row(const float* x, uint16_t* y, int64_t n);
void dot_f16_rows(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores);
void accumulate_f16_rows(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d, float* out);
void attention_update(const float* q, int64_t q_stride, int32_t n_q, const uint16_t* k, int64_t k_stride,
                      const uint16_t* v, int64_t v_stride, int32_t n_k, const AttentionMask& mask, int32_t dk,
                      int32_t dv, float* m, float* l, float* o, int64_t o_stride);
float key_bound(const float* q, int32_t n_q, int32_t d, const float* lo, const float* hi, int32_t n_sub);
void key_bounds_f16_blocked(const float* q, int32_t n_q, int32_t d, const uint16_t* blocks, int64_t n_blocks,
                            float* bounds);
void attention_update_quantized(const float* q, int64_t q_stride, int32_t n_q, const QuantizedRows& kv, int32_t n_k,
                                const AttentionMask& mask, int32_t dk, int32_t dv, float* m, float* l, float* o,
                                int64_t o_stride);
}  // namespace ref

}  // namespace longhaul::kernels
