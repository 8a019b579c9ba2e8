// Internal: the AMX tile configuration both AMX translation units (gemm_amx.cc, gemm_amx_bf16.cc) load, and
// bench/compute_probe.cc's tile cases. Included only by them; anonymous namespace as in x86_common.h.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace longhaul::kernels::detail {
namespace {

// The 64-byte operand of ldtilecfg (palette 1): per tile, its rows and bytes per row.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

inline void load_tile_config(const TileConfig& c) {
  // GCC 12 does not treat ldtilecfg as reading its operand and drops the stores that filled it without this barrier.
  __asm__ __volatile__("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

// All eight tiles at their largest, 16 rows of 64 bytes: the AMX-BF16 prompt kernels' 2 x 2 tile blocks
// (gemm_amx_bf16.cc) and the compute probe's tile cases run so.
inline void load_full_tiles_config() {
  TileConfig c{};
  c.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  load_tile_config(c);
}

}  // namespace
}  // namespace longhaul::kernels::detail
