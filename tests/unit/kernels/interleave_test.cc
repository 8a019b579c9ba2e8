// The 16-row interleaved layouts (kernels/interleave.h): matmul over an interleaved matrix equals the naive loop of
// scalar-twin dot products over the row-major one (every ISA, 1 and 2 threads, token counts on and off the 8-token
// tiles, block counts off the 4-block groups), the SIMD kernels equal the interleaved scalar twin bit for bit, and
// the load-time choice is made only where a kernel exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/thread_pool.h"
#include "kernels/interleave.h"
#include "kernels/isa_kernels.h"
#include "kernels/quant.h"
#include "quant_test_util.h"

namespace longhaul::kernels {
namespace {

using tensor::DType;

struct Shape {
  int64_t n_out, n_in, n_tokens;
};

std::vector<uint8_t> random_matrix(DType type, int64_t n_out, int64_t n_in) {
  std::vector<uint8_t> w;
  for (int64_t o = 0; o < n_out; ++o) {
    const std::vector<uint8_t> row = testing::random_weight_row(type, n_in, static_cast<uint32_t>(500 + o));
    w.insert(w.end(), row.begin(), row.end());
  }
  return w;
}

class Interleaved : public ::testing::TestWithParam<DType> {};

bool has_prompt_kernel(Isa isa, DType type) {
  return detail::kernels_for(isa).gemm_interleaved_prompt[detail::slot(type)].tile != nullptr;
}

// y = the AMX-BF16 kernels' scalar twin over every row and token of an interleaved matrix, on one thread.
std::vector<float> bf16_twin_matmul(DType type, const std::vector<uint8_t>& wi, int64_t n_out, int64_t n_in,
                                    const std::vector<float>& x, int64_t n_tokens, int64_t ldy) {
  const detail::GemmKernel& twin = detail::bf16_interleaved_twin(type);
  const int64_t row_bytes = twin.packed_row_bytes(n_in);
  const int64_t n_rows = (n_tokens + twin.token_multiple - 1) / twin.token_multiple * twin.token_multiple;
  std::vector<uint8_t> act(static_cast<size_t>(n_rows * row_bytes), 0);
  for (int64_t t = 0; t < n_tokens; ++t) twin.pack(x.data() + t * n_in, n_in, act.data() + t * row_bytes);
  std::vector<float> y(static_cast<size_t>(n_tokens * ldy), -7.0f);
  twin.tile(n_in, wi.data(), tensor::row_size_bytes(type, n_in), n_out, act.data(), row_bytes, n_tokens, y.data(),
            ldy, nullptr);
  return y;
}

TEST_P(Interleaved, MatmulMatchesRowMajorNaiveLoop) {
  const DType type = GetParam();
  // 1-2 tokens (decode, the prefetching path), 8 and 16 (whole tiles), 3, 13, 17 (tile remainders), 40 and 70
  // (past the 32-token threshold where the AVX2 kernel unpacks each half-group once for the chunk); 3, 18, 5 and
  // 66 blocks per row (66: two of the AVX2 long-batch segments of 64 blocks); 16, 48 and 80 rows (one group,
  // several, an odd number of groups for two threads).
  const std::vector<Shape> shapes32 = {{16, 96, 1},  {48, 576, 1},  {48, 576, 2},  {80, 160, 3},  {16, 96, 8},
                                       {48, 576, 13}, {80, 160, 16}, {48, 96, 17},  {16, 576, 40}, {80, 160, 70},
                                       {32, 2112, 5}, {32, 2112, 36}};
  // K-quants: rows of 1, 2, 3 and 9 super-blocks of 256, the same token counts.
  const std::vector<Shape> shapes256 = {{16, 256, 1},  {48, 512, 1},  {48, 512, 2},  {80, 256, 3},
                                        {16, 256, 8},  {48, 768, 13}, {80, 256, 16}, {48, 256, 17},
                                        {16, 512, 40}, {80, 256, 70}, {32, 2304, 5}, {32, 2304, 36}};
  ThreadPool pool1(1), pool2(2);
  MatmulScratch scratch;
  for (const Shape& s : tensor::info(type).block_size == 256 ? shapes256 : shapes32) {
    const std::vector<uint8_t> w = random_matrix(type, s.n_out, s.n_in);
    std::vector<uint8_t> wi(w.size());
    interleave_rows(type, w.data(), s.n_out, s.n_in, wi.data());
    const std::vector<float> x = testing::random_activations(s.n_tokens * s.n_in, 91);
    std::vector<float> expected, magnitude;
    testing::naive_matmul(type, w, s.n_out, s.n_in, x, s.n_tokens, expected, magnitude);
    const int64_t ldy = s.n_out + 3;
    std::vector<float> twin;  // the generic ISA's result: the interleaved scalar twin
    for (Isa isa : supported_isas()) {
      for (ThreadPool* pool : {&pool1, &pool2}) {
        std::vector<float> y(s.n_tokens * ldy, -7.0f);
        const MatmulTarget target{type, wi.data(), s.n_out, y.data(), ldy, WeightLayout::kInterleaved16};
        matmul_fused(isa, &target, 1, s.n_in, x.data(), s.n_tokens, *pool, scratch);
        if (isa == Isa::kGeneric && twin.empty()) twin = y;
        for (int64_t t = 0; t < s.n_tokens; ++t) {
          for (int64_t o = 0; o < s.n_out; ++o) {
            const float g = y[t * ldy + o];
            ASSERT_NEAR(g, expected[t * s.n_out + o], 1e-5 * magnitude[t * s.n_out + o])
                << tensor::dtype_name(type) << " " << isa_name(isa) << " threads=" << pool->n_threads() << " shape "
                << s.n_out << "x" << s.n_in << " tokens=" << s.n_tokens << " t=" << t << " o=" << o;
            // Every kernel adds in the twin's order and packs the twin's bytes: bit-identical.
            ASSERT_EQ(g, twin[t * ldy + o]) << isa_name(isa) << " t=" << t << " o=" << o;
          }
          for (int64_t o = s.n_out; o < ldy; ++o) ASSERT_EQ(y[t * ldy + o], -7.0f) << "padding written";
        }
      }
    }
  }
}

// Prompt rows on the amx ISA: the AMX-BF16 kernels equal their scalar twin up to the order of float additions (the
// same bf16 weights and activations; the tile unit sums a tile's products in an order and precision of its own, a
// few units in the last place from any sequential order), on 1 and 2 threads, token counts from 1 on and off the
// 16- and 32-token tiles, an odd number of groups (a lone 16-row tile), more groups than one block of B panels;
// and the twin is within bf16 rounding of the exact
// product of the dequantized weights and the unrounded activations (each factor off by at most 2^-9 of itself).
TEST_P(Interleaved, AmxBf16PromptKernelMatchesItsTwin) {
  const DType type = GetParam();
  ASSERT_NE(detail::bf16_interleaved_twin(type).tile, nullptr);
  const bool k_quant = tensor::info(type).block_size == 256;
  const std::vector<Shape> shapes = {{16, k_quant ? 256 : 96, 1},    {48, k_quant ? 512 : 576, 5},
                                     {16, k_quant ? 256 : 96, 64},   {48, k_quant ? 512 : 576, 70},
                                     {80, k_quant ? 768 : 160, 100}, {32, k_quant ? 2304 : 2112, 17},
                                     {64, k_quant ? 256 : 64, 129},
                                     // 9 groups of 66-72 KB panels: a block of 6 groups, then one of 3 (a lone group).
                                     {144, k_quant ? 2304 : 2112, 40},
                                     // Past split_tokens_from per thread: two threads split the tokens, 160 and 140.
                                     {48, k_quant ? 512 : 576, 300}};
  ThreadPool pool1(1), pool2(2);
  MatmulScratch scratch;
  for (const Shape& s : shapes) {
    const std::vector<uint8_t> w = random_matrix(type, s.n_out, s.n_in);
    std::vector<uint8_t> wi(w.size());
    interleave_rows(type, w.data(), s.n_out, s.n_in, wi.data());
    const std::vector<float> x = testing::random_activations(s.n_tokens * s.n_in, 93);
    const int64_t ldy = s.n_out + 3;
    const std::vector<float> twin = bf16_twin_matmul(type, wi, s.n_out, s.n_in, x, s.n_tokens, ldy);
    // Against the exact product of the dequantized rows with the float activations.
    const int64_t row_bytes = tensor::row_size_bytes(type, s.n_in);
    std::vector<float> wf(static_cast<size_t>(s.n_in)), magnitudes(static_cast<size_t>(s.n_tokens * ldy));
    for (int64_t o = 0; o < s.n_out; ++o) {
      dequantize_row(type, w.data() + o * row_bytes, wf.data(), s.n_in);
      for (int64_t t = 0; t < s.n_tokens; ++t) {
        double exact = 0, magnitude = 0;
        for (int64_t i = 0; i < s.n_in; ++i) {
          exact += static_cast<double>(wf[i]) * x[t * s.n_in + i];
          magnitude += std::fabs(static_cast<double>(wf[i]) * x[t * s.n_in + i]);
        }
        ASSERT_NEAR(twin[t * ldy + o], exact, 5e-3 * magnitude) << "twin t=" << t << " o=" << o;
        magnitudes[t * ldy + o] = static_cast<float>(magnitude);
      }
    }
    if (!cpu_supports(Isa::kAmx)) continue;
    ASSERT_TRUE(has_prompt_kernel(Isa::kAmx, type));
    std::vector<float> one_thread;
    for (ThreadPool* pool : {&pool1, &pool2}) {
      std::vector<float> y(s.n_tokens * ldy, -7.0f);
      const MatmulTarget target{type, wi.data(), s.n_out, y.data(), ldy, WeightLayout::kInterleaved16};
      matmul_fused(Isa::kAmx, &target, 1, s.n_in, x.data(), s.n_tokens, *pool, scratch, MatmulRows::kPrompt);
      // Each output is computed on its own: two threads, splitting the rows or (300 tokens) the tokens, give one
      // thread's bits.
      if (pool == &pool1) one_thread = y;
      ASSERT_TRUE(y == one_thread) << tensor::dtype_name(type) << " tokens=" << s.n_tokens;
      for (int64_t t = 0; t < s.n_tokens; ++t) {
        for (int64_t o = 0; o < ldy; ++o) {
          ASSERT_NEAR(y[t * ldy + o], twin[t * ldy + o], 2e-6 * magnitudes[t * ldy + o])
              << tensor::dtype_name(type) << " threads="
                                                       << pool->n_threads() << " shape " << s.n_out << "x" << s.n_in
                                                       << " tokens=" << s.n_tokens << " t=" << t << " o=" << o;
        }
      }
    }
  }
}

// Each row reads back as the row-major bytes it came from, and the embedding lookup over the interleaved copy equals
// get_rows over the row-major matrix bit for bit (a tied output projection is looked up there).
TEST_P(Interleaved, RowsReadBackAsStored) {
  const DType type = GetParam();
  const int64_t n_out = 48, n_in = tensor::info(type).block_size == 256 ? 512 : 160;
  const std::vector<uint8_t> w = random_matrix(type, n_out, n_in);
  std::vector<uint8_t> wi(w.size());
  interleave_rows(type, w.data(), n_out, n_in, wi.data());
  const int64_t row_bytes = tensor::row_size_bytes(type, n_in);
  std::vector<uint8_t> row(row_bytes);
  for (int64_t o = 0; o < n_out; ++o) {
    interleaved_row(type, wi.data(), n_in, o, row.data());
    ASSERT_TRUE(std::equal(row.begin(), row.end(), w.begin() + o * row_bytes)) << tensor::dtype_name(type) << " row " << o;
  }
  const std::vector<int32_t> ids = {0, 47, 15, 16, 31, 3, 3};
  std::vector<float> expected(ids.size() * n_in), got(ids.size() * n_in, -1.0f);
  get_rows(type, w.data(), n_in, ids.data(), static_cast<int64_t>(ids.size()), expected.data());
  get_rows_interleaved(type, wi.data(), n_in, ids.data(), static_cast<int64_t>(ids.size()), got.data());
  EXPECT_EQ(got, expected);
  EXPECT_NE(expected[0], expected[n_in]) << "rows 0 and 47 differ";
}

INSTANTIATE_TEST_SUITE_P(Types, Interleaved,
                         ::testing::Values(DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                           DType::Q4_K, DType::Q6_K),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(tensor::dtype_name(info.param));
                         });

// The layout keeps each group's bytes where the row-major group was: rows 16g.. start at byte 16g * row bytes (for
// the types whose bytes it moves without changing them; Q8_0 flips the top bits, Q5 regroups the fifth bits).
TEST(InterleaveRows, GroupsStayInPlaceAndHoldTheirRowsBytes) {
  const int64_t n_out = 32;
  for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
    const int64_t n_in = tensor::info(type).block_size == 256 ? 512 : 64;
    const std::vector<uint8_t> w = random_matrix(type, n_out, n_in);
    std::vector<uint8_t> wi(w.size());
    interleave_rows(type, w.data(), n_out, n_in, wi.data());
    const int64_t row_bytes = tensor::row_size_bytes(type, n_in);
    for (int64_t g = 0; g < 2; ++g) {
      std::vector<uint8_t> a(w.begin() + g * 16 * row_bytes, w.begin() + (g + 1) * 16 * row_bytes);
      std::vector<uint8_t> b(wi.begin() + g * 16 * row_bytes, wi.begin() + (g + 1) * 16 * row_bytes);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      EXPECT_EQ(a, b) << tensor::dtype_name(type) << " group " << g;
    }
    EXPECT_NE(w, wi);
  }
}

// Activations with the cases a packer can get wrong: random values, blocks of zeros (scale 0), a largest magnitude
// met twice with both signs (the Q8_K scale takes the first one's sign), values that scale to exactly k + 0.5
// (rounding away from zero, or to even for Q8_K), tiny and large magnitudes. [n]
std::vector<float> packing_activations(int64_t n, uint32_t seed) {
  std::vector<float> x = testing::random_activations(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / 32, j = i % 32;
    switch (block % 6) {
      case 1: x[static_cast<size_t>(i)] = 0.0f; break;
      case 2: x[static_cast<size_t>(i)] = j == 3 ? 2.0f : j == 9 ? -2.0f : x[static_cast<size_t>(i)]; break;
      case 3: x[static_cast<size_t>(i)] = j == 0 ? -127.0f : static_cast<float>(j) - 15.5f; break;  // scale 1
      case 4: x[static_cast<size_t>(i)] *= 1e-30f; break;
      case 5: x[static_cast<size_t>(i)] *= 1e20f; break;
      default: break;
    }
  }
  return x;
}

// Each ISA's packing of a step's activations for its interleaved kernels gives the scalar twin's bytes (the
// kernels' sums then add the same quants; MatmulMatchesRowMajorNaiveLoop checks the products): every type's
// packing, rows of 1 to 40 blocks of 32 (the AVX-512 packer takes 16 at a time: whole groups and every remainder)
// and 1 to 9 super-blocks of 256.
TEST(InterleavedPacking, EveryIsaPacksTheTwinsBytes) {
  for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    const detail::GemmKernel& twin = detail::kernels_for(Isa::kGeneric).gemm_interleaved[detail::slot(type)];
    ASSERT_NE(twin.pack, nullptr) << tensor::dtype_name(type);
    const int64_t block = tensor::info(type).block_size;
    for (int64_t n_blocks = 1; n_blocks <= (block == 256 ? 9 : 40); ++n_blocks) {
      const int64_t n_in = n_blocks * block;
      const std::vector<float> x = packing_activations(n_in, static_cast<uint32_t>(n_blocks));
      const int64_t row_bytes = twin.packed_row_bytes(n_in);
      alignas(64) static uint8_t want[16384], got[16384];
      ASSERT_LE(row_bytes, static_cast<int64_t>(sizeof(want)));
      twin.pack(x.data(), n_in, want);
      for (Isa isa : supported_isas()) {
        const detail::GemmKernel& k = detail::kernels_for(isa).gemm_interleaved[detail::slot(type)];
        if (k.pack == nullptr || isa == Isa::kGeneric) continue;
        ASSERT_EQ(k.pack_id, twin.pack_id) << isa_name(isa);
        ASSERT_EQ(k.packed_row_bytes(n_in), row_bytes) << isa_name(isa);
        std::memset(got, 0xa5, sizeof(got));
        k.pack(x.data(), n_in, got);
        for (int64_t b = 0; b < row_bytes; ++b)
          ASSERT_EQ(got[b], want[b]) << tensor::dtype_name(type) << " " << isa_name(isa) << " blocks=" << n_blocks
                                     << " byte " << b;
      }
    }
  }
}

TEST(InterleaveRows, ChosenOnlyWhereAKernelReadsIt) {
  const DType with_layout[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0};
  for (DType type : with_layout) EXPECT_FALSE(prefers_interleaved(Isa::kGeneric, type, 576)) << "scalar twin only";
  for (Isa isa : supported_isas()) {
    EXPECT_FALSE(prefers_interleaved(isa, DType::Q5_K, 576)) << "no interleaved Q5_K kernel";
    // The K-quant layouts have AVX-512 kernels only; AVX2 keeps its row-major K kernels.
    if (isa == Isa::kAvx2 || isa == Isa::kGeneric) {
      EXPECT_FALSE(prefers_interleaved(isa, DType::Q4_K, 576)) << isa_name(isa);
      EXPECT_FALSE(prefers_interleaved(isa, DType::Q6_K, 576)) << isa_name(isa);
    }
    EXPECT_FALSE(prefers_interleaved(isa, DType::Q4_1, 570)) << "570 rows are not whole groups";
    for (DType type : with_layout) {
      // AMX interleaves as AVX-512 does (its prompt kernels read that layout); AVX2 always has its interleaved
      // kernels, AVX-512 where the CPU has the VNNI, VBMI and BITALG of its matrix kernels.
      if (isa == Isa::kAmx) {
        EXPECT_EQ(prefers_interleaved(isa, type, 576), prefers_interleaved(Isa::kAvx512, type, 576))
            << tensor::dtype_name(type);
      }
      if (isa == Isa::kAvx2) {
        EXPECT_TRUE(prefers_interleaved(isa, type, 576)) << tensor::dtype_name(type);
      }
    }
  }
  EXPECT_DEATH(interleave_rows(DType::Q4_1, nullptr, 20, 64, nullptr), "whole groups");
}

}  // namespace
}  // namespace longhaul::kernels
