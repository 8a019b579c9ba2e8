// AVX2 + F16C versions of the f16 helpers of the float ops (built with -mavx2 -mfma -mf16c); the other ops stay on
// their scalar twins on this ISA.
#include <immintrin.h>

#include "kernels/ops_isa.h"
#include "tensor/half.h"

namespace longhaul::kernels::detail {

#if defined(__x86_64__) || defined(__i386__)
namespace {

inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

float dot_f16_f32_avx2(const uint16_t* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load_f16x8(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(load_f16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  float sum = _mm_cvtss_f32(s);
  for (; i < n; ++i) sum += tensor::f16_to_f32(a[i]) * b[i];
  return sum;
}

void axpy_f16_avx2(float alpha, const uint16_t* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16x8(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * tensor::f16_to_f32(x[i]);
}

void dot_f16_rows_avx2(const float* q, const uint16_t* k, int64_t stride, int64_t n_rows, int32_t d, float* scores) {
  for (int64_t r = 0; r < n_rows; ++r) scores[r] = dot_f16_f32_avx2(k + r * stride, q, d);
}

void accumulate_f16_rows_avx2(const float* p, const uint16_t* v, int64_t stride, int64_t n_rows, int32_t d,
                              float* out) {
  for (int64_t r = 0; r < n_rows; ++r) axpy_f16_avx2(p[r], v + r * stride, out, d);
}

}  // namespace

const FloatOps& avx2_float_ops(const FloatOps& generic) {
  static const FloatOps table = [&] {
    FloatOps t = generic;
    t.dot_f16_f32 = dot_f16_f32_avx2;
    t.axpy_f16 = axpy_f16_avx2;
    t.dot_f16_rows = dot_f16_rows_avx2;
    t.accumulate_f16_rows = accumulate_f16_rows_avx2;
    return t;
  }();
  return table;
}
#else
const FloatOps& avx2_float_ops(const FloatOps& generic) { return generic; }
#endif

}  // namespace longhaul::kernels::detail
