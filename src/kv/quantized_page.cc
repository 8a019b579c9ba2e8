#include "kv/quantized_page.h"

#include <algorithm>
#include <cmath>

#include "base/status.h"
#include "kernels/ops.h"
#include "tensor/half.h"

namespace longhaul::kv {
namespace {

using tensor::f16_to_f32;
using tensor::f32_to_f16;

// The smallest f16 >= s (s >= 0, finite): rounding the scale up keeps max inside the code range.
uint16_t f16_round_up(float s) {
  uint16_t h = f32_to_f16(s);
  if (f16_to_f32(h) < s) ++h;  // positive f16 bit patterns are ordered like their values
  return h;
}

// The code of x for a range starting at zero with step scale (> 0), in [0, levels].
inline int32_t encode(float x, float zero, float scale, int32_t levels) {
  const float v = (x - zero) / scale;
  const auto q = static_cast<int32_t>(v + 0.5f);  // v >= 0 up to rounding: truncation after +0.5 rounds
  return std::clamp(q, 0, levels);
}

// 4-bit codes are packed planar: byte j holds channel j in its low nibble and channel j + d/2 in its high nibble,
// so that unpacking is two contiguous loops the compiler vectorises.
inline void put_code(uint8_t* codes, int32_t c, int32_t q, int32_t bits, int32_t d) {
  if (bits == 8) {
    codes[c] = static_cast<uint8_t>(q);
    return;
  }
  const int32_t half = d / 2;
  uint8_t& b = codes[c < half ? c : c - half];
  b = c < half ? static_cast<uint8_t>((b & 0xf0u) | q) : static_cast<uint8_t>((b & 0x0fu) | (q << 4));
}

// Codes of one row of d channels as floats.
inline void unpack_codes(const uint8_t* codes, int32_t d, int32_t bits, float* out) {
  if (bits == 8) {
    for (int32_t c = 0; c < d; ++c) out[c] = static_cast<float>(codes[c]);
    return;
  }
  const int32_t half = d / 2;
  for (int32_t j = 0; j < half; ++j) out[j] = static_cast<float>(codes[j] & 0x0f);
  for (int32_t j = 0; j < half; ++j) out[half + j] = static_cast<float>(codes[j] >> 4);
}

// f16 -> f32 for n values through the active ISA's f16 helper (y = 0 + 1 * x is exact): this file is built for
// the baseline ISA, where a scalar conversion per scale would cost as much as the codes it scales.
void f16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  std::fill(y, y + n, 0.0f);
  kernels::axpy_f16(1.0f, x, y, n);
}

// Values of one row from its codes and its groups' (scale, zero) pairs as f32: params [ceil(d / 32), 2].
inline void dequantize_value_row_f32(const uint8_t* codes, int32_t d, int32_t bits, const float* params, float* out) {
  unpack_codes(codes, d, bits, out);
  for (int32_t c0 = 0, g = 0; c0 < d; c0 += kValueChannelGroup, ++g) {
    const int32_t c1 = std::min(d, c0 + kValueChannelGroup);
    const float s = params[2 * g], z = params[2 * g + 1];
    for (int32_t c = c0; c < c1; ++c) out[c] = out[c] * s + z;
  }
}

// Grows v by n elements, allocating exactly the new size (reserve allocates what it is asked for), so that the
// page's allocation matches used_bytes.
template <typename T>
void grow(std::vector<T>& v, size_t n) {
  v.reserve(v.size() + n);
  v.resize(v.size() + n);
}

}  // namespace

void quantize_key_group(const uint16_t* rows, int64_t stride, int32_t n, int32_t d, int32_t bits, uint8_t* codes,
                        int64_t code_stride, uint16_t* scale, uint16_t* zero) {
  LH_CHECK((bits == 8 || bits == 4) && (bits == 8 || d % 2 == 0) && n > 0);
  const int32_t levels = (1 << bits) - 1;
  std::vector<float> lo(static_cast<size_t>(d), INFINITY), hi(static_cast<size_t>(d), -INFINITY);
  for (int32_t r = 0; r < n; ++r)
    for (int32_t c = 0; c < d; ++c) {
      const float x = f16_to_f32(rows[r * stride + c]);
      lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], x);
      hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], x);
    }
  std::vector<float> s(static_cast<size_t>(d)), z(static_cast<size_t>(d));
  for (int32_t c = 0; c < d; ++c) {
    zero[c] = f32_to_f16(lo[static_cast<size_t>(c)]);  // exact: lo is an f16 value
    scale[c] = f16_round_up((hi[static_cast<size_t>(c)] - lo[static_cast<size_t>(c)]) / static_cast<float>(levels));
    z[static_cast<size_t>(c)] = f16_to_f32(zero[c]);
    s[static_cast<size_t>(c)] = f16_to_f32(scale[c]);
  }
  for (int32_t r = 0; r < n; ++r) {
    uint8_t* row_codes = codes + r * code_stride;
    for (int32_t c = 0; c < d; ++c) {
      const float sc = s[static_cast<size_t>(c)];
      const int32_t q = sc > 0.0f ? encode(f16_to_f32(rows[r * stride + c]), z[static_cast<size_t>(c)], sc, levels) : 0;
      put_code(row_codes, c, q, bits, d);
    }
  }
}

void dequantize_key_rows(const uint8_t* codes, int64_t code_stride, int32_t n, int32_t d, int32_t bits,
                         const uint16_t* scale, const uint16_t* zero, float* out, int64_t out_stride) {
  thread_local std::vector<float> s, z;
  s.resize(static_cast<size_t>(d));
  z.resize(static_cast<size_t>(d));
  f16_to_f32_row(scale, s.data(), d);
  f16_to_f32_row(zero, z.data(), d);
  const float* sp = s.data();
  const float* zp = z.data();
  for (int32_t r = 0; r < n; ++r) {
    float* o = out + r * out_stride;
    unpack_codes(codes + r * code_stride, d, bits, o);
    for (int32_t c = 0; c < d; ++c) o[c] = o[c] * sp[c] + zp[c];
  }
}

void quantize_value_row(const uint16_t* row, int32_t d, int32_t bits, uint8_t* codes, uint16_t* params) {
  LH_CHECK((bits == 8 || bits == 4) && (bits == 8 || d % 2 == 0));
  const int32_t levels = (1 << bits) - 1;
  for (int32_t c0 = 0, g = 0; c0 < d; c0 += kValueChannelGroup, ++g) {
    const int32_t c1 = std::min(d, c0 + kValueChannelGroup);
    float lo = INFINITY, hi = -INFINITY;
    for (int32_t c = c0; c < c1; ++c) {
      lo = std::min(lo, f16_to_f32(row[c]));
      hi = std::max(hi, f16_to_f32(row[c]));
    }
    params[2 * g] = f16_round_up((hi - lo) / static_cast<float>(levels));
    params[2 * g + 1] = f32_to_f16(lo);
    const float s = f16_to_f32(params[2 * g]), z = f16_to_f32(params[2 * g + 1]);
    for (int32_t c = c0; c < c1; ++c)
      put_code(codes, c, s > 0.0f ? encode(f16_to_f32(row[c]), z, s, levels) : 0, bits, d);
  }
}

void dequantize_value_row(const uint8_t* codes, int32_t d, int32_t bits, const uint16_t* params, float* out) {
  const int32_t n_groups = (d + kValueChannelGroup - 1) / kValueChannelGroup;
  std::vector<float> p(static_cast<size_t>(2 * n_groups));
  for (size_t i = 0; i < p.size(); ++i) p[i] = f16_to_f32(params[i]);
  dequantize_value_row_f32(codes, d, bits, p.data(), out);
}

void QuantizedPage::append(const uint16_t* keys, const uint16_t* values, int32_t n) {
  if (n <= 0) return;
  const KvQuantFormat& f = format_;
  const int64_t krb = f.key_row_bytes(), vrb = f.value_row_bytes(), nvg = f.n_value_groups();
  const int64_t key_cell = static_cast<int64_t>(f.n_head) * f.dk, value_cell = static_cast<int64_t>(f.n_head) * f.dv;
  const int32_t n_new_groups = (n + f.group - 1) / f.group;
  const size_t old_groups = group_end_.size();
  grow(group_end_, static_cast<size_t>(n_new_groups));
  grow(key_params_, static_cast<size_t>(n_new_groups) * f.n_head * 2 * f.dk);
  grow(key_codes_, static_cast<size_t>(n) * f.n_head * krb);
  grow(value_params_, static_cast<size_t>(n) * f.n_head * nvg * 2);
  grow(value_codes_, static_cast<size_t>(n) * f.n_head * vrb);
  for (int32_t g = 0; g < n_new_groups; ++g) {
    const int32_t c0 = g * f.group, cn = std::min(f.group, n - c0);
    group_end_[old_groups + static_cast<size_t>(g)] = n_cells_ + c0 + cn;
    for (int32_t h = 0; h < f.n_head; ++h) {
      uint16_t* params = key_params_.data() + ((old_groups + static_cast<size_t>(g)) * f.n_head + h) * 2 * f.dk;
      uint8_t* codes = key_codes_.data() + (static_cast<int64_t>(n_cells_ + c0) * f.n_head + h) * krb;
      quantize_key_group(keys + c0 * key_cell + h * f.dk, key_cell, cn, f.dk, f.bits, codes, f.n_head * krb, params,
                         params + f.dk);
    }
  }
  for (int32_t c = 0; c < n; ++c)
    for (int32_t h = 0; h < f.n_head; ++h) {
      const int64_t i = static_cast<int64_t>(n_cells_ + c) * f.n_head + h;
      quantize_value_row(values + c * value_cell + h * f.dv, f.dv, f.bits, value_codes_.data() + i * vrb,
                         value_params_.data() + i * nvg * 2);
    }
  n_cells_ += n;
}

void QuantizedPage::retain(std::span<const int32_t> keep) {
  const KvQuantFormat& f = format_;
  const int64_t kcell = static_cast<int64_t>(f.n_head) * f.key_row_bytes();
  const int64_t vcell = static_cast<int64_t>(f.n_head) * f.value_row_bytes();
  const int64_t pcell = static_cast<int64_t>(f.n_head) * f.n_value_groups() * 2;
  const int64_t gparams = static_cast<int64_t>(f.n_head) * 2 * f.dk;
  const auto n_keep = static_cast<int64_t>(keep.size());
  std::vector<uint8_t> key_codes(static_cast<size_t>(n_keep * kcell)), value_codes(static_cast<size_t>(n_keep * vcell));
  std::vector<uint16_t> value_params(static_cast<size_t>(n_keep * pcell));
  std::vector<int32_t> group_end;
  std::vector<uint16_t> key_params;
  size_t i = 0;  // next entry of keep
  int32_t begin = 0, prev = -1;
  for (size_t g = 0; g < group_end_.size(); ++g) {
    const int32_t end = group_end_[g];
    const size_t first = i;
    for (; i < keep.size() && keep[i] < end; ++i) {
      const int32_t c = keep[i];
      LH_CHECK_MSG(c > prev && c >= begin && c < n_cells_, "QuantizedPage::retain: indices must be ascending and < n_cells");
      prev = c;
      std::copy_n(key_codes_.data() + c * kcell, kcell, key_codes.data() + static_cast<int64_t>(i) * kcell);
      std::copy_n(value_codes_.data() + c * vcell, vcell, value_codes.data() + static_cast<int64_t>(i) * vcell);
      std::copy_n(value_params_.data() + c * pcell, pcell, value_params.data() + static_cast<int64_t>(i) * pcell);
    }
    if (i > first) {
      group_end.push_back(static_cast<int32_t>(i));
      key_params.insert(key_params.end(), key_params_.begin() + static_cast<int64_t>(g) * gparams,
                        key_params_.begin() + static_cast<int64_t>(g + 1) * gparams);
    }
    begin = end;
  }
  LH_CHECK_MSG(i == keep.size(), "QuantizedPage::retain: index past n_cells");
  group_end.shrink_to_fit();
  key_params.shrink_to_fit();
  group_end_ = std::move(group_end);
  key_params_ = std::move(key_params);
  key_codes_ = std::move(key_codes);
  value_codes_ = std::move(value_codes);
  value_params_ = std::move(value_params);
  n_cells_ = static_cast<int32_t>(n_keep);
}

void QuantizedPage::truncate(int32_t n) {
  if (n >= n_cells_) return;
  std::vector<int32_t> keep(static_cast<size_t>(std::max(0, n)));
  for (int32_t c = 0; c < n; ++c) keep[static_cast<size_t>(c)] = c;
  retain(keep);
}

void QuantizedPage::write_keys(int32_t first, int32_t count, const uint16_t* keys) {
  LH_CHECK(first >= 0 && count > 0 && first + count <= n_cells_);
  const KvQuantFormat& f = format_;
  const int64_t gparams = static_cast<int64_t>(f.n_head) * 2 * f.dk;
  const int32_t last = first + count;
  std::vector<int32_t> group_end;
  std::vector<uint16_t> key_params;
  size_t new_group = 0;
  auto emit_old = [&](size_t g, int32_t end) {
    group_end.push_back(end);
    key_params.insert(key_params.end(), key_params_.begin() + static_cast<int64_t>(g) * gparams,
                      key_params_.begin() + static_cast<int64_t>(g + 1) * gparams);
  };
  int32_t begin = 0;
  for (size_t g = 0; g < group_end_.size(); ++g) {
    const int32_t end = group_end_[g];
    if (end <= first || begin >= last) {
      emit_old(g, end);
    } else {  // the first group that meets [first, last) places the new one (groups cover every cell)
      if (begin < first) emit_old(g, first);
      if (new_group == 0) {
        new_group = group_end.size() + 1;  // 1-based: 0 = not placed yet
        group_end.push_back(last);
        key_params.resize(key_params.size() + static_cast<size_t>(gparams));
      }
      if (end > last) emit_old(g, end);
    }
    begin = end;
  }
  const int64_t krb = f.key_row_bytes();
  for (int32_t h = 0; h < f.n_head; ++h) {
    uint16_t* params = key_params.data() + (new_group - 1) * gparams + h * 2 * f.dk;
    quantize_key_group(keys + h * f.dk, static_cast<int64_t>(f.n_head) * f.dk, count, f.dk, f.bits,
                       key_codes_.data() + (static_cast<int64_t>(first) * f.n_head + h) * krb, f.n_head * krb, params,
                       params + f.dk);
  }
  group_end.shrink_to_fit();
  key_params.shrink_to_fit();
  group_end_ = std::move(group_end);
  key_params_ = std::move(key_params);
}

void QuantizedPage::dequantize_head(int32_t head, uint16_t* keys, uint16_t* values) const {
  const KvQuantFormat& f = format_;
  thread_local std::vector<float> rows;  // [group or 1, dk or dv]
  if (keys != nullptr) {
    const int64_t krb = f.key_row_bytes();
    int32_t begin = 0;
    for (size_t g = 0; g < group_end_.size(); ++g) {
      const int32_t end = group_end_[g], n = end - begin;
      rows.resize(static_cast<size_t>(n) * f.dk);
      const uint16_t* params = key_params_.data() + (g * f.n_head + head) * 2 * f.dk;
      dequantize_key_rows(key_codes_.data() + (static_cast<int64_t>(begin) * f.n_head + head) * krb, f.n_head * krb, n,
                          f.dk, f.bits, params, params + f.dk, rows.data(), f.dk);
      kernels::f32_to_f16_row(rows.data(), keys + static_cast<int64_t>(begin) * f.dk, static_cast<int64_t>(n) * f.dk);
      begin = end;
    }
  }
  if (values != nullptr) {
    const int64_t vrb = f.value_row_bytes(), nvg = f.n_value_groups();
    thread_local std::vector<float> params;  // the page's value scales and zeros, every head, as f32
    params.resize(value_params_.size());
    f16_to_f32_row(value_params_.data(), params.data(), static_cast<int64_t>(params.size()));
    rows.resize(static_cast<size_t>(n_cells_) * f.dv);
    for (int32_t c = 0; c < n_cells_; ++c) {
      const int64_t i = static_cast<int64_t>(c) * f.n_head + head;
      dequantize_value_row_f32(value_codes_.data() + i * vrb, f.dv, f.bits, params.data() + i * nvg * 2,
                               rows.data() + static_cast<int64_t>(c) * f.dv);
    }
    kernels::f32_to_f16_row(rows.data(), values, static_cast<int64_t>(n_cells_) * f.dv);
  }
}

void QuantizedPage::read(int32_t first, int32_t count, float* keys, float* values) const {
  LH_CHECK(first >= 0 && count >= 0 && first + count <= n_cells_);
  const KvQuantFormat& f = format_;
  const int64_t krb = f.key_row_bytes(), vrb = f.value_row_bytes(), nvg = f.n_value_groups();
  size_t g = 0;
  for (int32_t c = first; c < first + count; ++c) {
    while (group_end_[g] <= c) ++g;
    for (int32_t h = 0; h < f.n_head; ++h) {
      const int64_t i = static_cast<int64_t>(c) * f.n_head + h;
      const int64_t o = (static_cast<int64_t>(c - first) * f.n_head + h);
      if (keys != nullptr) {
        const uint16_t* params = key_params_.data() + (g * f.n_head + h) * 2 * f.dk;
        dequantize_key_rows(key_codes_.data() + i * krb, krb, 1, f.dk, f.bits, params, params + f.dk, keys + o * f.dk,
                            f.dk);
      }
      if (values != nullptr)
        dequantize_value_row(value_codes_.data() + i * vrb, f.dv, f.bits, value_params_.data() + i * nvg * 2,
                             values + o * f.dv);
    }
  }
}

int64_t QuantizedPage::used_bytes() const {
  return static_cast<int64_t>(n_cells_) * format_.cell_bytes() + n_groups() * format_.group_bytes();
}

int64_t QuantizedPage::allocated_bytes() const {
  return static_cast<int64_t>(group_end_.capacity() * sizeof(int32_t) + key_params_.capacity() * sizeof(uint16_t) +
                              key_codes_.capacity() + value_params_.capacity() * sizeof(uint16_t) +
                              value_codes_.capacity());
}

}  // namespace longhaul::kv
