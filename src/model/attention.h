// Self-attention over the paged KV cache, and the attention plan: the one place that decides which cells each
// query of a step may see. The plan combines
//   - causality by position and the layer's sliding window,
//   - the KV policy's head spans (sinks + window; DuoAttention's streaming heads),
//   - an ancestor mask among a sequence's new tokens when the step carries a tree (speculative decoding), and
//   - the pages a policy selects per (sequence, layer, KV head) for the step's queries (query-aware sparse
//     attention: Quest, Tang et al., 2024, and its successors), and the pages it reads at other positions
//     (placements: InfLLM's memory blocks and LongHeads' chunks, moved within the trained context), and the single
//     cells it reads (RetrievalAttention's retrieved keys), and
//   - in a long prompt chunk of a sequence that asks for sparse prefill, each query head's key set (key
//     blocks and columns: MInference, Jiang et al., 2024; model/sparse_prefill.h),
// into kernels::AttentionMask values and page lists. The flash pass, the probability pass that policies observe,
// and every ISA's kernel read them; the visibility rule itself is kernels/attention_mask.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/attention_mask.h"
#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/sparse_prefill.h"

namespace longhaul::model {

struct StepContext;

// A sequence's KV policy as one step uses it: `policy` gives head spans and page selections; `observe` says
// whether it also hears the step's attention probabilities (false for a tentative step, which the policy must not
// learn from).
struct StepPolicy {
  kv::KvPolicy* policy = nullptr;
  bool observe = true;
  // The sequence's prefill attention (null = dense): how its prompt chunks' queries pick their keys.
  const PrefillAttentionOptions* prefill = nullptr;
  // Each token's attention must have the bits a step of that token alone gives it (a verification step: greedy
  // speculative decoding is then lossless bit for bit, near ties included). Its units take fixed page chunks and
  // the kernels keep its queries apart (attend_flash).
  bool tokens_apart = false;
};

class AttentionPlan {
 public:
  // Tokens of one sequence that attention handles together (they share the key pass): at most this many.
  static constexpr int32_t kBlockTokens = 16;

  // Once per step, after the step's cells were appended: token blocks, and each sequence's tree when the batch
  // has one. cells: [n_tokens] the cell of each token (the same in every layer). policies: indexed by SeqId (may be
  // shorter: no policy).
  void build(const Batch& batch, std::span<const int32_t> cells, const kv::KvCache& cache,
             std::span<const StepPolicy> policies);

  int32_t n_blocks() const { return static_cast<int32_t>(block_start_.size()) - 1; }
  int32_t block_begin(int32_t b) const { return block_start_[static_cast<size_t>(b)]; }
  int32_t block_end(int32_t b) const { return block_start_[static_cast<size_t>(b) + 1]; }
  int32_t block_of_token(int32_t t) const { return token_block_[static_cast<size_t>(t)]; }
  kv::SeqId block_sequence(int32_t b) const { return block_seq_[static_cast<size_t>(b)]; }
  // The node of token t in its sequence's tree, or -1 when the sequence's step is a chain.
  int32_t token_node(int32_t t) const { return token_node_[static_cast<size_t>(t)]; }
  const StepPolicy& policy_of(kv::SeqId seq) const;
  // Where plain decoding puts a tree node's branch: when seq's step is a tree whose node i sits in cell root + i, the
  // sequence's last cells, the root's cell (Engine::accept keeps an accepted branch's node at depth d in cell
  // root + d, where a plain step would have written it); -1 otherwise (a chain, or cells in another order).
  int32_t tree_root_cell(kv::SeqId seq) const;
  // The branch of node `node` of seq's tree: its ancestors and itself, root first, as node numbers (a parent's
  // number is below its child's, so this is ascending).
  void tree_branch(kv::SeqId seq, int32_t node, std::vector<int32_t>& out) const;

  // The window and sinks that apply to KV head kv_head of layer il for `seq`: the layer's sliding window, or on a
  // global layer the policy's head span.
  struct HeadMask {
    int32_t window = 0;
    int32_t n_sink = 0;
  };
  HeadMask head_mask(int32_t il, kv::SeqId seq, int32_t kv_head, int32_t layer_window) const;

  // The mask of queries (positions q_pos, tree nodes q_node or null) of `seq` over one page of layer il.
  kernels::AttentionMask page_mask(const HeadMask& head, kv::SeqId seq, const kv::KvCache::PageSpan& page,
                                   std::span<const int32_t> positions, const int32_t* q_pos,
                                   const int32_t* q_node) const;

  // Page selection for layer il, in parts so that it runs in the same job as the attention that reads it (a
  // unit's attention starts once its own selection is done, not once every unit's is: a single sequence's 3 KV
  // heads were 3 selection tasks on 2 threads, then a wait). begin_selection resets the units' selections and
  // returns how many units there are to select, 0 when no policy of the step selects pages (every unit then reads
  // every page and wait_selected returns at once). select_unit asks unit's policy for its pages, on any thread, once
  // per unit; the selection always includes the pages holding the step's own cells. q: [n_tokens, n_head * dk]
  // (after RoPE, scaled). wait_selected(unit) returns once unit's selection is complete; the unit accessors below
  // may then be read from any thread.
  int64_t begin_selection(int32_t n_head_kv);
  void select_unit(StepContext& step, int32_t il, const float* q, int32_t n_head, int32_t dk, int64_t unit,
                   int i_thread);
  void wait_selected(int64_t unit) const;
  // Pages unit (block * n_head_kv + kv_head) reads in layer il, once selected: a list, or every page.
  int32_t n_unit_pages(const kv::KvCache& cache, int32_t il, int64_t unit, int32_t n_head_kv) const;
  int32_t unit_page(int64_t unit, int32_t i) const;
  // Pages unit reads at other positions (kv::KvPolicy::PagePlacement), once selected: none unless its policy
  // places pages.
  int32_t n_unit_placed(int64_t unit) const;
  const kv::KvPolicy::PagePlacement& unit_placement(int64_t unit, int32_t i) const;
  // Single cells unit reads at their own positions (kv::KvPolicy::PageReads::cells), ascending, none of them in
  // the unit's pages, once selected: none unless its policy reads cells.
  std::span<const int32_t> unit_cells(int64_t unit) const;

  // Key cells read by the step's decode queries (blocks of one token), per sequence: summed over layers and KV
  // heads, the cells of the pages each (token, KV head) visits (its selection, or every page; rows a head freed
  // are not read), capped by the head's sinks + window where one applies, next to the cells the sequence holds in
  // those layers. read / held is the share of the KV cache a decode token reads: 1 for full attention, a few
  // percent for a query-aware sparse policy (bench's and eval's keys_read). Cumulative over the layers of the step.
  struct KeysRead {
    int64_t read = 0;
    int64_t held = 0;
  };
  // For layer il, after its attention (every unit selected).
  void count_keys_read(const kv::KvCache& cache, int32_t il, int32_t n_head_kv, int32_t layer_window);
  // Indexed by SeqId (shorter when the step's highest SeqId is lower): the step's counts so far.
  std::span<const KeysRead> keys_read() const { return keys_read_; }

  // For global layer il (layer_window 0; a sliding window already bounds a local layer's keys): the key set of
  // each query head of every sequence whose chunk takes sparse prefill -- its options ask for it, the step's
  // tokens are a chain at consecutive positions ending at or past min_context, there are more of them than the
  // dense tail, and the layer's cells are positions 0 .. n - 1 with every head's rows present. Sets are estimated
  // from the chunk's queries and the cached keys (model/sparse_prefill.h). q: [n_tokens, n_head * dk] (after RoPE,
  // scaled).
  void plan_sparse_prefill(StepContext& step, int32_t il, const float* q, int32_t n_head, int32_t dk,
                           int32_t layer_window);
  // After plan_sparse_prefill: the key set of query head `head` of batch token t, or null (dense).
  const kernels::SparseKeys* sparse_keys(int32_t t, int32_t head) const;
  // The pattern each query head of `seq` took in the current layer ([n_head]; empty when the chunk is dense).
  std::vector<SparsePattern> sparse_patterns(kv::SeqId seq) const;

 private:
  struct SequenceTree {
    kv::SeqId seq = -1;
    int32_t n_words = 0;              // 64-bit words per ancestor row
    std::vector<uint64_t> ancestors;  // [n_nodes, n_words]: bit j of row i = node j is node i or an ancestor of it
    std::vector<int32_t> cell_node;   // [n_cells of the sequence]: node of each cell, -1 for cached cells
    int32_t root_cell = -1;           // tree_root_cell
  };
  const SequenceTree* tree_of(kv::SeqId seq) const;
  // select_unit's work: the policy's reads of unit, into unit_reads_[unit] and selected_all_[unit].
  void select_unit_reads(StepContext& step, int32_t il, const float* q, int32_t n_head, int32_t dk, int64_t unit,
                         int i_thread);

  std::span<const StepPolicy> policies_;
  std::vector<int32_t> block_start_;  // [n_blocks + 1]
  std::vector<kv::SeqId> block_seq_;  // [n_blocks]
  std::vector<int32_t> token_block_;  // [n_tokens]
  std::vector<int32_t> token_node_;   // [n_tokens]
  std::vector<SequenceTree> trees_;   // one per sequence of the step whose tokens are not a chain
  // Page selections of the current layer (select_unit): unit u reads unit_reads_[u].pages, or every page when
  // !selecting_ or selected_all_[u]; its placements and single cells are unit_reads_[u].placed and .cells.
  bool selecting_ = false;
  std::vector<uint8_t> selected_all_;                // [n_units]
  std::vector<kv::KvPolicy::PageReads> unit_reads_;  // [n_units]
  // [unit_done_capacity_] unit u's selection is complete: stored (release) by select_unit, read (acquire) by
  // wait_selected on the threads that attend.
  std::unique_ptr<std::atomic<uint8_t>[]> unit_done_;
  int64_t unit_done_capacity_ = 0;
  // Sparse prefill of the current layer: one entry per sequence whose chunk is sparse.
  struct SparseSequence {
    kv::SeqId seq = -1;
    int32_t first_pos = 0;         // position of the chunk's first token
    int32_t n_tokens = 0;          // tokens of the chunk
    int32_t dense_from = 0;        // position from which queries attend densely (those before an output token)
    std::vector<int32_t> tokens;   // [n_tokens] batch index of each
    std::vector<HeadSparseKeys> heads;       // [n_head]
    std::vector<kernels::SparseKeys> keys;   // [n_head, heads[h].n_qblocks] (pointers into heads)
  };
  std::vector<SparseSequence> sparse_;
  std::vector<KeysRead> keys_read_;  // [max SeqId of the step + 1]
  std::vector<int32_t> token_sparse_;  // [n_tokens] index into sparse_, or -1
  std::vector<int32_t> token_pos_;     // [n_tokens] position of each token
};

// One task of the flash pass (ForwardState::attention_tasks): pages `part` of unit `unit` (a split, or a fixed
// chunk of an exact unit), whose m, l and o ([n_q] + [n_q] + [n_q, dv], n_q the unit's queries) start at float
// `partial` of ForwardState::attention_partials.
struct AttentionTask {
  int64_t unit = 0;
  int32_t part = 0;
  int64_t partial = 0;
};

// Per-thread scratch of the attention passes (ForwardState::attention_threads).
struct AttentionScratch {
  kv::KvCache::Scratch kv;    // dequantized rows of a quantized page
  std::vector<float> q;       // [n_q, dk] queries of one task
  std::vector<int32_t> q_pos;   // [n_q]
  std::vector<int32_t> q_node;  // [n_q]
  std::vector<float> scores;  // [n_cells] probabilities of one query (the observed pass)
  std::vector<const kernels::SparseKeys*> q_sparse;  // [n_q] sparse prefill key set of each query (null = dense)
  std::vector<const kernels::SparseKeys*> distinct_sparse;  // the different sets of one task's queries
  std::vector<uint16_t> sparse_keys;  // [n_cells, dk] one head's keys gathered for the sparse prefill estimate
  std::vector<float> sparse_probs;    // [n_last, n_cells] the last queries' attention in that estimate
  // The queries of a task that share one sparse key set, gathered (attend_sparse_by_set):
  std::vector<int32_t> set_index;                      // [n] their indices among the task's queries
  std::vector<float> set_q;                            // [n, dk]
  std::vector<int32_t> set_pos;                        // [n]
  std::vector<int32_t> set_node;                       // [n]
  std::vector<const kernels::SparseKeys*> set_sparse;  // [n] the set, once per query (the mask's q_sparse)
  std::vector<float> set_mlo;                          // [n] m, [n] l, [n, dv] o of the flash update
  std::vector<int32_t> set_columns;                    // the set's column cells outside its kept runs, ascending
  std::vector<float> q_placed;        // [n_q, dk] the queries rotated for one placed page
  kernels::RopeAngles placed_angles;  // [1, n_rot / 2, 2] the rotation by -shift of that page
  // One head's rows of a unit's single cells (AttentionPlan::unit_cells), gathered from their pages:
  std::vector<uint16_t> cell_keys;    // [n, dk]
  std::vector<uint16_t> cell_values;  // [n, dv]
  std::vector<int32_t> cell_pos;      // [n] positions
  std::vector<int32_t> cell_index;    // [n] cell indices (cells whose head rows were freed are left out)
  std::vector<int32_t> tree_branch;   // one tree node's branch (AttentionPlan::tree_branch)
  std::vector<int32_t> tree_cells;    // the cells plain decoding of that branch reads in one page
};

// Rotates the queries q [n_q, dk] (after RoPE) of layer il by -shift positions, in place: RoPE scores depend on
// the query's position minus the key's, so the turned queries score a key at position p as the unturned ones
// would score it at p + shift. This is how a placed page (kv::KvPolicy::PagePlacement) is read without touching
// its keys. angles: scratch.
void turn_queries(const ModelConfig& cfg, int32_t il, int32_t shift, float* q, int32_t n_q, int32_t dk,
                  kernels::RopeAngles& angles);

// Self-attention of layer il: reads state.xn [n_tokens, n_embd], stores the step's keys and values in the cache,
// and writes W_o(attention) to state.proj.
void self_attention(StepContext& step, int32_t il);

}  // namespace longhaul::model
