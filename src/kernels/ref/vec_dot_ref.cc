// Scalar dot products of a weight row with an activation row in the paired type. Integer products are summed
// exactly per block (or per group for the K-quants) and scaled once, which is what the SIMD versions do too; only
// the order of the float additions across blocks differs between them.
#include <cstring>

#include "kernels/ref/quant_ref.h"
#include "tensor/half.h"

namespace longhaul::kernels::ref {

using tensor::f16_to_f32;

float dot_f32_f32(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);  // [n]
  const auto* y = static_cast<const float*>(a);  // [n]
  // Double accumulation keeps this twin a precise reference for long rows.
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * y[i];
  return static_cast<float>(sum);
}

float dot_f16_f16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);  // [n]
  const auto* y = static_cast<const uint16_t*>(a);  // [n]
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(f16_to_f32(x[i]) * f16_to_f32(y[i]));
  return static_cast<float>(sum);
}

float dot_bf16_bf16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);  // [n]
  const auto* y = static_cast<const uint16_t*>(a);  // [n]
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    sum += static_cast<double>(tensor::bf16_to_f32(x[i]) * tensor::bf16_to_f32(y[i]));
  }
  return static_cast<float>(sum);
}

float dot_q4_0_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ4_0*>(w);  // [n / 32]
  const auto* y = static_cast<const tensor::BlockQ8_0*>(a);  // [n / 32]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((x[ib].qs[j] & 0xf) - 8) * y[ib].qs[j] + ((x[ib].qs[j] >> 4) - 8) * y[ib].qs[j + 16];
    }
    sum += static_cast<float>(sumi) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return sum;
}

float dot_q4_1_q8_1(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ4_1*>(w);  // [n / 32]
  const auto* y = static_cast<const tensor::BlockQ8_1*>(a);  // [n / 32]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += (x[ib].qs[j] & 0xf) * y[ib].qs[j] + (x[ib].qs[j] >> 4) * y[ib].qs[j + 16];
    // sum_j (d_x q_j + m_x) d_y a_j = d_x d_y sum_j q_j a_j + m_x (d_y sum_j a_j), and s holds d_y sum_j a_j.
    sum += (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d)) * static_cast<float>(sumi) +
           f16_to_f32(x[ib].m) * f16_to_f32(y[ib].s);
  }
  return sum;
}

float dot_q5_0_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ5_0*>(w);  // [n / 32]
  const auto* y = static_cast<const tensor::BlockQ8_0*>(a);  // [n / 32]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    uint32_t qh;
    std::memcpy(&qh, x[ib].qh, sizeof(qh));
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      const int q0 = ((x[ib].qs[j] & 0xf) | (((qh >> j) & 1) << 4)) - 16;
      const int q1 = ((x[ib].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
      sumi += q0 * y[ib].qs[j] + q1 * y[ib].qs[j + 16];
    }
    sum += static_cast<float>(sumi) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return sum;
}

float dot_q5_1_q8_1(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ5_1*>(w);  // [n / 32]
  const auto* y = static_cast<const tensor::BlockQ8_1*>(a);  // [n / 32]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    uint32_t qh;
    std::memcpy(&qh, x[ib].qh, sizeof(qh));
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      const int q0 = (x[ib].qs[j] & 0xf) | (((qh >> j) & 1) << 4);
      const int q1 = (x[ib].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      sumi += q0 * y[ib].qs[j] + q1 * y[ib].qs[j + 16];
    }
    sum += (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d)) * static_cast<float>(sumi) +
           f16_to_f32(x[ib].m) * f16_to_f32(y[ib].s);
  }
  return sum;
}

float dot_q8_0_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ8_0*>(w);  // [n / 32]
  const auto* y = static_cast<const tensor::BlockQ8_0*>(a);  // [n / 32]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQk32; ++ib) {
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += x[ib].qs[j] * y[ib].qs[j];
    sum += static_cast<float>(sumi) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return sum;
}

float dot_q2_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ2_K*>(w);  // [n / 256]
  const auto* y = static_cast<const tensor::BlockQ8_K*>(a);  // [n / 256]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    // The min term needs only each group's activation sum, which Q8_K carries in bsums.
    int sum_mins = 0;
    for (int g = 0; g < 16; ++g) sum_mins += y[ib].bsums[g] * (x[ib].scales[g] >> 4);
    int sumi = 0;
    const int8_t* q8 = y[ib].qs;
    int group = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q2 = x[ib].qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part, ++group, q8 += 16) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += q8[l] * ((q2[16 * part + l] >> shift) & 3);
          sumi += (x[ib].scales[group] & 0xf) * s;
        }
      }
    }
    const float dall = y[ib].d * f16_to_f32(x[ib].d);
    const float dmin = y[ib].d * f16_to_f32(x[ib].dmin);
    sum += dall * static_cast<float>(sumi) - dmin * static_cast<float>(sum_mins);
  }
  return sum;
}

float dot_q3_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ3_K*>(w);  // [n / 256]
  const auto* y = static_cast<const tensor::BlockQ8_K*>(a);  // [n / 256]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    int8_t scales[16];
    q3k_scales(x[ib].scales, scales);
    int sumi = 0;
    const int8_t* q8 = y[ib].qs;
    int group = 0, mask_bit = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q3 = x[ib].qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2, ++mask_bit) {
        for (int part = 0; part < 2; ++part, ++group, q8 += 16) {
          int s = 0;
          for (int l = 0; l < 16; ++l) {
            const int low = (q3[16 * part + l] >> shift) & 3;
            const int sub = (x[ib].hmask[16 * part + l] >> mask_bit) & 1 ? 0 : 4;
            s += q8[l] * (low - sub);
          }
          sumi += scales[group] * s;
        }
      }
    }
    sum += (f16_to_f32(x[ib].d) * y[ib].d) * static_cast<float>(sumi);
  }
  return sum;
}

float dot_q4_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ4_K*>(w);  // [n / 256]
  const auto* y = static_cast<const tensor::BlockQ8_K*>(a);  // [n / 256]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    int sumi = 0, sum_mins = 0;
    const int8_t* q8 = y[ib].qs;
    for (int g = 0; g < 8; ++g, q8 += 32) {
      uint8_t sc, m;
      k4_scale_min(g, x[ib].scales, &sc, &m);
      const uint8_t* q4 = x[ib].qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      int s = 0;
      for (int l = 0; l < 32; ++l) s += q8[l] * ((q4[l] >> shift) & 0xf);
      sumi += sc * s;
      sum_mins += m * (y[ib].bsums[2 * g] + y[ib].bsums[2 * g + 1]);
    }
    const float d = f16_to_f32(x[ib].d) * y[ib].d;
    const float dmin = f16_to_f32(x[ib].dmin) * y[ib].d;
    sum += d * static_cast<float>(sumi) - dmin * static_cast<float>(sum_mins);
  }
  return sum;
}

float dot_q5_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ5_K*>(w);  // [n / 256]
  const auto* y = static_cast<const tensor::BlockQ8_K*>(a);  // [n / 256]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    int sumi = 0, sum_mins = 0;
    const int8_t* q8 = y[ib].qs;
    for (int g = 0; g < 8; ++g, q8 += 32) {
      uint8_t sc, m;
      k4_scale_min(g, x[ib].scales, &sc, &m);
      const uint8_t* q5 = x[ib].qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      int s = 0;
      for (int l = 0; l < 32; ++l) s += q8[l] * (((q5[l] >> shift) & 0xf) | (((x[ib].qh[l] >> g) & 1) << 4));
      sumi += sc * s;
      sum_mins += m * (y[ib].bsums[2 * g] + y[ib].bsums[2 * g + 1]);
    }
    const float d = f16_to_f32(x[ib].d) * y[ib].d;
    const float dmin = f16_to_f32(x[ib].dmin) * y[ib].d;
    sum += d * static_cast<float>(sumi) - dmin * static_cast<float>(sum_mins);
  }
  return sum;
}

float dot_q6_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const tensor::BlockQ6_K*>(w);  // [n / 256]
  const auto* y = static_cast<const tensor::BlockQ8_K*>(a);  // [n / 256]
  float sum = 0.0f;
  for (int64_t ib = 0; ib < n / tensor::kQkK; ++ib) {
    // Unpack the 256 6-bit values (minus 32) in element order, then take 16 groups of 16.
    int8_t q6[tensor::kQkK];
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = x[ib].ql + 64 * half;
      const uint8_t* qh = x[ib].qh + 32 * half;
      int8_t* q = q6 + 128 * half;
      for (int l = 0; l < 32; ++l) {
        q[l] = static_cast<int8_t>(((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32);
        q[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
        q[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        q[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    int sumi = 0;
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += q6[16 * g + l] * y[ib].qs[16 * g + l];
      sumi += x[ib].scales[g] * s;
    }
    sum += (f16_to_f32(x[ib].d) * y[ib].d) * static_cast<float>(sumi);
  }
  return sum;
}

}  // namespace longhaul::kernels::ref
