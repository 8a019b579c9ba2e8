// The interleaved weight layout (see interleave.h): the rearrangement done at load, and the scalar twins of the
// kernels that read it (packing and tile), which the SIMD kernels must equal bit for bit.
#include "kernels/interleave.h"

#include <cmath>
#include <cstddef>
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

// Where the fields of a type's row-major block are, and where the interleaved layout puts them (interleave.h).
struct Format {
  int64_t block_bytes = 0;  // bytes of one row-major block (32 elements)
  int64_t m_at = -1;        // byte of f16 m in the row-major block; -1: none
  int64_t qh_at = -1;       // byte of the 4 fifth-bit bytes; -1: none
  int64_t qs_at = 2;        // byte of the quants (16 nibble bytes, or 32 bytes for Q8_0)
  bool nibbles = true;      // 4-bit pairs, else one byte per quant
  int32_t offset = 0;       // u = q + offset

  // Byte offsets of the parts inside a group's block of 16 rows.
  int64_t group_m() const { return 32; }
  int64_t group_qh() const { return m_at >= 0 ? 64 : 32; }
  int64_t group_quants() const { return group_qh() + (qh_at >= 0 ? 64 : 0); }
  int64_t group_bytes() const { return kInterleaveRows * block_bytes; }
};

bool format_of(DType type, Format& f) {
  switch (type) {
    case DType::Q4_0: f = {sizeof(tensor::BlockQ4_0), -1, -1, 2, true, 8}; return true;
    case DType::Q4_1: f = {sizeof(tensor::BlockQ4_1), 2, -1, 4, true, 0}; return true;
    case DType::Q5_0: f = {sizeof(tensor::BlockQ5_0), -1, 2, 6, true, 16}; return true;
    case DType::Q5_1: f = {sizeof(tensor::BlockQ5_1), 2, 4, 8, true, 0}; return true;
    case DType::Q8_0: f = {sizeof(tensor::BlockQ8_0), -1, -1, 2, false, 128}; return true;
    default: return false;
  }
}

bool has_32_layout(DType type) {
  Format f;
  return format_of(type, f);
}

// The fifth bits of a Q5 block (bit j = element j) regrouped for interleave.h's qh part: byte i (0..3) of the
// result holds the bits of elements 4c + i in bit c and of 16 + 4c + i in bit 4 + c.
uint32_t regroup_high_bits(uint32_t qh) {
  // Bits i, i + 4, i + 8, i + 12 of a 16-bit half, gathered into bits 0..3.
  auto every_fourth = [](uint32_t half, int i) {
    const uint32_t t = (half >> i) & 0x1111u;
    return (t | t >> 3 | t >> 6 | t >> 9) & 0xfu;
  };
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i)
    out |= (every_fourth(qh & 0xffffu, i) | every_fourth(qh >> 16, i) << 4) << (8 * i);
  return out;
}

void interleave_blocks(const Format& f, const uint8_t* src, int64_t n_out, int64_t nb, uint8_t* dst) {
  const int64_t row_bytes = nb * f.block_bytes;
  for (int64_t g = 0; g < n_out / kInterleaveRows; ++g) {
    for (int64_t b = 0; b < nb; ++b, dst += f.group_bytes()) {
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        const uint8_t* blk = src + (g * kInterleaveRows + r) * row_bytes + b * f.block_bytes;
        std::memcpy(dst + 2 * r, blk, 2);
        if (f.m_at >= 0) std::memcpy(dst + f.group_m() + 2 * r, blk + f.m_at, 2);
        if (f.qh_at >= 0) {
          uint32_t qh;
          std::memcpy(&qh, blk + f.qh_at, 4);
          qh = regroup_high_bits(qh);
          std::memcpy(dst + f.group_qh() + 4 * r, &qh, 4);
        }
        uint8_t* quants = dst + f.group_quants() + 4 * r;
        for (int c = 0; c < (f.nibbles ? 4 : 8); ++c) {
          uint32_t four;
          std::memcpy(&four, blk + f.qs_at + 4 * c, 4);
          // Q8_0: q + 128 as an unsigned byte is q with its top bit flipped.
          if (!f.nibbles) four ^= 0x80808080u;
          std::memcpy(quants + 64 * c, &four, 4);
        }
      }
    }
  }
}

// The inverse of regroup_high_bits.
uint32_t ungroup_high_bits(uint32_t regrouped) {
  // Bits 0..3 of a nibble spread to bits 0, 4, 8, 12.
  auto spread = [](uint32_t n) { return (n & 1u) | (n & 2u) << 3 | (n & 4u) << 6 | (n & 8u) << 9; };
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t byte = (regrouped >> (8 * i)) & 0xffu;
    out |= spread(byte & 0xfu) << i | spread(byte >> 4) << (16 + i);
  }
  return out;
}

// The inverse of interleave_blocks for one block: lane r of a group's block back in row-major form.
void deinterleave_block(const Format& f, const uint8_t* group_block, int64_t r, uint8_t* blk) {
  std::memcpy(blk, group_block + 2 * r, 2);
  if (f.m_at >= 0) std::memcpy(blk + f.m_at, group_block + f.group_m() + 2 * r, 2);
  if (f.qh_at >= 0) {
    uint32_t qh;
    std::memcpy(&qh, group_block + f.group_qh() + 4 * r, 4);
    qh = ungroup_high_bits(qh);
    std::memcpy(blk + f.qh_at, &qh, 4);
  }
  for (int c = 0; c < (f.nibbles ? 4 : 8); ++c) {
    uint32_t four;
    std::memcpy(&four, group_block + f.group_quants() + 64 * c + 4 * r, 4);
    if (!f.nibbles) four ^= 0x80808080u;
    std::memcpy(blk + f.qs_at + 4 * c, &four, 4);
  }
}

// ---- Scalar twins of the interleaved kernels.

int64_t packed_row_bytes(int64_t n_in) { return (n_in / kQk * 40 + 63) / 64 * 64; }

// Packs one activation row (layout in interleave.h). kS: s as Q8_1 stores it (weights with a minimum); else the
// integer sum of the quants (weights with an offset).
template <bool kS>
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
    if constexpr (kS) {
      const float s = tensor::f16_to_f32(blk.s);
      std::memcpy(extra + 4 * b, &s, 4);
    } else {
      int32_t sum = 0;
      for (int j = 0; j < kQk; ++j) sum += blk.qs[j];
      std::memcpy(extra + 4 * b, &sum, 4);
    }
  }
  std::memset(dst + 40 * nb, 0, static_cast<size_t>(packed_row_bytes(n_in) - 40 * nb));
}

// The unsigned quant u of element j (0..31) of row r in a group's block wb.
uint32_t stored_quant(const Format& f, const uint8_t* wb, int r, int j) {
  const uint8_t* quants = wb + f.group_quants();
  if (!f.nibbles) return quants[64 * (j / 4) + 4 * r + j % 4];
  const int c = (j % 16) / 4, i = j % 4;
  const uint8_t byte = quants[64 * c + 4 * r + i];
  uint32_t u = j < 16 ? byte & 0x0fu : byte >> 4;
  if (f.qh_at >= 0) u |= ((wb[f.group_qh() + 4 * r + i] >> (c + (j < 16 ? 0 : 4))) & 1u) << 4;
  return u;
}

// y[t * ldy + r] for the n_rows (a multiple of 16) rows starting at w, lane by lane in the order the SIMD kernels
// add: per block, acc = fma(float(isum), d_w * d_a, acc), then (weights with a minimum) acc = fma(m_w, s_a, acc).
template <DType kType>
void tile_twin(int64_t n_in, const uint8_t* w, int64_t w_stride_bytes, int64_t n_rows, const uint8_t* act,
               int64_t act_stride_bytes, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  Format f;
  format_of(kType, f);
  const int64_t nb = n_in / kQk;
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    const uint8_t* wg = w + g * kInterleaveRows * w_stride_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const uint8_t* a = act + t * act_stride_bytes;
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      for (int r = 0; r < kInterleaveRows; ++r) {
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* wb = wg + b * f.group_bytes();
          const int8_t* ab = aq + b * kQk;
          float d_a, s_a;
          int32_t sum_a;
          std::memcpy(&d_a, a + 32 * nb + 4 * b, 4);
          std::memcpy(&s_a, a + 36 * nb + 4 * b, 4);
          std::memcpy(&sum_a, a + 36 * nb + 4 * b, 4);
          int32_t isum = f.m_at >= 0 ? 0 : -f.offset * sum_a;
          for (int j = 0; j < kQk; ++j) isum += static_cast<int32_t>(stored_quant(f, wb, r, j)) * ab[j];
          uint16_t d16;
          std::memcpy(&d16, wb + 2 * r, 2);
          acc = std::fma(static_cast<float>(isum), tensor::f16_to_f32(d16) * d_a, acc);
          if (f.m_at >= 0) {
            uint16_t m16;
            std::memcpy(&m16, wb + f.group_m() + 2 * r, 2);
            acc = std::fma(tensor::f16_to_f32(m16), s_a, acc);
          }
        }
        y[t * ldy + g * kInterleaveRows + r] = acc;
      }
    }
  }
}

template <DType kType>
detail::GemmKernel twin() {
  constexpr bool kS = kType == DType::Q4_1 || kType == DType::Q5_1;
  detail::GemmKernel k;
  k.pack_id = kS ? detail::kPackInterleavedS : detail::kPackInterleavedSum;
  k.packed_row_bytes = packed_row_bytes;
  k.pack = pack_row<kS>;
  k.tile = tile_twin<kType>;
  k.chunk_rows_multiple = kInterleaveRows;
  k.chunk_tokens = 64;
  return k;
}

// ---- The K-quant layouts (Q4_K, Q6_K; interleave.h): super-blocks of 256 elements.

constexpr int64_t kQkK = tensor::kQkK;

// A field of the row-major super-block and its place in a group's super-block: a 2-byte field (an f16 scale) goes
// to group_at + 2 r for row r; a longer one, as 4-byte words, word c to group_at + 64 c + 4 r (lane r of vector c).
struct KField {
  int64_t at, bytes, group_at;
};
constexpr KField kQ4KFields[] = {{0, 2, 0}, {2, 2, 32}, {4, 12, 64}, {16, 128, 256}};          // d, dmin, scales, qs
constexpr KField kQ6KFields[] = {{208, 2, 0}, {192, 16, 32}, {0, 128, 288}, {128, 64, 2336}};  // d, scales, ql, qh
static_assert(offsetof(tensor::BlockQ4_K, dmin) == 2 && offsetof(tensor::BlockQ4_K, scales) == 4 &&
              offsetof(tensor::BlockQ4_K, qs) == 16);
static_assert(offsetof(tensor::BlockQ6_K, qh) == 128 && offsetof(tensor::BlockQ6_K, scales) == 192 &&
              offsetof(tensor::BlockQ6_K, d) == 208);

bool has_k_layout(DType type) { return type == DType::Q4_K || type == DType::Q6_K; }

// Whether the type has an interleaved layout of either family.
bool has_layout(DType type) { return has_32_layout(type) || has_k_layout(type); }

int64_t k_block_bytes(DType type) { return tensor::row_size_bytes(type, kQkK); }

// Calls copy(byte in the row-major super-block, byte in the group's super-block for row r, bytes) for each piece.
template <class Copy>
void for_each_k_piece(DType type, int64_t r, Copy copy) {
  for (const KField& f : type == DType::Q4_K ? kQ4KFields : kQ6KFields) {
    if (f.bytes == 2) {
      copy(f.at, f.group_at + 2 * r, 2);
      continue;
    }
    for (int64_t c = 0; c < f.bytes / 4; ++c) copy(f.at + 4 * c, f.group_at + 64 * c + 4 * r, 4);
  }
}

// Row r's super-block blk into its group's super-block gb, and back out.
void k_block_to_group(DType type, const uint8_t* blk, int64_t r, uint8_t* gb) {
  for_each_k_piece(type, r, [&](int64_t at, int64_t group_at, size_t n) { std::memcpy(gb + group_at, blk + at, n); });
}
void k_block_from_group(DType type, const uint8_t* gb, int64_t r, uint8_t* blk) {
  for_each_k_piece(type, r, [&](int64_t at, int64_t group_at, size_t n) { std::memcpy(blk + at, gb + group_at, n); });
}

// Packed activations of the K kernels (interleave.h): per super-block the Q8_K quants, bsums and d.
constexpr int64_t kKPackBytes = 384;
int64_t packed_row_bytes_k(int64_t n_in) { return n_in / kQkK * kKPackBytes; }

void pack_row_k(const float* x, int64_t n_in, uint8_t* dst) {
  for (int64_t ib = 0; ib < n_in / kQkK; ++ib) {
    tensor::BlockQ8_K b;
    ref::quantize_q8_k(x + ib * kQkK, &b, kQkK);
    uint8_t* out = dst + ib * kKPackBytes;
    std::memcpy(out, b.qs, 256);
    std::memcpy(out + 256, b.bsums, 32);
    std::memset(out + 288, 0, 32);
    for (int l = 0; l < 16; ++l) std::memcpy(out + 320 + 4 * l, &b.d, 4);
  }
}

// Unsigned quant of element e (0..255) of a row-major super-block: Q4_K's nibble (0..15), Q6_K's q + 32 (0..63).
uint32_t k_quant(DType type, const uint8_t* blk, int e) {
  if (type == DType::Q4_K) {
    const uint8_t byte = blk[16 + 32 * (e / 64) + e % 32];  // qs
    return e % 64 < 32 ? byte & 0x0fu : byte >> 4;
  }
  // Q6_K: e = 128 h + 32 k + l; low 4 bits from ql[64 h + 32 (k % 2) + l] (high nibble for k >= 2), bits 4-5 from
  // bits 2k, 2k + 1 of qh[32 h + l].
  const int h = e / 128, k = (e % 128) / 32, l = e % 32;
  const uint8_t low = blk[64 * h + 32 * (k % 2) + l];
  const uint8_t high = blk[128 + 32 * h + l];
  return (k < 2 ? low & 0x0fu : low >> 4) | ((high >> (2 * k)) & 3u) << 4;
}

// y[t * ldy + r], per row from its super-blocks read back out of the group: the integer total of a super-block is
// exact (avx512_gemm_x16_k.h), then acc = fma(float(total), d_w * d_a, acc) and, for Q4_K,
// acc = fma(-float(mins), dmin_w * d_a, acc): the SIMD kernels' float steps.
template <DType kType>
void tile_twin_k(int64_t n_in, const uint8_t* w, int64_t w_stride_bytes, int64_t n_rows, const uint8_t* act,
                 int64_t act_stride_bytes, int64_t n_tokens, float* y, int64_t ldy, uint8_t* /*work*/) {
  const int64_t nb = n_in / kQkK;
  const int64_t block_bytes = k_block_bytes(kType);
  uint8_t blk[sizeof(tensor::BlockQ6_K)];  // one row's super-block (Q6_K's is the larger)
  static_assert(sizeof(tensor::BlockQ6_K) >= sizeof(tensor::BlockQ4_K));
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    const uint8_t* wg = w + g * kInterleaveRows * w_stride_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int r = 0; r < kInterleaveRows; ++r) {
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          k_block_from_group(kType, wg + b * kInterleaveRows * block_bytes, r, blk);
          const uint8_t* a = act + t * act_stride_bytes + b * kKPackBytes;
          const auto* aq = reinterpret_cast<const int8_t*>(a);
          int16_t bsums[16];
          std::memcpy(bsums, a + 256, sizeof(bsums));
          float d_a;
          std::memcpy(&d_a, a + 320, 4);
          const int sub = kType == DType::Q4_K ? 32 : 16;  // elements per sub-block
          int32_t total = 0, mins = 0;
          for (int s = 0; s < kQkK / sub; ++s) {
            int32_t isum = 0;
            for (int e = sub * s; e < sub * (s + 1); ++e)
              isum += static_cast<int32_t>(k_quant(kType, blk, e)) * aq[e];
            if constexpr (kType == DType::Q4_K) {
              uint8_t sc, mn;
              ref::k4_scale_min(s, blk + 4, &sc, &mn);
              total += sc * isum;
              mins += mn * (bsums[2 * s] + bsums[2 * s + 1]);
            } else {
              const auto sc = static_cast<int8_t>(blk[192 + s]);
              total += sc * (isum - 32 * bsums[s]);
            }
          }
          uint16_t d16;
          std::memcpy(&d16, blk + (kType == DType::Q4_K ? 0 : 208), 2);
          acc = std::fma(static_cast<float>(total), tensor::f16_to_f32(d16) * d_a, acc);
          if constexpr (kType == DType::Q4_K) {
            uint16_t dmin16;
            std::memcpy(&dmin16, blk + 2, 2);
            acc = std::fma(-static_cast<float>(mins), tensor::f16_to_f32(dmin16) * d_a, acc);
          }
        }
        y[t * ldy + g * kInterleaveRows + r] = acc;
      }
    }
  }
}

template <DType kType>
detail::GemmKernel twin_k() {
  detail::GemmKernel k;
  k.pack_id = detail::kPackInterleavedK;
  k.packed_row_bytes = packed_row_bytes_k;
  k.pack = pack_row_k;
  k.tile = tile_twin_k<kType>;
  k.chunk_rows_multiple = kInterleaveRows;
  k.chunk_tokens = 64;
  return k;
}

}  // namespace

namespace detail {
void add_interleaved_twins(IsaKernels& k) {
  k.gemm_interleaved[slot(DType::Q4_0)] = twin<DType::Q4_0>();
  k.gemm_interleaved[slot(DType::Q4_1)] = twin<DType::Q4_1>();
  k.gemm_interleaved[slot(DType::Q5_0)] = twin<DType::Q5_0>();
  k.gemm_interleaved[slot(DType::Q5_1)] = twin<DType::Q5_1>();
  k.gemm_interleaved[slot(DType::Q8_0)] = twin<DType::Q8_0>();
  k.gemm_interleaved[slot(DType::Q4_K)] = twin_k<DType::Q4_K>();
  k.gemm_interleaved[slot(DType::Q6_K)] = twin_k<DType::Q6_K>();
}
}  // namespace detail

void interleaved_row(DType type, const void* w, int64_t n_in, int64_t row, void* dst) {
  if (has_k_layout(type)) {
    LH_CHECK_MSG(n_in % kQkK == 0 && row >= 0, "interleaved_row: n_in=" + std::to_string(n_in) + " row=" +
                                                    std::to_string(row));
    const int64_t block_bytes = k_block_bytes(type);
    const uint8_t* group = static_cast<const uint8_t*>(w) + row / kInterleaveRows * kInterleaveRows * (n_in / kQkK) *
                                                                 block_bytes;
    for (int64_t b = 0; b < n_in / kQkK; ++b) {
      k_block_from_group(type, group + b * kInterleaveRows * block_bytes, row % kInterleaveRows,
                         static_cast<uint8_t*>(dst) + b * block_bytes);
    }
    return;
  }
  Format f;
  const bool has_format = format_of(type, f);
  LH_CHECK_MSG(has_format, std::string("interleaved_row: no interleaved layout for ") + tensor::dtype_name(type));
  LH_CHECK_MSG(n_in % kQk == 0 && row >= 0, "interleaved_row: n_in=" + std::to_string(n_in) + " row=" +
                                                 std::to_string(row));
  const int64_t nb = n_in / kQk;
  const int64_t row_bytes = nb * f.block_bytes;
  // Group g starts where row 16g did (interleave.h).
  const uint8_t* group = static_cast<const uint8_t*>(w) + row / kInterleaveRows * kInterleaveRows * row_bytes;
  const int64_t r = row % kInterleaveRows;
  for (int64_t b = 0; b < nb; ++b)
    deinterleave_block(f, group + b * f.group_bytes(), r, static_cast<uint8_t*>(dst) + b * f.block_bytes);
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
  return k.interleave_at_load[detail::slot(type)];
}

bool prefers_interleaved(DType type, int64_t n_out) { return prefers_interleaved(active_isa(), type, n_out); }

void interleave_rows(DType type, const void* src, int64_t n_out, int64_t n_in, void* dst) {
  if (has_k_layout(type)) {
    LH_CHECK_MSG(n_out % kInterleaveRows == 0 && n_in % kQkK == 0,
                 "interleave_rows: [" + std::to_string(n_out) + ", " + std::to_string(n_in) +
                     "] is not whole groups of 16 rows of 256-element super-blocks");
    const int64_t nb = n_in / kQkK, block_bytes = k_block_bytes(type);
    const auto* in = static_cast<const uint8_t*>(src);
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t g = 0; g < n_out / kInterleaveRows; ++g) {
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* gb = out + (g * nb + b) * kInterleaveRows * block_bytes;
        for (int64_t r = 0; r < kInterleaveRows; ++r) {
          const uint8_t* blk = in + ((g * kInterleaveRows + r) * nb + b) * block_bytes;
          k_block_to_group(type, blk, r, gb);
        }
      }
    }
    return;
  }
  Format f;
  const bool has_format = format_of(type, f);
  LH_CHECK_MSG(has_format, std::string("interleave_rows: no interleaved layout for ") + tensor::dtype_name(type));
  LH_CHECK_MSG(n_out % kInterleaveRows == 0 && n_in % kQk == 0,
               "interleave_rows: [" + std::to_string(n_out) + ", " + std::to_string(n_in) +
                   "] is not whole groups of 16 rows of 32-element blocks");
  interleave_blocks(f, static_cast<const uint8_t*>(src), n_out, n_in / kQk, static_cast<uint8_t*>(dst));
}

}  // namespace longhaul::kernels
