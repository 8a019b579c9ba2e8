#include "model/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "model/attention_reads.h"
#include "model/blocks.h"
#include "model/model.h"

namespace longhaul::model {

void turn_queries(const ModelConfig& cfg, int32_t il, int32_t shift, float* q, int32_t n_q, int32_t dk,
                  kernels::RopeAngles& angles) {
  if (shift == 0 || cfg.n_rot == 0) return;
  const int32_t angle_position = -shift;
  const bool local = cfg.is_local(il);
  angles.compute(&angle_position, 1, cfg.n_rot, local ? cfg.rope_freq_base_local : cfg.rope_freq_base,
                 local ? 1.0f : cfg.rope_freq_scale);
  kernels::rope(q, n_q, dk, cfg.n_rot, angles.cos_sin.data(), cfg.rope_style);
}

// ---- the passes ----

namespace {

// Probabilities of one query head of token t over the cells of its sequence, for a policy that observes them.
//   q:      [head_dim_k] (already scaled)
//   scores: [n_cells] on return the attention probabilities (0 for cells the plan hides from this query)
// The same cells and the same rule as the flash pass (the plan's page list and masks).
void attend_one(StepContext& step, int32_t il, int32_t t, int32_t head, int32_t kv_head, int32_t layer_window,
                const float* q, AttentionScratch& scratch) {
  const AttentionPlan& plan = step.state.plan;
  const kv::KvCache& cache = step.cache;
  const int32_t dk = step.config.head_dim_k;
  const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
  const int32_t n_cells = cache.n_cells(seq, il);
  const std::span<const int32_t> positions = cache.positions(seq, il);
  const int32_t query_pos = step.batch.positions[static_cast<size_t>(t)];
  const int32_t query_node = plan.token_node(t);
  const AttentionPlan::HeadMask head_mask = plan.head_mask(il, seq, kv_head, layer_window);
  const kernels::SparseKeys* const sparse = plan.sparse_keys(t, head);
  const int64_t unit = static_cast<int64_t>(plan.block_of_token(t)) * step.config.n_head_kv + kv_head;
  scratch.scores.resize(static_cast<size_t>(n_cells));
  float* scores = scratch.scores.data();
  std::fill(scores, scores + n_cells, -INFINITY);
  int32_t end = 0;  // one past the last visible cell
  // The scores of one page's visible cells for the query qv: runs of visible cells are contiguous key rows, one
  // kernel call per run.
  auto score_page = [&](int32_t ip, const kernels::AttentionMask& mask, const float* qv) {
    const kv::KvCache::PageSpan page = cache.page_span(seq, il, ip);
    const kv::KvCache::HeadRows rows = cache.head_rows(seq, il, kv_head, ip, scratch.kv, true, false);
    for (int32_t j = 0; j < page.n_cells;) {
      if (!kernels::key_visible(mask, 0, j)) {
        ++j;
        continue;
      }
      int32_t e = j + 1;
      while (e < page.n_cells && kernels::key_visible(mask, 0, e)) ++e;
      kernels::dot_f16_rows(qv, rows.keys + static_cast<int64_t>(j) * dk, dk, e - j, dk, scores + page.first_cell + j);
      end = std::max(end, page.first_cell + e);
      j = e;
    }
  };
  const int32_t n_pages = plan.n_unit_pages(cache, il, unit, step.config.n_head_kv);
  for (int32_t i = 0; i < n_pages; ++i) {
    const int32_t ip = plan.unit_page(unit, i);
    if (!cache.head_rows_present(seq, il, kv_head, ip)) continue;  // freed rows: invisible to this head
    kernels::AttentionMask mask = plan.page_mask(head_mask, seq, cache.page_span(seq, il, ip), positions, &query_pos,
                                                 &query_node);
    mask.q_sparse = &sparse;
    score_page(ip, mask, q);
  }
  for (int32_t i = 0; i < plan.n_unit_placed(unit); ++i) {
    const kv::KvPolicy::PagePlacement& placed = plan.unit_placement(unit, i);
    if (!cache.head_rows_present(seq, il, kv_head, placed.page)) continue;
    kernels::AttentionMask mask = plan.page_mask({}, seq, cache.page_span(seq, il, placed.page), positions,
                                                 &query_pos, &query_node);
    mask.min_distance = placed.min_distance;
    score_page(placed.page, mask, place_queries(step.config, il, placed.shift, q, 1, dk, scratch));
  }
  const std::span<const int32_t> cells = plan.unit_cells(unit);
  if (!cells.empty()) {
    const int32_t n = gather_cells(cache, seq, il, kv_head, cells, dk, 0, false, scratch);
    kernels::AttentionMask mask;
    mask.q_pos = &query_pos;
    mask.k_pos = scratch.cell_pos.data();
    mask.window = head_mask.window;
    mask.n_sink = head_mask.n_sink;
    float cell_score = 0.0f;
    for (int32_t j = 0; j < n; ++j) {
      if (!kernels::key_visible(mask, 0, j)) continue;
      kernels::dot_f16_rows(q, scratch.cell_keys.data() + static_cast<int64_t>(j) * dk, dk, 1, dk, &cell_score);
      const int32_t c = scratch.cell_index[static_cast<size_t>(j)];
      scores[c] = cell_score;
      end = std::max(end, c + 1);
    }
  }
  if (end == 0) {  // nothing visible: cannot happen for a token that sees itself
    std::fill(scores, scores + n_cells, 0.0f);
    return;
  }
  // Masked cells get probability 0 (exp(-inf)); KV policies that rank cells by attention read the rest.
  kernels::softmax(scores, end);
  std::fill(scores + end, scores + n_cells, 0.0f);
}

// Flash attention (Dao et al., 2022) for every query of the step. A unit is a block of the plan (up to
// kBlockTokens consecutive tokens of one sequence) and one KV head: its queries (every query head of the KV
// head's group, for each token) pass over the unit's pages, so each key and value is converted once for all of
// them. When there are fewer units than threads (a prompt chunk of few tokens), a unit's pages are also split into
// ranges whose partial results are merged at the end.
constexpr int32_t kFlashMinCellsPerSplit = 256;
constexpr int32_t kFlashTasksPerThread = 4;

// Exact units: a decode token, and each token of a verification step (StepPolicy::tokens_apart), must get the
// same bits in either: greedy speculation is then lossless even at a near tie. A split chosen from the cells a
// step finds would not do, since a verification step finds more cells than the plain step of its first token, and
// more units. So an exact unit's pages are cut into chunks fixed by page index, one task each, merged in chunk
// order: a chunk past a token's position holds no key it sees and drops out of its merge (m stays -inf), and the
// kernels keep the queries apart (AttentionMask::queries_apart). The first kExactSmallChunks chunks hold
// kExactChunkCells cells each, so that a short sequence still gives every thread work; the later ones
// kExactLargeChunk times that (at 32K cells, 35 chunks; the thread that finishes a unit's last one merges it). A
// policy's selection reads the chunks' listed pages, so a covering selection sums what full attention sums.
constexpr int32_t kExactChunkCells = 256;
constexpr int32_t kExactSmallChunks = 4;
constexpr int32_t kExactLargeChunk = 4;

// The chunks of an exact unit's pages, by page index: `small` pages per small chunk. begin(c) is chunk c's first
// page; count(n_pages) the chunks that n_pages pages fill.
struct ExactChunks {
  int32_t small = 1;
  int32_t large() const { return small * kExactLargeChunk; }
  int32_t begin(int32_t c) const {
    return c <= kExactSmallChunks ? c * small : kExactSmallChunks * small + (c - kExactSmallChunks) * large();
  }
  int32_t count(int32_t n_pages) const {
    if (n_pages <= kExactSmallChunks * small) return (n_pages + small - 1) / small;
    return kExactSmallChunks + (n_pages - kExactSmallChunks * small + large() - 1) / large();
  }
};

ExactChunks exact_chunks(const kv::KvCache& cache, kv::SeqId seq) {
  return {std::max(1, kExactChunkCells / std::max(1, cache.sequence_options(seq).page_tokens))};
}

void attend_flash(StepContext& step, int32_t il, int32_t layer_window) {
  const ModelConfig& cfg = step.config;
  ForwardState& st = step.state;
  const int32_t dk = cfg.head_dim_k, dv = cfg.head_dim_v;
  const int32_t n_head = cfg.n_head, n_head_kv = cfg.n_head_kv, group = n_head / n_head_kv;
  const int64_t q_row = static_cast<int64_t>(n_head) * dk;  // q: [n_tokens, n_head * dk]
  AttentionPlan& plan = st.plan;
  const int32_t n_blocks = plan.n_blocks();
  const int64_t n_units = static_cast<int64_t>(n_blocks) * n_head_kv;

  // Page selection, when a policy of the step selects pages, runs in the same job as the attention that reads it:
  // its n_select tasks (one per unit) come first, and a unit's attention tasks wait for their own unit's only.
  const int64_t n_select = plan.begin_selection(n_head_kv);

  const auto block_exact = [&](int32_t b) {
    return plan.block_end(b) - plan.block_begin(b) == 1 || plan.policy_of(plan.block_sequence(b)).tokens_apart;
  };
  // The other units' splits are chosen before the selections are known, from the cells and pages each unit's
  // sequence holds (a selection reads fewer: its splits are smaller, some empty when it reads fewer pages than
  // there are splits).
  int32_t max_cells = 0, max_pages = 0;
  for (int64_t u = 0; u < n_units; ++u) {
    const kv::SeqId seq = plan.block_sequence(static_cast<int32_t>(u / n_head_kv));
    max_cells = std::max(max_cells, step.cache.n_cells(seq, il));
    max_pages = std::max(max_pages, step.cache.n_pages(seq, il));
  }
  // About kFlashTasksPerThread tasks per thread, so that threads finish together; a split keeps at least
  // kFlashMinCellsPerSplit cells, below which merging costs more than it saves.
  const int32_t max_splits = std::max(1, std::min(max_cells / kFlashMinCellsPerSplit, max_pages));
  int32_t n_splits = 1;
  const int64_t want_tasks = static_cast<int64_t>(kFlashTasksPerThread) * step.pool.n_threads();
  if (step.pool.n_threads() > 1 && n_units < want_tasks)
    n_splits = std::min<int32_t>(static_cast<int32_t>((want_tasks + n_units - 1) / n_units), max_splits);
  // A task count that is a multiple of the threads: a single sequence's 3 KV heads in 3 splits were 9 tasks on 2
  // threads, so one thread ran a task more while the other waited.
  while (n_splits > 1 && n_splits < max_splits && (n_units * n_splits) % step.pool.n_threads() != 0) ++n_splits;

  // The tasks, unit by unit: an exact unit's chunks (part = chunk) or another unit's splits (part = split). Each
  // task's m, l and o: [n_q] + [n_q] + [n_q, dv], n_q the unit's queries.
  std::vector<AttentionTask>& tasks = st.attention_tasks;
  std::vector<int64_t>& unit_tasks = st.attention_unit_tasks;
  tasks.clear();
  unit_tasks.resize(static_cast<size_t>(n_units) + 1);
  int64_t n_partial_floats = 0;
  for (int64_t u = 0; u < n_units; ++u) {
    const auto b = static_cast<int32_t>(u / n_head_kv);
    const int64_t n_q = static_cast<int64_t>(plan.block_end(b) - plan.block_begin(b)) * group;
    int32_t n_parts = n_splits;
    if (block_exact(b)) {
      const kv::SeqId seq = plan.block_sequence(b);
      n_parts = std::max(1, exact_chunks(step.cache, seq).count(step.cache.n_pages(seq, il)));
    }
    unit_tasks[static_cast<size_t>(u)] = static_cast<int64_t>(tasks.size());
    for (int32_t part = 0; part < n_parts; ++part) {
      tasks.push_back({u, part, n_partial_floats});
      n_partial_floats += n_q * (dv + 2);
    }
  }
  unit_tasks[static_cast<size_t>(n_units)] = static_cast<int64_t>(tasks.size());
  const auto n_tasks = static_cast<int64_t>(tasks.size());
  if (static_cast<int64_t>(st.attention_partials.size()) < n_partial_floats)
    st.attention_partials.resize(static_cast<size_t>(n_partial_floats));
  float* const partials = st.attention_partials.data();
  if (static_cast<int64_t>(st.attention_pending.size()) < n_units)
    st.attention_pending = std::vector<std::atomic<int32_t>>(static_cast<size_t>(n_units));
  // Relaxed: the pool's publication of the job orders these before its tasks.
  for (int64_t u = 0; u < n_units; ++u)
    st.attention_pending[static_cast<size_t>(u)].store(
        static_cast<int32_t>(unit_tasks[static_cast<size_t>(u) + 1] - unit_tasks[static_cast<size_t>(u)]),
        std::memory_order_relaxed);
  const int32_t max_q = AttentionPlan::kBlockTokens * group;

  // One task: part `part` of unit `unit`'s pages, into the task's m, l and o.
  const auto attend_task = [&](const AttentionTask& task, int i_thread) {
    AttentionScratch& scratch = st.attention_threads[static_cast<size_t>(i_thread)];
    const int64_t unit = task.unit;
    const int32_t b = static_cast<int32_t>(unit / n_head_kv), kv_head = static_cast<int32_t>(unit % n_head_kv);
    const int32_t t0 = plan.block_begin(b), t1 = plan.block_end(b);
    const int32_t n_q = (t1 - t0) * group;
    const bool exact = block_exact(b);
    plan.wait_selected(unit);
    float* m = partials + task.partial;
    float* l = m + n_q;
    float* o = l + n_q;
    std::fill(m, m + n_q, -INFINITY);
    const kv::SeqId seq = plan.block_sequence(b);
    const std::span<const int32_t> positions = step.cache.positions(seq, il);
    const AttentionPlan::HeadMask head = plan.head_mask(il, seq, kv_head, layer_window);
    const int32_t n_pages = plan.n_unit_pages(step.cache, il, unit, n_head_kv);
    const int32_t n_placed = plan.n_unit_placed(unit);
    const std::span<const int32_t> cells = plan.unit_cells(unit);
    // Parts are whole entries of the unit's list: its pages (at their own positions), then its placed pages,
    // then its single cells gathered into one entry. With f16 pages (all full but the last) and no selection a
    // split is ceil(n_cells / (n_splits * page)) pages, the same boundaries as splitting the cells into page
    // multiples.
    const int32_t n_entries = n_pages + n_placed + (cells.empty() ? 0 : 1);
    int32_t i_begin = 0, i_end = 0;
    if (exact) {
      // The entries of the chunk's pages: a range of the unit's ascending list (every page, or a selection's).
      // The last chunk also takes the placed pages and the gathered cells.
      const ExactChunks chunks = exact_chunks(step.cache, seq);
      const int64_t n_parts = unit_tasks[static_cast<size_t>(unit) + 1] - unit_tasks[static_cast<size_t>(unit)];
      const auto first_entry_from = [&](int32_t page) {
        int32_t lo = 0, hi = n_pages;
        while (lo < hi) {
          const int32_t mid = lo + (hi - lo) / 2;
          if (plan.unit_page(unit, mid) < page) lo = mid + 1; else hi = mid;
        }
        return lo;
      };
      i_begin = first_entry_from(chunks.begin(task.part));
      i_end = task.part + 1 == n_parts ? n_entries : first_entry_from(chunks.begin(task.part + 1));
    } else {
      const int32_t per_split = (n_entries + n_splits - 1) / n_splits;
      i_begin = std::min(n_entries, task.part * per_split);
      i_end = std::min(n_entries, i_begin + per_split);
    }
    if (i_begin >= i_end) return;  // nothing to read: m stays -inf and the merge skips the part (l and o unread)
    std::fill(l, l + n_q, 0.0f);
    std::fill(o, o + static_cast<int64_t>(n_q) * dv, 0.0f);
    scratch.q.resize(static_cast<size_t>(max_q) * dk);
    scratch.q_pos.resize(static_cast<size_t>(max_q));
    scratch.q_node.resize(static_cast<size_t>(max_q));
    for (int32_t t = t0; t < t1; ++t) {
      for (int32_t g = 0; g < group; ++g) {
        const int32_t i = (t - t0) * group + g;
        const float* src = st.q.data() + t * q_row + static_cast<int64_t>(kv_head * group + g) * dk;
        std::copy(src, src + dk, scratch.q.data() + static_cast<int64_t>(i) * dk);
        scratch.q_pos[static_cast<size_t>(i)] = step.batch.positions[static_cast<size_t>(t)];
        scratch.q_node[static_cast<size_t>(i)] = plan.token_node(t);
      }
    }
    // Sparse prefill: each query's key set; the page loop below skips runs of cells no set selects, unless a
    // query of the task is dense (it reads every page).
    scratch.q_sparse.resize(static_cast<size_t>(max_q));
    scratch.distinct_sparse.clear();
    bool any_dense = false;
    for (int32_t i = 0; i < n_q; ++i) {
      const kernels::SparseKeys* sparse = plan.sparse_keys(t0 + i / group, kv_head * group + i % group);
      scratch.q_sparse[static_cast<size_t>(i)] = sparse;
      any_dense = any_dense || sparse == nullptr;
      if (sparse != nullptr &&
          std::find(scratch.distinct_sparse.begin(), scratch.distinct_sparse.end(), sparse) == scratch.distinct_sparse.end())
        scratch.distinct_sparse.push_back(sparse);
    }
    const bool any_sparse = !scratch.distinct_sparse.empty();
    // A verification tree laid out node by node (f16 pages): its pages are read branch by branch (attend_tree_page).
    const int32_t tree_root = exact && !step.cache.quantized(seq) ? plan.tree_root_cell(seq) : -1;
    if (any_sparse && !any_dense && n_placed == 0 && cells.empty()) {
      attend_sparse_by_set(step, il, unit, head, i_begin, i_end, scratch.q.data(), n_q, dk, dv, scratch, m, l, o);
      return;
    }
    // Keys of a head are contiguous rows within a page: one update per page (attend_page: an f16 page in place, a
    // quantized one through its codes).
    for (int32_t i = i_begin; i < i_end; ++i) {
      if (i == n_pages + n_placed) {
        // The single cells, gathered: at their own positions, under the head's window and sinks.
        attend_gathered_cells(step, seq, il, kv_head, cells, head, scratch.q.data(), scratch.q_pos.data(), n_q, dk, dv,
                              scratch, m, l, o);
        continue;
      }
      if (i >= n_pages) {
        // A placed page: the queries turned by its shift, visible by true position and its min_distance.
        const kv::KvPolicy::PagePlacement& placed = plan.unit_placement(unit, i - n_pages);
        const kv::KvCache::PageSpan span = step.cache.page_span(seq, il, placed.page);
        kernels::AttentionMask mask =
            plan.page_mask({}, seq, span, positions, scratch.q_pos.data(), scratch.q_node.data());
        mask.min_distance = placed.min_distance;
        const float* q_placed = place_queries(cfg, il, placed.shift, scratch.q.data(), n_q, dk, scratch);
        attend_page(step.cache, seq, il, kv_head, placed.page, span, q_placed, n_q, mask, dk, dv, scratch, m, l, o);
        continue;
      }
      const int32_t ip = plan.unit_page(unit, i);
      const kv::KvCache::PageSpan span = step.cache.page_span(seq, il, ip);
      if (n_q <= group && i + 1 < std::min(i_end, n_pages))  // decode
        prefetch_next_page(step, seq, il, unit, kv_head, i + 1, scratch);
      kernels::AttentionMask mask =
          plan.page_mask(head, seq, span, positions, scratch.q_pos.data(), scratch.q_node.data());
      if (any_sparse) mask.q_sparse = scratch.q_sparse.data();
      mask.queries_apart = exact;
      if (tree_root >= 0 && span.first_cell + span.n_cells > tree_root) {
        attend_tree_page(step, seq, il, kv_head, ip, span, tree_root, t0, t1, group, scratch.q.data(),
                         scratch.q_pos.data(), mask, dk, dv, scratch, m, l, o);
        continue;
      }
      attend_page(step.cache, seq, il, kv_head, ip, span, scratch.q.data(), n_q, mask, dk, dv, scratch, m, l, o);
    }
  };

  // Merges the parts of a unit in order (rescaling each to the common maximum; a part whose keys a query does not
  // see drops out of its merge) and normalises them into st.attn.
  const auto merge_unit = [&](int64_t unit) {
    const int32_t b = static_cast<int32_t>(unit / n_head_kv), kv_head = static_cast<int32_t>(unit % n_head_kv);
    const int32_t t0 = plan.block_begin(b), t1 = plan.block_end(b);
    const int32_t n_q = (t1 - t0) * group;
    const int64_t first = unit_tasks[static_cast<size_t>(unit)], end = unit_tasks[static_cast<size_t>(unit) + 1];
    for (int32_t i = 0; i < n_q; ++i) {
      const int32_t t = t0 + i / group, h = kv_head * group + i % group;
      float* out = st.attn.data() + static_cast<int64_t>(t) * n_head * dv + static_cast<int64_t>(h) * dv;
      float m_all = -INFINITY;
      for (int64_t k = first; k < end; ++k)
        m_all = std::max(m_all, partials[tasks[static_cast<size_t>(k)].partial + i]);
      std::fill(out, out + dv, 0.0f);
      if (m_all == -INFINITY) continue;  // nothing visible: cannot happen for a token that sees itself
      float l_all = 0.0f;
      for (int64_t k = first; k < end; ++k) {
        const float* m = partials + tasks[static_cast<size_t>(k)].partial;
        if (m[i] == -INFINITY) continue;
        const float w = std::exp(m[i] - m_all);
        l_all += w * m[n_q + i];
        const float* o = m + 2 * n_q + static_cast<int64_t>(i) * dv;
        for (int32_t c = 0; c < dv; ++c) out[c] += w * o[c];
      }
      const float inv = 1.0f / l_all;
      for (int32_t c = 0; c < dv; ++c) out[c] *= inv;
    }
  };

  // The thread that finishes a unit's last task merges the unit, so no thread waits for a serial pass. Tasks are
  // taken from the last: a prompt's later blocks, which see more keys, go first, and an exact unit's small first
  // chunks come last, so the threads finish together. When the step selects pages, units are taken in order
  // instead, as their selections are made, each unit's parts still from the last: a thread that finished a
  // selection then finds the next attention task's pages chosen, where taking the last unit first had it wait for
  // the last selection (one sequence's 3 KV heads select in 3 tasks on 2 threads).
  step.pool.for_each_chunk(n_select + n_tasks, [&](int64_t chunk, int i_thread) {
    if (chunk < n_select) {
      plan.select_unit(step, il, st.q.data(), n_head, dk, chunk, i_thread);
      return;
    }
    const int64_t k = chunk - n_select;
    int64_t i_task = n_tasks - 1 - k;
    if (n_select > 0) {  // k's mirror within its unit's parts
      const auto next_unit = std::upper_bound(unit_tasks.begin(), unit_tasks.begin() + n_units + 1, k);
      i_task = *next_unit + *(next_unit - 1) - 1 - k;
    }
    const AttentionTask& task = tasks[static_cast<size_t>(i_task)];
    attend_task(task, i_thread);
    // acq_rel: the merging thread sees every other task's partials of the unit.
    if (st.attention_pending[static_cast<size_t>(task.unit)].fetch_sub(1, std::memory_order_acq_rel) == 1)
      merge_unit(task.unit);
  });
}

}  // namespace

void self_attention(StepContext& step, int32_t il) {
  const ModelConfig& cfg = step.config;
  const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
  ForwardState& st = step.state;
  const int32_t n_tokens = step.n_tokens;
  const int32_t dk = cfg.head_dim_k, dv = cfg.head_dim_v;
  const int32_t n_head = cfg.n_head, n_head_kv = cfg.n_head_kv;
  const int64_t q_row = static_cast<int64_t>(n_head) * dk;     // q: [n_tokens, n_head * dk]
  const int64_t k_row = static_cast<int64_t>(n_head_kv) * dk;  // k: [n_tokens, n_head_kv * dk]
  const int64_t v_row = static_cast<int64_t>(n_head_kv) * dv;  // v: [n_tokens, n_head_kv * dv]

  // Q, K and V read the same input: one fused product quantizes it once and waits for the threads once.
  const kernels::MatmulTarget qkv[] = {matmul_target(lw.attn_q, st.q.data()), matmul_target(lw.attn_k, st.k.data()),
                                       matmul_target(lw.attn_v, st.v.data())};
  step_products(step, qkv, 3, lw.attn_q.n_in, st.xn.data());

  const bool local = cfg.is_local(il);
  const kernels::RopeAngles& angles = local ? st.rope_local : st.rope_global;
  const int32_t half_rot = cfg.n_rot / 2;
  const float scale = cfg.attention_scale > 0.0f ? cfg.attention_scale : 1.0f / std::sqrt(static_cast<float>(dk));

  // Per token: optional QK-norm (per head), RoPE, and the store of K/V into the cache (f16).
  step.pool.parallel_for(n_tokens, 1, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      float* q = st.q.data() + t * q_row;
      float* k = st.k.data() + t * k_row;
      const float* v = st.v.data() + t * v_row;
      if (cfg.qk_norm) {
        for (int32_t h = 0; h < n_head; ++h) kernels::rms_norm(q + h * dk, lw.attn_q_norm.f32(), q + h * dk, dk, cfg.rms_eps);
        for (int32_t h = 0; h < n_head_kv; ++h)
          kernels::rms_norm(k + h * dk, lw.attn_k_norm.f32(), k + h * dk, dk, cfg.rms_eps);
      }
      const float* a = angles.cos_sin.data() + t * half_rot * 2;
      kernels::rope(q, n_head, dk, cfg.n_rot, a, cfg.rope_style);
      kernels::rope(k, n_head_kv, dk, cfg.n_rot, a, cfg.rope_style);
      kernels::scale(q, scale, q_row);
      const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
      const int32_t cell = st.cells[static_cast<size_t>(t)];
      for (int32_t h = 0; h < n_head_kv; ++h) {
        kernels::f32_to_f16_row(k + h * dk, step.cache.key(seq, il, h, cell), dk);
        kernels::f32_to_f16_row(v + h * dv, step.cache.value(seq, il, h, cell), dv);
      }
    }
  });

  // Attention. GQA maps query head h to KV head h / (n_head / n_head_kv).
  const int32_t window = local ? cfg.sliding_window : 0;
  const int32_t group = n_head / n_head_kv;
  st.plan.plan_sparse_prefill(step, il, st.q.data(), n_head, dk, window);
  attend_flash(step, il, window);  // selects the pages of policies that select, in the same job
  st.plan.count_keys_read(step.cache, il, n_head_kv, window);
  for (int32_t t = 0; t < n_tokens; ++t) {
    const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
    const StepPolicy& p = st.plan.policy_of(seq);
    if (p.observe && p.policy != nullptr && p.policy->needs_queries())
      p.policy->observe_queries(seq, il, step.batch.positions[static_cast<size_t>(t)],
                                std::span<const float>(st.q.data() + t * q_row, static_cast<size_t>(q_row)));
  }
  // A KV policy that reads the probabilities gets every observed query's row from a second pass (one task per
  // token and query head); the output above stays the same with or without it, bit for bit.
  bool observe = false;
  for (int32_t b = 0; b < st.plan.n_blocks() && !observe; ++b) {
    const StepPolicy& p = st.plan.policy_of(st.plan.block_sequence(b));
    observe = p.observe && p.policy != nullptr && p.policy->needs_scores();
  }
  if (observe) {
    const int64_t n_tasks = static_cast<int64_t>(n_tokens) * n_head;
    // Tasks are claimed one at a time (later tokens of a prompt see more keys); scores are per running thread.
    step.pool.for_each_chunk(n_tasks, [&](int64_t task, int i_thread) {
      const auto t = static_cast<int32_t>(task / n_head);
      const int32_t h = static_cast<int32_t>(task % n_head);
      const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
      const StepPolicy& p = st.plan.policy_of(seq);
      if (!p.observe || p.policy == nullptr || !p.policy->needs_scores()) return;
      const int32_t query_pos = step.batch.positions[static_cast<size_t>(t)];
      if (!p.policy->wants_scores(query_pos)) return;
      AttentionScratch& scratch = st.attention_threads[static_cast<size_t>(i_thread)];
      attend_one(step, il, t, h, h / group, window, st.q.data() + t * q_row + static_cast<int64_t>(h) * dk, scratch);
      // Score-based KV policies (H2O, TOVA, SnapKV) accumulate this row; no [n_query, n_key] matrix is kept.
      p.policy->observe_scores(seq, il, h / group, query_pos, scratch.scores);
    });
  }

  project(step, lw.attn_output, st.attn.data(), st.proj.data());
}

}  // namespace longhaul::model
