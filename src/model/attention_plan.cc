// The attention plan (model/attention.h): which cells each query of a step sees, built once per step and per
// layer from the batch, the sequences' KV policies and, for long prompt chunks, their sparse prefill patterns.
#include <algorithm>
#include <cmath>

#include "model/attention.h"
#include "base/thread_pool.h"
#include "model/blocks.h"
#include "model/model.h"
#include "model/sparse_prefill_hip.h"
#include "model/sparse_prefill_hyper.h"

namespace longhaul::model {

const StepPolicy& AttentionPlan::policy_of(kv::SeqId seq) const {
  static const StepPolicy kNone{};
  return static_cast<size_t>(seq) < policies_.size() ? policies_[static_cast<size_t>(seq)] : kNone;
}

const AttentionPlan::SequenceTree* AttentionPlan::tree_of(kv::SeqId seq) const {
  for (const SequenceTree& t : trees_)
    if (t.seq == seq) return &t;
  return nullptr;
}

void AttentionPlan::build(const Batch& batch, std::span<const int32_t> cells, const kv::KvCache& cache,
                          std::span<const StepPolicy> policies) {
  const int32_t n_tokens = batch.size();
  policies_ = policies;
  selecting_ = false;
  sparse_.clear();
  token_sparse_.assign(static_cast<size_t>(n_tokens), -1);
  token_pos_.assign(batch.positions.begin(), batch.positions.end());

  // Blocks: runs of up to kBlockTokens consecutive tokens of one sequence.
  block_start_.clear();
  block_seq_.clear();
  token_block_.resize(static_cast<size_t>(n_tokens));
  for (int32_t t = 0; t < n_tokens; ++t) {
    const kv::SeqId seq = batch.seq_ids[static_cast<size_t>(t)];
    const bool new_block = block_start_.empty() || t - block_start_.back() == kBlockTokens || seq != block_seq_.back();
    if (new_block) {
      block_start_.push_back(t);
      block_seq_.push_back(seq);
    }
    token_block_[static_cast<size_t>(t)] = static_cast<int32_t>(block_start_.size()) - 1;
  }
  block_start_.push_back(n_tokens);
  kv::SeqId max_seq = -1;
  for (kv::SeqId seq : block_seq_) max_seq = std::max(max_seq, seq);
  keys_read_.assign(static_cast<size_t>(max_seq + 1), KeysRead{});

  // Trees: a sequence whose step tokens are not one chain (each token's parent the one before it) gets ancestor
  // rows over its new tokens; the others are masked by position alone.
  trees_.clear();
  token_node_.assign(static_cast<size_t>(n_tokens), -1);
  if (batch.parents.empty()) return;
  std::vector<kv::SeqId> seqs(batch.seq_ids.begin(), batch.seq_ids.end());
  std::sort(seqs.begin(), seqs.end());
  seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
  std::vector<int32_t> members;  // batch indices of the sequence's tokens
  for (kv::SeqId seq : seqs) {
    members.clear();
    for (int32_t t = 0; t < n_tokens; ++t)
      if (batch.seq_ids[static_cast<size_t>(t)] == seq) members.push_back(t);
    bool chain = batch.parents[static_cast<size_t>(members[0])] == kStepRoot;
    for (size_t i = 1; i < members.size() && chain; ++i) chain = batch.parents[static_cast<size_t>(members[i])] == members[i - 1];
    if (chain) continue;
    SequenceTree tree;
    tree.seq = seq;
    const auto n_nodes = static_cast<int32_t>(members.size());
    tree.n_words = (n_nodes + 63) / 64;
    tree.ancestors.assign(static_cast<size_t>(n_nodes) * tree.n_words, 0);
    tree.cell_node.assign(static_cast<size_t>(cache.n_cells(seq, 0)), -1);
    for (int32_t i = 0; i < n_nodes; ++i) {
      const int32_t t = members[static_cast<size_t>(i)];
      token_node_[static_cast<size_t>(t)] = i;
      tree.cell_node[static_cast<size_t>(cells[static_cast<size_t>(t)])] = i;
      uint64_t* row = tree.ancestors.data() + static_cast<int64_t>(i) * tree.n_words;
      const int32_t parent = batch.parents[static_cast<size_t>(t)];
      if (parent != kStepRoot) {
        // Parents come earlier in the batch (checked by Model::forward), so the parent's row is complete.
        const uint64_t* up = tree.ancestors.data() + static_cast<int64_t>(token_node_[static_cast<size_t>(parent)]) * tree.n_words;
        std::copy(up, up + tree.n_words, row);
      }
      row[i / 64] |= uint64_t{1} << (i % 64);
    }
    const int32_t root = cells[static_cast<size_t>(members[0])];
    bool in_order = root + n_nodes == cache.n_cells(seq, 0);
    for (int32_t i = 0; i < n_nodes && in_order; ++i)
      in_order = cells[static_cast<size_t>(members[static_cast<size_t>(i)])] == root + i;
    tree.root_cell = in_order ? root : -1;
    trees_.push_back(std::move(tree));
  }
}

int32_t AttentionPlan::tree_root_cell(kv::SeqId seq) const {
  const SequenceTree* tree = trees_.empty() ? nullptr : tree_of(seq);
  return tree != nullptr ? tree->root_cell : -1;
}

void AttentionPlan::tree_branch(kv::SeqId seq, int32_t node, std::vector<int32_t>& out) const {
  out.clear();
  const SequenceTree* tree = tree_of(seq);
  if (tree == nullptr || node < 0) return;
  const uint64_t* row = tree->ancestors.data() + static_cast<int64_t>(node) * tree->n_words;
  for (int32_t w = 0; w < tree->n_words; ++w)
    for (uint64_t bits = row[w]; bits != 0; bits &= bits - 1) out.push_back(64 * w + __builtin_ctzll(bits));
}

AttentionPlan::HeadMask AttentionPlan::head_mask(int32_t il, kv::SeqId seq, int32_t kv_head, int32_t layer_window) const {
  if (layer_window > 0) return {layer_window, 0};
  const kv::KvPolicy* policy = policy_of(seq).policy;
  if (policy == nullptr || !policy->has_head_spans()) return {};
  const kv::HeadSpan span = policy->head_span(il, kv_head);
  return {span.window, span.window > 0 ? span.n_sink : 0};
}

kernels::AttentionMask AttentionPlan::page_mask(const HeadMask& head, kv::SeqId seq, const kv::KvCache::PageSpan& page,
                                                std::span<const int32_t> positions, const int32_t* q_pos,
                                                const int32_t* q_node) const {
  kernels::AttentionMask mask;
  mask.q_pos = q_pos;
  mask.k_pos = positions.data() + page.first_cell;
  mask.window = head.window;
  mask.n_sink = head.n_sink;
  const SequenceTree* tree = trees_.empty() ? nullptr : tree_of(seq);
  // Only pages that hold some of the step's cells need the tree: the cached cells before them follow positions.
  if (tree != nullptr && page.first_cell + page.n_cells > 0 &&
      static_cast<size_t>(page.first_cell + page.n_cells) <= tree->cell_node.size() &&
      tree->cell_node[static_cast<size_t>(page.first_cell + page.n_cells - 1)] >= 0) {
    mask.k_node = tree->cell_node.data() + page.first_cell;
    mask.q_node = q_node;
    mask.ancestors = tree->ancestors.data();
    mask.n_ancestor_words = tree->n_words;
  }
  return mask;
}

int64_t AttentionPlan::begin_selection(int32_t n_head_kv) {
  selecting_ = false;
  bool any = false;
  for (int32_t b = 0; b < n_blocks() && !any; ++b) {
    const kv::KvPolicy* p = policy_of(block_seq_[static_cast<size_t>(b)]).policy;
    any = p != nullptr && p->selects_pages();
  }
  if (!any) return 0;
  const int64_t n_units = static_cast<int64_t>(n_blocks()) * n_head_kv;
  unit_reads_.resize(static_cast<size_t>(n_units));
  for (auto& reads : unit_reads_) {
    reads.pages.clear();
    reads.placed.clear();
    reads.cells.clear();
    reads.scanned = 0;
  }
  selected_all_.assign(static_cast<size_t>(n_units), 1);
  if (unit_done_capacity_ < n_units) {
    unit_done_.reset(new std::atomic<uint8_t>[static_cast<size_t>(n_units)]);
    unit_done_capacity_ = n_units;
  }
  // Relaxed: the pool's publication of the job that selects and attends orders these before its tasks.
  for (int64_t u = 0; u < n_units; ++u) unit_done_[static_cast<size_t>(u)].store(0, std::memory_order_relaxed);
  selecting_ = true;
  return n_units;
}

void AttentionPlan::wait_selected(int64_t unit) const {
  if (!selecting_) return;
  spin_wait([&] { return unit_done_[static_cast<size_t>(unit)].load(std::memory_order_acquire) != 0; });
}

void AttentionPlan::select_unit(StepContext& step, int32_t il, const float* q, int32_t n_head, int32_t dk,
                                int64_t unit, int i_thread) {
  select_unit_reads(step, il, q, n_head, dk, unit, i_thread);
  unit_done_[static_cast<size_t>(unit)].store(1, std::memory_order_release);
}

void AttentionPlan::select_unit_reads(StepContext& step, int32_t il, const float* q, int32_t n_head, int32_t dk,
                                      int64_t unit, int i_thread) {
  const int32_t n_head_kv = step.config.n_head_kv, group = n_head / n_head_kv;
  const auto b = static_cast<int32_t>(unit / n_head_kv);
  const auto kv_head = static_cast<int32_t>(unit % n_head_kv);
  const kv::SeqId seq = block_seq_[static_cast<size_t>(b)];
  const kv::KvPolicy* policy = policy_of(seq).policy;
  if (policy == nullptr || !policy->selects_pages()) return;
  AttentionScratch& scratch = step.state.attention_threads[static_cast<size_t>(i_thread)];
  const int32_t t0 = block_begin(b), t1 = block_end(b);
  const int32_t n_q = (t1 - t0) * group;
  scratch.q.resize(static_cast<size_t>(n_q) * dk);
  scratch.q_pos.resize(static_cast<size_t>(n_q));
  for (int32_t t = t0; t < t1; ++t)
    for (int32_t g = 0; g < group; ++g) {
      const int32_t i = (t - t0) * group + g;
      const float* src = q + static_cast<int64_t>(t) * n_head * dk + static_cast<int64_t>(kv_head * group + g) * dk;
      std::copy(src, src + dk, scratch.q.data() + static_cast<int64_t>(i) * dk);
      scratch.q_pos[static_cast<size_t>(i)] = step.batch.positions[static_cast<size_t>(t)];
    }
  kv::KvPolicy::PageReads& reads = unit_reads_[static_cast<size_t>(unit)];
  policy->select_reads({step.cache, seq, il, kv_head, scratch.q.data(), scratch.q_pos.data(), n_q, dk}, reads);
  std::vector<int32_t>& pages = reads.pages;
  std::vector<kv::KvPolicy::PagePlacement>& placed = reads.placed;
  // The step's own cells are always read: a query must see itself, and its new neighbours.
  const int32_t first_new = step.state.cells[static_cast<size_t>(t0)];
  const int32_t n_pages = step.cache.n_pages(seq, il);
  placed.erase(std::remove_if(placed.begin(), placed.end(),
                              [&](const kv::KvPolicy::PagePlacement& p) { return p.page < 0 || p.page >= n_pages; }),
               placed.end());
  // Pages are in cell order: the ones ending past first_new are the last few.
  for (int32_t ip = n_pages - 1; ip >= 0; --ip) {
    const kv::KvCache::PageSpan span = step.cache.page_span(seq, il, ip);
    if (span.first_cell + span.n_cells <= first_new) break;
    pages.push_back(ip);
  }
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  pages.erase(std::remove_if(pages.begin(), pages.end(), [&](int32_t ip) { return ip < 0 || ip >= n_pages; }),
              pages.end());
  if (!reads.cells.empty()) {
    // Single cells: valid, before the step's own cells, once each, and not in a page read whole (a cell read
    // twice would count twice in the softmax).
    std::vector<int32_t>& cells = reads.cells;
    cells.erase(std::remove_if(cells.begin(), cells.end(), [&](int32_t c) { return c < 0 || c >= first_new; }),
                cells.end());
    std::sort(cells.begin(), cells.end());
    cells.erase(std::unique(cells.begin(), cells.end()), cells.end());
    size_t next_page = 0;
    int32_t ip = 0;
    kv::KvCache::PageSpan span = step.cache.page_span(seq, il, 0);
    cells.erase(std::remove_if(cells.begin(), cells.end(),
                               [&](int32_t c) {
                                 while (c >= span.first_cell + span.n_cells) span = step.cache.page_span(seq, il, ++ip);
                                 while (next_page < pages.size() && pages[next_page] < ip) ++next_page;
                                 return next_page < pages.size() && pages[next_page] == ip;
                               }),
                cells.end());
  }
  selected_all_[static_cast<size_t>(unit)] = 0;
}

std::span<const int32_t> AttentionPlan::unit_cells(int64_t unit) const {
  if (!selecting_) return {};
  return unit_reads_[static_cast<size_t>(unit)].cells;
}

int32_t AttentionPlan::n_unit_placed(int64_t unit) const {
  if (!selecting_) return 0;
  return static_cast<int32_t>(unit_reads_[static_cast<size_t>(unit)].placed.size());
}

const kv::KvPolicy::PagePlacement& AttentionPlan::unit_placement(int64_t unit, int32_t i) const {
  return unit_reads_[static_cast<size_t>(unit)].placed[static_cast<size_t>(i)];
}

void AttentionPlan::count_keys_read(const kv::KvCache& cache, int32_t il, int32_t n_head_kv, int32_t layer_window) {
  for (int32_t b = 0; b < n_blocks(); ++b) {
    if (block_end(b) - block_begin(b) != 1) continue;  // prefill chunks and drafts are not decode tokens
    const kv::SeqId seq = block_seq_[static_cast<size_t>(b)];
    KeysRead& counts = keys_read_[static_cast<size_t>(seq)];
    const int32_t n_cells = cache.n_cells(seq, il);
    for (int32_t kv_head = 0; kv_head < n_head_kv; ++kv_head) {
      const int64_t unit = static_cast<int64_t>(b) * n_head_kv + kv_head;
      int64_t read = 0;
      const int32_t n_pages = n_unit_pages(cache, il, unit, n_head_kv);
      for (int32_t i = 0; i < n_pages; ++i) {
        const int32_t ip = unit_page(unit, i);
        if (cache.head_rows_present(seq, il, kv_head, ip)) read += cache.page_span(seq, il, ip).n_cells;
      }
      const HeadMask head = head_mask(il, seq, kv_head, layer_window);
      if (head.window > 0) read = std::min<int64_t>(read, int64_t{head.window} + head.n_sink);
      // Placed pages: the cells their placement shows the token (by true position).
      const int32_t q_pos = token_pos_[static_cast<size_t>(block_begin(b))];
      const std::span<const int32_t> positions = cache.positions(seq, il);
      for (int32_t i = 0; i < n_unit_placed(unit); ++i) {
        const kv::KvPolicy::PagePlacement& placed = unit_placement(unit, i);
        if (!cache.head_rows_present(seq, il, kv_head, placed.page)) continue;
        const kv::KvCache::PageSpan span = cache.page_span(seq, il, placed.page);
        const int64_t last = static_cast<int64_t>(q_pos) - std::max(0, placed.min_distance);
        for (int32_t c = span.first_cell; c < span.first_cell + span.n_cells; ++c)
          read += positions[static_cast<size_t>(c)] <= last;
      }
      read += static_cast<int64_t>(unit_cells(unit).size());  // the single cells the policy chose
      // Keys the policy's search scored to choose them (RetrievalAttention's index scans): read by the token too.
      if (selecting_) read += unit_reads_[static_cast<size_t>(unit)].scanned;
      counts.read += read;
      counts.held += n_cells;
    }
  }
}

int32_t AttentionPlan::n_unit_pages(const kv::KvCache& cache, int32_t il, int64_t unit, int32_t n_head_kv) const {
  if (!selecting_ || selected_all_[static_cast<size_t>(unit)])
    return cache.n_pages(block_seq_[static_cast<size_t>(unit / n_head_kv)], il);
  return static_cast<int32_t>(unit_reads_[static_cast<size_t>(unit)].pages.size());
}

int32_t AttentionPlan::unit_page(int64_t unit, int32_t i) const {
  if (!selecting_ || selected_all_[static_cast<size_t>(unit)]) return i;
  return unit_reads_[static_cast<size_t>(unit)].pages[static_cast<size_t>(i)];
}

void AttentionPlan::plan_sparse_prefill(StepContext& step, int32_t il, const float* q, int32_t n_head, int32_t dk,
                                        int32_t layer_window) {
  sparse_.clear();
  std::fill(token_sparse_.begin(), token_sparse_.end(), -1);
  if (layer_window > 0) return;
  const kv::KvCache& cache = step.cache;
  const int32_t n_tokens = static_cast<int32_t>(token_sparse_.size());
  const int32_t n_head_kv = step.config.n_head_kv, group = n_head / n_head_kv;
  std::vector<kv::SeqId> considered;  // sequences already looked at (sparse or not)
  for (int32_t t = 0; t < n_tokens; ++t) {
    const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
    const PrefillAttentionOptions* options = policy_of(seq).prefill;
    if (options == nullptr || options->mode == PrefillAttention::kDense) continue;
    if (std::find(considered.begin(), considered.end(), seq) != considered.end()) continue;
    considered.push_back(seq);
    SparseSequence ss;
    ss.seq = seq;
    ss.first_pos = step.batch.positions[static_cast<size_t>(t)];
    bool chain = token_node_[static_cast<size_t>(t)] < 0;
    for (int32_t u = t; u < n_tokens; ++u) {
      if (step.batch.seq_ids[static_cast<size_t>(u)] != seq) continue;
      chain = chain && token_node_[static_cast<size_t>(u)] < 0 &&
              step.batch.positions[static_cast<size_t>(u)] == ss.first_pos + static_cast<int32_t>(ss.tokens.size());
      ss.tokens.push_back(u);
    }
    ss.n_tokens = static_cast<int32_t>(ss.tokens.size());
    const int32_t n_keys = ss.first_pos + ss.n_tokens;
    if (!chain || n_keys < options->min_context || ss.n_tokens <= options->n_last_queries) continue;
    // The estimates read keys by position: the layer's cells must be positions 0 .. n_keys - 1, every head present.
    const std::span<const int32_t> positions = cache.positions(seq, il);
    bool in_order = static_cast<int32_t>(positions.size()) == n_keys;
    for (int32_t c = 0; c < n_keys && in_order; ++c) in_order = positions[static_cast<size_t>(c)] == c;
    for (int32_t ip = 0; ip < cache.n_pages(seq, il) && in_order; ++ip)
      for (int32_t h = 0; h < n_head_kv && in_order; ++h) in_order = cache.head_rows_present(seq, il, h, ip);
    if (!in_order) continue;
    // The queries up to a token whose output the step returns attend densely (the prompt's last chunk): its
    // logits see exact attention rows. A chunk in the middle of a prompt returns nothing and is sparse throughout;
    // vertical-slash's estimate reads its last queries' rows on its own (build_assigned_pattern).
    int32_t last_output_pos = -1;
    for (int32_t u : ss.tokens)
      if (step.batch.outputs[static_cast<size_t>(u)] != TokenOutput::kNone)
        last_output_pos = step.batch.positions[static_cast<size_t>(u)];
    ss.dense_from = last_output_pos < 0 ? INT32_MAX : last_output_pos + 1 - options->n_last_queries;
    ss.heads.resize(static_cast<size_t>(n_head));
    sparse_.push_back(std::move(ss));
  }
  if (sparse_.empty()) return;

  // One task per (sequence, query head): the head's assigned key sets (for minference from the chunk's queries and
  // the head's keys, gathered here).
  const auto n_tasks = static_cast<int64_t>(sparse_.size()) * n_head;
  step.pool.for_each_chunk(n_tasks, [&](int64_t task, int i_thread) {
    SparseSequence& ss = sparse_[static_cast<size_t>(task / n_head)];
    const auto h = static_cast<int32_t>(task % n_head);
    const int32_t kv_head = h / group;
    const PrefillAttentionOptions& options = *policy_of(ss.seq).prefill;
    const int32_t n_keys = ss.first_pos + ss.n_tokens;
    HeadSparseKeys& out = ss.heads[static_cast<size_t>(h)];
    AttentionScratch& scratch = step.state.attention_threads[static_cast<size_t>(i_thread)];
    // minference and moa follow the head's calibrated assignment; MoA's span and A-shape are static, with no queries
    // or keys to read.
    const bool calibrated = options.mode == PrefillAttention::kMInference || options.mode == PrefillAttention::kMoA;
    const kv::HeadPrefill* assigned = calibrated ? &options.profile->prefill_at(il, h) : nullptr;
    const HeadQueriesKeys positions_only{nullptr, ss.n_tokens, ss.first_pos, nullptr, n_keys, dk};
    if (options.mode == PrefillAttention::kMoA) return build_moa(positions_only, *assigned, out);
    if (options.mode == PrefillAttention::kMInference && head_reads_no_rows(options, *assigned))
      return build_assigned_pattern(positions_only, options, *assigned, scratch.sparse_probs, out);
    scratch.sparse_keys.resize(static_cast<size_t>(n_keys) * dk);
    for (int32_t ip = 0; ip < cache.n_pages(ss.seq, il); ++ip) {
      const kv::KvCache::PageSpan span = cache.page_span(ss.seq, il, ip);
      const kv::KvCache::HeadRows rows = cache.head_rows(ss.seq, il, kv_head, ip, scratch.kv, true, false);
      std::copy(rows.keys, rows.keys + static_cast<int64_t>(span.n_cells) * dk,
                scratch.sparse_keys.data() + static_cast<int64_t>(span.first_cell) * dk);
    }
    scratch.q.resize(static_cast<size_t>(ss.n_tokens) * dk);
    for (int32_t i = 0; i < ss.n_tokens; ++i) {
      const float* src = q + static_cast<int64_t>(ss.tokens[static_cast<size_t>(i)]) * n_head * dk + static_cast<int64_t>(h) * dk;
      std::copy(src, src + dk, scratch.q.data() + static_cast<int64_t>(i) * dk);
    }
    const HeadQueriesKeys qk{scratch.q.data(), ss.n_tokens, ss.first_pos, scratch.sparse_keys.data(), n_keys, dk};
    switch (options.mode) {
      case PrefillAttention::kMInference:
        build_assigned_pattern(qk, options, *assigned, scratch.sparse_probs, out);
        break;
      case PrefillAttention::kHip:
        build_hip(qk, options.budget, out);
        break;
      case PrefillAttention::kHyper:
        build_hyper(qk, options, static_cast<uint64_t>(il) * static_cast<uint64_t>(n_head) + static_cast<uint64_t>(h),
                    out);
        break;
      case PrefillAttention::kMoA:
      case PrefillAttention::kDense:
        LH_CHECK(false);  // moa returned above; dense sequences are not planned
    }
  });

  for (int32_t i = 0; i < static_cast<int32_t>(sparse_.size()); ++i) {
    SparseSequence& ss = sparse_[static_cast<size_t>(i)];
    ss.keys.clear();
    for (const HeadSparseKeys& head : ss.heads)
      for (int32_t b = 0; b < head.n_qblocks; ++b) ss.keys.push_back(head.keys(head.first_qblock + b));
    for (int32_t t : ss.tokens) token_sparse_[static_cast<size_t>(t)] = i;
  }
}

const kernels::SparseKeys* AttentionPlan::sparse_keys(int32_t t, int32_t head) const {
  const int32_t i = token_sparse_.empty() ? -1 : token_sparse_[static_cast<size_t>(t)];
  if (i < 0) return nullptr;
  const SparseSequence& ss = sparse_[static_cast<size_t>(i)];
  const int32_t pos = token_pos_[static_cast<size_t>(t)];
  if (pos >= ss.dense_from) return nullptr;
  // Every head covers the same query blocks (those of the chunk).
  const HeadSparseKeys& first = ss.heads[0];
  return &ss.keys[static_cast<size_t>(head) * first.n_qblocks + pos / HeadSparseKeys::kBlock - first.first_qblock];
}

std::vector<SparsePattern> AttentionPlan::sparse_patterns(kv::SeqId seq) const {
  std::vector<SparsePattern> out;
  for (const SparseSequence& ss : sparse_)
    if (ss.seq == seq)
      for (const HeadSparseKeys& h : ss.heads) out.push_back(h.pattern);
  return out;
}

}  // namespace longhaul::model
