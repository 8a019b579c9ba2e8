// Paged key/value storage for attention, built so that KV policies (eviction,
// sinks, per-head retention, quantization) can be added without touching the model.
//
// Storage. Each sequence owns, per layer, a list of pages of `page_tokens` cells.
// A cell holds one token's keys and values for every KV head, in f16 (as
// llama.cpp's default cache type, which halves memory against f32). Inside a page
// the layout is head-major so that decode attention streams one head's keys contiguously:
//   keys   [n_head_kv, page_tokens, head_dim_k]  f16
//   values [n_head_kv, page_tokens, head_dim_v]  f16
// Memory grows one page at a time, never by re-allocating what is stored.
//
// Positions are kept separately from cells: cell i of a layer holds the token at
// position positions(seq, il)[i]. Under the full policy positions are 0, 1, 2, ...;
// an eviction policy removes cells and positions stay with their tokens, which is
// what a StreamingLLM-style policy needs to re-assign positions inside the cache.
//
// Thread-safety: one step at a time. During a step, distinct (sequence, layer, head)
// triples may be written and read from different threads; the cell bookkeeping
// (append_cells / retain_cells) runs on the step's owning thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace longhaul::kv {

struct KvShape {
  int32_t n_layer = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
};

struct KvCacheOptions {
  int32_t page_tokens = 256;     // cells per page; memory grows in steps of one page
  int32_t max_cells = 8192;      // per sequence and layer (the context size); 0 = unbounded
  int32_t max_sequences = 16;    // sequences that may be live at once
};

using SeqId = int32_t;

class KvCache {
 public:
  KvCache(const KvShape& shape, const KvCacheOptions& options);
  KvCache(KvCache&&) noexcept = default;
  KvCache& operator=(KvCache&&) noexcept = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvShape& shape() const { return shape_; }
  const KvCacheOptions& options() const { return options_; }

  // Creates an empty sequence; fails when max_sequences are live.
  Result<SeqId> add_sequence();
  void remove_sequence(SeqId seq);
  // Drops every cell of the sequence, keeping its pages for reuse.
  void clear_sequence(SeqId seq);
  bool has_sequence(SeqId seq) const;

  // Appends one cell per entry of `positions` to every layer of `seq`, growing
  // pages as needed, and returns the index of the first new cell (the same in
  // every layer only under policies that treat layers alike). Fails when the
  // sequence would exceed max_cells, naming both numbers.
  Result<int32_t> append_cells(SeqId seq, std::span<const int32_t> positions);

  // Keeps only the cells whose indices are listed (ascending) in layer il, moving
  // them to the front; used by eviction policies. Pages past the end are kept for reuse.
  void retain_cells(SeqId seq, int32_t il, std::span<const int32_t> keep);

  // Keeps the first n_keep cells of every layer and rewinds next_position to
  // n_keep (positions 0 .. n_keep-1 under the full policy): undoes the tail of a
  // conversation, e.g. when a chat turn re-tokenizes differently from what was generated.
  void truncate(SeqId seq, int32_t n_keep);

  int32_t n_cells(SeqId seq, int32_t il) const;
  std::span<const int32_t> positions(SeqId seq, int32_t il) const;
  // Next position a new token of the sequence gets (1 + the largest position appended).
  int32_t next_position(SeqId seq) const;

  // Pointers to one head's keys / values of `cell` (f16 bits). Cells of a head are
  // contiguous within a page: cells [page_begin, page_begin + page_tokens).
  uint16_t* key(SeqId seq, int32_t il, int32_t head, int32_t cell);
  uint16_t* value(SeqId seq, int32_t il, int32_t head, int32_t cell);
  const uint16_t* key(SeqId seq, int32_t il, int32_t head, int32_t cell) const;
  const uint16_t* value(SeqId seq, int32_t il, int32_t head, int32_t cell) const;
  int32_t page_tokens() const { return options_.page_tokens; }

  // Bytes of K/V data held by live cells, and bytes of pages allocated.
  int64_t used_bytes() const;
  int64_t allocated_bytes() const;
  int64_t bytes_per_cell() const;  // all layers and heads, K + V

 private:
  struct Page {
    std::unique_ptr<uint16_t[]> data;  // keys [n_head_kv, page_tokens, dk] then values [n_head_kv, page_tokens, dv]
  };
  struct LayerCells {
    std::vector<Page> pages;
    std::vector<int32_t> positions;  // [n_cells]
  };
  struct Sequence {
    bool live = false;
    int32_t next_position = 0;
    std::vector<LayerCells> layers;  // [n_layer]
  };

  Sequence& sequence(SeqId seq);
  const Sequence& sequence(SeqId seq) const;
  int64_t page_elements() const;
  void copy_cell(LayerCells& layer, int32_t from, int32_t to);

  KvShape shape_;
  KvCacheOptions options_;
  std::vector<Sequence> sequences_;  // indexed by SeqId
};

}  // namespace longhaul::kv
