// longhaul_compute_probe: how many of the kernels' own vector instructions one core of this machine retires per
// cycle, the compute ceiling beside longhaul_bandwidth_probe's memory ceiling.
//
// A step of several tokens (batched decode, speculative verification, a prompt) is bound by these rates, not by
// memory: the weight products by vpdpbusd (64 int8 multiply-adds per 512-bit instruction; vpmaddubsw and vpmaddwd
// on AVX2 without VNNI), attention by vfmadd231ps on keys converted from f16 by vcvtph2ps, and on the amx ISA a
// prompt's weight products by the tile unit's tdpbf16ps. Which of them a kernel runs at, and how far from it, says
// whether a faster kernel exists (docs/benchmarks.md). The rates differ between CPUs that report the same ISA: an
// AMD EPYC (Zen 4) issues one 512-bit multiply-add per cycle and two 256-bit ones, and converts f16 at half that
// rate beside them; an Intel Xeon (Sapphire Rapids) issues two 512-bit multiply-adds per cycle, and its f16
// conversion takes about two of those slots.
//
//   longhaul_compute_probe [--iterations N]
//
// Each case runs N iterations of six to twelve instructions on as many independent accumulators, timed on one
// thread: register operands only, so that nothing waits on memory, and enough accumulators that no instruction waits
// for the latency of the one before it on its accumulator. The clock is estimated the other way round, from a chain
// of dependent integer adds of a register (one per cycle on every x86 core this runs on), so "per cycle" is per
// core clock as the core ran then. Cases the CPU does not support are listed as such.

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/isa.h"
// Its tile configuration is built for the tile unit here too; only the AMX cases call it, after has_amx().
#pragma GCC push_options
#pragma GCC target("amx-tile")
#include "kernels/x86/amx_tiles.h"
#pragma GCC pop_options

namespace {

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Keeps a register value alive and opaque to the compiler, so that the loop is neither folded nor spilled.
#define KEEP(x) asm volatile("" : "+v"(x))

// Cycles per second: four dependent adds per iteration, one cycle each. The addend is a register, not an
// immediate: Intel's Golden Cove cores (Sapphire Rapids) fold chains of adds of small immediates at register
// renaming, and such a chain read a clock of 14 GHz there.
double clock_hz(int64_t n) {
  int64_t x = 0;
  int64_t one = 1;
  asm volatile("" : "+r"(one));  // opaque: the compiler cannot turn the adds back into immediates
  const double t0 = now_seconds();
  for (int64_t i = 0; i < n; ++i)
    asm volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(one));
  return 4.0 * static_cast<double>(n) / (now_seconds() - t0);
}

// Twelve independent accumulators a0..a11 updated by OP(a) each iteration; seconds for n iterations.
#define TWELVE(OP) \
  OP(a0); OP(a1); OP(a2); OP(a3); OP(a4); OP(a5); OP(a6); OP(a7); OP(a8); OP(a9); OP(a10); OP(a11)
#define KEEP_TWELVE() \
  KEEP(a0); KEEP(a1); KEEP(a2); KEEP(a3); KEEP(a4); KEEP(a5); KEEP(a6); KEEP(a7); KEEP(a8); KEEP(a9); KEEP(a10); \
  KEEP(a11)

// A case of one instruction: NAME(n) built for TARGET, twelve TYPE accumulators starting at INIT, the operands
// declared by OPERANDS (made opaque, so that nothing is computed ahead of the loop), each accumulator updated by
// UPDATE(a) per iteration.
#define TWELVE_CASE(NAME, TARGET, TYPE, INIT, OPERANDS, UPDATE)                                                    \
  __attribute__((target(TARGET))) double NAME(int64_t n) {                                                         \
    TYPE a0 = INIT, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0,      \
         a11 = a0;                                                                                                 \
    OPERANDS;                                                                                                      \
    const double t0 = now_seconds();                                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                                              \
      TWELVE(UPDATE);                                                                                              \
      KEEP_TWELVE();                                                                                               \
    }                                                                                                              \
    return now_seconds() - t0;                                                                                     \
  }

#define FMA_ZMM(a) a = _mm512_fmadd_ps(a, b, c)
TWELVE_CASE(zmm_fma, "avx512f", __m512, _mm512_set1_ps(0.1f),
            __m512 b = _mm512_set1_ps(0.999f); __m512 c = _mm512_set1_ps(1e-3f); KEEP(b); KEEP(c), FMA_ZMM)
#define FMA_YMM(a) a = _mm256_fmadd_ps(a, b, c)
TWELVE_CASE(ymm_fma, "avx2,fma", __m256, _mm256_set1_ps(0.1f),
            __m256 b = _mm256_set1_ps(0.999f); __m256 c = _mm256_set1_ps(1e-3f); KEEP(b); KEEP(c), FMA_YMM)
#define VNNI_ZMM(a) a = _mm512_dpbusd_epi32(a, x, y)
TWELVE_CASE(zmm_vpdpbusd, "avx512f,avx512vnni", __m512i, _mm512_set1_epi32(1),
            __m512i x = _mm512_set1_epi8(3); __m512i y = _mm512_set1_epi8(5); KEEP(x); KEEP(y), VNNI_ZMM)
#define BF16_ZMM(a) a = _mm512_dpbf16_ps(a, x, x)
TWELVE_CASE(zmm_vdpbf16ps, "avx512f,avx512bf16", __m512, _mm512_setzero_ps(),
            __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3f80)); KEEP(x), BF16_ZMM)
// The 128-bit lane shuffle of decode attention's score folds (kernels/x86/avx512_math.h, fold4_ps).
#define SHUFFLE_ZMM(a) a = _mm512_shuffle_f32x4(a, b, 0x4e)
TWELVE_CASE(zmm_shuff32x4, "avx512f", __m512, _mm512_set1_ps(0.1f), __m512 b = _mm512_set1_ps(0.2f); KEEP(b),
            SHUFFLE_ZMM)

// f16 -> f32 conversions of six registers, each made opaque again every iteration so that no conversion is hoisted
// out of the loop or merged with another (the converted value is added so that each result is used).
#define SIX_CONVERSIONS(NAME, TARGET, F32, ZERO, F16, F16_INIT, CONVERT, ADD)                                      \
  __attribute__((target(TARGET))) double NAME(int64_t n) {                                                         \
    F32 a0 = ZERO, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;                                                    \
    F16 h0 = F16_INIT, h1 = h0, h2 = h0, h3 = h0, h4 = h0, h5 = h0;                                                \
    const double t0 = now_seconds();                                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                                              \
      KEEP(h0); KEEP(h1); KEEP(h2); KEEP(h3); KEEP(h4); KEEP(h5);                                                  \
      a0 = ADD(a0, CONVERT(h0)), a1 = ADD(a1, CONVERT(h1)), a2 = ADD(a2, CONVERT(h2));                             \
      a3 = ADD(a3, CONVERT(h3)), a4 = ADD(a4, CONVERT(h4)), a5 = ADD(a5, CONVERT(h5));                             \
      KEEP(a0); KEEP(a1); KEEP(a2); KEEP(a3); KEEP(a4); KEEP(a5);                                                  \
    }                                                                                                              \
    return now_seconds() - t0;                                                                                     \
  }
SIX_CONVERSIONS(zmm_cvtph2ps, "avx512f", __m512, _mm512_setzero_ps(), __m256i, _mm256_set1_epi16(0x3c00),
                _mm512_cvtph_ps, _mm512_add_ps)
SIX_CONVERSIONS(ymm_cvtph2ps, "avx2,f16c", __m256, _mm256_setzero_ps(), __m128i, _mm_set1_epi16(0x3c00),
                _mm256_cvtph_ps, _mm256_add_ps)

// The AVX2 kernels' int8 products without VNNI (kernels/x86/avx2_gemm.h): u8 x s8 pairs summed to i16, then i16
// pairs summed to i32. Each accumulator feeds its own next instruction, so nothing is computed ahead of the loop.
#define MADDUBS_YMM(a) a = _mm256_maddubs_epi16(a, y)
TWELVE_CASE(ymm_vpmaddubsw, "avx2", __m256i, _mm256_set1_epi8(3), __m256i y = _mm256_set1_epi8(5); KEEP(y),
            MADDUBS_YMM)
#define MADDWD_YMM(a) a = _mm256_madd_epi16(a, y)
TWELVE_CASE(ymm_vpmaddwd, "avx2", __m256i, _mm256_set1_epi16(3), __m256i y = _mm256_set1_epi16(5); KEEP(y),
            MADDWD_YMM)

// Decode attention's q.k step at 64 dimensions and 3 queries per KV head: one key chunk converted from f16, then
// multiplied into the three queries' accumulators; four chunks per iteration (12 multiply-adds, 4 conversions).
__attribute__((target("avx512f"))) double zmm_cvt_3fma(int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
         a10 = a0, a11 = a0;
  __m512 q0 = _mm512_set1_ps(0.1f), q1 = _mm512_set1_ps(0.2f), q2 = _mm512_set1_ps(0.3f);
  __m256i h0 = _mm256_set1_epi16(0x3c00), h1 = h0, h2 = h0, h3 = h0;
  KEEP(q0);
  KEEP(q1);
  KEEP(q2);
  const double t0 = now_seconds();
  for (int64_t i = 0; i < n; ++i) {
    KEEP(h0);
    KEEP(h1);
    KEEP(h2);
    KEEP(h3);
    __m512 k = _mm512_cvtph_ps(h0);
    a0 = _mm512_fmadd_ps(k, q0, a0), a1 = _mm512_fmadd_ps(k, q1, a1), a2 = _mm512_fmadd_ps(k, q2, a2);
    k = _mm512_cvtph_ps(h1);
    a3 = _mm512_fmadd_ps(k, q0, a3), a4 = _mm512_fmadd_ps(k, q1, a4), a5 = _mm512_fmadd_ps(k, q2, a5);
    k = _mm512_cvtph_ps(h2);
    a6 = _mm512_fmadd_ps(k, q0, a6), a7 = _mm512_fmadd_ps(k, q1, a7), a8 = _mm512_fmadd_ps(k, q2, a8);
    k = _mm512_cvtph_ps(h3);
    a9 = _mm512_fmadd_ps(k, q0, a9), a10 = _mm512_fmadd_ps(k, q1, a10), a11 = _mm512_fmadd_ps(k, q2, a11);
    KEEP_TWELVE();
  }
  return now_seconds() - t0;
}

// AMX tile products (the amx ISA's prompt kernels, kernels/gemm_amx.cc and gemm_amx_bf16.cc): four independent
// 16 x 16 accumulator tiles (tmm0-3), each updated from two A tiles (tmm4, tmm5, 16 rows of 64 bytes) and two B
// tiles (tmm6, tmm7) per iteration, as a 2 x 2 block of a product. One tdpbusd is 16 x 16 x 64 u8 x s8
// multiply-adds (16,384), one tdpbf16ps 16 x 16 x 32 bf16 multiply-adds (8,192).
__attribute__((target("amx-tile"))) void configure_tiles() {
  longhaul::kernels::detail::load_full_tiles_config();
  alignas(64) static uint8_t ones[16 * 64];
  std::memset(ones, 1, sizeof(ones));
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
}

// A case of one tile instruction: NAME(n) built for TARGET, the 2 x 2 block's four products by PRODUCT per
// iteration, LOADS (the block's tile loads, or nothing) before them. The tile intrinsics take tile numbers as literals.
#define NO_LOADS
#define TILE_CASE(NAME, TARGET, PRODUCT, LOADS)                                                                        \
  __attribute__((target(TARGET))) double NAME(int64_t n) {                                                             \
    configure_tiles();                                                                                                 \
    alignas(64) static uint8_t operands[4][1024];                                                                      \
    std::memset(operands, 0, sizeof(operands));                                                                        \
    const double t0 = now_seconds();                                                                                   \
    for (int64_t i = 0; i < n; ++i) {                                                                                  \
      LOADS;                                                                                                           \
      PRODUCT(0, 4, 6);                                                                                                \
      PRODUCT(1, 4, 7);                                                                                                \
      PRODUCT(2, 5, 6);                                                                                                \
      PRODUCT(3, 5, 7);                                                                                                \
    }                                                                                                                  \
    const double seconds = now_seconds() - t0;                                                                         \
    _tile_release();                                                                                                   \
    return seconds;                                                                                                    \
  }
TILE_CASE(amx_tdpbusd, "amx-tile,amx-int8", _tile_dpbusd, NO_LOADS)
TILE_CASE(amx_tdpbf16ps, "amx-tile,amx-bf16", _tile_dpbf16ps, NO_LOADS)
// A step of a 2 x 2 tile block as the prompt kernels run it (gemm_amx_bf16.cc, tile_block): two A and two B tiles
// loaded (1 KB each, from L1) for four products. Eight tiles allow no more reuse than one load per product.
#define BLOCK_LOADS                                                                                                    \
  _tile_loadd(4, operands[0], 64);                                                                                     \
  _tile_loadd(5, operands[1], 64);                                                                                     \
  _tile_loadd(6, operands[2], 64);                                                                                     \
  _tile_loadd(7, operands[3], 64)
TILE_CASE(amx_block_step, "amx-tile,amx-bf16", _tile_dpbf16ps, BLOCK_LOADS)

// The amx ISA as the engine takes it (kernels/isa.cc): the tile instructions, and Linux's grant of the tile state.
bool has_amx() { return longhaul::kernels::cpu_supports(longhaul::kernels::Isa::kAmx); }

bool has_avx512f() { return __builtin_cpu_supports("avx512f"); }
// AVX2 as the ymm cases use it: with FMA and F16C.
bool has_avx2_fma_f16c() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool has_avx512_vnni() { return has_avx512f() && __builtin_cpu_supports("avx512vnni"); }
bool has_avx512_bf16() { return has_avx512f() && __builtin_cpu_supports("avx512bf16"); }

struct Case {
  const char* name;
  const char* what;  // what one instruction does
  bool (*supported)();
  double (*run)(int64_t);
  double per_iteration;  // instructions counted per iteration
};

}  // namespace

int main(int argc, char** argv) {
  int64_t iterations = 50'000'000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
      iterations = std::atoll(argv[++i]);
      if (iterations < 1000) {
        std::fprintf(stderr, "longhaul_compute_probe: --iterations %s is below the minimum of 1000\n", argv[i]);
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: longhaul_compute_probe [--iterations N]\n");
      return 2;
    }
  }
  const Case cases[] = {
      {"vfmadd231ps zmm", "16 f32 multiply-adds", has_avx512f, zmm_fma, 12},
      {"vfmadd231ps ymm", "8 f32 multiply-adds", has_avx2_fma_f16c, ymm_fma, 12},
      {"vcvtph2ps zmm (+ vaddps)", "16 f16 -> f32", has_avx512f, zmm_cvtph2ps, 6},
      {"vcvtph2ps ymm (+ vaddps)", "8 f16 -> f32", has_avx2_fma_f16c, ymm_cvtph2ps, 6},
      {"vshuff32x4 zmm", "128-bit lane shuffle", has_avx512f, zmm_shuff32x4, 12},
      {"vpdpbusd zmm", "64 u8 x s8 multiply-adds", has_avx512_vnni, zmm_vpdpbusd, 12},
      {"vpmaddubsw ymm", "32 u8 x s8 products, pairs summed to i16", has_avx2_fma_f16c, ymm_vpmaddubsw, 12},
      {"vpmaddwd ymm", "16 i16 x i16 products, pairs summed to i32", has_avx2_fma_f16c, ymm_vpmaddwd, 12},
      {"vdpbf16ps zmm", "32 bf16 multiply-adds", has_avx512_bf16, zmm_vdpbf16ps, 12},
      {"vcvtph2ps + 3 vfmadd231ps zmm", "a key chunk against 3 queries (counted: the multiply-adds)", has_avx512f,
       zmm_cvt_3fma, 12},
      {"tdpbusd (AMX)", "16 x 16 x 64 = 16,384 u8 x s8 multiply-adds", has_amx, amx_tdpbusd, 4},
      {"tdpbf16ps (AMX)", "16 x 16 x 32 = 8,192 bf16 multiply-adds", has_amx, amx_tdpbf16ps, 4},
      {"4 tileloadd + 4 tdpbf16ps (AMX)", "a 2 x 2 tile block's step (counted: the tdpbf16ps)", has_amx,
       amx_block_step, 4},
  };
  clock_hz(iterations);  // wake the core to its working clock before measuring it
  const double hz = clock_hz(iterations);
  std::printf("clock (dependent adds): %.2f GHz, one thread\n\n", hz / 1e9);
  std::printf("| instruction | does | per cycle | per second (G) |\n|---|---|---:|---:|\n");
  for (const Case& c : cases) {
    if (!c.supported()) {
      std::printf("| %s | %s | not supported | |\n", c.name, c.what);
      continue;
    }
    c.run(iterations / 10);
    const double seconds = c.run(iterations);
    const double per_second = c.per_iteration * static_cast<double>(iterations) / seconds;
    std::printf("| %s | %s | %.2f | %.2f |\n", c.name, c.what, per_second / hz, per_second / 1e9);
  }
  return 0;
}
