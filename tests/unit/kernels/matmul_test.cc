// matmul at odd shapes, 1 and 2 threads, every ISA, against a naive loop of scalar-twin dot products over
// activations quantized by the scalar twin. Tolerance as vec_dot's ISA-vs-twin test: 1e-5 (quantized) or 1e-4
// (float types) of sum |w||a| per output; on the generic ISA the result must be identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "base/thread_pool.h"
#include "kernels/interleave.h"
#include "kernels/quant.h"
#include "quant_test_util.h"

namespace longhaul::kernels {
namespace {

using tensor::DType;

struct Shape {
  int64_t n_out, n_in, n_tokens;
};

class Matmul : public ::testing::TestWithParam<DType> {};

TEST_P(Matmul, OddShapesMatchNaiveLoop) {
  const DType type = GetParam();
  const DType act_type = vec_dot_type(type);
  const double tol = (type == DType::F32 || type == DType::F16 || type == DType::BF16) ? 1e-4 : 1e-5;
  const int64_t block = tensor::info(type).block_size == 256 || tensor::info(act_type).block_size == 256 ? 256 : 32;
  // Batches of 32 tokens or more take the kernels for long batches (AMX tiles on the amx ISA, the repacked 8-row
  // tiles of gemm_avx2.cc on avx2): odd row counts, token counts off the 16-token (AMX) and 4-token (AVX2) groups,
  // and odd block counts exercise their edges. 35 and 130 tokens leave 3 and 2 after the AVX2 groups (130 also
  // spans two 128-token chunks); n_in = 2304 is longer than one AVX2 repack segment (2048) for every block size.
  const Shape shapes[] = {{37, 2 * block, 1},  {37, 3 * block, 3},  {13, 2 * block, 17}, {1, block, 5},
                          {64, block, 4},      {37, 3 * block, 40}, {70, 5 * block, 33}, {16, 2 * block, 64},
                          {29, 4 * block, 35}, {75, 3 * block, 130}, {19, 2304, 36}};
  ThreadPool pool1(1), pool2(2);
  MatmulScratch scratch;
  for (const Shape& s : shapes) {
    std::vector<uint8_t> w;
    for (int64_t o = 0; o < s.n_out; ++o) {
      const std::vector<uint8_t> row = testing::random_weight_row(type, s.n_in, static_cast<uint32_t>(1000 + o));
      w.insert(w.end(), row.begin(), row.end());
    }
    const std::vector<float> x = testing::random_activations(s.n_tokens * s.n_in, 77);
    // Naive: quantize each token with the scalar twin, dot with each row.
    std::vector<float> expected, magnitude;
    testing::naive_matmul(type, w, s.n_out, s.n_in, x, s.n_tokens, expected, magnitude);
    const int64_t ldy = s.n_out + 3;  // padding columns must stay untouched
    for (Isa isa : supported_isas()) {
      for (ThreadPool* pool : {&pool1, &pool2}) {
        std::vector<float> y(s.n_tokens * ldy, -7.0f);
        matmul(isa, type, w.data(), s.n_out, s.n_in, x.data(), s.n_tokens, y.data(), ldy, *pool, scratch);
        for (int64_t t = 0; t < s.n_tokens; ++t) {
          for (int64_t o = 0; o < s.n_out; ++o) {
            const float e = expected[t * s.n_out + o];
            const float g = y[t * ldy + o];
            if (isa == Isa::kGeneric) {
              ASSERT_EQ(g, e) << "t=" << t << " o=" << o;
            } else {
              ASSERT_NEAR(g, e, tol * magnitude[t * s.n_out + o])
                  << tensor::dtype_name(type) << " " << isa_name(isa) << " threads=" << pool->n_threads()
                  << " shape " << s.n_out << "x" << s.n_in << " tokens=" << s.n_tokens << " t=" << t << " o=" << o;
            }
          }
          for (int64_t o = s.n_out; o < ldy; ++o) ASSERT_EQ(y[t * ldy + o], -7.0f) << "padding written";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, Matmul,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                           DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                                           DType::Q5_K, DType::Q6_K),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(tensor::dtype_name(info.param));
                         });

// matmul_fused over targets of different activation formats (an interleaved Q4_1 matrix packs Q8_1-style rows, a
// row-major Q6_K matrix quantizes to Q8_K, an F32 one reads the activations as they are) equals one call per
// target alone on one thread, bit for bit, on every ISA and on 1, 2 and 3 threads. Token counts from 1 (quantized
// on the calling thread) to 19 (several quantizing groups per format, the products waiting for all of them).
TEST(MatmulFused, FormatsQuantizedInTheJobEqualSeparateCalls) {
  const int64_t n_in = 512;
  const int64_t n_out[] = {160, 96, 48};
  const DType types[] = {DType::Q4_1, DType::Q6_K, DType::F32};
  std::vector<std::vector<uint8_t>> w(3);
  for (int i = 0; i < 3; ++i) {
    for (int64_t o = 0; o < n_out[i]; ++o) {
      const std::vector<uint8_t> row = testing::random_weight_row(types[i], n_in, static_cast<uint32_t>(300 * i + o));
      w[static_cast<size_t>(i)].insert(w[static_cast<size_t>(i)].end(), row.begin(), row.end());
    }
  }
  std::vector<uint8_t> q4_1_interleaved(w[0].size());
  interleave_rows(DType::Q4_1, w[0].data(), n_out[0], n_in, q4_1_interleaved.data());
  ThreadPool pool1(1), pool2(2), pool3(3);
  MatmulScratch scratch;
  for (int64_t n_tokens : {1, 2, 3, 5, 8, 13, 19}) {
    const std::vector<float> x = testing::random_activations(n_tokens * n_in, static_cast<uint32_t>(40 + n_tokens));
    for (Isa isa : supported_isas()) {
      // One target per call on one thread: each matrix alone, quantized before its product.
      const auto target = [&](int i, std::vector<float>& y) {
        return MatmulTarget{types[i], i == 0 ? q4_1_interleaved.data() : w[static_cast<size_t>(i)].data(), n_out[i],
                            y.data(), n_out[i], i == 0 ? WeightLayout::kInterleaved16 : WeightLayout::kRows};
      };
      std::vector<std::vector<float>> expected(3);
      for (int i = 0; i < 3; ++i) {
        expected[static_cast<size_t>(i)].assign(static_cast<size_t>(n_tokens * n_out[i]), 0.0f);
        const MatmulTarget alone = target(i, expected[static_cast<size_t>(i)]);
        matmul_fused(isa, &alone, 1, n_in, x.data(), n_tokens, pool1, scratch);
      }
      for (ThreadPool* pool : {&pool1, &pool2, &pool3}) {
        std::vector<std::vector<float>> y(3);
        MatmulTarget targets[3];
        for (int i = 0; i < 3; ++i) {
          y[static_cast<size_t>(i)].assign(static_cast<size_t>(n_tokens * n_out[i]), -7.0f);
          targets[i] = target(i, y[static_cast<size_t>(i)]);
        }
        // Activations left in the scratch by an earlier call must not stand in for a group that was skipped.
        std::fill(scratch.act.begin(), scratch.act.end(), uint8_t{0x5a});
        matmul_fused(isa, targets, 3, n_in, x.data(), n_tokens, *pool, scratch);
        for (int i = 0; i < 3; ++i)
          ASSERT_EQ(y[static_cast<size_t>(i)], expected[static_cast<size_t>(i)])
              << tensor::dtype_name(types[i]) << " " << isa_name(isa) << " threads=" << pool->n_threads()
              << " tokens=" << n_tokens;
      }
    }
  }
}

// The scratch buffer is reused: a second call of the same size does not reallocate it.
TEST(MatmulScratchTest, ReusedAcrossCalls) {
  const int64_t n_in = 64, n_out = 8, n_tokens = 3;
  const std::vector<uint8_t> w = testing::random_weight_row(DType::Q8_0, n_in * n_out, 5);
  const std::vector<float> x = testing::random_activations(n_in * n_tokens, 6);
  std::vector<float> y(n_out * n_tokens);
  ThreadPool pool(2);
  MatmulScratch scratch;
  matmul(DType::Q8_0, w.data(), n_out, n_in, x.data(), n_tokens, y.data(), n_out, pool, scratch);
  const uint8_t* first = scratch.act.data();
  matmul(DType::Q8_0, w.data(), n_out, n_in, x.data(), n_tokens, y.data(), n_out, pool, scratch);
  EXPECT_EQ(scratch.act.data(), first);
}

// The AMX prompt kernels unpack weight tiles into working memory of each pool thread: it is the caller's
// (MatmulScratch::work, as ForwardState holds it), not the threads' own, and reused like the activations.
TEST(MatmulScratchTest, AmxWorkingMemoryIsTheCallers) {
  if (!cpu_supports(Isa::kAmx)) GTEST_SKIP() << "no AMX on this CPU";
  const int64_t n_in = 256, n_out = 64, n_tokens = 40;  // 40 >= 32 tokens: the AMX kernel
  const std::vector<uint8_t> w = testing::random_weight_row(DType::Q4_1, n_in * n_out, 7);
  const std::vector<float> x = testing::random_activations(n_in * n_tokens, 8);
  std::vector<float> y_amx(n_out * n_tokens), y_avx512(n_out * n_tokens);
  ThreadPool pool(2);
  MatmulScratch scratch;
  matmul(Isa::kAmx, DType::Q4_1, w.data(), n_out, n_in, x.data(), n_tokens, y_amx.data(), n_out, pool, scratch);
  ASSERT_FALSE(scratch.work.empty());
  const uint8_t* first = scratch.work.data();
  matmul(Isa::kAmx, DType::Q4_1, w.data(), n_out, n_in, x.data(), n_tokens, y_amx.data(), n_out, pool, scratch);
  EXPECT_EQ(scratch.work.data(), first);
  MatmulScratch other;
  matmul(Isa::kAvx512, DType::Q4_1, w.data(), n_out, n_in, x.data(), n_tokens, y_avx512.data(), n_out, pool, other);
  EXPECT_TRUE(other.work.empty()) << "the AVX-512 kernels need no working memory";
  for (size_t i = 0; i < y_amx.size(); ++i) ASSERT_NEAR(y_amx[i], y_avx512[i], 1e-3 * (1 + std::abs(y_avx512[i]))) << i;
}

}  // namespace
}  // namespace longhaul::kernels
