// KIVI-style quantized KV storage (Liu et al., 2024): the codec's error bound, the cache's byte accounting, attention
// over quantized pages against f16 pages, and eviction / truncation / key re-writes on quantized cells. Expected
// values come from the definition (min/max, (max - min) / levels) worked out here in double, not from the codec.
#include <gtest/gtest.h>

#include "kernels/attention_mask.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/ops.h"
#include "kv/quantized_page.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using tensor::f16_to_f32;
using tensor::f32_to_f16;

std::vector<uint16_t> random_f16(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint16_t> out(n);
  for (auto& h : out) h = f32_to_f16(dist(rng));
  return out;
}

// The bound of quantized_page.h: half a step of the stored scale, which is (max - min) / levels rounded up to f16.
double stored_scale_bound(double lo, double hi, int bits) {
  const double exact = (hi - lo) / ((1 << bits) - 1);
  return std::max(exact * (1.0 + std::ldexp(1.0, -10)), std::ldexp(1.0, -24));
}

class Codec : public ::testing::TestWithParam<int> {};

TEST_P(Codec, KeyGroupsRoundTripWithinHalfAStepPerChannel) {
  const int bits = GetParam();
  const int32_t n = 32, d = 64, stride = 80;  // a strided group, as one head's rows inside a cell-major buffer
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::vector<uint16_t> rows = random_f16(static_cast<size_t>(n) * stride, seed, 0.5f + seed);
    // An outlier channel, the case per-channel key quantization is for (KIVI, section 3).
    for (int32_t r = 0; r < n; ++r) rows[static_cast<size_t>(r) * stride + 5] = f32_to_f16(40.0f + r);
    const int32_t row_bytes = d * bits / 8;
    std::vector<uint8_t> codes(static_cast<size_t>(n) * row_bytes);
    std::vector<uint16_t> scale(d), zero(d);
    quantize_key_group(rows.data(), stride, n, d, bits, codes.data(), row_bytes, scale.data(), zero.data());
    std::vector<float> out(static_cast<size_t>(n) * d);
    dequantize_key_rows(codes.data(), row_bytes, n, d, bits, scale.data(), zero.data(), out.data(), d);
    for (int32_t c = 0; c < d; ++c) {
      double lo = INFINITY, hi = -INFINITY;
      for (int32_t r = 0; r < n; ++r) {
        lo = std::min<double>(lo, f16_to_f32(rows[static_cast<size_t>(r) * stride + c]));
        hi = std::max<double>(hi, f16_to_f32(rows[static_cast<size_t>(r) * stride + c]));
      }
      EXPECT_EQ(f16_to_f32(zero[static_cast<size_t>(c)]), lo);
      const double s = f16_to_f32(scale[static_cast<size_t>(c)]);
      EXPECT_GE(s, (hi - lo) / ((1 << bits) - 1));
      EXPECT_LE(s, stored_scale_bound(lo, hi, bits));
      for (int32_t r = 0; r < n; ++r) {
        const double x = f16_to_f32(rows[static_cast<size_t>(r) * stride + c]);
        EXPECT_LE(std::abs(out[static_cast<size_t>(r) * d + c] - x), s / 2 * (1 + 1e-5) + 1e-6 * std::abs(x))
            << "bits " << bits << " channel " << c << " row " << r;
      }
    }
  }
}

TEST_P(Codec, ValueRowsRoundTripWithinHalfAStepPerChannelGroup) {
  const int bits = GetParam();
  const int32_t d = 80;  // two groups of 32 channels and a short one of 16
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    const std::vector<uint16_t> row = random_f16(d, seed, 0.1f * seed);
    std::vector<uint8_t> codes(static_cast<size_t>(d * bits / 8));
    std::vector<uint16_t> params(2 * 3);
    quantize_value_row(row.data(), d, bits, codes.data(), params.data());
    std::vector<float> out(d);
    dequantize_value_row(codes.data(), d, bits, params.data(), out.data());
    for (int32_t g = 0; g < 3; ++g) {
      const int32_t c0 = g * 32, c1 = std::min(d, c0 + 32);
      double lo = INFINITY, hi = -INFINITY;
      for (int32_t c = c0; c < c1; ++c) {
        lo = std::min<double>(lo, f16_to_f32(row[static_cast<size_t>(c)]));
        hi = std::max<double>(hi, f16_to_f32(row[static_cast<size_t>(c)]));
      }
      const double s = f16_to_f32(params[static_cast<size_t>(2 * g)]);
      EXPECT_EQ(f16_to_f32(params[static_cast<size_t>(2 * g + 1)]), lo);
      EXPECT_LE(s, stored_scale_bound(lo, hi, bits));
      for (int32_t c = c0; c < c1; ++c) {
        const double x = f16_to_f32(row[static_cast<size_t>(c)]);
        EXPECT_LE(std::abs(out[static_cast<size_t>(c)] - x), s / 2 * (1 + 1e-5) + 1e-6 * std::abs(x));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, Codec, ::testing::Values(8, 4));

TEST(Codec, Int4WorkedExample) {
  // Channel values 0, 1, 2, 3 over four tokens: zero 0, scale 3/15 = 0.2, rounded up to f16 0.2000732421875;
  // codes round(x / scale) = 0, 5, 10, 15 (1 / 0.20007 = 4.998), so 1 comes back as 5 * 0.2000732421875.
  std::vector<uint16_t> rows = {f32_to_f16(0), f32_to_f16(1), f32_to_f16(2), f32_to_f16(3)};
  // d = 2: channel 1 is constant 7, which must come back exactly (scale 0).
  std::vector<uint16_t> two(8);
  for (int r = 0; r < 4; ++r) {
    two[static_cast<size_t>(2 * r)] = rows[static_cast<size_t>(r)];
    two[static_cast<size_t>(2 * r + 1)] = f32_to_f16(7);
  }
  std::vector<uint8_t> codes(4);
  uint16_t scale[2], zero[2];
  quantize_key_group(two.data(), 2, 4, 2, 4, codes.data(), 1, scale, zero);
  EXPECT_EQ(f16_to_f32(scale[0]), 0.2000732421875f);
  EXPECT_EQ(f16_to_f32(scale[1]), 0.0f);
  EXPECT_EQ(f16_to_f32(zero[1]), 7.0f);
  EXPECT_EQ(codes[0], 0x00);
  EXPECT_EQ(codes[1], 0x05);
  EXPECT_EQ(codes[2], 0x0a);
  EXPECT_EQ(codes[3], 0x0f);
  float out[8];
  dequantize_key_rows(codes.data(), 1, 4, 2, 4, scale, zero, out, 2);
  EXPECT_FLOAT_EQ(out[2], 5 * 0.2000732421875f);
  EXPECT_EQ(out[3], 7.0f);
}

// ---- the cache ----

KvShape smol_shape(int32_t n_layer = 2) {  // SmolLM2-135M's KV heads: 3 heads of 64
  KvShape s;
  s.n_layer = n_layer;
  s.n_head_kv = 3;
  s.head_dim_k = 64;
  s.head_dim_v = 64;
  return s;
}

KvQuantOptions quant(int32_t bits, int32_t residual = 128, int32_t prefix = 4, int32_t group = 32) {
  KvQuantOptions q;
  q.bits = bits;
  q.group = group;
  q.residual = residual;
  q.f16_prefix = prefix;
  return q;
}

// Appends `n` cells (positions from next_position) and fills their keys and values with f16 data derived from
// (position, layer): the same content in every cache built this way.
void append_and_fill(KvCache& cache, SeqId seq, int32_t n) {
  const KvShape& s = cache.shape();
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = cache.next_position(seq) + i;
  const int32_t first = *cache.append_cells(seq, pos);
  for (int32_t il = 0; il < s.n_layer; ++il)
    for (int32_t i = 0; i < n; ++i) {
      const auto seed = static_cast<uint32_t>(pos[static_cast<size_t>(i)] * 131 + il);
      const std::vector<uint16_t> k = random_f16(static_cast<size_t>(s.n_head_kv) * s.head_dim_k, seed);
      const std::vector<uint16_t> v = random_f16(static_cast<size_t>(s.n_head_kv) * s.head_dim_v, seed + 7777);
      for (int32_t h = 0; h < s.n_head_kv; ++h) {
        std::copy_n(k.data() + h * s.head_dim_k, s.head_dim_k, cache.key(seq, il, h, first + i));
        std::copy_n(v.data() + h * s.head_dim_v, s.head_dim_v, cache.value(seq, il, h, first + i));
      }
    }
}

std::vector<float> all_keys(const KvCache& cache, SeqId seq, int32_t il) {
  std::vector<float> out(static_cast<size_t>(cache.n_cells(seq, il)) * cache.shape().n_head_kv * cache.shape().head_dim_k);
  cache.read_keys(seq, il, 0, cache.n_cells(seq, il), out.data());
  return out;
}
std::vector<float> all_values(const KvCache& cache, SeqId seq, int32_t il) {
  std::vector<float> out(static_cast<size_t>(cache.n_cells(seq, il)) * cache.shape().n_head_kv * cache.shape().head_dim_v);
  cache.read_values(seq, il, 0, cache.n_cells(seq, il), out.data());
  return out;
}

// Largest |a - b| / (group range) over everything: the codec bound says <= 1/2 step = 1 / (2 * levels) of the range
// (slightly more for the f16 round-up of the scale). N(0, 1) data: ranges of a 32-cell group are about 4-5.
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

TEST(QuantizedCache, FreezesWholeGroupsOutsideTheResidualAndKeepsThePrefixF16) {
  const KvShape shape = smol_shape(1);
  KvCache cache(shape, {256, 0, 1}, quant(8, 128, 4, 32));
  const SeqId seq = *cache.add_sequence();
  append_and_fill(cache, seq, 600);
  EXPECT_EQ(cache.n_pages(seq, 0), 3);  // nothing frozen before the next append
  append_and_fill(cache, seq, 1);
  // 600 written cells: (600 - 128 - 4) / 32 = 14 groups (448 cells) frozen after the 4 prefix cells.
  for (int32_t c = 0; c < 4; ++c) EXPECT_TRUE(cache.is_f16(seq, 0, c));
  for (int32_t c = 4; c < 452; ++c) ASSERT_FALSE(cache.is_f16(seq, 0, c)) << c;
  for (int32_t c = 452; c < 601; ++c) EXPECT_TRUE(cache.is_f16(seq, 0, c));
  // Pages: prefix, quantized 256 (8 groups), quantized 192 (6 groups), then f16.
  ASSERT_GE(cache.n_pages(seq, 0), 4);
  EXPECT_EQ(cache.page_span(seq, 0, 0).n_cells, 4);
  EXPECT_TRUE(cache.page_span(seq, 0, 1).quantized);
  EXPECT_EQ(cache.page_span(seq, 0, 1).n_cells, 256);
  EXPECT_EQ(cache.page_span(seq, 0, 2).n_cells, 192);
  EXPECT_FALSE(cache.page_span(seq, 0, 3).quantized);
}

class QuantizedCacheBits : public ::testing::TestWithParam<int> {};

TEST_P(QuantizedCacheBits, BytesFollowTheFormula) {
  const int bits = GetParam();
  const KvShape shape = smol_shape(2);
  KvCache f16(shape, {256, 0, 1});
  KvCache q(shape, {256, 0, 1}, quant(bits));
  const SeqId sf = *f16.add_sequence(), sq = *q.add_sequence();
  for (KvCache* c : {&f16, &q}) {
    append_and_fill(*c, c == &f16 ? sf : sq, 2048);
    append_and_fill(*c, c == &f16 ? sf : sq, 1);
  }
  // f16: 2 layers x 3 heads x (64 + 64) dims x 2 bytes per cell.
  EXPECT_EQ(f16.used_bytes(), 2049 * 2 * 768);
  EXPECT_EQ(f16.bytes_per_cell(), 2 * 768);
  // Quantized, per layer: 4 prefix cells f16; (2048 - 128 - 4) / 32 = 59 groups = 1888 cells quantized; 157 f16.
  //   quantized cell: 3 heads x ((64 + 64) x bits / 8 code bytes + 2 value groups x 4 bytes (f16 scale + zero))
  //   key group:      3 heads x 64 channels x 4 bytes (f16 scale + zero) + 4 bytes (its end index)
  const int64_t cell = 3 * (128 * bits / 8 + 8), group = 3 * 64 * 4 + 4;
  EXPECT_EQ(cell, bits == 8 ? 408 : 216);
  const int64_t per_layer = 1888 * cell + 59 * group + (4 + 157) * 768;
  EXPECT_EQ(q.used_bytes(), 2 * per_layer);
  // Quantized pages are allocated at their size; f16 pages hold whole pages of 256 cells: the 157 f16 cells span
  // at most two (the first one lost its frozen cells), plus the 4-cell prefix page and at most two empty pages kept
  // for reuse.
  EXPECT_GE(q.allocated_bytes(), q.used_bytes());
  EXPECT_LE(q.allocated_bytes(), 2 * (1888 * cell + 59 * group + (4 + 4 * 256) * 768));
  // Steady state per cell, all layers: 2 x (cell + group / 32), rounded up.
  EXPECT_EQ(q.bytes_per_cell(), (2 * (cell * 32 + group) + 31) / 32);
  std::printf("bits %d: %lld bytes for 2049 cells vs %lld f16 (%.1f%%); %lld vs %lld bytes per cell\n", bits,
              static_cast<long long>(q.used_bytes()), static_cast<long long>(f16.used_bytes()),
              100.0 * static_cast<double>(q.used_bytes()) / static_cast<double>(f16.used_bytes()),
              static_cast<long long>(q.bytes_per_cell()), static_cast<long long>(f16.bytes_per_cell()));
}

// The attention the model runs (model/attention.cc attend_page): one update per page, a quantized page through its
// codes in place (quantized_rows, attention_update_quantized); or, with in_place false, every page as the f16 rows
// head_rows gives (a quantized page dequantized and rounded to f16 first, as the score pass reads it).
std::vector<float> attention(const KvCache& cache, SeqId seq, int32_t il, int32_t head, const std::vector<float>& q,
                             const std::vector<int32_t>& q_pos, bool in_place = true) {
  const int32_t dk = cache.shape().head_dim_k, dv = cache.shape().head_dim_v;
  const auto n_q = static_cast<int32_t>(q_pos.size());
  std::vector<float> m(static_cast<size_t>(n_q), -INFINITY), l(static_cast<size_t>(n_q), 0.0f),
      o(static_cast<size_t>(n_q) * dv, 0.0f);
  KvCache::Scratch scratch;
  for (int32_t ip = 0; ip < cache.n_pages(seq, il); ++ip) {
    const KvCache::PageSpan span = cache.page_span(seq, il, ip);
    kernels::AttentionMask mask;
    mask.q_pos = q_pos.data();
    mask.k_pos = cache.positions(seq, il).data() + span.first_cell;
    if (span.quantized && in_place) {
      kernels::attention_update_quantized(q.data(), dk, n_q, cache.quantized_rows(seq, il, head, ip), span.n_cells,
                                          mask, dk, dv, m.data(), l.data(), o.data(), dv);
      continue;
    }
    const KvCache::HeadRows rows = cache.head_rows(seq, il, head, ip, scratch);
    kernels::attention_update(q.data(), dk, n_q, rows.keys, dk, rows.values, dv, span.n_cells, mask, dk, dv, m.data(),
                              l.data(), o.data(), dv);
  }
  for (int32_t i = 0; i < n_q; ++i)
    for (int32_t c = 0; c < dv; ++c) o[static_cast<size_t>(i) * dv + c] /= l[static_cast<size_t>(i)];
  return o;
}

TEST_P(QuantizedCacheBits, AttentionStaysCloseToTheF16Cache) {
  const int bits = GetParam();
  const KvShape shape = smol_shape(1);
  KvCache f16(shape, {256, 0, 1});
  KvCache q(shape, {256, 0, 1}, quant(bits));
  const SeqId sf = *f16.add_sequence(), sq = *q.add_sequence();
  for (KvCache* c : {&f16, &q}) {
    append_and_fill(*c, c == &f16 ? sf : sq, 1000);
    append_and_fill(*c, c == &f16 ? sf : sq, 1);
  }
  // Queries as the model scales them (1 / sqrt(dk)), with a typical score spread of a few units; positions such
  // that each query sees every cell, half of the cells and a few cells.
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 2.0f / 8.0f);
  const std::vector<int32_t> q_pos = {1000, 500, 8};
  std::vector<float> queries(q_pos.size() * 64);
  for (float& x : queries) x = dist(rng);
  double worst = 0, sum = 0;
  int64_t n = 0;
  for (int32_t h = 0; h < 3; ++h) {
    const std::vector<float> a = attention(f16, sf, 0, h, queries, q_pos), b = attention(q, sq, 0, h, queries, q_pos);
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
      sum += std::abs(static_cast<double>(a[i]) - b[i]);
      ++n;
    }
  }
  // Tolerance. One value step is range / levels with ranges of about 4.5 for 32 N(0, 1) values: 0.018 (int8),
  // 0.3 (int4). A value error is at most half a step. A key error of up to half a step per channel moves a score by
  // about sqrt(dk) * 0.25 * step / sqrt(12) = 0.6 step (standard deviation); these scores have a standard
  // deviation of 2, so attention is sharp and the output moves by about that relative change times |v|. Measured
  // (seed 42, codes read in place): int8 max 0.0078 (0.4 step), mean 0.0016; int4 max 0.21 (0.7 step), mean 0.029.
  // Bound: 1.2 steps (int8) / 1.4 steps (int4) at most, a fifth of a step on average.
  const double step = 4.5 / ((1 << bits) - 1);
  std::printf("bits %d: attention output max |diff| %.5f, mean %.6f\n", bits, worst, sum / static_cast<double>(n));
  EXPECT_LT(worst, step * (bits == 8 ? 1.2 : 1.4));
  EXPECT_LT(sum / static_cast<double>(n), step / 5);

  // The plumbing, exactly: attention over the quantized pages equals attention in double over the cells the codec
  // dequantizes (read_values / read_keys): read in place, up to float rounding (so the kernels read the codes as the
  // codec wrote them); through head_rows, up to the f16 rounding of the dequantized rows.
  const std::vector<float> k = all_keys(q, sq, 0), v = all_values(q, sq, 0);
  for (int32_t h = 0; h < 3; ++h) {
    for (const bool in_place : {true, false}) {
      const std::vector<float> got = attention(q, sq, 0, h, queries, q_pos, in_place);
      for (size_t i = 0; i < q_pos.size(); ++i) {
        const auto n_seen = static_cast<size_t>(q_pos[i] + 1);
        std::vector<double> p(n_seen);
        double mx = -INFINITY, total = 0;
        for (size_t c = 0; c < n_seen; ++c) {
          double dot = 0;
          for (size_t d = 0; d < 64; ++d) dot += static_cast<double>(queries[i * 64 + d]) * k[(c * 3 + h) * 64 + d];
          p[c] = dot;
          mx = std::max(mx, dot);
        }
        for (double& x : p) total += (x = std::exp(x - mx));
        for (size_t d = 0; d < 64; ++d) {
          double want = 0;
          for (size_t c = 0; c < n_seen; ++c) want += p[c] / total * v[(c * 3 + h) * 64 + d];
          EXPECT_NEAR(got[i * 64 + d], want, in_place ? 2e-5 : 3e-3) << "head " << h << " query " << i << " in place "
                                                                     << in_place;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, QuantizedCacheBits, ::testing::Values(8, 4));

TEST(QuantizedCache, EvictionKeepsTheRightCellsWithoutRequantizing) {
  const KvShape shape = smol_shape(2);
  KvCache f16(shape, {256, 0, 1});
  KvCache q(shape, {256, 0, 1}, quant(4, 64));
  const SeqId sf = *f16.add_sequence(), sq = *q.add_sequence();
  for (KvCache* c : {&f16, &q}) {
    append_and_fill(*c, c == &f16 ? sf : sq, 700);
    append_and_fill(*c, c == &f16 ? sf : sq, 1);
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 5; ++round) {
    const int32_t n = q.n_cells(sq, 0);
    // Keep a random half, plus a whole page's worth and the f16 tail.
    std::vector<int32_t> keep;
    for (int32_t c = 0; c < n; ++c)
      if (rng() % 2 == 0 || (c >= 300 && c < 400) || c >= n - 50) keep.push_back(c);
    for (int32_t il = 0; il < shape.n_layer; ++il) {
      const std::vector<float> kq = all_keys(q, sq, il), vq = all_values(q, sq, il);
      const std::vector<int32_t> pos_before(q.positions(sq, il).begin(), q.positions(sq, il).end());
      q.retain_cells(sq, il, keep);
      f16.retain_cells(sf, il, keep);
      ASSERT_EQ(q.n_cells(sq, il), static_cast<int32_t>(keep.size()));
      const std::vector<float> kq2 = all_keys(q, sq, il), vq2 = all_values(q, sq, il);
      const std::vector<float> kf = all_keys(f16, sf, il), vf = all_values(f16, sf, il);
      const size_t row = 3 * 64;
      for (size_t i = 0; i < keep.size(); ++i) {
        const auto c = static_cast<size_t>(keep[i]);
        ASSERT_EQ(q.positions(sq, il)[i], pos_before[c]);
        // Exactly the values the cell had before: eviction never re-quantizes.
        for (size_t d = 0; d < row; ++d) {
          ASSERT_EQ(kq2[i * row + d], kq[c * row + d]) << "cell " << c;
          ASSERT_EQ(vq2[i * row + d], vq[c * row + d]) << "cell " << c;
        }
      }
      // And within the int4 bound of the f16 cache that evicted the same cells: half a step of a range of ~5-8
      // (keys: 32 cells per channel; values: 32 channels per cell).
      EXPECT_LT(max_abs_diff(kq2, kf), 8.0 / 15 / 2);
      EXPECT_LT(max_abs_diff(vq2, vf), 8.0 / 15 / 2);
    }
    // New cells after an eviction land in f16 pages and are frozen later as usual.
    for (KvCache* c : {&f16, &q}) append_and_fill(*c, c == &f16 ? sf : sq, 40);
    EXPECT_EQ(q.positions(sq, 1).back(), f16.positions(sf, 1).back());
    // Groups shrink as their cells go, so their scales cost more per cell: no bound on the saving here, only
    // the report (docs/long-context.md discusses it).
    std::printf("round %d: %d cells, int4 %lld bytes vs f16 %lld\n", round, q.n_cells(sq, 0),
                static_cast<long long>(q.used_bytes()), static_cast<long long>(f16.used_bytes()));
  }
}

TEST(QuantizedCache, TruncateAndClearDropQuantizedCells) {
  const KvShape shape = smol_shape(1);
  KvCache q(shape, {256, 0, 1}, quant(8, 16, 4, 32));
  const SeqId seq = *q.add_sequence();
  append_and_fill(q, seq, 500);
  append_and_fill(q, seq, 1);
  const std::vector<float> before = all_keys(q, seq, 0);
  q.truncate(seq, 100);
  EXPECT_EQ(q.n_cells(seq, 0), 100);
  EXPECT_EQ(q.next_position(seq), 100);
  const std::vector<float> after = all_keys(q, seq, 0);
  for (size_t i = 0; i < after.size(); ++i) ASSERT_EQ(after[i], before[i]);
  append_and_fill(q, seq, 300);  // positions 100..399 again, written afresh
  append_and_fill(q, seq, 1);
  EXPECT_EQ(q.n_cells(seq, 0), 401);
  for (int32_t c = 0; c < 401; ++c) ASSERT_EQ(q.positions(seq, 0)[static_cast<size_t>(c)], c);
  KvCache f16(shape, {256, 0, 1});
  const SeqId sf = *f16.add_sequence();
  append_and_fill(f16, sf, 401);
  EXPECT_LT(max_abs_diff(all_keys(q, seq, 0), all_keys(f16, sf, 0)), 8.0 / 255 / 2);
  q.clear_sequence(seq);
  EXPECT_EQ(q.used_bytes(), 0);
  EXPECT_EQ(q.n_pages(seq, 0), 0);
}

TEST(QuantizedCache, WritingQuantizedKeysLeavesTheirGroupMatesAlone) {
  const KvShape shape = smol_shape(1);
  KvCache q(shape, {256, 0, 1}, quant(8, 0, 0, 32));
  const SeqId seq = *q.add_sequence();
  append_and_fill(q, seq, 128);
  append_and_fill(q, seq, 1);
  ASSERT_FALSE(q.is_f16(seq, 0, 40));
  const std::vector<float> before = all_keys(q, seq, 0);
  const size_t row = 3 * 64;
  std::vector<float> fresh(3 * row);
  for (size_t i = 0; i < fresh.size(); ++i) fresh[i] = 10.0f + static_cast<float>(i % 17) * 0.25f;
  q.write_keys(seq, 0, 40, 3, fresh.data());
  const std::vector<float> after = all_keys(q, seq, 0);
  for (size_t c = 0; c < 129; ++c)
    for (size_t d = 0; d < row; ++d) {
      if (c >= 40 && c < 43) {
        // A group of their own: range 4, step 4 / 255.
        EXPECT_NEAR(after[c * row + d], fresh[(c - 40) * row + d], 4.0 / 255 / 2 + 1e-5);
      } else {
        ASSERT_EQ(after[c * row + d], before[c * row + d]) << c;
      }
    }
}

TEST(QuantizedCache, StreamingSinksStayF16AndMemoryStaysBounded) {
  const KvShape shape = smol_shape(2);
  KvPolicyContext ctx = testing::tiny_context(shape);  // RoPE over the whole 64-dim head
  auto policy = testing::make("streaming:sink=4:window=300", ctx);
  KvCache q(shape, {64, policy->max_cells(), 1}, quant(4, 32, 4, 16));
  const SeqId seq = *q.add_sequence();
  int64_t peak = 0;
  for (int i = 0; i < 400; ++i) {
    const int32_t n = 1 + (i * 7) % 13;
    const int32_t cell = testing::step(*policy, q, seq, n);
    for (int32_t il = 0; il < shape.n_layer; ++il)
      for (int32_t t = 0; t < n; ++t)
        for (int32_t h = 0; h < 3; ++h) {
          std::fill_n(q.key(seq, il, h, cell + t), 64, f32_to_f16(0.01f * static_cast<float>((cell + t) % 50)));
          std::fill_n(q.value(seq, il, h, cell + t), 64, f32_to_f16(0.5f));
        }
    for (int32_t c = 0; c < std::min(4, q.n_cells(seq, 0)); ++c) ASSERT_TRUE(q.is_f16(seq, 0, c));
    if (i > 100) peak = std::max(peak, q.allocated_bytes());
  }
  const std::vector<int32_t> pos = testing::positions_of(q, seq, 1);
  ASSERT_EQ(pos.size(), 304u);
  for (int32_t i = 0; i < 4; ++i) EXPECT_EQ(pos[static_cast<size_t>(i)], i);
  for (size_t i = 5; i < pos.size(); ++i) EXPECT_EQ(pos[i], pos[i - 1] + 1);
  // Bounded by the f16 size of the 304 cells (plus the pages kept for reuse).
  EXPECT_LT(peak, 2 * 304 * 768 + 2 * 4 * 64 * 768);
  EXPECT_LT(q.used_bytes(), 2 * 304 * 768 / 2);
}

TEST(KvQuantPolicy, IsFullRetentionWithEightBitsByDefault) {
  const KvPolicyContext ctx = testing::tiny_context(testing::tiny_shape());
  auto policy = testing::make("kv-quant", ctx);
  EXPECT_EQ(policy->max_cells(), 0);
  EXPECT_EQ(policy->default_kv_bits(), 8);
  EXPECT_EQ(testing::make("full", ctx)->default_kv_bits(), 16);
  // The storage the spec asks for, over the policy's default bits.
  EXPECT_EQ(make_kv_policy("kv-quant", ctx)->storage.bits, 8);
  EXPECT_EQ(make_kv_policy("kv-quant:bits=4:group=16:residual=64", ctx)->storage.bits, 4);
  EXPECT_EQ(make_kv_policy("kv-quant:bits=4:group=16:residual=64", ctx)->storage.group, 16);
  EXPECT_EQ(make_kv_policy("kv-quant:bits=4:group=16:residual=64", ctx)->storage.residual, 64);
  EXPECT_EQ(make_kv_policy("full", ctx)->storage.bits, 16);
  EXPECT_EQ(make_kv_policy("h2o:bits=8", ctx)->storage.bits, 8);
  // The sinks that streaming re-writes stay f16; other policies keep the default 4 first cells f16.
  EXPECT_EQ(make_kv_policy("streaming:sink=0:bits=8", ctx)->storage.f16_prefix, 0);
  EXPECT_EQ(make_kv_policy("streaming:sink=9:bits=8", ctx)->storage.f16_prefix, 9);
  EXPECT_EQ(make_kv_policy("h2o:bits=8", ctx)->storage.f16_prefix, 4);
  const Result<BuiltKvPolicy> f16 = make_kv_policy("kv-quant:bits=16", ctx);
  ASSERT_FALSE(f16.is_ok());
  EXPECT_NE(f16.message().find("kv-quant: bits=16 stores f16 cells"), std::string::npos) << f16.message();
}

}  // namespace
}  // namespace longhaul::kv
