// Internal: x86 dot products of F32 / F16 / BF16 weights with activations of the same type, and the x86 activation
// quantizers (bit-identical to the scalar twins). Included by the per-ISA translation units after x86_common.h.
#pragma once

#include "kernels/x86/x86_common.h"
#include "kernels/x86/x86_quantize.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels::detail {
namespace {

// 8 floats from element i of a row of the given type.
struct F32Load {
  static __m256 load(const uint8_t* row, int64_t i) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  }
  static float scalar(const uint8_t* row, int64_t i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct F16Load {
  static __m256 load(const uint8_t* row, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  }
  static float scalar(const uint8_t* row, int64_t i) {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return f16_scalar(h);
  }
};
struct BF16Load {
  static __m256 load(const uint8_t* row, int64_t i) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float scalar(const uint8_t* row, int64_t i) {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <class L, int NA>
void dot_rows_float_n(int64_t n, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                      int64_t act_stride, float* y, int64_t ldy) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* wr = w + r * w_stride;
    __m256 acc[NA];
    for (int a = 0; a < NA; ++a) acc[a] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 wv = L::load(wr, i);
      for (int a = 0; a < NA; ++a) acc[a] = _mm256_fmadd_ps(wv, L::load(act + a * act_stride, i), acc[a]);
    }
    for (int a = 0; a < NA; ++a) {
      float sum = hsum_ps(acc[a]);
      for (int64_t j = i; j < n; ++j) sum += L::scalar(wr, j) * L::scalar(act + a * act_stride, j);
      y[a * ldy + r] = sum;
    }
  }
}

template <class L>
void dot_rows_float(int64_t n, const uint8_t* w, int64_t w_stride, int64_t n_rows, const uint8_t* act,
                    int64_t act_stride, int n_act, float* y, int64_t ldy) {
  switch (n_act) {
    case 1: return dot_rows_float_n<L, 1>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    case 2: return dot_rows_float_n<L, 2>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    case 3: return dot_rows_float_n<L, 3>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
    default: return dot_rows_float_n<L, 4>(n, w, w_stride, n_rows, act, act_stride, y, ldy);
  }
}

// ---- Activation quantizers (block helpers in x86_quantize.h).

void quantize_q8_0_x86(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ8_0*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    int32_t sum;
    blocks[ib].d = f16_from(quantize_block_32(x + ib * tensor::kQk32, blocks[ib].qs, &sum));
  }
}

void quantize_q8_1_x86(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ8_1*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    int32_t sum;
    const float d = quantize_block_32(x + ib * tensor::kQk32, blocks[ib].qs, &sum);
    blocks[ib].d = f16_from(d);
    blocks[ib].s = f16_from(static_cast<float>(sum) * d);
  }
}

void quantize_q8_k_x86(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ8_K*>(dst);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) quantize_block_q8_k(x + ib * tensor::kQkK, blocks[ib]);
}

void quantize_f16_x86(const float* x, void* dst, int64_t n) {
  auto* h = static_cast<uint16_t*>(dst);  // [n]
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) h[i] = f16_from(x[i]);
}

}  // namespace
}  // namespace longhaul::kernels::detail
