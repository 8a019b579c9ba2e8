// How a task of the flash pass (model/attention.cc) reads the keys of one unit (a block of a sequence's tokens and
// one KV head) into its queries' flash state: a page in place or through its KIVI codes, the single cells a policy
// reads (gathered), a sparse prefill's key sets, a verification tree's pages branch by branch, and the queries
// turned for a page read at another position. Internal to the model module.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/attention_mask.h"
#include "kv/kv_cache.h"
#include "model/attention.h"
#include "model/config.h"

namespace longhaul::model {

// The queries q [n_q, dk] as the keys of a page placed with `shift` see them (turn_queries), in
// scratch.q_placed; q itself when nothing turns.
const float* place_queries(const ModelConfig& cfg, int32_t il, int32_t shift, const float* q, int32_t n_q, int32_t dk,
                           AttentionScratch& scratch);

// Gathers KV head kv_head's rows of `cells` (ascending cell indices of seq in layer il) into scratch.cell_keys
// [n, dk], .cell_values [n, dv] (when `values`), .cell_pos and .cell_index [n]; a cell whose head rows were freed
// is left out. Returns n. first_page: a page at or before the one holding cells[0], where the search for the cells'
// pages starts (a tree's pages are the last ones).
int32_t gather_cells(const kv::KvCache& cache, kv::SeqId seq, int32_t il, int32_t kv_head,
                     std::span<const int32_t> cells, int32_t dk, int32_t dv, bool values, AttentionScratch& scratch,
                     int32_t first_page = 0);

// Gathers KV head kv_head's rows of `cells` (gather_cells) and takes them into the flash state m, l [n_q] and
// o [n_q, dv] of the queries q [n_q, dk] at q_pos: each cell at its own position, under the head's window and sinks.
// first_page: as gather_cells; queries_apart: kernels::AttentionMask::queries_apart.
void attend_gathered_cells(const StepContext& step, kv::SeqId seq, int32_t il, int32_t kv_head,
                           std::span<const int32_t> cells, const AttentionPlan::HeadMask& head, const float* q,
                           const int32_t* q_pos, int32_t n_q, int32_t dk, int32_t dv, AttentionScratch& scratch,
                           float* m, float* l, float* o, int32_t first_page = 0, bool queries_apart = false);

// Sparse prefill, every query of a task sparse. The queries are taken one key set at a time -- a set is one query
// head's for one 64-token query block, so a task (a block of tokens times a GQA group's query heads) holds `group`
// sets -- and each set's queries pass only over what their own set selects. Passed together, every query would pay
// for the union of the group's sets: the kernel scores a 16-key block for a pass of queries as soon as one of them
// sees part of it, and a pass holds different heads' queries.
//
// A set is computed as MInference's kernel computes it: the selected 64-cell key blocks (vertical-slash's diagonals
// among them, as the blocks they cross) in place, page by page, cut at multiples of 64 cells (the cells of a sparse
// prefill are its positions), adjacent kept blocks in one kernel call; then the set's columns that lie outside those
// blocks, gathered into one contiguous run. Scored where they lie, scattered columns would each cost the kernel a
// 16-key block per pass.
//   pages [page_begin, page_end) of the unit's list; q [n_q, dk] and scratch.q_pos / q_node / q_sparse [n_q]: the
//   task's queries; m, l [n_q] and o [n_q, dv]: their flash state, updated in place.
void attend_sparse_by_set(const StepContext& step, int32_t il, int64_t unit, const AttentionPlan::HeadMask& head,
                          int32_t page_begin, int32_t page_end, const float* q, int32_t n_q, int32_t dk, int32_t dv,
                          AttentionScratch& scratch, float* m, float* l, float* o);

// Takes KV head kv_head's rows of page ip (cells `span`) into the flash state m, l [n_q], o [n_q, dv] of the
// queries q [n_q, dk] under `mask`: an f16 page in place, a quantized (KIVI) page through its codes, dequantized in
// the kernel's registers. Nothing when the head's rows were released (no query of the head sees those cells).
void attend_page(const kv::KvCache& cache, kv::SeqId seq, int32_t il, int32_t kv_head, int32_t ip,
                 const kv::KvCache::PageSpan& span, const float* q, int32_t n_q, const kernels::AttentionMask& mask,
                 int32_t dk, int32_t dv, AttentionScratch& scratch, float* m, float* l, float* o);

// Page ip (cells `span`, f16) of a verification step whose tree starts in or before it, for the queries
// q [n_q, dk] of tokens [t0, t1) (`group` query heads each; q_pos [n_q]) under `mask`. The tree lays its nodes out
// by number, so a node's ancestors sit among its siblings' cells, where the kernels would group their sums otherwise
// than plain decoding does, and a near tie could flip. Each node therefore reads the page as plain decoding of its
// branch will (Engine::accept keeps the node at depth d in cell root + d): the cached cells, then its branch from
// the root's cell on. The page's cached cells before the kAttentionPassKeys boundary at or below the root's cell are
// the same for every node and are read once, in place, by all the queries; from there each node's rows are
// gathered, at most a pass of cached cells and its branch.
void attend_tree_page(const StepContext& step, kv::SeqId seq, int32_t il, int32_t kv_head, int32_t ip,
                      const kv::KvCache::PageSpan& span, int32_t root_cell, int32_t t0, int32_t t1, int32_t group,
                      const float* q, const int32_t* q_pos, const kernels::AttentionMask& mask, int32_t dk, int32_t dv,
                      AttentionScratch& scratch, float* m, float* l, float* o);

// Decode reads a head's pages one attention_update each, from memory: the kernel asks for its own next 16-key
// block, and this asks for the first block of the unit's next page (page `next` of its list) while the current one
// is worked on, so no page starts cold (a quantized page's codes and scales: prefetch_quantized_rows), for heads of
// up to 64 dimensions: at 256 (Gemma 3) it measured 1-4% slower (kernels/attention_prefetch.h).
void prefetch_next_page(const StepContext& step, kv::SeqId seq, int32_t il, int64_t unit, int32_t kv_head,
                        int32_t next, AttentionScratch& scratch);

}  // namespace longhaul::model
