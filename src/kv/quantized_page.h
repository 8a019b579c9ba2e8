// Quantized KV cells, after KIVI (Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV
// Cache"): keys are quantized per channel over groups of G consecutive tokens (key outliers live in a few fixed
// channels, so a per-channel range fits them), values per token over groups of 32 channels (value errors mix
// across channels through the attention output, so a per-token range fits them). Both are asymmetric:
//   code = round((x - zero) / scale),  x' = code * scale + zero,  zero = min, scale = (max - min) / (2^bits - 1).
// KIVI's paper uses 2 and 4 bits; we offer 8 and 4 (int8 is nearly lossless, int4 is KIVI's 4-bit setting).
//
// Rounding. The inputs are f16 (cells are stored f16 before they are quantized), so zero = min is exact in f16;
// the scale is rounded UP to f16, so every input lies in [zero, zero + levels * scale] and no code is clamped.
// Hence |x - x'| <= scale / 2 for every element (up to f32 arithmetic, ~1e-7 relative), where scale is the stored
// f16 scale, at most (max - min) / levels * (1 + 2^-10) (the f16 round-up), or the smallest f16 subnormal.
//
// Codes of 4 bits are packed two channels per byte, planar: byte j holds channel j (low nibble) and channel
// j + d/2 (high nibble), so unpacking is two contiguous loops; head dims must be even.
//
// QuantizedPage holds the quantized cells of one layer's page, one block per KV head so that a per-head policy
// (DuoAttention's streaming heads) can free one head's rows alone, each block cell-major so that cells can be
// appended and dropped without re-laying the page:
//   key_codes    [n_cells, dk * bits / 8]        u8
//   key_params   [n_groups, 2, dk]               f16: scale row, then zero row
//   value_codes  [n_cells, dv * bits / 8]        u8
//   value_params [n_cells, ceil(dv / 32), 2]     f16: scale, zero per group of 32 channels
// and, shared by the heads, group_end [n_groups] i32: key group g holds cells [group_end[g-1], group_end[g]).
// A key group only ever loses cells (eviction) or is split (write_keys): its members keep the scale and zero they
// were quantized with, so dropping or keeping cells never re-quantizes anything.
// Bytes of a page of n cells in g key groups with h heads present, exactly (used_bytes()):
//   h * (n * ((dk + dv) * bits / 8 + 4 * ceil(dv / 32))  +  g * 4 * dk)  +  4 * g
//
// Thread-safety: const methods may run concurrently; mutation needs exclusive access.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/ops.h"

namespace longhaul::kv {

// Channels per value quantization group (KIVI uses its group size G = 32 for both keys and values); the attention
// kernels read the codes in place with the same layout (kernels::QuantizedRows).
constexpr int32_t kValueChannelGroup = kernels::kQuantizedValueGroup;

// The quantized cell format of one cache (all layers alike).
struct KvQuantFormat {
  int32_t bits = 8;    // 8 or 4
  int32_t group = 32;  // G: cells per key group when cells are frozen
  int32_t n_head = 0;  // KV heads
  int32_t dk = 0;      // key head dim
  int32_t dv = 0;      // value head dim

  int32_t levels() const { return (1 << bits) - 1; }
  int32_t key_row_bytes() const { return dk * bits / 8; }
  int32_t value_row_bytes() const { return dv * bits / 8; }
  int32_t n_value_groups() const { return (dv + kValueChannelGroup - 1) / kValueChannelGroup; }
  // Bytes per cell (all heads, one layer) not counting key-group parameters.
  int64_t cell_bytes() const {
    return static_cast<int64_t>(n_head) * (key_row_bytes() + value_row_bytes() + 4 * n_value_groups());
  }
  // Bytes per key group (all heads, one layer): f16 scale and zero per channel, plus its end index.
  int64_t group_bytes() const { return 4 * static_cast<int64_t>(n_head) * dk + 4; }
};

// The codec, on one head's rows. `bits` is 8 or 4; d is even for 4 bits.
// Keys: n rows of d channels (f16, row stride `stride` elements) -> codes [n, d * bits / 8] (row stride
// code_stride bytes) and per channel scale[d], zero[d] (f16).
void quantize_key_group(const uint16_t* rows, int64_t stride, int32_t n, int32_t d, int32_t bits, uint8_t* codes,
                        int64_t code_stride, uint16_t* scale, uint16_t* zero);
// out[r][c] = code[r][c] * scale[c] + zero[c], f32, row stride out_stride.
void dequantize_key_rows(const uint8_t* codes, int64_t code_stride, int32_t n, int32_t d, int32_t bits,
                         const uint16_t* scale, const uint16_t* zero, float* out, int64_t out_stride);
// Values: one row of d channels (f16) -> codes [d * bits / 8] and params [ceil(d / 32), 2] (scale, zero).
void quantize_value_row(const uint16_t* row, int32_t d, int32_t bits, uint8_t* codes, uint16_t* params);
void dequantize_value_row(const uint8_t* codes, int32_t d, int32_t bits, const uint16_t* params, float* out);

class QuantizedPage {
 public:
  explicit QuantizedPage(const KvQuantFormat& format);

  int32_t n_cells() const { return n_cells_; }
  int32_t n_groups() const { return static_cast<int32_t>(group_end_.size()); }
  std::span<const int32_t> group_end() const { return group_end_; }
  const KvQuantFormat& format() const { return format_; }

  // Appends n cells in key groups of format.group cells (the last one shorter when n is not a multiple of it).
  //   keys: [n, n_head, dk] f16, values: [n, n_head, dv] f16
  // Every head must be present (CHECK): a page that lost a head's rows takes no more cells.
  void append(const uint16_t* keys, const uint16_t* values, int32_t n);
  // Frees head `head`'s rows (codes and parameters) for good: dequantize_head CHECKs, read gives zeros, retain,
  // truncate and write_keys leave it out, and the byte counts stop counting it.
  void release_head(int32_t head);
  bool head_present(int32_t head) const;
  bool all_heads_present() const;
  int32_t n_heads_present() const;
  // Keeps the cells listed (ascending page-local indices), in order; groups left empty disappear.
  void retain(std::span<const int32_t> keep);
  // Keeps the first n cells.
  void truncate(int32_t n);
  // Replaces the keys of cells [first, first + count) (all heads): those cells become one key group of their own,
  // quantized from `keys` ([count, n_head, dk] f16); the groups they leave keep their scales for the other cells.
  void write_keys(int32_t first, int32_t count, const uint16_t* keys);

  // Working memory of dequantize_head, one per thread (kept in the caller's per-thread scratch).
  struct Scratch {
    std::vector<float> rows;    // [group or n_cells, dk or dv]
    std::vector<float> params;  // the head's value scales and zeros as f32
  };
  // Head `head`'s rows of every cell, dequantized and rounded to f16 (the attention kernels' input):
  //   keys [n_cells, dk], values [n_cells, dv]; either may be null.
  void dequantize_head(int32_t head, uint16_t* keys, uint16_t* values, Scratch& scratch) const;
  // Head `head`'s codes and parameters in place, as attention_update_quantized reads them (valid until the page
  // is modified); the head must be present (CHECK).
  kernels::QuantizedRows head_view(int32_t head) const;
  // Cells [first, first + count), every head, f32: keys [count, n_head, dk], values [count, n_head, dv]; either
  // may be null.
  void read(int32_t first, int32_t count, float* keys, float* values) const;

  int64_t used_bytes() const;       // the formula in the file comment
  int64_t allocated_bytes() const;  // what the vectors hold (>= used_bytes)

 private:
  struct HeadCells {
    bool present = true;
    std::vector<uint16_t> key_params;    // [n_groups, 2, dk]
    std::vector<uint8_t> key_codes;      // [n_cells, key_row_bytes]
    std::vector<uint16_t> value_params;  // [n_cells, n_value_groups, 2]
    std::vector<uint8_t> value_codes;    // [n_cells, value_row_bytes]
  };
  KvQuantFormat format_;
  int32_t n_cells_ = 0;
  std::vector<int32_t> group_end_;  // [n_groups]
  std::vector<HeadCells> heads_;    // [n_head]
};

}  // namespace longhaul::kv
