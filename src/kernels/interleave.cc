// The interleaved weight layout (see interleave.h): the rearrangement done at load, and the scalar twins of the
// kernels that read it (packing and tile), which the SIMD kernels must equal bit for bit.
#include "kernels/interleave.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/isa_kernels.h"
#include "kernels/quant.h"
#include "kernels/ref/quant_ref.h"
#include "tensor/half.h"
#include "tensor/quant_blocks.h"

namespace longhaul::kernels {

namespace {
using tensor::DType;

constexpr int64_t kQk = tensor::kQk32;

bool has_layout(DType type) { return type == DType::Q4_1 || type == DType::Q8_0; }

// One group of 16 rows, block b: src rows are row-major blocks of `Block`.
template <class Block>
const Block& block_of(const void* src, int64_t nb, int64_t row, int64_t b) {
  return static_cast<const Block*>(src)[row * nb + b];
}

void interleave_q4_1(const void* src, int64_t n_out, int64_t nb, uint8_t* dst) {
  for (int64_t g = 0; g < n_out / kInterleaveRows; ++g) {
    for (int64_t b = 0; b < nb; ++b, dst += kInterleaveRows * sizeof(tensor::BlockQ4_1)) {
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        const auto& blk = block_of<tensor::BlockQ4_1>(src, nb, g * kInterleaveRows + r, b);
        std::memcpy(dst + 2 * r, &blk.d, 2);
        std::memcpy(dst + 32 + 2 * r, &blk.m, 2);
        for (int c = 0; c < 4; ++c) std::memcpy(dst + 64 + 64 * c + 4 * r, blk.qs + 4 * c, 4);
      }
    }
  }
}

void interleave_q8_0(const void* src, int64_t n_out, int64_t nb, uint8_t* dst) {
  for (int64_t g = 0; g < n_out / kInterleaveRows; ++g) {
    for (int64_t b = 0; b < nb; ++b, dst += kInterleaveRows * sizeof(tensor::BlockQ8_0)) {
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        const auto& blk = block_of<tensor::BlockQ8_0>(src, nb, g * kInterleaveRows + r, b);
        std::memcpy(dst + 2 * r, &blk.d, 2);
        for (int c = 0; c < 8; ++c) {
          // q + 128 as an unsigned byte is q with its top bit flipped.
          uint32_t four;
          std::memcpy(&four, blk.qs + 4 * c, 4);
          four ^= 0x80808080u;
          std::memcpy(dst + 32 + 64 * c + 4 * r, &four, 4);
        }
      }
    }
  }
}

// The inverses: block b of row `row` (group g = row / 16, lane r = row % 16) back in row-major form.
void deinterleave_q4_1(const uint8_t* group_block, int64_t r, tensor::BlockQ4_1& blk) {
  std::memcpy(&blk.d, group_block + 2 * r, 2);
  std::memcpy(&blk.m, group_block + 32 + 2 * r, 2);
  for (int c = 0; c < 4; ++c) std::memcpy(blk.qs + 4 * c, group_block + 64 + 64 * c + 4 * r, 4);
}

void deinterleave_q8_0(const uint8_t* group_block, int64_t r, tensor::BlockQ8_0& blk) {
  std::memcpy(&blk.d, group_block + 2 * r, 2);
  for (int c = 0; c < 8; ++c) {
    uint32_t four;
    std::memcpy(&four, group_block + 32 + 64 * c + 4 * r, 4);
    four ^= 0x80808080u;
    std::memcpy(blk.qs + 4 * c, &four, 4);
  }
}

// ---- Scalar twins of the interleaved kernels.

int64_t packed_row_bytes(int64_t n_in) { return (n_in / kQk * 40 + 63) / 64 * 64; }

// Packs one activation row (layout in interleave.h). kQ8_1: s as Q8_1 stores it (Q4_1 weights); else the integer
// offset term -128 * sum q (Q8_0 weights, stored as q + 128).
template <bool kQ8_1>
void pack_row(const float* x, int64_t n_in, uint8_t* dst) {
  const int64_t nb = n_in / kQk;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + 32 * nb);
  uint8_t* extra = dst + 36 * nb;
  for (int64_t b = 0; b < nb; ++b) {
    tensor::BlockQ8_1 blk;
    ref::quantize_q8_1(x + b * kQk, &blk, kQk);
    std::memcpy(q + b * kQk, blk.qs, kQk);
    d[b] = tensor::f16_to_f32(blk.d);
    if constexpr (kQ8_1) {
      const float s = tensor::f16_to_f32(blk.s);
      std::memcpy(extra + 4 * b, &s, 4);
    } else {
      int32_t sum = 0;
      for (int j = 0; j < kQk; ++j) sum += blk.qs[j];
      const int32_t offset = -128 * sum;
      std::memcpy(extra + 4 * b, &offset, 4);
    }
  }
  std::memset(dst + 40 * nb, 0, static_cast<size_t>(packed_row_bytes(n_in) - 40 * nb));
}

// y[t * ldy + r] for the n_rows (a multiple of 16) rows starting at w, lane by lane in the order the SIMD kernel
// adds: per block, acc = fma(float(isum), d_w * d_a, acc), then (Q4_1) acc = fma(m_w, s_a, acc).
template <DType kType>
void tile_twin(int64_t n_in, const uint8_t* w, int64_t w_stride_bytes, int64_t n_rows, const uint8_t* act,
               int64_t act_stride_bytes, int64_t n_tokens, float* y, int64_t ldy) {
  constexpr bool kQ4_1 = kType == DType::Q4_1;
  constexpr int64_t kGroupBlockBytes = kQ4_1 ? 320 : 544;
  const int64_t nb = n_in / kQk;
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    const uint8_t* wg = w + g * kInterleaveRows * w_stride_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const uint8_t* a = act + t * act_stride_bytes;
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      for (int r = 0; r < kInterleaveRows; ++r) {
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* wb = wg + b * kGroupBlockBytes;
          const int8_t* ab = aq + b * kQk;
          float d_a, extra_f;
          int32_t isum;
          std::memcpy(&d_a, a + 32 * nb + 4 * b, 4);
          std::memcpy(&extra_f, a + 36 * nb + 4 * b, 4);
          std::memcpy(&isum, a + 36 * nb + 4 * b, 4);
          uint16_t d16;
          std::memcpy(&d16, wb + 2 * r, 2);
          const float d_w = tensor::f16_to_f32(d16);
          if constexpr (kQ4_1) {
            isum = 0;
            for (int c = 0; c < 4; ++c) {
              for (int i = 0; i < 4; ++i) {
                const uint8_t byte = wb[64 + 64 * c + 4 * r + i];
                isum += (byte & 0x0f) * ab[4 * c + i] + (byte >> 4) * ab[16 + 4 * c + i];
              }
            }
          } else {
            for (int c = 0; c < 8; ++c) {
              for (int i = 0; i < 4; ++i) isum += wb[32 + 64 * c + 4 * r + i] * ab[4 * c + i];
            }
          }
          acc = std::fma(static_cast<float>(isum), d_w * d_a, acc);
          if constexpr (kQ4_1) {
            uint16_t m16;
            std::memcpy(&m16, wb + 32 + 2 * r, 2);
            acc = std::fma(tensor::f16_to_f32(m16), extra_f, acc);
          }
        }
        y[t * ldy + g * kInterleaveRows + r] = acc;
      }
    }
  }
}

template <DType kType>
detail::GemmKernel twin() {
  detail::GemmKernel k;
  k.pack_id = kType == DType::Q4_1 ? 101 : 102;  // distinct from the row-major packings
  k.packed_row_bytes = packed_row_bytes;
  k.pack = pack_row<kType == DType::Q4_1>;
  k.tile = tile_twin<kType>;
  k.chunk_rows_multiple = kInterleaveRows;
  k.chunk_tokens = 64;
  return k;
}

}  // namespace

namespace detail {
void add_interleaved_twins(IsaKernels& k) {
  k.gemm_interleaved[slot(DType::Q4_1)] = twin<DType::Q4_1>();
  k.gemm_interleaved[slot(DType::Q8_0)] = twin<DType::Q8_0>();
}
}  // namespace detail

void interleaved_row(DType type, const void* w, int64_t n_in, int64_t row, void* dst) {
  LH_CHECK_MSG(has_layout(type), std::string("interleaved_row: no interleaved layout for ") + tensor::dtype_name(type));
  LH_CHECK_MSG(n_in % kQk == 0 && row >= 0, "interleaved_row: n_in=" + std::to_string(n_in) + " row=" +
                                                 std::to_string(row));
  const int64_t nb = n_in / kQk;
  const int64_t row_bytes = tensor::row_size_bytes(type, n_in);
  const int64_t group_block_bytes = row_bytes / nb * kInterleaveRows;
  // Group g starts where row 16g did (interleave.h).
  const uint8_t* group = static_cast<const uint8_t*>(w) + row / kInterleaveRows * kInterleaveRows * row_bytes;
  const int64_t r = row % kInterleaveRows;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* gb = group + b * group_block_bytes;
    if (type == DType::Q4_1) {
      deinterleave_q4_1(gb, r, static_cast<tensor::BlockQ4_1*>(dst)[b]);
    } else {
      deinterleave_q8_0(gb, r, static_cast<tensor::BlockQ8_0*>(dst)[b]);
    }
  }
}

void get_rows_interleaved(DType type, const void* w, int64_t n_cols, const int32_t* ids, int64_t n_ids,
                          float* dst) {
  std::vector<uint8_t> row(static_cast<size_t>(tensor::row_size_bytes(type, n_cols)));
  for (int64_t i = 0; i < n_ids; ++i) {
    LH_CHECK_MSG(ids[i] >= 0, "get_rows_interleaved: negative id " + std::to_string(ids[i]));
    interleaved_row(type, w, n_cols, ids[i], row.data());
    dequantize_row(type, row.data(), dst + i * n_cols, n_cols);  // as get_rows does for a row-major row
  }
}

bool prefers_interleaved(Isa isa, DType type, int64_t n_out) {
  if (!has_layout(type) || n_out % kInterleaveRows != 0 || n_out <= 0) return false;
  const detail::IsaKernels& k = detail::kernels_for(isa);
  return k.interleave_at_load[detail::slot(type)] && k.gemm_large[detail::slot(type)].tile == nullptr;
}

bool prefers_interleaved(DType type, int64_t n_out) { return prefers_interleaved(active_isa(), type, n_out); }

void interleave_rows(DType type, const void* src, int64_t n_out, int64_t n_in, void* dst) {
  LH_CHECK_MSG(has_layout(type), std::string("interleave_rows: no interleaved layout for ") + tensor::dtype_name(type));
  LH_CHECK_MSG(n_out % kInterleaveRows == 0 && n_in % kQk == 0,
               "interleave_rows: [" + std::to_string(n_out) + ", " + std::to_string(n_in) +
                   "] is not whole groups of 16 rows of 32-element blocks");
  auto* out = static_cast<uint8_t*>(dst);
  if (type == DType::Q4_1) {
    interleave_q4_1(src, n_out, n_in / kQk, out);
  } else {
    interleave_q8_0(src, n_out, n_in / kQk, out);
  }
}

}  // namespace longhaul::kernels
