// Scalar dequantization of every storage type. The arithmetic (which products are formed, in which order) follows
// ggml's dequantize_row_* so that results are bit-identical to llama.cpp and gguf-py, which the tests require.
#include <cstring>

#include "kernels/ref/quant_ref.h"
#include "tensor/half.h"

namespace longhaul::kernels::ref {

using tensor::bf16_to_f32;
using tensor::f16_to_f32;

void dequantize_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

void dequantize_f16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);  // [n]
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(h[i]);
}

void dequantize_bf16(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const uint16_t*>(src);  // [n]
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(b[i]);
}

void dequantize_q4_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ4_0*>(src);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, dst += tensor::kQk32) {
    const tensor::BlockQ4_0& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>((b.qs[j] & 0xf) - 8) * d;
      dst[j + 16] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ4_1*>(src);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, dst += tensor::kQk32) {
    const tensor::BlockQ4_1& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    const float m = f16_to_f32(b.m);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(b.qs[j] & 0xf) * d + m;
      dst[j + 16] = static_cast<float>(b.qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ5_0*>(src);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, dst += tensor::kQk32) {
    const tensor::BlockQ5_0& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    uint32_t qh;
    std::memcpy(&qh, b.qh, sizeof(qh));
    for (int j = 0; j < 16; ++j) {
      const int high0 = ((qh >> j) & 1) << 4;
      const int high1 = ((qh >> (j + 16)) & 1) << 4;
      dst[j] = static_cast<float>(((b.qs[j] & 0xf) | high0) - 16) * d;
      dst[j + 16] = static_cast<float>(((b.qs[j] >> 4) | high1) - 16) * d;
    }
  }
}

void dequantize_q5_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ5_1*>(src);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, dst += tensor::kQk32) {
    const tensor::BlockQ5_1& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    const float m = f16_to_f32(b.m);
    uint32_t qh;
    std::memcpy(&qh, b.qh, sizeof(qh));
    for (int j = 0; j < 16; ++j) {
      const int high0 = ((qh >> j) & 1) << 4;
      const int high1 = ((qh >> (j + 16)) & 1) << 4;
      dst[j] = static_cast<float>((b.qs[j] & 0xf) | high0) * d + m;
      dst[j + 16] = static_cast<float>((b.qs[j] >> 4) | high1) * d + m;
    }
  }
}

void dequantize_q8_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ8_0*>(src);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, dst += tensor::kQk32) {
    const float d = f16_to_f32(blocks[ib].d);
    for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(blocks[ib].qs[j]) * d;
  }
}

void dequantize_q8_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ8_1*>(src);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, dst += tensor::kQk32) {
    const float d = f16_to_f32(blocks[ib].d);
    for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(blocks[ib].qs[j]) * d;
  }
}

void dequantize_q2_k(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ2_K*>(src);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    const tensor::BlockQ2_K& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    const float dmin = f16_to_f32(b.dmin);
    // Each 128-element half reads 32 bytes of qs four times, two bits at a time; each pass is two groups of 16.
    int group = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b.qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part, ++group) {
          const uint8_t sc = b.scales[group];
          const float dl = d * static_cast<float>(sc & 0xf);
          const float ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) *dst++ = dl * static_cast<float>((q[16 * part + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dequantize_q3_k(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ3_K*>(src);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    const tensor::BlockQ3_K& b = blocks[ib];
    const float d_all = f16_to_f32(b.d);
    int8_t scales[16];
    q3k_scales(b.scales, scales);
    // Same traversal as Q2_K; hmask bit `mask_bit` of byte l says the element is NOT lowered by 4.
    int group = 0;
    int mask_bit = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b.qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2, ++mask_bit) {
        for (int part = 0; part < 2; ++part, ++group) {
          const float dl = d_all * static_cast<float>(scales[group]);
          for (int l = 0; l < 16; ++l) {
            const int low = (q[16 * part + l] >> shift) & 3;
            const int sub = (b.hmask[16 * part + l] >> mask_bit) & 1 ? 0 : 4;
            *dst++ = dl * static_cast<float>(low - sub);
          }
        }
      }
    }
  }
}

void dequantize_q4_k(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ4_K*>(src);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    const tensor::BlockQ4_K& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    const float dmin = f16_to_f32(b.dmin);
    // 32 bytes of qs hold two groups of 32: low nibbles first, then high nibbles.
    for (int pair = 0; pair < 4; ++pair) {
      const uint8_t* q = b.qs + 32 * pair;
      uint8_t sc, m;
      k4_scale_min(2 * pair, b.scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      k4_scale_min(2 * pair + 1, b.scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *dst++ = d1 * static_cast<float>(q[l] & 0xf) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dequantize_q5_k(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ5_K*>(src);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    const tensor::BlockQ5_K& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    const float dmin = f16_to_f32(b.dmin);
    // As Q4_K; the fifth bit of group g is bit g of the qh byte at the same position l.
    for (int pair = 0; pair < 4; ++pair) {
      const uint8_t* q = b.qs + 32 * pair;
      uint8_t sc, m;
      k4_scale_min(2 * pair, b.scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      k4_scale_min(2 * pair + 1, b.scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      const int bit1 = 2 * pair, bit2 = 2 * pair + 1;
      for (int l = 0; l < 32; ++l) {
        *dst++ = d1 * static_cast<float>((q[l] & 0xf) + (((b.qh[l] >> bit1) & 1) << 4)) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *dst++ = d2 * static_cast<float>((q[l] >> 4) + (((b.qh[l] >> bit2) & 1) << 4)) - m2;
      }
    }
  }
}

void dequantize_q6_k(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ6_K*>(src);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    const tensor::BlockQ6_K& b = blocks[ib];
    const float d = f16_to_f32(b.d);
    // Each 128-element half: 64 bytes of ql (low nibbles of elements l and l + 64 in byte l, of l + 32 and l + 96 in
    // byte l + 32) and 32 bytes of qh (two high bits for each of the four).
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b.ql + 64 * half;
      const uint8_t* qh = b.qh + 32 * half;
      const int8_t* sc = b.scales + 8 * half;
      float* y = dst + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
    dst += tensor::kQkK;
  }
}

void dequantize_q8_k(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const tensor::BlockQ8_K*>(src);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib, dst += tensor::kQkK) {
    for (int j = 0; j < tensor::kQkK; ++j) dst[j] = blocks[ib].d * static_cast<float>(blocks[ib].qs[j]);
  }
}

}  // namespace longhaul::kernels::ref
