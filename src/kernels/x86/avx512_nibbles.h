// Internal: the quants of one 64-byte nibble chunk of a 16-row interleaved Q4_0 / Q4_1 / Q5_0 / Q5_1 group block
// (kernels/interleave.h), shared by the VNNI kernels (avx512_gemm_x16.h) and the AMX-BF16 ones (gemm_amx_bf16.cc).
// Anonymous namespace as in x86_common.h: each translation unit keeps its own copy.
#pragma once

#include <immintrin.h>

namespace longhaul::kernels::detail {
namespace {

// Chunk c (0..3) of a group block: v its 64 bytes (lane r = bytes 4c .. 4c + 3 of row r's qs), qh the block's 64
// bytes of fifth bits (Q5 only). lo = elements 4c .. 4c + 3 of each row, hi = 16 + 4c .. 16 + 4c + 3, as unsigned
// 4-bit (kHasQh: 5-bit) quants.
template <bool kHasQh>
inline void nibble_chunk(__m512i v, __m512i qh, int c, __m512i& lo, __m512i& hi) {
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  lo = _mm512_and_si512(v, low4);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
  if constexpr (kHasQh) {
    // Bit c of a qh byte is the fifth bit of its low-nibble element, bit 4 + c of its high one: move each to bit 4
    // and OR it in (ternary logic 0xF8: a | (b & c)). 16-bit shifts carry bits across bytes, which the mask drops.
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    lo = _mm512_ternarylogic_epi32(lo, _mm512_slli_epi16(qh, 4 - c), bit4, 0xF8);
    hi = _mm512_ternarylogic_epi32(hi, _mm512_srli_epi16(qh, c), bit4, 0xF8);
  }
}

}  // namespace
}  // namespace longhaul::kernels::detail
