// Float ops: every ISA's table against the scalar twins (namespace ref), and the twins against hand-worked values.
//
// Tolerances: element-wise ops 4e-6 relative (+1e-30 absolute; the vector exp is accurate to about 2 ulp, and the
// quotient adds one more rounding); rms_norm 1e-6 relative (only the order of a double sum differs); reductions
// (dot products, softmax) 1e-6 of the sum of magnitudes; f32 -> f16 rounding is exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "tensor/half.h"

namespace longhaul::kernels {
namespace {

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = tensor::f32_to_f16(v[i]);
  return h;
}

// Lengths around the 16-lane vectors: full vectors, tails, and the head sizes of the supported models.
const int64_t kLengths[] = {1, 7, 16, 17, 33, 64, 100, 256, 576, 640, 1536};

TEST(FloatOps, RmsNormMatchesTwin) {
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    for (int64_t n : kLengths) {
      const std::vector<float> x = random_floats(n, 1, 3.0f), w = random_floats(n, 2, 1.0f);
      for (const float* wp : {w.data(), static_cast<const float*>(nullptr)}) {
        std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
        ref::rms_norm(x.data(), wp, want.data(), n, 1e-6f);
        ops.rms_norm(x.data(), wp, got.data(), n, 1e-6f);
        for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 1e-6 * std::fabs(want[i])) << isa_name(isa);
      }
    }
  }
}

TEST(FloatOps, GatedActivationsMatchTwins) {
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    for (int64_t n : kLengths) {
      // Gate values up to about +-20 reach both saturated ends of the sigmoid.
      const std::vector<float> g = random_floats(n, 3, 6.0f), u = random_floats(n, 4, 1.0f);
      std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
      ref::silu_mul(g.data(), u.data(), want.data(), n);
      ops.silu_mul(g.data(), u.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 4e-6 * std::fabs(want[i]) + 1e-30) << "silu";
      ref::gelu_mul(g.data(), u.data(), want.data(), n);
      ops.gelu_mul(g.data(), u.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        // tanh(u) near 0 cancels in the twin's 1 + tanh: compare at the scale of the gate's magnitude.
        ASSERT_NEAR(got[i], want[i], 4e-6 * std::fabs(g[i] * u[i]) + 1e-30)
            << "gelu " << isa_name(isa) << " g=" << g[i];
      }
    }
  }
}

// Hand-worked: silu(0) = 0, silu(x) -> x for large x; gelu_tanh(1) = 0.5 (1 + tanh(0.79788456 * 1.044715)).
TEST(FloatOps, ActivationValues) {
  const float g[4] = {0.0f, 30.0f, 1.0f, -30.0f}, up[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  const double gelu1 = 0.5 * (1.0 + std::tanh(0.7978845608028654 * 1.044715));  // 0.841192
  for (Isa isa : supported_isas()) {
    float out[4];
    float_ops(isa).silu_mul(g, up, out, 4);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_NEAR(out[1], 30.0f, 1e-5f);
    EXPECT_NEAR(out[2], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
    EXPECT_NEAR(out[3], 0.0f, 1e-10f);
    float_ops(isa).gelu_mul(g, up, out, 4);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_NEAR(out[1], 30.0f, 1e-5f);
    EXPECT_NEAR(out[2], gelu1, 1e-6);
    EXPECT_NEAR(out[3], 0.0f, 1e-10f);
  }
}

TEST(FloatOps, SoftmaxMatchesTwinWithMaskedEntries) {
  for (Isa isa : supported_isas()) {
    for (int64_t n : kLengths) {
      std::vector<float> x = random_floats(n, 5, 4.0f);
      for (int64_t i = 1; i < n; i += 3) x[i] = -INFINITY;  // masked cells
      std::vector<float> want = x, got = x;
      const float want_sum = ref::softmax(want.data(), n);
      const float got_sum = float_ops(isa).softmax(got.data(), n);
      EXPECT_NEAR(got_sum, want_sum, 1e-6 * want_sum);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-6) << isa_name(isa) << " n=" << n << " i=" << i;
        if (x[i] == -INFINITY) {
          ASSERT_EQ(got[i], 0.0f);
        }
      }
    }
  }
}

// Greedy sampling's pick: the first index of the largest value, NaN skipped, 0 when nothing is above -infinity.
// Rows long enough for both passes' vector loops and their tails (up to SmolLM2's vocabulary); the maximum placed
// at random, tied with a copy, next to NaNs and infinities. ArgmaxHandWorked puts it in the last lane of a pass.
TEST(FloatOps, ArgmaxMatchesTwin) {
  const int64_t lengths[] = {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 100, 576, 49152};
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    for (int64_t n : lengths) {
      for (uint32_t seed = 0; seed < 6; ++seed) {
        std::vector<float> x = random_floats(n, 1000 + seed, 3.0f);
        std::mt19937 rng(seed);
        const auto at = [&] { return static_cast<size_t>(std::uniform_int_distribution<int64_t>(0, n - 1)(rng)); };
        const int64_t peak = static_cast<int64_t>(at());
        x[static_cast<size_t>(peak)] = 100.0f;
        if (seed == 1) x[at()] = 100.0f;  // a tie: the lower index wins
        if (seed >= 2) x[at()] = NAN;     // a NaN never wins (the peak may be overwritten: the twin decides)
        if (seed >= 3) x[at()] = -INFINITY;
        if (seed == 4) x[at()] = INFINITY;
        const int64_t want = ref::argmax(x.data(), n);
        ASSERT_EQ(ops.argmax(x.data(), n), want) << isa_name(isa) << " n=" << n << " seed=" << seed;
        if (seed == 0) {
          ASSERT_EQ(want, peak);
        }
      }
    }
  }
}

TEST(FloatOps, ArgmaxHandWorked) {
  const float nan = NAN, inf = INFINITY;
  struct Case {
    std::vector<float> x;
    int64_t want;
  };
  std::vector<Case> cases = {
      {{1, 3, 2}, 1},
      {{nan, 1, nan, 1}, 1},  // NaN skipped, the first of a tie
      {{nan, nan, nan}, 0},   // nothing above -infinity
      {{-inf, -inf}, 0},
      {{-inf, nan, -5}, 2},
      {{-0.0f, 0.0f}, 0},     // -0 == +0: the first
      {{1, inf, inf, 2}, 1},
  };
  std::vector<float> long_row(40, -1.0f);  // the maximum in the last lane of a 16- and an 8-lane pass, and a tail
  long_row[31] = 2.0f;
  long_row[39] = 2.0f;
  cases.push_back({long_row, 31});
  long_row[31] = nan;
  cases.push_back({long_row, 39});
  for (Isa isa : supported_isas()) {
    for (const Case& c : cases) {
      ASSERT_EQ(float_ops(isa).argmax(c.x.data(), static_cast<int64_t>(c.x.size())), c.want)
          << isa_name(isa) << " row of " << c.x.size();
    }
  }
}

TEST(FloatOps, SoftmaxHandWorked) {
  // After subtracting the maximum ln 3: exp(-ln 3) + exp(0) = 4/3; normalised 1/4 and 3/4.
  for (Isa isa : supported_isas()) {
    float x[2] = {0.0f, std::log(3.0f)};
    const float sum = float_ops(isa).softmax(x, 2);
    EXPECT_NEAR(sum, 4.0f / 3.0f, 1e-6f);
    EXPECT_NEAR(x[0], 0.25f, 1e-7f);
    EXPECT_NEAR(x[1], 0.75f, 1e-7f);
  }
}

TEST(FloatOps, F16HelpersMatchTwins) {
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    for (int64_t n : kLengths) {
      const std::vector<float> a = random_floats(n, 6, 2.0f), b = random_floats(n, 7, 2.0f);
      const std::vector<uint16_t> ah = to_f16(a);
      double mag = 0;
      for (int64_t i = 0; i < n; ++i) mag += std::fabs(tensor::f16_to_f32(ah[i]) * b[i]);
      EXPECT_NEAR(ops.dot_f16_f32(ah.data(), b.data(), n), ref::dot_f16_f32(ah.data(), b.data(), n), 1e-6 * mag);
      std::vector<float> want = b, got = b;
      ref::axpy_f16(0.37f, ah.data(), want.data(), n);
      ops.axpy_f16(0.37f, ah.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 1e-6 * (std::fabs(want[i]) + 1.0f));
      std::vector<uint16_t> hw(static_cast<size_t>(n)), hg(static_cast<size_t>(n));
      ref::f32_to_f16_row(a.data(), hw.data(), n);
      ops.f32_to_f16_row(a.data(), hg.data(), n);
      EXPECT_EQ(hg, hw) << isa_name(isa) << " n=" << n;
    }
  }
}

// Attention rows: keys / values with a row stride larger than the head size, as a KV page with padding would have.
TEST(FloatOps, AttentionRowsMatchTwins) {
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    for (int32_t d : {16, 40, 64, 256}) {
      for (int64_t n_rows : {1, 3, 4, 9, 37}) {
        const int64_t stride = d + 8;
        const std::vector<float> q = random_floats(d, 8, 1.0f), p = random_floats(n_rows, 9, 0.3f);
        const std::vector<uint16_t> kv = to_f16(random_floats(n_rows * stride, 10, 1.0f));
        std::vector<float> want(static_cast<size_t>(n_rows)), got(static_cast<size_t>(n_rows));
        ref::dot_f16_rows(q.data(), kv.data(), stride, n_rows, d, want.data());
        ops.dot_f16_rows(q.data(), kv.data(), stride, n_rows, d, got.data());
        for (int64_t r = 0; r < n_rows; ++r) {
          double mag = 0;
          for (int32_t i = 0; i < d; ++i) mag += std::fabs(q[i] * tensor::f16_to_f32(kv[r * stride + i]));
          ASSERT_NEAR(got[r], want[r], 1e-6 * mag) << isa_name(isa) << " d=" << d << " r=" << r;
        }
        std::vector<float> out_want = random_floats(d, 11, 1.0f), out_got = out_want;
        ref::accumulate_f16_rows(p.data(), kv.data(), stride, n_rows, d, out_want.data());
        ops.accumulate_f16_rows(p.data(), kv.data(), stride, n_rows, d, out_got.data());
        for (int32_t i = 0; i < d; ++i) ASSERT_NEAR(out_got[i], out_want[i], 1e-5) << isa_name(isa) << " d=" << d;
      }
    }
  }
}

// Hand-worked attention rows: q = (1, 2, 0, ...), keys e0 and e1 give scores 1 and 2; weights 0.5 each average
// the two value rows.
TEST(FloatOps, AttentionRowsHandWorked) {
  const int32_t d = 16;
  std::vector<float> q(d, 0.0f);
  q[0] = 1.0f;
  q[1] = 2.0f;
  std::vector<uint16_t> k(2 * d, tensor::f32_to_f16(0.0f));
  k[0] = tensor::f32_to_f16(1.0f);
  k[d + 1] = tensor::f32_to_f16(1.0f);
  const float p[2] = {0.5f, 0.5f};
  for (Isa isa : supported_isas()) {
    float scores[2];
    float_ops(isa).dot_f16_rows(q.data(), k.data(), d, 2, d, scores);
    EXPECT_EQ(scores[0], 1.0f);
    EXPECT_EQ(scores[1], 2.0f);
    std::vector<float> out(d, 0.0f);
    float_ops(isa).accumulate_f16_rows(p, k.data(), d, 2, d, out.data());
    EXPECT_EQ(out[0], 0.5f);
    EXPECT_EQ(out[1], 0.5f);
    EXPECT_EQ(out[2], 0.0f);
  }
}

// Quest's bound: every ISA against the twin on queries and summaries of the models' head sizes and around the
// vector widths, one to 16 logical pages, and hand-worked: q = (1, -2), lo = (0, -1), hi = (3, 1) gives
// max(0, 3) + max(2, -2) = 5.
TEST(FloatOps, KeyBoundMatchesTwin) {
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    // 64 x up to 4 and 128 x up to 2 keep the queries in registers; 7 and 16 logical pages reduce their sums in
    // more than one batch of 16.
    for (int32_t d : {2, 7, 16, 40, 64, 128, 256}) {
      for (int32_t n_q : {1, 2, 3, 4, 5, 8}) {
        for (int32_t n_sub : {1, 4, 7, 16}) {
          const std::vector<float> q = random_floats(int64_t{n_q} * d, 12, 1.0f);
          std::vector<float> lo = random_floats(int64_t{n_sub} * d, 13, 1.0f), hi = lo;
          const std::vector<float> spread = random_floats(int64_t{n_sub} * d, 14, 0.5f);
          for (size_t i = 0; i < hi.size(); ++i) hi[i] += std::fabs(spread[i]);
          double mag = 0;  // the largest sum of magnitudes a bound adds up
          for (int32_t i = 0; i < n_q; ++i)
            for (int32_t s = 0; s < n_sub; ++s) {
              double m = 0;
              for (int32_t c = 0; c < d; ++c)
                m += std::fabs(q[i * d + c]) * std::max(std::fabs(lo[s * d + c]), std::fabs(hi[s * d + c]));
              mag = std::max(mag, m);
            }
          const float want = ref::key_bound(q.data(), n_q, d, lo.data(), hi.data(), n_sub);
          ASSERT_NEAR(ops.key_bound(q.data(), n_q, d, lo.data(), hi.data(), n_sub), want, 1e-6 * mag)
              << isa_name(isa) << " d=" << d << " n_q=" << n_q << " n_sub=" << n_sub;
        }
      }
    }
    const float q[2] = {1.0f, -2.0f}, lo[2] = {0.0f, -1.0f}, hi[2] = {3.0f, 1.0f};
    EXPECT_EQ(ops.key_bound(q, 1, 2, lo, hi, 1), 5.0f) << isa_name(isa);
    EXPECT_EQ(ops.key_bound(q, 0, 2, lo, hi, 1), -INFINITY) << isa_name(isa);
  }
}

// Quest's bound over blocks of 16 logical pages (the layout kv/policies/page_key_summaries.cc scores): every ISA gives
// the twin's bits (the same fused multiply-adds in the same order), at the models' head sizes and around the vector
// widths, for one to nine queries (groups of four, then their maximum) and one to three blocks (pairs, then one).
// Against key_bound, the page-by-page rule sum_c max(q lo, q hi), the twin agrees within rounding; and a hand-worked
// lane: q = (1, -2), lo = (0, -1), hi = (3, 1) gives 1 * 3 + (-2) * (-1) = 5.
TEST(FloatOps, BlockedKeyBoundsMatchTheTwinBitForBit) {
  for (Isa isa : supported_isas()) {
    const FloatOps& ops = float_ops(isa);
    for (int32_t d : {2, 7, 16, 64, 128, 256}) {
      for (int32_t n_q : {1, 2, 3, 4, 5, 9}) {
        for (int64_t n_blocks : {1, 2, 3}) {
          const std::vector<float> q = random_floats(int64_t{n_q} * d, 21, 1.0f);
          // Logical page (b, lane): lo = x, hi = x + |spread|, both f16, in the blocked layout [b, 2, d, 16].
          const int64_t n_pages = n_blocks * 16;
          const std::vector<float> x = random_floats(n_pages * d, 22, 1.0f);
          const std::vector<float> spread = random_floats(n_pages * d, 23, 0.5f);
          std::vector<uint16_t> blocks(static_cast<size_t>(n_blocks * 2 * d * 16));
          std::vector<float> lo_rows(static_cast<size_t>(n_pages * d)), hi_rows(lo_rows.size());  // [n_pages, d]
          for (int64_t page = 0; page < n_pages; ++page)
            for (int32_t c = 0; c < d; ++c) {
              const size_t i = static_cast<size_t>(page * d + c);
              const uint16_t lo16 = tensor::f32_to_f16(x[i]), hi16 = tensor::f32_to_f16(x[i] + std::fabs(spread[i]));
              const int64_t at = (page / 16 * 2 * d + c) * 16 + page % 16;
              blocks[static_cast<size_t>(at)] = lo16;
              blocks[static_cast<size_t>(at + int64_t{d} * 16)] = hi16;
              lo_rows[i] = tensor::f16_to_f32(lo16);
              hi_rows[i] = tensor::f16_to_f32(hi16);
            }
          std::vector<float> want(static_cast<size_t>(n_pages)), got(want.size(), 1e30f);
          ref::key_bounds_f16_blocked(q.data(), n_q, d, blocks.data(), n_blocks, want.data());
          ops.key_bounds_f16_blocked(q.data(), n_q, d, blocks.data(), n_blocks, got.data());
          for (int64_t page = 0; page < n_pages; ++page) {
            ASSERT_EQ(got[static_cast<size_t>(page)], want[static_cast<size_t>(page)])
                << isa_name(isa) << " d=" << d << " n_q=" << n_q << " n_blocks=" << n_blocks << " page=" << page;
            double mag = 0;
            for (int32_t i = 0; i < n_q; ++i) {
              double m = 0;
              for (int32_t c = 0; c < d; ++c)
                m += std::fabs(q[i * d + c]) *
                     std::max(std::fabs(lo_rows[page * d + c]), std::fabs(hi_rows[page * d + c]));
              mag = std::max(mag, m);
            }
            const float rule =
                ref::key_bound(q.data(), n_q, d, lo_rows.data() + page * d, hi_rows.data() + page * d, 1);
            ASSERT_NEAR(want[static_cast<size_t>(page)], rule, 1e-6 * mag) << "d=" << d << " n_q=" << n_q;
          }
        }
      }
    }
    // Hand-worked: lane 5 holds the example, the other lanes zeros (bound 0); no query gives -infinity.
    std::vector<uint16_t> block(2 * 2 * 16, tensor::f32_to_f16(0.0f));
    const float q[2] = {1.0f, -2.0f}, lo[2] = {0.0f, -1.0f}, hi[2] = {3.0f, 1.0f};
    for (int c = 0; c < 2; ++c) {
      block[static_cast<size_t>(c * 16 + 5)] = tensor::f32_to_f16(lo[c]);
      block[static_cast<size_t>((2 + c) * 16 + 5)] = tensor::f32_to_f16(hi[c]);
    }
    std::vector<float> bounds(16);
    ops.key_bounds_f16_blocked(q, 1, 2, block.data(), 1, bounds.data());
    EXPECT_EQ(bounds[5], 5.0f) << isa_name(isa);
    EXPECT_EQ(bounds[4], 0.0f) << isa_name(isa);
    ops.key_bounds_f16_blocked(q, 0, 2, block.data(), 1, bounds.data());
    EXPECT_EQ(bounds[5], -INFINITY) << isa_name(isa);
  }
}

// Directed f16 rounding keeps a bound a bound: down(x) <= x <= up(x), each the nearest f16 on its side, and exact
// values stay exact.
TEST(HalfRounding, DownAndUpAreTheNearestF16OnEachSide) {
  EXPECT_EQ(tensor::f32_to_f16_down(1.0f), tensor::f32_to_f16(1.0f));
  EXPECT_EQ(tensor::f32_to_f16_up(-2.5f), tensor::f32_to_f16(-2.5f));
  EXPECT_EQ(tensor::f32_to_f16_down(0.0f), 0u);
  EXPECT_EQ(tensor::f32_to_f16_down(-1e-9f), 0x8001u);  // the smallest negative subnormal
  EXPECT_EQ(tensor::f32_to_f16_up(1e-9f), 0x0001u);
  EXPECT_EQ(tensor::f32_to_f16_down(70000.0f), 0x7bffu);  // 65504, the largest finite f16
  EXPECT_EQ(tensor::f32_to_f16_up(70000.0f), 0x7c00u);    // infinity
  const std::vector<float> xs = random_floats(20000, 15, 30.0f);
  for (float x : xs) {
    const uint16_t d = tensor::f32_to_f16_down(x), u = tensor::f32_to_f16_up(x);
    const float fd = tensor::f16_to_f32(d), fu = tensor::f16_to_f32(u);
    ASSERT_LE(fd, x);
    ASSERT_GE(fu, x);
    // Nearest on its side: the next f16 past it (one step in the bits, same sign here) crosses x.
    if (fd != x) {
      ASSERT_NE(fu, fd);
      const uint16_t next_up = fd >= 0 ? static_cast<uint16_t>(d + 1) : static_cast<uint16_t>(d - 1);
      ASSERT_GT(tensor::f16_to_f32(next_up), x) << x;
    } else {
      ASSERT_EQ(fu, x);
    }
  }
}

// Flash attention (attention_update) and its masks: attention_test.cc and attention_mask_test.cc.

}  // namespace
}  // namespace longhaul::kernels
