// Sparse prefill attention (--prefill-attn): which keys each query head of a long prompt chunk computes.
//
// MInference 1.0 (Jiang et al., 2024) observes that in long prompts most heads attend in one of three shapes, and
// that the indices of the shape can be estimated per prompt at a small cost:
//   - A-shape: the first tokens (attention sinks) and a local band;
//   - vertical-slash: a few key columns that every query attends to, plus a few diagonals (fixed distances q - k),
//     their indices taken as the top sums of the last 64 queries' attention along columns and along diagonals;
//   - block-sparse: per 64-token query block, the key blocks whose mean-pooled keys score highest against the
//     block's mean-pooled query.
// Each head's pattern is assigned offline, as the paper does, by a search on calibration prompts (the head
// profile's prefill section, eval/prefill_calibration.h); at run time the head builds only its pattern's indices.
//
// MoA (Fu et al., 2024, "Mixture of Sparse Attention") gives each head a static sliding span instead -- the sink
// block and a local band -- whose width follows the head's own elastic rule span = alpha + beta * N at input length
// N, also from the profile (sparse_prefill_moa.cc). It reads no queries or keys at run time.
//
// Each chunk's last n_last_queries queries are what the estimate reads (their exact attention rows, computed for it).
// In the chunk that ends the prompt -- the one whose last token returns logits -- those queries also attend densely,
// so the first generated token sees an exact attention row; a chunk in the middle of the prompt is sparse throughout.
// A chunk whose context is shorter than min_context stays dense: on short prompts the indexing costs more than it
// saves.
//
// Two more patterns build the same key sets by other rules: HiP's hierarchical tree search (--prefill-attn hip,
// model/sparse_prefill_hip.h) and HyperAttention's hashing plus sampling (--prefill-attn hyper,
// model/sparse_prefill_hyper.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "kernels/attention_mask.h"
#include "kv/head_profile.h"
#include "model/config.h"

namespace longhaul::model {

enum class PrefillAttention : uint8_t { kDense, kMInference, kMoA, kHip, kHyper };

// A sequence's prefill attention, as --prefill-attn writes it: "dense",
// "minference[:budget=N][:min_context=N][:min_recall=R]",
// "moa[:density=D][:min_context=N]", "hip[:budget=N][:min_context=N]" or
// "hyper[:budget=N][:min_context=N][:bits=N][:samples=N]".
struct PrefillAttentionOptions {
  PrefillAttention mode = PrefillAttention::kDense;
  int32_t budget = 2048;       // minference: keys per query a pattern may compute: A-shape and block-sparse take
                               // budget / 64 key blocks, vertical-slash the profile's share of it as columns and
                               // the rest as the key blocks of its diagonals; hip and hyper: see their headers
  float density = 0.5f;        // moa: the mean span / N over heads the profile's spans were chosen under, in (0, 1]
  float min_recall = 0.0f;     // minference: a head whose assigned pattern kept less than this share of its dense
                               // attention mass in the search (the profile's recall) attends densely; 0: none
  int32_t min_context = 4096;  // tokens: a chunk whose last position + 1 is below this prefills densely
  int32_t n_last_queries = 64;  // queries at the end of each chunk whose attention the vertical-slash estimate reads
                                // (the paper's 64); before a token that returns logits they attend densely
  int32_t lsh_bits = 7;    // hyper: random hyperplanes of the angular hash, 2^bits buckets (the paper's 7)
  int32_t n_samples = 256;  // hyper: uniformly sampled key columns per head, counted in the budget (the paper's
                            // 256); 0 = none
  // The model's head profile with a prefill section (minference, moa; null otherwise): each query head's pattern
  // or span. Set after the model is known (check_prefill_profile says whether it fits).
  std::shared_ptr<const kv::HeadProfile> profile;
};

// The fewest keys per query minference's patterns can be held to (its budget's minimum): vertical-slash's forced
// lines -- 30 columns and the 3 key blocks of the 100 nearest diagonals -- in whole 64-key blocks.
inline constexpr int32_t kMInferenceMinBudget = 256;

// Parses --prefill-attn; the error names the value and the accepted forms or range.
Result<PrefillAttentionOptions> parse_prefill_attention(std::string_view spec);
// "dense", "minference(budget=2048, min_context=4096)", "moa(density=0.5, min_context=4096)", "hyper(budget=2048,
// min_context=4096, bits=7, samples=256)"..., for bench and eval rows.
std::string describe_prefill_attention(const PrefillAttentionOptions& options);
// One line per accepted form, for --help.
std::string prefill_attention_help();
// Whether `options` can run on a model of this shape (n_layer, n_head, which layers slide) and file name: dense
// always; minference and moa need options.profile with a prefill section measured on that model, listing every
// query head of every global layer, and moa's density the one the profile's spans were chosen under. The error
// names the mismatch.
Status check_prefill_profile(const PrefillAttentionOptions& options, const ModelConfig& config,
                             const std::string& model_name);

// The patterns are the head profile's (it stores each minference head's; hip and hyper are patterns of their own).
using SparsePattern = kv::PrefillPattern;
inline const char* sparse_pattern_name(SparsePattern pattern) { return kv::prefill_pattern_name(pattern); }

// One query head's queries and keys for the index builders (positions are key indices).
struct HeadQueriesKeys {
  const float* q = nullptr;  // [n_q, dk] the chunk's queries (after RoPE, scaled), at positions first_pos + i
  int32_t n_q = 0;
  int32_t first_pos = 0;
  const uint16_t* k = nullptr;  // [n_k, dk] f16 keys (as the cache stores them) at positions 0 .. n_k - 1;
                                // n_k = first_pos + n_q
  int32_t n_k = 0;
  int32_t dk = 0;
};

// The key sets of one head for every 64-position query block the chunk touches: first_pos / 64 ..
// (first_pos + n_q - 1) / 64.
struct HeadSparseKeys {
  static constexpr int32_t kBlock = kernels::SparseKeys::kBlockPositions;
  SparsePattern pattern = SparsePattern::kAShape;
  int32_t first_qblock = 0;
  int32_t n_qblocks = 0;
  int32_t n_block_words = 0;       // 64-bit words per query block's key-block row
  std::vector<uint64_t> blocks;    // [n_qblocks, n_block_words] selected key blocks (A-shape, block-sparse)
  std::vector<int32_t> columns;    // ascending key positions (vertical-slash, every query block)
  double recall = 0.0;             // share of attention mass the sets keep (measured, or the profile's)

  // The kernel's view of query block qblock's set (pointers into this object).
  kernels::SparseKeys keys(int32_t qblock) const;
  bool block_selected(int32_t qblock, int32_t key_block) const;
  // Empties the sets and sizes the block rows for h's query blocks over every key block of its context; no
  // columns.
  void reset_blocks(const HeadQueriesKeys& h, SparsePattern pattern_of_sets);
  // Adds key block key_block to query block qblock's set (qblock within the chunk's, key_block < the row's bits).
  void select_block(int32_t qblock, int32_t key_block);
  // The chunk's queries [first, end) (indices into h.q) in query block qblock: a chunk edge may cut a block.
  static std::pair<int32_t, int32_t> block_queries(const HeadQueriesKeys& h, int32_t qblock);
};

// Causal attention probabilities of the chunk's last n_last queries over every key: probs [n_last, n_k], row r for
// the query at position first_pos + n_q - n_last + r (0 past its position). Double sums, float storage.
void last_query_attention(const HeadQueriesKeys& h, int32_t n_last, std::vector<float>& probs);

// A-shape: key blocks [0, n_sink_blocks) and the n_local_blocks up to the query's own block.
void build_a_shape(const HeadQueriesKeys& h, int32_t n_sink_blocks, int32_t n_local_blocks, HeadSparseKeys& out);
// Vertical-slash's lines from the last queries' probabilities: the n_vertical columns with the largest column sums,
// and the key blocks crossed by the diagonals with the largest diagonal sums, taken in that order while they fit in
// n_slash_blocks blocks per query block (a diagonal d crosses blocks qb - ceil(d/64) .. qb - floor(d/64) of query
// block qb, the same offsets for every query block). The first 30 columns and the 100 nearest diagonals are always
// taken (the reference implementation forces them the same way: sinks and the local band). MInference's kernel
// computes a diagonal the same way, as the 64-key ranges it crosses, and gathers the columns outside them; here the
// ranges are aligned to key blocks.
struct VerticalSlashLines {
  std::vector<int32_t> columns;        // ascending key positions
  std::vector<int32_t> block_offsets;  // ascending offsets qb - kb of the key blocks the chosen diagonals cross
};
VerticalSlashLines select_vertical_slash(const HeadQueriesKeys& h, const std::vector<float>& probs, int32_t n_last,
                                         int32_t n_vertical, int32_t n_slash_blocks);
// The key sets of `lines` for every query block of h (any chunk: the lines are relative to the query block).
void build_vertical_slash(const HeadQueriesKeys& h, const VerticalSlashLines& lines, HeadSparseKeys& out);
// Block-sparse: per query block, the n_top_blocks causal key blocks with the largest mean-pooled Q . mean-pooled K,
// and the query's own block (a query must see itself).
void build_block_sparse(const HeadQueriesKeys& h, int32_t n_top_blocks, HeadSparseKeys& out);
// Share of the last n_last queries' attention mass (mean over the rows) inside `keys`'s sets.
double last_query_recall(const HeadQueriesKeys& h, const std::vector<float>& probs, int32_t n_last,
                         const HeadSparseKeys& keys);

// Vertical-slash's split of `budget` keys per query when n_columns of profile_budget were columns: columns scaled
// to the budget, at least the 30 forced ones and at most budget - 192 (the forced diagonals' 3 key blocks).
int32_t vertical_slash_columns(int32_t budget, int32_t n_columns, int32_t profile_budget);
// The rest of the split: the key blocks its diagonals may cross per query block, at least the forced 3.
int32_t vertical_slash_blocks(int32_t budget, int32_t n_columns);

// MInference with the offline assignment: only the head's assigned pattern, at options.budget keys per query
// (vertical-slash's indices estimated from the chunk's last n_last_queries queries; A-shape reads no queries or
// keys, h.q and h.k may then be null). A head whose profile recall is below options.min_recall gets every causal
// key instead (reading no queries or keys either: head_reads_no_rows). probs: scratch. out.recall is the profile's.
void build_assigned_pattern(const HeadQueriesKeys& h, const PrefillAttentionOptions& options,
                            const kv::HeadPrefill& assigned, std::vector<float>& probs, HeadSparseKeys& out);
// Whether build_assigned_pattern builds the head's key sets from positions alone (A-shape, or a head kept dense).
bool head_reads_no_rows(const PrefillAttentionOptions& options, const kv::HeadPrefill& assigned);

// MoA (sparse_prefill_moa.cc): the head's span at input length n_keys, in tokens: alpha + beta * n_keys, at least
// one token.
int32_t moa_span(const kv::HeadPrefill& assigned, int32_t n_keys);
// The chunk's key sets for MoA: the sink block and the ceil(span / 64) key blocks up to and including each query's
// own (the A-shape builder with a per-head width), span at n_keys = h.n_k. Reads no queries or keys (h.q and h.k
// may be null).
void build_moa(const HeadQueriesKeys& h, const kv::HeadPrefill& assigned, HeadSparseKeys& out);

}  // namespace longhaul::model
