// The key reads of the flash pass (model/attention_reads.h).
#include "model/attention_reads.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "model/blocks.h"
#include "model/model.h"

namespace longhaul::model {

const float* place_queries(const ModelConfig& cfg, int32_t il, int32_t shift, const float* q, int32_t n_q, int32_t dk,
                           AttentionScratch& scratch) {
  if (shift == 0 || cfg.n_rot == 0) return q;
  scratch.q_placed.assign(q, q + static_cast<int64_t>(n_q) * dk);
  turn_queries(cfg, il, shift, scratch.q_placed.data(), n_q, dk, scratch.placed_angles);
  return scratch.q_placed.data();
}

int32_t gather_cells(const kv::KvCache& cache, kv::SeqId seq, int32_t il, int32_t kv_head,
                     std::span<const int32_t> cells, int32_t dk, int32_t dv, bool values, AttentionScratch& scratch,
                     int32_t first_page) {
  const auto n_max = static_cast<int64_t>(cells.size());
  scratch.cell_keys.resize(static_cast<size_t>(n_max * dk));
  if (values) scratch.cell_values.resize(static_cast<size_t>(n_max * dv));
  scratch.cell_pos.resize(static_cast<size_t>(n_max));
  scratch.cell_index.resize(static_cast<size_t>(n_max));
  const std::span<const int32_t> positions = cache.positions(seq, il);
  int32_t n = 0, ip = first_page - 1;
  bool found = false;  // span is the page of an earlier cell
  kv::KvCache::PageSpan span{};
  kv::KvCache::HeadRows rows;
  for (const int32_t c : cells) {
    if (!found || c >= span.first_cell + span.n_cells) {
      found = true;
      do span = cache.page_span(seq, il, ++ip);
      while (c >= span.first_cell + span.n_cells);
      rows = cache.head_rows(seq, il, kv_head, ip, scratch.kv, true, values);
    }
    if (rows.keys == nullptr) continue;
    const int64_t row = c - span.first_cell;
    std::copy_n(rows.keys + row * dk, dk, scratch.cell_keys.data() + static_cast<int64_t>(n) * dk);
    if (values) std::copy_n(rows.values + row * dv, dv, scratch.cell_values.data() + static_cast<int64_t>(n) * dv);
    scratch.cell_pos[static_cast<size_t>(n)] = positions[static_cast<size_t>(c)];
    scratch.cell_index[static_cast<size_t>(n)] = c;
    ++n;
  }
  return n;
}

void attend_gathered_cells(const StepContext& step, kv::SeqId seq, int32_t il, int32_t kv_head,
                           std::span<const int32_t> cells, const AttentionPlan::HeadMask& head, const float* q,
                           const int32_t* q_pos, int32_t n_q, int32_t dk, int32_t dv, AttentionScratch& scratch,
                           float* m, float* l, float* o, int32_t first_page, bool queries_apart) {
  const int32_t n = gather_cells(step.cache, seq, il, kv_head, cells, dk, dv, true, scratch, first_page);
  if (n == 0) return;
  kernels::AttentionMask mask;
  mask.q_pos = q_pos;
  mask.k_pos = scratch.cell_pos.data();
  mask.window = head.window;
  mask.n_sink = head.n_sink;
  mask.queries_apart = queries_apart;
  kernels::attention_update(q, dk, n_q, scratch.cell_keys.data(), dk, scratch.cell_values.data(), dv, n, mask, dk, dv,
                            m, l, o, dv);
}

void attend_sparse_by_set(const StepContext& step, int32_t il, int64_t unit, const AttentionPlan::HeadMask& head,
                          int32_t page_begin, int32_t page_end, const float* q, int32_t n_q, int32_t dk, int32_t dv,
                          AttentionScratch& scratch, float* m, float* l, float* o) {
  constexpr int32_t kRun = kernels::SparseKeys::kBlockPositions;
  const AttentionPlan& plan = step.state.plan;
  const int32_t n_head_kv = step.config.n_head_kv;
  const kv::SeqId seq = plan.block_sequence(static_cast<int32_t>(unit / n_head_kv));
  const int32_t kv_head = static_cast<int32_t>(unit % n_head_kv);
  const std::span<const int32_t> positions = step.cache.positions(seq, il);
  // Nothing below changes scratch.distinct_sparse (only the set_* and cell_* scratch).
  for (const kernels::SparseKeys* set : scratch.distinct_sparse) {
    // The set's queries, gathered with their flash state.
    scratch.set_index.clear();
    for (int32_t i = 0; i < n_q; ++i)
      if (scratch.q_sparse[static_cast<size_t>(i)] == set) scratch.set_index.push_back(i);
    const auto n = static_cast<int32_t>(scratch.set_index.size());
    scratch.set_q.resize(static_cast<size_t>(n) * dk);
    scratch.set_pos.resize(static_cast<size_t>(n));
    scratch.set_node.resize(static_cast<size_t>(n));
    scratch.set_sparse.assign(static_cast<size_t>(n), set);
    scratch.set_mlo.resize(static_cast<size_t>(n) * (dv + 2));
    float* set_m = scratch.set_mlo.data();
    float* set_l = set_m + n;
    float* set_o = set_l + n;
    for (int32_t s = 0; s < n; ++s) {
      const int32_t i = scratch.set_index[static_cast<size_t>(s)];
      std::copy_n(q + static_cast<int64_t>(i) * dk, dk, scratch.set_q.data() + static_cast<int64_t>(s) * dk);
      scratch.set_pos[static_cast<size_t>(s)] = scratch.q_pos[static_cast<size_t>(i)];
      scratch.set_node[static_cast<size_t>(s)] = scratch.q_node[static_cast<size_t>(i)];
      set_m[s] = m[i];
      set_l[s] = l[i];
      std::copy_n(o + static_cast<int64_t>(i) * dv, dv, set_o + static_cast<int64_t>(s) * dv);
    }
    // Which 64-cell runs are computed in place: those the set's blocks reach (its columns are left out of this
    // test, and computed below where no kept run holds them).
    kernels::SparseKeys blocks_only = *set;
    blocks_only.n_columns = 0;
    const int32_t last_query = *std::max_element(scratch.set_pos.begin(), scratch.set_pos.end());
    auto run_kept = [&](int32_t k_min, int32_t k_max) {
      return k_min <= last_query && kernels::sparse_range_selected(blocks_only, k_min, k_max);
    };
    scratch.set_columns.clear();
    for (int32_t ip_index = page_begin; ip_index < page_end; ++ip_index) {
      const int32_t ip = plan.unit_page(unit, ip_index);
      const kv::KvCache::PageSpan span = step.cache.page_span(seq, il, ip);
      const kv::KvCache::HeadRows rows = step.cache.head_rows(seq, il, kv_head, ip, scratch.kv);
      if (rows.keys == nullptr) continue;
      kernels::AttentionMask mask =
          plan.page_mask(head, seq, span, positions, scratch.set_pos.data(), scratch.set_node.data());
      mask.q_sparse = scratch.set_sparse.data();
      int32_t run_begin = -1;
      auto flush = [&](int32_t end) {
        if (run_begin < 0) return;
        kernels::AttentionMask sub = mask;
        sub.k_pos += run_begin;
        if (sub.k_node != nullptr) sub.k_node += run_begin;
        kernels::attention_update(scratch.set_q.data(), dk, n, rows.keys + static_cast<int64_t>(run_begin) * dk, dk,
                                  rows.values + static_cast<int64_t>(run_begin) * dv, dv, end - run_begin, sub, dk, dv,
                                  set_m, set_l, set_o, dv);
        run_begin = -1;
      };
      int32_t c = kernels::lower_index(set->columns, set->n_columns, span.first_cell);
      for (int32_t j = 0; j < span.n_cells;) {
        const int32_t end = std::min(span.n_cells, ((span.first_cell + j) / kRun + 1) * kRun - span.first_cell);
        const bool keep = run_kept(span.first_cell + j, span.first_cell + end - 1);
        if (keep) {
          if (run_begin < 0) run_begin = j;
        } else {
          flush(j);
        }
        for (; c < set->n_columns && set->columns[c] < span.first_cell + end; ++c)
          if (!keep && set->columns[c] <= last_query) scratch.set_columns.push_back(set->columns[c]);
        j = end;
      }
      flush(span.n_cells);
    }
    // Every gathered column is in the set: causality (and a head span) decide.
    if (!scratch.set_columns.empty())
      attend_gathered_cells(step, seq, il, kv_head, scratch.set_columns, head, scratch.set_q.data(),
                            scratch.set_pos.data(), n, dk, dv, scratch, set_m, set_l, set_o);
    for (int32_t s = 0; s < n; ++s) {
      const int32_t i = scratch.set_index[static_cast<size_t>(s)];
      m[i] = set_m[s];
      l[i] = set_l[s];
      std::copy_n(set_o + static_cast<int64_t>(s) * dv, dv, o + static_cast<int64_t>(i) * dv);
    }
  }
}

void attend_page(const kv::KvCache& cache, kv::SeqId seq, int32_t il, int32_t kv_head, int32_t ip,
                 const kv::KvCache::PageSpan& span, const float* q, int32_t n_q, const kernels::AttentionMask& mask,
                 int32_t dk, int32_t dv, AttentionScratch& scratch, float* m, float* l, float* o) {
  if (span.quantized) {
    const kernels::QuantizedRows rows = cache.quantized_rows(seq, il, kv_head, ip);
    if (rows.key_codes == nullptr) return;
    kernels::attention_update_quantized(q, dk, n_q, rows, span.n_cells, mask, dk, dv, m, l, o, dv);
    return;
  }
  const kv::KvCache::HeadRows rows = cache.head_rows(seq, il, kv_head, ip, scratch.kv);
  if (rows.keys == nullptr) return;
  kernels::attention_update(q, dk, n_q, rows.keys, dk, rows.values, dv, span.n_cells, mask, dk, dv, m, l, o, dv);
}

void attend_tree_page(const StepContext& step, kv::SeqId seq, int32_t il, int32_t kv_head, int32_t ip,
                      const kv::KvCache::PageSpan& span, int32_t root_cell, int32_t t0, int32_t t1, int32_t group,
                      const float* q, const int32_t* q_pos, const kernels::AttentionMask& mask, int32_t dk, int32_t dv,
                      AttentionScratch& scratch, float* m, float* l, float* o) {
  const kv::KvCache& cache = step.cache;
  const kv::KvCache::HeadRows rows = cache.head_rows(seq, il, kv_head, ip, scratch.kv);
  if (rows.keys == nullptr) return;
  const int32_t n_q = (t1 - t0) * group;
  const int32_t shared =
      std::max(0, (root_cell - span.first_cell) / kernels::kAttentionPassKeys * kernels::kAttentionPassKeys);
  if (shared > 0)
    kernels::attention_update(q, dk, n_q, rows.keys, dk, rows.values, dv, shared, mask, dk, dv, m, l, o, dv);
  // f16 pages: cell c is row c % page_tokens of page c / page_tokens.
  const int32_t page_end = span.first_cell + cache.sequence_options(seq).page_tokens;
  const AttentionPlan& plan = step.state.plan;
  const int32_t from = span.first_cell + shared;
  std::vector<int32_t>& branch = scratch.tree_branch;
  std::vector<int32_t>& cells = scratch.tree_cells;
  for (int32_t t = t0; t < t1; ++t) {
    plan.tree_branch(seq, plan.token_node(t), branch);
    const int32_t to = std::min(page_end, root_cell + static_cast<int32_t>(branch.size()));  // past the node's cell
    if (from >= to) continue;  // the branch ends before this page
    // The cells plain decoding reads at [from, to): ascending, as the branch's node numbers are.
    cells.clear();
    for (int32_t v = from; v < to; ++v)
      cells.push_back(v < root_cell ? v : root_cell + branch[static_cast<size_t>(v - root_cell)]);
    const int32_t i = (t - t0) * group;
    attend_gathered_cells(step, seq, il, kv_head, cells, {mask.window, mask.n_sink}, q + static_cast<int64_t>(i) * dk,
                          q_pos + i, group, dk, dv, scratch, m + i, l + i, o + static_cast<int64_t>(i) * dv, ip,
                          /*queries_apart=*/true);
  }
}

void prefetch_next_page(const StepContext& step, kv::SeqId seq, int32_t il, int64_t unit, int32_t kv_head,
                        int32_t next, AttentionScratch& scratch) {
  constexpr int32_t kRows = 16;  // the kernels' key block
  const int32_t dk = step.config.head_dim_k, dv = step.config.head_dim_v;
  if (dk > 64 || dv > 64) return;
  const int32_t ip = step.state.plan.unit_page(unit, next);
  const kv::KvCache::PageSpan span = step.cache.page_span(seq, il, ip);
  if (span.quantized) {
    const kernels::QuantizedRows rows = step.cache.quantized_rows(seq, il, kv_head, ip);
    if (rows.key_codes != nullptr) kernels::prefetch_quantized_rows(rows, std::min(kRows, span.n_cells), dk, dv);
    return;
  }
  const kv::KvCache::HeadRows rows = step.cache.head_rows(seq, il, kv_head, ip, scratch.kv);
  if (rows.keys == nullptr) return;
  kernels::prefetch_attention_rows(rows.keys, dk, rows.values, dv, std::min(kRows, span.n_cells), dk, dv);
}

}  // namespace longhaul::model
