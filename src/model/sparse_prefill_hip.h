// --prefill-attn hip: HiP attention's mask estimation (Lee et al., 2024, "A Training-Free Sub-quadratic Cost
// Transformer Model Serving Framework With Hierarchically Pruned Attention") as a sparse prefill pattern.
//
// HiP rests on "attention locality": neighbouring keys score alike, so one representative key can stand for a
// whole run of keys, and the k best runs can be found by a tree search that scores O(k log(T / k)) keys instead of
// T. Per block of queries, the paper's estimation
//   1. leaves the attention sinks (the first tokens) and a sliding window before the queries out of the search --
//      both are always attended -- and splits the keys between them evenly into k branches;
//   2. splits every branch into two halves and scores each half by its representative, the key block at its centre
//      (position first + size / 2), as the largest q . k over the block's queries and the representative's keys;
//   3. keeps the k best halves and repeats 2 until every branch is one key block; those k blocks are the mask.
// The authors' release (hip-attention v1.1, HiPAttentionArgs) runs it with 64-query blocks, 2-key blocks,
// k = mask_k / 2 = 256 branches, 16 sink tokens and a 256-token sliding window, and scores every other query of
// a block (block_stride_q = 2).
//
// Here, per 64-position query block of the chunk:
//   - always kept: key block 0 (the sinks; the release's 16 sink tokens lie in it) and the query's own block with
//     the 4 before it (so every query sees at least its last 256 keys, the release's window);
//   - searched: the key blocks between them, by kv::hip_tree_search (the same halving as the hip KV policy) with
//     k = budget / 64 - 6 branches; a representative is the 2 keys at the centre of a half (the release's 2-key
//     block), scored as the largest q . k over every query of the block in the chunk.
// Deviations: the search stops at 64-key blocks, not at the release's 2-key blocks, so its leaves are coarser and
// k counts 64-key blocks, and the sinks and window are rounded out to whole blocks (both because the kernel reads
// whole 64-position key blocks); `budget` counts every key a query may compute, the always-kept blocks included
// (the release's mask_k comes on top of its sinks and window); every query of a block is scored, not every other
// one. When the search's candidates number k or fewer, all are kept (as the release does when the context fits in
// mask_k). No calibration, and nothing is kept between chunks.
#pragma once

#include <cstdint>

#include "model/sparse_prefill.h"

namespace longhaul::model {

inline constexpr int32_t kHipSinkBlocks = 1;   // key blocks at the start always kept (attention sinks)
inline constexpr int32_t kHipLocalBlocks = 5;  // the query's own key block and the 4 before it, always kept
inline constexpr int32_t kHipRepresentativeKeys = 2;  // keys at the centre of a half that score it
// The smallest budget: the always-kept blocks and one searched block.
inline constexpr int32_t kHipMinBudget = (kHipSinkBlocks + kHipLocalBlocks + 1) * HeadSparseKeys::kBlock;

// HiP's key blocks for every query block of h's chunk at `budget` keys per query (>= kHipMinBudget): each query
// block selects at most budget / 64 key blocks, all of them causal.
void build_hip(const HeadQueriesKeys& h, int32_t budget, HeadSparseKeys& out);

}  // namespace longhaul::model
