// --prefill-attn hyper: HyperAttention (Han et al., 2023, "HyperAttention: Long-context Attention in Near-Linear
// Time") as a sparse prefill pattern.
//
// HyperAttention approximates softmax(Q K^T) V in two parts. The large entries are found by locality-sensitive
// hashing: an angular hash (r random hyperplanes through the origin; a vector's bucket is the r signs of its dot
// products with them, 2^r buckets, the paper's r = 7) puts queries and keys that point the same way in the same
// bucket; sortLSH sorts queries and keys by bucket and computes exact attention on the blocks of the diagonal of
// the sorted matrix (256 queries by 256 keys), so each query meets the keys that share its bucket (or a
// neighbouring one: the buckets are ordered by a Gray code). The rest is estimated from a uniform sample of key
// columns (256, shared by every query of the head), each sampled entry weighted by n_keys / n_samples so that the
// sample's sum estimates the sum of the entries it stands for. Causal attention is a recursion: the
// lower-left quarter (later queries, earlier keys) is unmasked and takes the two parts above; the two diagonal
// halves recurse, down to blocks of min_seq_len (4096) tokens computed exactly.
//
// Here, per head and per 64-position query block of the chunk:
//   - always kept: key block 0 (attention sinks) and the query's own block (a query must see itself);
//   - the hashed part: each query's bucket under `bits` hyperplanes (a fixed seed: the same hyperplanes for every
//     head and layer, as the paper's one hash per attention module); each earlier key block scores the number of
//     (query of the block, key of the key block) pairs that share a bucket; the best (budget - samples) / 64 - 2
//     blocks (ranked by that count, ties to the nearer block) are selected. Keys are found by walking the bucket's
//     run in the keys sorted by (bucket, position) -- sortLSH's order;
//   - the sampled part: `samples` key columns drawn uniformly without replacement from the chunk's whole context
//     (seeded by the layer and head, so a run is deterministic), shared by every query block of the head, as the
//     paper shares its sample over the rows; a column after a query is hidden by causality.
// Deviations from the paper: the key sets are masks and the attention kernel has no per-key weight, so the sample's
// importance weight (n_keys / n_samples) cannot be applied -- a sampled key counts once, as any other computed key,
// and the sampled part under-weights the keys it stands for; selection is by 64-key blocks of the position order
// ranked by exact bucket collisions, not by 256-key blocks of the hash-sorted order; the causal recursion is not
// reproduced (every query block ranks every earlier key block; min_context plays the part of its exact base case,
// and the plan's dense tail of 64 queries stays exact); a budget that covers every key selects every key (a ranked
// block with no collision fills the budget too), where the paper's sortLSH blocks have a fixed size.
#pragma once

#include <cstdint>

#include "model/sparse_prefill.h"

namespace longhaul::model {

inline constexpr int32_t kHyperMaxBits = 16;  // 2^16 buckets: the counting sort's table stays small

// The smallest budget with n_samples sampled columns: the sink block, the own block and one hashed block.
constexpr int32_t hyper_min_budget(int32_t n_samples) { return n_samples + 3 * HeadSparseKeys::kBlock; }

// HyperAttention's key sets for h's chunk: options.budget keys per query at most (>= hyper_min_budget), of them
// options.n_samples sampled columns, options.lsh_bits hyperplanes. stream: the sample's seed besides the fixed one
// (the plan passes the layer and query head), so that heads draw different samples.
void build_hyper(const HeadQueriesKeys& h, const PrefillAttentionOptions& options, uint64_t stream,
                 HeadSparseKeys& out);

}  // namespace longhaul::model
