// Internal: software prefetch of attention rows, the one helper behind the per-ISA attention kernels
// (attention_avx2.cc, attention_avx512.cc) and kernels::prefetch_attention_rows (ops.cc). __builtin_prefetch(p, 0, 3)
// is prefetcht0 on x86 and needs no ISA flags, so any translation unit may include this.
#pragma once

#include <cstdint>

namespace longhaul::kernels::detail {
namespace {

// Every function that only prefetches is always inlined, and so is every reader's prefetch() that calls one. GCC 12
// counts a function whose only effect is __builtin_prefetch as pure, and its dead code elimination then deletes a
// call to it (a pure call whose result is unused) before the late inliner could keep the prefetches: the f16
// attention kernels had lost every prefetch this way (from 9a902e9 to 124bd0b), SmolLM2's decode attention ran about
// 1.4x slower from memory, and no test or result showed it. The ctest kernels_prefetch_kept
// (tests/unit/kernels/prefetch_kept_test.py) reads the built kernels for them.
#define LONGHAUL_PREFETCH_INLINE [[gnu::always_inline]] inline

// Requests the n_bytes from p, a 64-byte line at a time (rows of f16 cells; a quantized page's codes and scales).
LONGHAUL_PREFETCH_INLINE void prefetch_bytes(const void* p, int64_t n_bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < n_bytes; off += 64) __builtin_prefetch(c + off, 0, 3);
}

// Requests rows [j0, j1) of an attention call's f16 keys and values (k_row_bytes / v_row_bytes each) into the
// cache. Decode reads a head's rows once, from memory, a page at a time: asking one 16-key block ahead keeps loads
// in flight while the current block's dot products run. The kernels ask a few rows at a time, spread over the
// block's work: asked in one burst, the block's 64 lines (at 64 dimensions) overran the core's fill buffers and the
// prefetch instructions themselves waited for memory. Measured (docs/benchmarks.md, "Decode attention prefetch" and
// "Weight prefetch in batched decode, and attention prefetch across pages and spread out"): SmolLM2 (64 dimensions)
// decodes 15-25% faster at depth 4096 with it. Gemma 3 (256 dimensions) was 9-13% slower with the burst and is
// 5-11% faster with the spread requests of the AVX-512 kernel, which asks at every head size; the AVX2 kernel asks
// only for heads of up to 64 dimensions (neutral on Gemma 3). A call is one page: model/attention_reads.cc asks for the
// next page's first block (kernels::prefetch_attention_rows) before the call, so that no page starts cold. Those
// figures are an Intel Xeon's; on an AMD EPYC (Zen 4), once a head's pages lie back to back (kv/kv_cache.h), the
// hardware prefetcher streams them faster without the per-block requests, and the avx512 table there takes the
// kernel without them (attention_update_avx512_streamed; the next-page request stays).
LONGHAUL_PREFETCH_INLINE void prefetch_kv_rows(const uint16_t* k, int64_t k_stride, const uint16_t* v,
                                               int64_t v_stride, int k_row_bytes, int v_row_bytes, int32_t j0,
                                               int32_t j1) {
  for (int32_t j = j0; j < j1; ++j) {
    prefetch_bytes(k + j * k_stride, k_row_bytes);
    prefetch_bytes(v + j * v_stride, v_row_bytes);
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
