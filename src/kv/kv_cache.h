// Paged key/value storage for attention, built so that KV policies (eviction,
// sinks, per-head retention, quantization) can be added without touching the model.
//
// Storage. Each sequence owns, per layer, a list of pages in cell order; page i holds
// cells [first_cell, first_cell + n_cells) (page_span). A cell holds one token's keys and
// values for every KV head. A page is either
//   f16 (llama.cpp's default cache type, which halves memory against f32), one buffer per
//   head so that decode attention streams one head's keys contiguously and a per-head policy
//   can free one head's rows, with room for `capacity` cells:
//     keys   [n_head_kv][capacity, head_dim_k]  f16
//     values [n_head_kv][capacity, head_dim_v]  f16
//   or quantized (KvQuantOptions::bits 8 or 4): KIVI's int8 / int4 cells, laid out and
//   sized as kv/quantized_page.h says.
// With bits = 16 (the default) every page is f16 with capacity page_tokens and every page
// but the last is full, so cell c is slot c % page_tokens of page c / page_tokens.
// Memory grows one page at a time, never by re-allocating what is stored. The pages one
// append needs (a prompt chunk's) get their buffers head by head, so that a head's pages of
// the chunk lie back to back and decode attention reads them as one stream.
//
// Quantized storage (KIVI, Liu et al., 2024). Cells are always written f16; when cells are
// appended, the cells older than the `residual` most recent are frozen in whole groups of
// `group` cells: quantized into the quantized page before the f16 ones (up to
// page_tokens cells per quantized page, rounded down to whole groups) and dropped from the
// f16 pages. So a layer is laid out as
//   [f16 prefix page (the first f16_prefix cells)] [quantized pages...] [f16 pages...]
// and at most residual + group - 1 + (the last step's tokens) cells are f16 besides the prefix.
// Eviction (retain_cells) compacts each page in place instead of moving cells across pages:
// a quantized cell never moves to another key group, so eviction never re-quantizes (the
// groups just lose members), and only the pages that lose cells are touched.
//
// Positions are kept separately from cells: cell i of a layer holds the token at
// position positions(seq, il)[i]. Under the full policy positions are 0, 1, 2, ...;
// an eviction policy removes cells and positions stay with their tokens, which is
// what a StreamingLLM-style policy needs to re-assign positions inside the cache.
//
// Shared prefix pages. Page buffers are reference-counted: fork_sequence gives a new sequence the parent's pages
// without copying them (a server's prefix cache, parallel sampling), and memory accounting counts a shared buffer
// once. A shared buffer is copied before anything would modify it (copy on write): appending to a partially filled
// page, eviction, re-positioning (write_keys), KIVI freezing, truncating a quantized page, releasing a quantized
// head. Releasing an f16 head's rows only drops this sequence's reference. So one sequence's changes never show
// in another.
//
// Per-sequence storage. Each sequence has its own context size, page size and cell storage (KvSequenceOptions), so
// that one cache can hold an f16 sequence next to a KIVI one; the cache's options are the defaults.
//
// Thread-safety: one step at a time. During a step, distinct (sequence, layer, head)
// triples may be written and read from different threads (key()/value() of the step's
// new cells, head_rows with a scratch per thread); the cell bookkeeping (append_cells,
// retain_cells, truncate, write_keys) runs on the step's owning thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/huge_page_block_pool.h"
#include "base/status.h"
#include "kv/quantized_page.h"

namespace longhaul::kv {

struct KvShape {
  int32_t n_layer = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
};

// How cells are stored. KIVI's paper (Liu et al., 2024) runs 2 and 4 bits with G = 32 and R = 128; we keep its
// G and R and offer 8 and 4 bits.
struct KvQuantOptions {
  int32_t bits = 16;       // cells older than the residual: 16 = f16 (no quantization), 8 = int8, 4 = int4
  int32_t group = 32;      // G: keys of G consecutive cells share a scale and zero point per channel (KIVI: 32)
  int32_t residual = 128;  // R: the R most recent cells stay f16 (KIVI: 128); older ones wait for a whole group
  // The first cells of a sequence are never quantized: they are the attention sinks (Xiao et al., 2023) that take
  // a large share of every query's attention, and KVQuant (Hooper et al., 2024) shows that keeping the first token
  // in full precision matters; a policy that re-writes them (streaming) keeps f16 pointers to them. 0 = none.
  int32_t f16_prefix = 4;
};

struct KvCacheOptions {
  int32_t page_tokens = 256;     // cells per page; memory grows in steps of one page
  int32_t max_cells = 8192;      // per sequence and layer (the context size); 0 = unbounded
  int32_t max_sequences = 16;    // sequences that may be live at once
};

using SeqId = int32_t;

// Storage of one sequence (defaults: the cache's options).
struct KvSequenceOptions {
  int32_t max_cells = 0;    // per layer (the sequence's context size); 0 = unbounded
  int32_t page_tokens = 256;  // cells per f16 page
  KvQuantOptions quant;     // cell storage
};

class KvCache {
 public:
  // `quant` is a separate argument, not a KvCacheOptions field, so that the brace-initialised options of existing
  // callers stay complete (-Wmissing-field-initializers).
  KvCache(const KvShape& shape, const KvCacheOptions& options, const KvQuantOptions& quant = {});
  KvCache(KvCache&&) noexcept = default;
  KvCache& operator=(KvCache&&) noexcept = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvShape& shape() const { return shape_; }
  const KvCacheOptions& options() const { return options_; }
  const KvQuantOptions& quant_options() const { return quant_; }

  // Creates an empty sequence with the cache's options, or with its own; fails when max_sequences are live.
  Result<SeqId> add_sequence();
  Result<SeqId> add_sequence(const KvSequenceOptions& options);
  // A new sequence holding the parent's cells, positions and storage options. Their pages are shared, not copied
  // (copy on write, see above). Fails when max_sequences are live.
  Result<SeqId> fork_sequence(SeqId parent);
  const KvSequenceOptions& sequence_options(SeqId seq) const;
  // The options add_sequence() uses.
  KvSequenceOptions default_sequence_options() const;
  void remove_sequence(SeqId seq);
  // Drops every cell of the sequence, keeping its pages for reuse.
  void clear_sequence(SeqId seq);
  bool has_sequence(SeqId seq) const;
  // Sequences live now (at most options().max_sequences).
  int32_t n_sequences() const;

  // Cells the sequence may still take before its max_cells (INT32_MAX when unbounded), and the check that n_new
  // more fit, failing with the one "context full" message (naming both numbers) that every caller reports.
  int32_t free_cells(SeqId seq) const;
  Status check_room(SeqId seq, int32_t n_new) const;

  // Appends one cell per entry of `positions` to every layer of `seq`, growing
  // pages as needed, and returns the index of the first new cell (the same in
  // every layer only under policies that treat layers alike). Fails when the
  // sequence would exceed max_cells, naming both numbers.
  Result<int32_t> append_cells(SeqId seq, std::span<const int32_t> positions);

  // Keeps only the cells whose indices are listed (ascending) in layer il, in order, so
  // that kept cell keep[i] becomes cell i; used by eviction policies. f16 storage moves the
  // cells to the front across pages; quantized storage compacts each page in place. Empty
  // f16 pages are kept for reuse.
  void retain_cells(SeqId seq, int32_t il, std::span<const int32_t> keep);
  // Per-head retention (SnapKV, Li et al., 2024, selects positions per head): head h keeps the cells keep[h]
  // (ascending, the same count for every head) and its row keep[h][i] becomes its row i. Cell i then holds
  // different tokens for different heads; its position becomes the latest of them, max_h positions[keep[h][i]],
  // which keeps positions ascending and keeps every cell visible to every later query (keys carry their rotary
  // phase, so attention needs a cell's position only for causality). Hence only for layers without a sliding
  // window, whose masks need exact positions, and f16 storage only (CHECK): a quantized cell would leave its key
  // group. keep.size() == n_head_kv.
  void retain_cells_per_head(SeqId seq, int32_t il, std::span<const std::vector<int32_t>> keep);

  // Keeps the first n_keep cells of every layer and rewinds next_position to
  // n_keep (positions 0 .. n_keep-1 under the full policy): undoes the tail of a
  // conversation, e.g. when a chat turn re-tokenizes differently from what was generated.
  void truncate(SeqId seq, int32_t n_keep);

  int32_t n_cells(SeqId seq, int32_t il) const;
  std::span<const int32_t> positions(SeqId seq, int32_t il) const;
  // Next position a new token of the sequence gets (1 + the largest position appended).
  int32_t next_position(SeqId seq) const;

  // Pointers to one head's keys / values of `cell` (f16 bits), for the cells of f16 pages only (CHECK): every cell
  // when bits == 16; otherwise the f16 prefix, the residual and the cells a step appends (always f16 until the
  // next append_cells). Cells of a head are contiguous within a page.
  uint16_t* key(SeqId seq, int32_t il, int32_t head, int32_t cell);
  uint16_t* value(SeqId seq, int32_t il, int32_t head, int32_t cell);
  const uint16_t* key(SeqId seq, int32_t il, int32_t head, int32_t cell) const;
  const uint16_t* value(SeqId seq, int32_t il, int32_t head, int32_t cell) const;
  bool is_f16(SeqId seq, int32_t il, int32_t cell) const;
  int32_t page_tokens() const { return options_.page_tokens; }
  // Whether the cache's default storage / the sequence's storage is KIVI-quantized.
  bool quantized() const { return quant_.bits < 16; }
  bool quantized(SeqId seq) const { return sequence_options(seq).quant.bits < 16; }

  // Pages of layer il in cell order (attention walks them one at a time).
  struct PageSpan {
    int32_t first_cell = 0;
    int32_t n_cells = 0;
    bool quantized = false;
  };
  int32_t n_pages(SeqId seq, int32_t il) const;
  PageSpan page_span(SeqId seq, int32_t il, int32_t i_page) const;
  // Every page's span at once: out = [n_pages(seq, il)] (a selecting policy classifies every page each decode step).
  void page_spans(SeqId seq, int32_t il, std::vector<PageSpan>& out) const;

  // One head's rows of a page as f16, the attention kernels' input: keys [n_cells, head_dim_k], values
  // [n_cells, head_dim_v], row stride = head dim. An f16 page is read in place (zero copy); a quantized page is
  // dequantized into `scratch` (one per thread). Rows not wanted are left null.
  struct HeadRows {
    const uint16_t* keys = nullptr;
    const uint16_t* values = nullptr;
  };
  struct Scratch {
    std::vector<uint16_t> keys, values;
    QuantizedPage::Scratch dequantize;
  };
  // A head whose rows of an f16 page were released gets null rows: attention skips the page for that head.
  HeadRows head_rows(SeqId seq, int32_t il, int32_t head, int32_t i_page, Scratch& scratch, bool want_keys = true,
                     bool want_values = true) const;
  // One head's codes of a quantized page (PageSpan::quantized) in place, for kernels::attention_update_quantized,
  // which reads them without the f16 copy head_rows makes; null codes when the head's rows were released.
  kernels::QuantizedRows quantized_rows(SeqId seq, int32_t il, int32_t head, int32_t i_page) const;

  // Per-head retention (DuoAttention, Xiao et al., 2024): frees one head's keys and values of an f16 page, for a
  // policy that knows no future query of that head attends to those cells (a streaming head's cells behind its
  // window). The cells stay (every head shares the cell index and position); the head reads nothing there:
  // head_rows gives null rows, read_keys / read_values give zeros, key() / value() CHECK, write_keys skips it,
  // and used_bytes / allocated_bytes stop counting it. A page that lost rows is not reused (nor appended to, when
  // quantized), and a page whose last head is released keeps its cells (the other layers' cell indices must not
  // shift). With quantized storage, only quantized pages (CHECK): its f16 pages are the prefix and the residual,
  // whose cells freezing moves into new key groups.
  void release_head_rows(SeqId seq, int32_t il, int32_t head, int32_t i_page);
  // False once release_head_rows freed that head's rows of the page.
  bool head_rows_present(SeqId seq, int32_t il, int32_t head, int32_t i_page) const;

  // Keys / values of cells [first, first + count) of every head as f32, dequantized where quantized:
  //   out [count, n_head_kv, head_dim]
  void read_keys(SeqId seq, int32_t il, int32_t first, int32_t count, float* out) const;
  void read_values(SeqId seq, int32_t il, int32_t first, int32_t count, float* out) const;
  // Overwrites the keys of cells [first, first + count), every head: keys [count, n_head_kv, head_dim_k] f32,
  // rounded to f16 as the model's stores are. Quantized cells become one key group of their own, quantized from
  // these keys; the other cells of their groups are left as they are.
  void write_keys(SeqId seq, int32_t il, int32_t first, int32_t count, const float* keys);

  // Bytes of K/V data held by live cells (quantized cells at their quantized size, with their scales and zero
  // points), and bytes of pages allocated (including empty pages kept for reuse). A buffer shared by several
  // sequences counts once.
  int64_t used_bytes() const;
  int64_t allocated_bytes() const;
  // Bytes of K/V data one sequence's cells hold, its shared pages included.
  int64_t used_bytes(SeqId seq) const;
  // Whether a buffer of page i_page of layer il is shared with another sequence.
  bool page_shared(SeqId seq, int32_t il, int32_t i_page) const;
  // Bytes of one cell, all layers and heads, K + V, in the storage format: f16 for bits == 16, else a quantized
  // cell in a full key group (rounded up to a whole byte):
  //   n_layer * (n_head_kv * ((dk + dv) * bits / 8 + 4 * ceil(dv / 32)) + (4 * n_head_kv * dk + 4) / G)
  // for the cache's default storage, or for one sequence's.
  int64_t bytes_per_cell() const { return bytes_per_cell(quant_); }
  int64_t bytes_per_cell(SeqId seq) const { return bytes_per_cell(sequence_options(seq).quant); }

 private:
  struct Page {
    int32_t n_cells = 0;
    int32_t capacity = 0;  // f16 pages: cells the buffer has room for
    bool pinned = false;   // the f16 prefix page: never quantized, never receives appends
    // f16 page: one buffer per KV head, keys [capacity, dk] then values [capacity, dv], so that a head's rows can
    // be freed alone (release_head_rows; null = released). Empty for a quantized page. Buffers are shared between
    // forked sequences until one of them writes (make_writable).
    std::vector<std::shared_ptr<uint16_t[]>> f16;  // [n_head_kv]
    std::shared_ptr<QuantizedPage> quantized;  // set instead of f16 for a quantized page
    bool is_f16() const { return !f16.empty(); }
    int32_t n_heads_present() const;
  };
  struct LayerCells {
    std::vector<Page> pages;          // in cell order, none empty
    std::vector<int32_t> page_first = {0};  // [pages.size() + 1]: first cell of each page, then n_cells
    std::vector<Page> spare;          // empty f16 pages of page_tokens cells, reused before allocating
    std::vector<int32_t> positions;   // [n_cells]
  };
  struct Sequence {
    bool live = false;
    int32_t next_position = 0;
    KvSequenceOptions options;
    std::vector<LayerCells> layers;  // [n_layer]
  };

  Sequence& sequence(SeqId seq);
  const Sequence& sequence(SeqId seq) const;
  const LayerCells& layer(SeqId seq, int32_t il) const;
  int64_t f16_cell_bytes() const;       // one layer, all heads
  int64_t f16_head_cell_bytes() const;  // one layer, one head: K + V
  KvQuantFormat quant_format(const KvQuantOptions& quant) const;
  int64_t bytes_per_cell(const KvQuantOptions& quant) const;
  Result<SeqId> claim_sequence_slot();
  // n_pages empty f16 pages, their buffers allocated head by head (a head's pages back to back).
  std::vector<Page> new_f16_pages(int32_t capacity, int32_t n_pages) const;
  // One head's zeroed buffer of an f16 page of `capacity` cells: keys [capacity, dk] then values [capacity, dv].
  std::shared_ptr<uint16_t[]> new_f16_head_buffer(int32_t capacity) const;
  Page new_f16_page(int32_t capacity) const;
  // Adds n_pages new f16 pages of page_tokens cells to the layer's spares; append_cells takes them in order.
  void add_fresh_spares(const Sequence& s, LayerCells& layer, int32_t n_pages) const;
  Page take_spare(const Sequence& s, LayerCells& layer);
  void release(const Sequence& s, LayerCells& layer, Page&& page);
  // Copies the page's buffers that another sequence shares, so that this sequence may write them.
  void make_writable(Page& page) const;
  // make_writable for every page of the layer from the one holding `cell` on.
  void make_writable_from(LayerCells& layer, int32_t cell) const;
  static void reindex(LayerCells& layer);
  // (page, slot) of `cell`.
  static std::pair<int32_t, int32_t> locate(const LayerCells& layer, int32_t cell);
  uint16_t* f16_key(const Page& page, int32_t head, int32_t slot) const;
  uint16_t* f16_value(const Page& page, int32_t head, int32_t slot) const;
  void copy_f16_slot(const Page& from, int32_t from_slot, const Page& to, int32_t to_slot) const;
  // One head's key and value rows; nothing when either page released that head's rows.
  void copy_f16_head_slot(const Page& from, int32_t from_slot, const Page& to, int32_t to_slot, int32_t head) const;
  // Removes the first n cells of the f16 pages starting at page index i_page, returning them cell-major:
  //   keys [n, n_head_kv, dk], values [n, n_head_kv, dv] f16.
  void pop_front_f16(const Sequence& s, LayerCells& layer, size_t i_page, int32_t n, std::vector<uint16_t>& keys,
                     std::vector<uint16_t>& values);
  // Quantizes the f16 cells that have left the residual (bits < 16), as the file comment says.
  void freeze(const Sequence& s, LayerCells& layer);
  void retain_f16(const Sequence& s, LayerCells& layer, std::span<const int32_t> keep);
  // Pages hold the first n_kept cells (every page full but the last); empty pages go back to the spares.
  void trim_f16_pages(const Sequence& s, LayerCells& layer, int32_t n_kept);
  void retain_per_page(const Sequence& s, LayerCells& layer, std::span<const int32_t> keep);
  // read_keys (keys = true) or read_values.
  void read_rows(SeqId seq, int32_t il, int32_t first, int32_t count, bool keys, float* out) const;

  KvShape shape_;
  KvCacheOptions options_;
  KvQuantOptions quant_;
  std::vector<Sequence> sequences_;  // indexed by SeqId
  // Where f16 head buffers of at least 4 KiB come from: one pool per buffer size (a cache has one or two), on huge
  // pages (base/huge_page_block_pool.h says why). Grown by the step's owning thread only.
  mutable std::vector<std::shared_ptr<HugePageBlockPool>> head_buffer_pools_;
};

}  // namespace longhaul::kv
