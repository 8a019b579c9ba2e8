// Weight matrices stored 16 rows interleaved, for the AVX-512 matrix kernels of batched decode.
//
// Why: the row-major kernels (kernels/x86/avx512_gemm32.h) give each weight row its own vector accumulator per
// token, so every block of 32 weights costs, besides its two VNNI dot products, a convert, a scale multiply and one
// or two multiply-adds per row and token, plus a horizontal sum per row at the end. With 16 rows interleaved, one
// 64-byte vector holds 4 consecutive quants of 16 rows, one vpdpbusd against 4 broadcast activation bytes advances
// 16 rows at once, and the scales apply once per block for 16 rows: the float work per weight falls 4x and the
// horizontal sums disappear (lane r of the accumulator is row r). This is the layout llama.cpp's CPU backend
// repacks Q4_0 into ("Q4_0x8" and kin); ours is our own, for our kernels.
//
// Layout of a [n_out, n_in] matrix of type T (n_out a multiple of 16, nb = n_in / 32 blocks per row), group g of
// rows 16g .. 16g + 15, block b, at byte (g * nb + b) * 16 * sizeof(block of T): the same size as the row-major
// matrix, and rows 16g .. 16g + 15 start where row 16g did, so a chunk of whole groups is addressed as before. A
// group's block is a sequence of 32- and 64-byte parts, each holding one field of the 16 rows:
//   d      32 bytes: f16 d of rows 0..15
//   m      32 bytes: f16 m of rows 0..15 (Q4_1, Q5_1)
//   qh     64 bytes (Q5_0, Q5_1): byte 4r + i holds row r's fifth bits of elements 4c + i in bit c and of elements
//          16 + 4c + i in bit 4 + c (c = 0..3), so one shift and mask put them beside the nibbles of chunk c
//   nibbles four 64-byte chunks c = 0..3 (Q4_0, Q4_1, Q5_0, Q5_1): bytes 4r .. 4r + 3 of chunk c = qs[4c .. 4c + 3]
//          of row r (low nibbles: elements 4c .. 4c + 3; high: 16 + 4c .. 16 + 4c + 3)
//   bytes  eight 64-byte chunks c = 0..7 (Q8_0): bytes 4r .. 4r + 3 of chunk c = qs[4c .. 4c + 3] of row r plus 128,
//          as unsigned bytes (the form vpdpbusd multiplies)
// in this order: Q4_0 = d, nibbles (288 bytes); Q4_1 = d, m, nibbles (320); Q5_0 = d, qh, nibbles (352); Q5_1 = d,
// m, qh, nibbles (384); Q8_0 = d, bytes (544). Every quant is stored unsigned, u = q + offset with offset 8 (Q4_0),
// 16 (Q5_0), 128 (Q8_0) or 0 (Q4_1, Q5_1: x = d q + m), and a block's integer dot product with activation quants a
// is sum(u a) - offset * sum(a). A 64-byte chunk is one AVX-512 vector of 16 rows, or two AVX2 vectors of 8 rows.
//
// The packed activations these kernels read, one row of n_in values (nb blocks), 64-byte aligned:
//   [0, 32 nb)          i8 quants, block after block (as Q8_0 / Q8_1 quantize them)
//   [32 nb, 36 nb)      f32 d of each block (the f16-rounded scale)
//   [36 nb, 40 nb)      Q4_1, Q5_1: f32 s = f16(d * sum a) of each block (Q8_1's s); Q4_0, Q5_0, Q8_0: i32 sum a
// rounded up to a multiple of 64 bytes: the packing of the AVX2 long-batch kernels (pack_act_32, x86/x86_quantize.h).
//
// The K-quants Q4_K and Q6_K (super-blocks of 256 elements) are interleaved the same way, super-block b of group g
// at byte (g * nb + b) * 16 * sizeof(super-block), nb = n_in / 256; a group's super-block holds each field of the
// 16 rows, a 2-byte field as 16 f16 (row r at 2r), a longer one as 64-byte vectors whose lane r (bytes 4r..4r+3)
// holds 4 consecutive bytes of row r's field:
//   Q4_K (2304 bytes): d at 0, dmin at 32, scales[12] as 3 vectors at 64, qs[128] as 32 vectors at 256
//   Q6_K (3360 bytes): d at 0, scales[16] as 4 vectors at 32, ql[128] as 32 vectors at 288, qh[64] as 16 vectors
//          at 2336
// The quants stay as the block stores them (Q4_K nibbles, Q6_K low nibbles and high bit pairs); the kernels
// assemble an element's unsigned quant (Q6_K: q + 32) in the lanes. Their packed activations are Q8_K super-blocks
// of 384 bytes: 256 i8 quants in element order, 16 i16 bsums at 256, zeros to 320, f32 d in 16 lanes at 320.
#pragma once

#include <cstdint>

#include "kernels/isa.h"
#include "tensor/dtype.h"

namespace longhaul::kernels {

// Rows per interleaved group.
constexpr int64_t kInterleaveRows = 16;

// How a weight matrix's rows are stored: as in the GGUF file, or in interleaved groups of 16 (above).
enum class WeightLayout : uint8_t { kRows, kInterleaved16 };

// Whether a model should store a [n_out, n_in] matrix of `type` interleaved for `isa`: the ISA's kernels for the
// layout beat its row-major ones at every batch size (IsaKernels::interleave_at_load; AMX's prompt kernels read it
// too), and n_out is a multiple of 16. Types with a layout: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K.
bool prefers_interleaved(Isa isa, tensor::DType type, int64_t n_out);
bool prefers_interleaved(tensor::DType type, int64_t n_out);  // on the active ISA

// dst = src rearranged into the interleaved layout. src: [n_out, n_in] row-major of `type`; dst: the same number of
// bytes. Requires a type with a layout and n_out % 16 == 0 (LH_CHECK).
void interleave_rows(tensor::DType type, const void* src, int64_t n_out, int64_t n_in, void* dst);

// Row `row` of an interleaved [n_out, n_in] matrix of `type`, given back as the row-major bytes it was made from.
//   w: the interleaved matrix; dst: [row_size_bytes(type, n_in)]
void interleaved_row(tensor::DType type, const void* w, int64_t n_in, int64_t row, void* dst);

// Embedding lookup from an interleaved matrix: dst[i, :] = dequantize(row ids[i]), equal to get_rows (quant.h) on
// the row-major matrix. A model whose output projection is tied to its token embeddings stores the matrix once,
// interleaved, and looks tokens up here: otherwise each lookup would fault the file's row-major pages back in
// (with the kernel's read-around, most of the matrix after a few hundred distinct tokens).
//   w: [n_rows, n_cols] interleaved; ids: [n_ids], each in [0, n_rows); dst: [n_ids, n_cols]
void get_rows_interleaved(tensor::DType type, const void* w, int64_t n_cols, const int32_t* ids, int64_t n_ids,
                          float* dst);

}  // namespace longhaul::kernels
