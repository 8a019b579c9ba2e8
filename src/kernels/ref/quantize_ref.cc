// Scalar quantizers with llama.cpp's reference rounding (quantize_row_*_ref): roundf (half away from zero) for
// Q8_0 / Q8_1, round-half-even through the float "magic number" trick for Q8_K, truncation of x + 8.5 for Q4_0.
// Activations quantized here are therefore the bytes llama.cpp's reference path produces.
#include <cmath>
#include <cstring>

#include "kernels/ref/quant_ref.h"
#include "tensor/half.h"

namespace longhaul::kernels::ref {

namespace {
// Round to nearest, ties to even, for |x| < 2^22: adding 1.5 * 2^23 leaves the integer in the low mantissa bits.
inline int nearest_int(float x) {
  const float biased = x + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  return (bits & 0x007fffff) - 0x00400000;
}
}  // namespace

void quantize_f32(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, n * sizeof(float)); }

void quantize_f16(const float* x, void* dst, int64_t n) {
  auto* h = static_cast<uint16_t*>(dst);  // [n]
  for (int64_t i = 0; i < n; ++i) h[i] = tensor::f32_to_f16(x[i]);
}

void quantize_bf16(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<uint16_t*>(dst);  // [n]
  for (int64_t i = 0; i < n; ++i) b[i] = tensor::f32_to_bf16(x[i]);
}

void quantize_q4_0(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ4_0*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, x += tensor::kQk32) {
    // The signed value of largest magnitude maps to -8, so the full range -8..7 is used on the wide side.
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[ib].d = tensor::f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const int lo = static_cast<int8_t>(x[j] * id + 8.5f);
      const int hi = static_cast<int8_t>(x[j + 16] * id + 8.5f);
      blocks[ib].qs[j] = static_cast<uint8_t>((lo < 15 ? lo : 15) | ((hi < 15 ? hi : 15) << 4));
    }
  }
}

void quantize_q4_1(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ4_1*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, x += tensor::kQk32) {
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[ib].d = tensor::f32_to_f16(d);
    blocks[ib].m = tensor::f32_to_f16(min);
    for (int j = 0; j < 16; ++j) {
      const int lo = static_cast<int8_t>((x[j] - min) * id + 0.5f);
      const int hi = static_cast<int8_t>((x[j + 16] - min) * id + 0.5f);
      blocks[ib].qs[j] = static_cast<uint8_t>((lo < 15 ? lo : 15) | ((hi < 15 ? hi : 15) << 4));
    }
  }
}

void quantize_q5_0(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ5_0*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, x += tensor::kQk32) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[ib].d = tensor::f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      int lo = static_cast<int8_t>(x[j] * id + 16.5f);
      int hi = static_cast<int8_t>(x[j + 16] * id + 16.5f);
      lo = lo < 31 ? lo : 31;
      hi = hi < 31 ? hi : 31;
      blocks[ib].qs[j] = static_cast<uint8_t>((lo & 0xf) | ((hi & 0xf) << 4));
      qh |= static_cast<uint32_t>((lo >> 4) & 1) << j;
      qh |= static_cast<uint32_t>((hi >> 4) & 1) << (j + 16);
    }
    std::memcpy(blocks[ib].qh, &qh, sizeof(qh));
  }
}

void quantize_q5_1(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ5_1*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, x += tensor::kQk32) {
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[ib].d = tensor::f32_to_f16(d);
    blocks[ib].m = tensor::f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      // (x - min) * id is at most 31 + rounding, so x + 0.5 truncates to 0..31 without a clamp.
      const int lo = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
      const int hi = static_cast<uint8_t>((x[j + 16] - min) * id + 0.5f);
      blocks[ib].qs[j] = static_cast<uint8_t>((lo & 0xf) | ((hi & 0xf) << 4));
      qh |= static_cast<uint32_t>((lo >> 4) & 1) << j;
      qh |= static_cast<uint32_t>((hi >> 4) & 1) << (j + 16);
    }
    std::memcpy(blocks[ib].qh, &qh, sizeof(qh));
  }
}

void quantize_q8_0(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ8_0*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, x += tensor::kQk32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[ib].d = tensor::f32_to_f16(d);
    for (int j = 0; j < 32; ++j) blocks[ib].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

void quantize_q8_1(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ8_1*>(dst);  // [n / 32]
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib, x += tensor::kQk32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[ib].d = tensor::f32_to_f16(d);
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      blocks[ib].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
      sum += blocks[ib].qs[j];
    }
    // s uses the f32 d, not its f16 rounding, as llama.cpp does.
    blocks[ib].s = tensor::f32_to_f16(static_cast<float>(sum) * d);
  }
}

void quantize_q8_k(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<tensor::BlockQ8_K*>(dst);  // [n / 256]
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib, x += tensor::kQkK) {
    tensor::BlockQ8_K& b = blocks[ib];
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < tensor::kQkK; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&b, 0, sizeof(b));
      continue;
    }
    // The signed extreme maps to -127 (not -128) so every quant fits the symmetric range SIMD sign tricks need.
    const float iscale = -127.0f / max;
    for (int j = 0; j < tensor::kQkK; ++j) {
      const int v = nearest_int(iscale * x[j]);
      b.qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
      b.bsums[g] = static_cast<int16_t>(sum);
    }
    b.d = 1.0f / iscale;
  }
}

}  // namespace longhaul::kernels::ref
