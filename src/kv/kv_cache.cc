#include "kv/kv_cache.h"

#include <algorithm>
#include <cstring>

namespace longhaul::kv {

KvCache::KvCache(const KvShape& shape, const KvCacheOptions& options) : shape_(shape), options_(options) {
  LH_CHECK(shape_.n_layer > 0 && shape_.n_head_kv > 0 && shape_.head_dim_k > 0 && shape_.head_dim_v > 0);
  LH_CHECK(options_.page_tokens > 0 && options_.max_sequences > 0);
}

int64_t KvCache::page_elements() const {
  return static_cast<int64_t>(shape_.n_head_kv) * options_.page_tokens * (shape_.head_dim_k + shape_.head_dim_v);
}

int64_t KvCache::bytes_per_cell() const {
  return static_cast<int64_t>(shape_.n_layer) * shape_.n_head_kv * (shape_.head_dim_k + shape_.head_dim_v) * 2;
}

Result<SeqId> KvCache::add_sequence() {
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i].live = true;
      clear_sequence(static_cast<SeqId>(i));
      return static_cast<SeqId>(i);
    }
  }
  if (static_cast<int32_t>(sequences_.size()) >= options_.max_sequences)
    return Status::error("KV cache: all " + std::to_string(options_.max_sequences) + " sequences are in use");
  Sequence s;
  s.live = true;
  s.layers.resize(static_cast<size_t>(shape_.n_layer));
  sequences_.push_back(std::move(s));
  return static_cast<SeqId>(sequences_.size() - 1);
}

KvCache::Sequence& KvCache::sequence(SeqId seq) {
  LH_CHECK(seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[seq].live);
  return sequences_[static_cast<size_t>(seq)];
}
const KvCache::Sequence& KvCache::sequence(SeqId seq) const {
  LH_CHECK(seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[seq].live);
  return sequences_[static_cast<size_t>(seq)];
}

bool KvCache::has_sequence(SeqId seq) const {
  return seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[static_cast<size_t>(seq)].live;
}

void KvCache::remove_sequence(SeqId seq) {
  Sequence& s = sequence(seq);
  s.live = false;
  s.next_position = 0;
  for (auto& layer : s.layers) {
    layer.pages.clear();
    layer.positions.clear();
  }
}

void KvCache::clear_sequence(SeqId seq) {
  Sequence& s = sequence(seq);
  s.next_position = 0;
  for (auto& layer : s.layers) layer.positions.clear();
}

Result<int32_t> KvCache::append_cells(SeqId seq, std::span<const int32_t> positions) {
  Sequence& s = sequence(seq);
  const auto n_new = static_cast<int32_t>(positions.size());
  int32_t first = -1;
  for (int32_t il = 0; il < shape_.n_layer; ++il) {
    LayerCells& layer = s.layers[static_cast<size_t>(il)];
    const auto n_old = static_cast<int32_t>(layer.positions.size());
    if (options_.max_cells > 0 && n_old + n_new > options_.max_cells) {
      return Status::error("context full: " + std::to_string(n_old) + " cached + " + std::to_string(n_new) +
                           " new tokens exceed the context size of " + std::to_string(options_.max_cells) +
                           " (raise -c/--ctx-size)");
    }
    if (il == 0) first = n_old;
    const int32_t pages_needed = (n_old + n_new + options_.page_tokens - 1) / options_.page_tokens;
    while (static_cast<int32_t>(layer.pages.size()) < pages_needed) {
      Page page;
      page.data = std::make_unique<uint16_t[]>(static_cast<size_t>(page_elements()));
      layer.pages.push_back(std::move(page));
    }
    layer.positions.insert(layer.positions.end(), positions.begin(), positions.end());
  }
  for (int32_t p : positions) s.next_position = std::max(s.next_position, p + 1);
  return first;
}

void KvCache::copy_cell(LayerCells& layer, int32_t from, int32_t to) {
  const int32_t pt = options_.page_tokens;
  const int64_t k_head = static_cast<int64_t>(pt) * shape_.head_dim_k;
  const int64_t v_head = static_cast<int64_t>(pt) * shape_.head_dim_v;
  const int64_t v_base = static_cast<int64_t>(shape_.n_head_kv) * k_head;
  uint16_t* src = layer.pages[static_cast<size_t>(from / pt)].data.get();
  uint16_t* dst = layer.pages[static_cast<size_t>(to / pt)].data.get();
  const int32_t fi = from % pt, ti = to % pt;
  for (int32_t h = 0; h < shape_.n_head_kv; ++h) {
    std::memcpy(dst + h * k_head + static_cast<int64_t>(ti) * shape_.head_dim_k,
                src + h * k_head + static_cast<int64_t>(fi) * shape_.head_dim_k, shape_.head_dim_k * 2);
    std::memcpy(dst + v_base + h * v_head + static_cast<int64_t>(ti) * shape_.head_dim_v,
                src + v_base + h * v_head + static_cast<int64_t>(fi) * shape_.head_dim_v, shape_.head_dim_v * 2);
  }
}

void KvCache::retain_cells(SeqId seq, int32_t il, std::span<const int32_t> keep) {
  LayerCells& layer = sequence(seq).layers[static_cast<size_t>(il)];
  const auto n = static_cast<int32_t>(layer.positions.size());
  int32_t out = 0;
  int32_t prev = -1;
  for (int32_t cell : keep) {
    LH_CHECK_MSG(cell > prev && cell < n, "retain_cells: indices must be ascending and < n_cells");
    prev = cell;
    if (cell != out) {
      copy_cell(layer, cell, out);
      layer.positions[static_cast<size_t>(out)] = layer.positions[static_cast<size_t>(cell)];
    }
    ++out;
  }
  layer.positions.resize(static_cast<size_t>(out));
}

void KvCache::truncate(SeqId seq, int32_t n_keep) {
  Sequence& s = sequence(seq);
  int32_t next = 0;
  for (auto& layer : s.layers) {
    if (static_cast<int32_t>(layer.positions.size()) > n_keep) layer.positions.resize(static_cast<size_t>(n_keep));
    for (int32_t p : layer.positions) next = std::max(next, p + 1);
  }
  s.next_position = next;
}

int32_t KvCache::n_cells(SeqId seq, int32_t il) const {
  return static_cast<int32_t>(sequence(seq).layers[static_cast<size_t>(il)].positions.size());
}

std::span<const int32_t> KvCache::positions(SeqId seq, int32_t il) const {
  return sequence(seq).layers[static_cast<size_t>(il)].positions;
}

int32_t KvCache::next_position(SeqId seq) const { return sequence(seq).next_position; }

uint16_t* KvCache::key(SeqId seq, int32_t il, int32_t head, int32_t cell) {
  return const_cast<uint16_t*>(static_cast<const KvCache*>(this)->key(seq, il, head, cell));
}
uint16_t* KvCache::value(SeqId seq, int32_t il, int32_t head, int32_t cell) {
  return const_cast<uint16_t*>(static_cast<const KvCache*>(this)->value(seq, il, head, cell));
}

const uint16_t* KvCache::key(SeqId seq, int32_t il, int32_t head, int32_t cell) const {
  const LayerCells& layer = sequence(seq).layers[static_cast<size_t>(il)];
  const int32_t pt = options_.page_tokens;
  const uint16_t* page = layer.pages[static_cast<size_t>(cell / pt)].data.get();
  return page + (static_cast<int64_t>(head) * pt + cell % pt) * shape_.head_dim_k;
}

const uint16_t* KvCache::value(SeqId seq, int32_t il, int32_t head, int32_t cell) const {
  const LayerCells& layer = sequence(seq).layers[static_cast<size_t>(il)];
  const int32_t pt = options_.page_tokens;
  const uint16_t* page = layer.pages[static_cast<size_t>(cell / pt)].data.get();
  const int64_t v_base = static_cast<int64_t>(shape_.n_head_kv) * pt * shape_.head_dim_k;
  return page + v_base + (static_cast<int64_t>(head) * pt + cell % pt) * shape_.head_dim_v;
}

int64_t KvCache::used_bytes() const {
  int64_t cells = 0;
  for (const auto& s : sequences_)
    if (s.live)
      for (const auto& layer : s.layers) cells += static_cast<int64_t>(layer.positions.size());
  return cells * shape_.n_head_kv * (shape_.head_dim_k + shape_.head_dim_v) * 2;
}

int64_t KvCache::allocated_bytes() const {
  int64_t pages = 0;
  for (const auto& s : sequences_)
    for (const auto& layer : s.layers) pages += static_cast<int64_t>(layer.pages.size());
  return pages * page_elements() * 2;
}

}  // namespace longhaul::kv
