// Internal: where the attention kernels' KIVI readers (attention_avx2.cc, attention_avx512.cc) are in one head's
// quantized cells (kernels::QuantizedRows): the key group of the current block, whose per-channel scales and zeros
// the reader holds as f32 while its blocks are read. Blocks never cross a key group, so that one set of scales
// serves a whole block.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/attention_prefetch.h"
#include "kernels/ops.h"

namespace longhaul::kernels::detail {
namespace {  // internal linkage: compiled into translation units of different ISA flags (attention_mask.h)

struct QuantizedCursor {
  const QuantizedRows& rows;
  int32_t end_group = 0;      // key group of the last block_end() (a kernel may look a few blocks ahead)
  int32_t group = 0;          // key group of the block being read (begin_block)
  int32_t loaded_group = -1;  // key group whose scales and zeros the reader holds
  int32_t block_begin = 0;    // first key of the current block

  // Where the block starting at key kb ends: at most max_keys keys, n_k, or the end of kb's key group. Called with
  // ascending kb.
  int32_t block_end(int32_t kb, int32_t n_k, int32_t max_keys) {
    while (rows.group_end[end_group] <= kb) ++end_group;
    return std::min({n_k, kb + max_keys, rows.group_end[end_group]});
  }
  // Starts the block at kb (after its block_end(); a kernel that converts a pass's blocks as queries need them may
  // come back to an earlier one). True when its key group's scales and zeros are to be loaded (the first block of a
  // group read); the next group's are then asked for, since a decode step reads them from memory.
  bool begin_block(int32_t kb, int32_t dk) {
    block_begin = kb;
    while (group > 0 && rows.group_end[group - 1] > kb) --group;
    while (rows.group_end[group] <= kb) ++group;
    if (group == loaded_group) return false;
    if (group + 1 < rows.n_groups) prefetch_bytes(rows.key_params + static_cast<int64_t>(group + 1) * 2 * dk, 4 * dk);
    loaded_group = group;
    return true;
  }
  // The f16 scales [dk] (zeros follow at + dk) of the current key group.
  const uint16_t* key_params(int32_t dk) const { return rows.key_params + static_cast<int64_t>(group) * 2 * dk; }
  // The f16 (scale, zero) pairs [nk, value groups, 2] of the block's keys.
  const uint16_t* value_params(int32_t n_value_groups) const {
    return rows.value_params + static_cast<int64_t>(block_begin) * n_value_groups * 2;
  }
  // Asks for rows [j0, j1): their key and value codes and their value scales and zeros.
  LONGHAUL_PREFETCH_INLINE void prefetch(int32_t j0, int32_t j1, int32_t key_bytes, int32_t value_bytes,
                                         int32_t n_value_groups) const {
    if (j1 <= j0) return;
    prefetch_bytes(rows.key_codes + static_cast<int64_t>(j0) * key_bytes, static_cast<int64_t>(j1 - j0) * key_bytes);
    prefetch_bytes(rows.value_codes + static_cast<int64_t>(j0) * value_bytes,
                   static_cast<int64_t>(j1 - j0) * value_bytes);
    prefetch_bytes(rows.value_params + static_cast<int64_t>(j0) * n_value_groups * 2,
                   static_cast<int64_t>(j1 - j0) * n_value_groups * 4);
  }
};

}  // namespace
}  // namespace longhaul::kernels::detail
