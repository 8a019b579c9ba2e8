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
  // Scales and zeros as f32, on the stack for every head dim in use (a heap buffer past 512).
  constexpr int32_t kStackDims = 512;
  float s_stack[kStackDims], z_stack[kStackDims];
  std::vector<float> s_heap, z_heap;
  float* sp = s_stack;
  float* zp = z_stack;
  if (d > kStackDims) {
    s_heap.resize(static_cast<size_t>(d));
    z_heap.resize(static_cast<size_t>(d));
    sp = s_heap.data();
    zp = z_heap.data();
  }
  f16_to_f32_row(scale, sp, d);
  f16_to_f32_row(zero, zp, d);
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

QuantizedPage::QuantizedPage(const KvQuantFormat& format)
    : format_(format), heads_(static_cast<size_t>(std::max(0, format.n_head))) {}

bool QuantizedPage::head_present(int32_t head) const {
  LH_CHECK(head >= 0 && head < format_.n_head);
  return heads_[static_cast<size_t>(head)].present;
}

bool QuantizedPage::all_heads_present() const {
  for (const HeadCells& h : heads_)
    if (!h.present) return false;
  return true;
}

int32_t QuantizedPage::n_heads_present() const {
  int32_t n = 0;
  for (const HeadCells& h : heads_) n += h.present;
  return n;
}

void QuantizedPage::release_head(int32_t head) {
  LH_CHECK(head >= 0 && head < format_.n_head);
  HeadCells& h = heads_[static_cast<size_t>(head)];
  h = HeadCells{};  // frees the vectors
  h.present = false;
}

void QuantizedPage::append(const uint16_t* keys, const uint16_t* values, int32_t n) {
  if (n <= 0) return;
  LH_CHECK_MSG(all_heads_present(), "QuantizedPage::append: a head's rows were released (the page takes no cells)");
  const KvQuantFormat& f = format_;
  const int64_t krb = f.key_row_bytes(), vrb = f.value_row_bytes(), nvg = f.n_value_groups();
  const int64_t key_cell = static_cast<int64_t>(f.n_head) * f.dk, value_cell = static_cast<int64_t>(f.n_head) * f.dv;
  const int32_t n_new_groups = (n + f.group - 1) / f.group;
  const size_t old_groups = group_end_.size();
  grow(group_end_, static_cast<size_t>(n_new_groups));
  for (int32_t g = 0; g < n_new_groups; ++g)
    group_end_[old_groups + static_cast<size_t>(g)] = n_cells_ + g * f.group + std::min(f.group, n - g * f.group);
  for (int32_t h = 0; h < f.n_head; ++h) {
    HeadCells& head = heads_[static_cast<size_t>(h)];
    grow(head.key_params, static_cast<size_t>(n_new_groups) * 2 * f.dk);
    grow(head.key_codes, static_cast<size_t>(n) * krb);
    grow(head.value_params, static_cast<size_t>(n) * nvg * 2);
    grow(head.value_codes, static_cast<size_t>(n) * vrb);
    for (int32_t g = 0; g < n_new_groups; ++g) {
      const int32_t c0 = g * f.group, cn = std::min(f.group, n - c0);
      uint16_t* params = head.key_params.data() + (old_groups + static_cast<size_t>(g)) * 2 * f.dk;
      quantize_key_group(keys + c0 * key_cell + h * f.dk, key_cell, cn, f.dk, f.bits,
                         head.key_codes.data() + static_cast<int64_t>(n_cells_ + c0) * krb, krb, params, params + f.dk);
    }
    for (int32_t c = 0; c < n; ++c) {
      const int64_t i = n_cells_ + c;
      quantize_value_row(values + c * value_cell + h * f.dv, f.dv, f.bits, head.value_codes.data() + i * vrb,
                         head.value_params.data() + i * nvg * 2);
    }
  }
  n_cells_ += n;
}

void QuantizedPage::retain(std::span<const int32_t> keep) {
  const KvQuantFormat& f = format_;
  const int64_t krb = f.key_row_bytes(), vrb = f.value_row_bytes(), vpr = f.n_value_groups() * 2;
  const int64_t gparams = 2 * static_cast<int64_t>(f.dk);
  // Which groups survive, and each kept cell's group.
  std::vector<int32_t> group_end;
  std::vector<size_t> kept_groups;  // old indices of the groups that keep cells
  size_t i = 0;                     // next entry of keep
  int32_t begin = 0, prev = -1;
  for (size_t g = 0; g < group_end_.size(); ++g) {
    const int32_t end = group_end_[g];
    const size_t first = i;
    for (; i < keep.size() && keep[i] < end; ++i) {
      const int32_t c = keep[i];
      LH_CHECK_MSG(c > prev && c >= begin && c < n_cells_, "QuantizedPage::retain: indices must be ascending and < n_cells");
      prev = c;
    }
    if (i > first) {
      group_end.push_back(static_cast<int32_t>(i));
      kept_groups.push_back(g);
    }
    begin = end;
  }
  LH_CHECK_MSG(i == keep.size(), "QuantizedPage::retain: index past n_cells");
  const auto n_keep = static_cast<int64_t>(keep.size());
  for (HeadCells& head : heads_) {
    if (!head.present) continue;
    std::vector<uint8_t> key_codes(static_cast<size_t>(n_keep * krb)), value_codes(static_cast<size_t>(n_keep * vrb));
    std::vector<uint16_t> value_params(static_cast<size_t>(n_keep * vpr));
    std::vector<uint16_t> key_params(kept_groups.size() * static_cast<size_t>(gparams));
    for (int64_t k = 0; k < n_keep; ++k) {
      const int64_t c = keep[static_cast<size_t>(k)];
      std::copy_n(head.key_codes.data() + c * krb, krb, key_codes.data() + k * krb);
      std::copy_n(head.value_codes.data() + c * vrb, vrb, value_codes.data() + k * vrb);
      std::copy_n(head.value_params.data() + c * vpr, vpr, value_params.data() + k * vpr);
    }
    for (size_t g = 0; g < kept_groups.size(); ++g)
      std::copy_n(head.key_params.data() + static_cast<int64_t>(kept_groups[g]) * gparams, gparams,
                  key_params.data() + static_cast<int64_t>(g) * gparams);
    head.key_codes = std::move(key_codes);
    head.value_codes = std::move(value_codes);
    head.value_params = std::move(value_params);
    head.key_params = std::move(key_params);
  }
  group_end.shrink_to_fit();
  group_end_ = std::move(group_end);
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
  const int64_t gparams = 2 * static_cast<int64_t>(f.dk);
  const int32_t last = first + count;
  // The new group list: `source[i]` is the old group whose parameters group i keeps, or -1 for the new group.
  std::vector<int32_t> group_end;
  std::vector<int64_t> source;
  auto emit_old = [&](size_t g, int32_t end) {
    group_end.push_back(end);
    source.push_back(static_cast<int64_t>(g));
  };
  bool placed = false;
  int32_t begin = 0;
  for (size_t g = 0; g < group_end_.size(); ++g) {
    const int32_t end = group_end_[g];
    if (end <= first || begin >= last) {
      emit_old(g, end);
    } else {  // the first group that meets [first, last) places the new one (groups cover every cell)
      if (begin < first) emit_old(g, first);
      if (!placed) {
        placed = true;
        group_end.push_back(last);
        source.push_back(-1);
      }
      if (end > last) emit_old(g, end);
    }
    begin = end;
  }
  const int64_t krb = f.key_row_bytes();
  for (int32_t h = 0; h < f.n_head; ++h) {
    HeadCells& head = heads_[static_cast<size_t>(h)];
    if (!head.present) continue;
    std::vector<uint16_t> key_params(source.size() * static_cast<size_t>(gparams));
    for (size_t g = 0; g < source.size(); ++g) {
      uint16_t* params = key_params.data() + static_cast<int64_t>(g) * gparams;
      if (source[g] >= 0) {
        std::copy_n(head.key_params.data() + source[g] * gparams, gparams, params);
      } else {
        quantize_key_group(keys + h * f.dk, static_cast<int64_t>(f.n_head) * f.dk, count, f.dk, f.bits,
                           head.key_codes.data() + static_cast<int64_t>(first) * krb, krb, params, params + f.dk);
      }
    }
    head.key_params = std::move(key_params);
  }
  group_end.shrink_to_fit();
  group_end_ = std::move(group_end);
}

void QuantizedPage::dequantize_head(int32_t head, uint16_t* keys, uint16_t* values, Scratch& scratch) const {
  const KvQuantFormat& f = format_;
  const HeadCells& cells = heads_[static_cast<size_t>(head)];
  LH_CHECK_MSG(cells.present, "QuantizedPage::dequantize_head: the head's rows were released");
  std::vector<float>& rows = scratch.rows;
  if (keys != nullptr) {
    const int64_t krb = f.key_row_bytes();
    int32_t begin = 0;
    for (size_t g = 0; g < group_end_.size(); ++g) {
      const int32_t end = group_end_[g], n = end - begin;
      rows.resize(static_cast<size_t>(n) * f.dk);
      const uint16_t* params = cells.key_params.data() + g * 2 * f.dk;
      dequantize_key_rows(cells.key_codes.data() + static_cast<int64_t>(begin) * krb, krb, n, f.dk, f.bits, params,
                          params + f.dk, rows.data(), f.dk);
      kernels::f32_to_f16_row(rows.data(), keys + static_cast<int64_t>(begin) * f.dk, static_cast<int64_t>(n) * f.dk);
      begin = end;
    }
  }
  if (values != nullptr) {
    const int64_t vrb = f.value_row_bytes(), nvg = f.n_value_groups();
    std::vector<float>& params = scratch.params;
    params.resize(cells.value_params.size());
    f16_to_f32_row(cells.value_params.data(), params.data(), static_cast<int64_t>(params.size()));
    rows.resize(static_cast<size_t>(n_cells_) * f.dv);
    for (int32_t c = 0; c < n_cells_; ++c)
      dequantize_value_row_f32(cells.value_codes.data() + c * vrb, f.dv, f.bits, params.data() + c * nvg * 2,
                               rows.data() + static_cast<int64_t>(c) * f.dv);
    kernels::f32_to_f16_row(rows.data(), values, static_cast<int64_t>(n_cells_) * f.dv);
  }
}

kernels::QuantizedRows QuantizedPage::head_view(int32_t head) const {
  const HeadCells& cells = heads_[static_cast<size_t>(head)];
  LH_CHECK_MSG(cells.present, "QuantizedPage::head_view: the head's rows were released");
  kernels::QuantizedRows rows;
  rows.bits = format_.bits;
  rows.key_codes = cells.key_codes.data();
  rows.key_params = cells.key_params.data();
  rows.group_end = group_end_.data();
  rows.n_groups = n_groups();
  rows.value_codes = cells.value_codes.data();
  rows.value_params = cells.value_params.data();
  return rows;
}

void QuantizedPage::read(int32_t first, int32_t count, float* keys, float* values) const {
  LH_CHECK(first >= 0 && count >= 0 && first + count <= n_cells_);
  const KvQuantFormat& f = format_;
  const int64_t krb = f.key_row_bytes(), vrb = f.value_row_bytes(), nvg = f.n_value_groups();
  size_t g = 0;
  for (int32_t c = first; c < first + count; ++c) {
    while (group_end_[g] <= c) ++g;
    for (int32_t h = 0; h < f.n_head; ++h) {
      const HeadCells& cells = heads_[static_cast<size_t>(h)];
      const int64_t o = static_cast<int64_t>(c - first) * f.n_head + h;
      if (!cells.present) {  // released rows read as zeros
        if (keys != nullptr) std::fill_n(keys + o * f.dk, f.dk, 0.0f);
        if (values != nullptr) std::fill_n(values + o * f.dv, f.dv, 0.0f);
        continue;
      }
      if (keys != nullptr) {
        const uint16_t* params = cells.key_params.data() + g * 2 * f.dk;
        dequantize_key_rows(cells.key_codes.data() + c * krb, krb, 1, f.dk, f.bits, params, params + f.dk,
                            keys + o * f.dk, f.dk);
      }
      if (values != nullptr)
        dequantize_value_row(cells.value_codes.data() + c * vrb, f.dv, f.bits, cells.value_params.data() + c * nvg * 2,
                             values + o * f.dv);
    }
  }
}

int64_t QuantizedPage::used_bytes() const {
  const KvQuantFormat& f = format_;
  const int64_t head_cell = f.key_row_bytes() + f.value_row_bytes() + 4 * f.n_value_groups();
  const int64_t head_group = 4 * static_cast<int64_t>(f.dk);
  return n_heads_present() * (static_cast<int64_t>(n_cells_) * head_cell + n_groups() * head_group) + 4 * n_groups();
}

int64_t QuantizedPage::allocated_bytes() const {
  int64_t bytes = static_cast<int64_t>(group_end_.capacity() * sizeof(int32_t));
  for (const HeadCells& h : heads_)
    bytes += static_cast<int64_t>(h.key_params.capacity() * sizeof(uint16_t) + h.key_codes.capacity() +
                                  h.value_params.capacity() * sizeof(uint16_t) + h.value_codes.capacity());
  return bytes;
}

}  // namespace longhaul::kv
