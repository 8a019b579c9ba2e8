#include "kv/kv_cache.h"

#include <algorithm>
#include <climits>
#include <cstring>

namespace longhaul::kv {
namespace {
constexpr size_t kQuantizedSparePages = 2;  // empty f16 pages a quantized layer keeps for reuse
}  // namespace

KvCache::KvCache(const KvShape& shape, const KvCacheOptions& options, const KvQuantOptions& quant)
    : shape_(shape), options_(options), quant_(quant) {
  LH_CHECK(shape_.n_layer > 0 && shape_.n_head_kv > 0 && shape_.head_dim_k > 0 && shape_.head_dim_v > 0);
  LH_CHECK(options_.page_tokens > 0 && options_.max_sequences > 0);
  const KvQuantOptions& q = quant_;
  LH_CHECK_MSG(q.bits == 16 || q.bits == 8 || q.bits == 4, "KV cache: bits must be 16, 8 or 4");
  LH_CHECK_MSG(q.group > 0 && q.residual >= 0 && q.f16_prefix >= 0, "KV cache: group must be > 0, residual and prefix >= 0");
  LH_CHECK_MSG(q.bits != 4 || (shape_.head_dim_k % 2 == 0 && shape_.head_dim_v % 2 == 0),
               "KV cache: int4 cells need even head dims");
}

int64_t KvCache::f16_cell_bytes() const { return shape_.n_head_kv * f16_head_cell_bytes(); }

int64_t KvCache::f16_head_cell_bytes() const {
  return static_cast<int64_t>(shape_.head_dim_k + shape_.head_dim_v) * 2;
}

KvQuantFormat KvCache::quant_format(const KvQuantOptions& quant) const {
  KvQuantFormat f;
  f.bits = quant.bits;
  f.group = quant.group;
  f.n_head = shape_.n_head_kv;
  f.dk = shape_.head_dim_k;
  f.dv = shape_.head_dim_v;
  return f;
}

int64_t KvCache::bytes_per_cell(const KvQuantOptions& quant) const {
  if (quant.bits >= 16) return shape_.n_layer * f16_cell_bytes();
  const KvQuantFormat f = quant_format(quant);
  const int64_t per_group = shape_.n_layer * (f.cell_bytes() * f.group + f.group_bytes());  // G cells, all layers
  return (per_group + f.group - 1) / f.group;
}

KvSequenceOptions KvCache::default_sequence_options() const {
  KvSequenceOptions o;
  o.max_cells = options_.max_cells;
  o.page_tokens = options_.page_tokens;
  o.quant = quant_;
  return o;
}

Result<SeqId> KvCache::claim_sequence_slot() {
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i].live = true;  // remove_sequence left it empty
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

Result<SeqId> KvCache::add_sequence() { return add_sequence(default_sequence_options()); }

Result<SeqId> KvCache::add_sequence(const KvSequenceOptions& options) {
  const KvQuantOptions& q = options.quant;
  if (options.max_cells < 0 || options.page_tokens < 1)
    return Status::error("KV cache: sequence max_cells " + std::to_string(options.max_cells) + " must be >= 0 and page size " +
                         std::to_string(options.page_tokens) + " >= 1");
  if ((q.bits != 16 && q.bits != 8 && q.bits != 4) || q.group < 1 || q.residual < 0 || q.f16_prefix < 0)
    return Status::error("KV cache: sequence storage bits " + std::to_string(q.bits) +
                         " must be 16, 8 or 4, with group >= 1 and residual, prefix >= 0");
  if (q.bits == 4 && (shape_.head_dim_k % 2 != 0 || shape_.head_dim_v % 2 != 0))
    return Status::error("KV cache: int4 cells need even head dims");
  LH_ASSIGN_OR_RETURN(const SeqId seq, claim_sequence_slot());
  sequences_[static_cast<size_t>(seq)].options = options;
  return seq;
}

Result<SeqId> KvCache::fork_sequence(SeqId parent) {
  sequence(parent);  // CHECKs that it is live
  LH_ASSIGN_OR_RETURN(const SeqId child, claim_sequence_slot());
  // claim_sequence_slot may have grown sequences_: take both references after it.
  const Sequence& from = sequences_[static_cast<size_t>(parent)];
  Sequence& to = sequences_[static_cast<size_t>(child)];
  to.options = from.options;
  to.next_position = from.next_position;
  for (size_t il = 0; il < from.layers.size(); ++il) {
    const LayerCells& a = from.layers[il];
    LayerCells& b = to.layers[il];
    b.pages = a.pages;  // Page copies share their buffers (shared_ptr)
    b.page_first = a.page_first;
    b.positions = a.positions;
  }
  return child;
}

const KvSequenceOptions& KvCache::sequence_options(SeqId seq) const { return sequence(seq).options; }

KvCache::Sequence& KvCache::sequence(SeqId seq) {
  LH_CHECK(seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[seq].live);
  return sequences_[static_cast<size_t>(seq)];
}
const KvCache::Sequence& KvCache::sequence(SeqId seq) const {
  LH_CHECK(seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[seq].live);
  return sequences_[static_cast<size_t>(seq)];
}
const KvCache::LayerCells& KvCache::layer(SeqId seq, int32_t il) const {
  return sequence(seq).layers[static_cast<size_t>(il)];
}

bool KvCache::has_sequence(SeqId seq) const {
  return seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[static_cast<size_t>(seq)].live;
}

int32_t KvCache::n_sequences() const {
  return static_cast<int32_t>(std::count_if(sequences_.begin(), sequences_.end(), [](const Sequence& s) { return s.live; }));
}

void KvCache::remove_sequence(SeqId seq) {
  Sequence& s = sequence(seq);
  s.live = false;
  s.next_position = 0;
  for (auto& layer : s.layers) {
    layer.pages.clear();
    layer.spare.clear();
    layer.positions.clear();
    reindex(layer);
  }
}

void KvCache::clear_sequence(SeqId seq) {
  Sequence& s = sequence(seq);
  s.next_position = 0;
  for (auto& layer : s.layers) {
    for (Page& page : layer.pages) release(s, layer, std::move(page));
    layer.pages.clear();
    layer.positions.clear();
    reindex(layer);
  }
}

// ---- pages ----

std::vector<KvCache::Page> KvCache::new_f16_pages(int32_t capacity, int32_t n_pages) const {
  std::vector<Page> pages(static_cast<size_t>(n_pages));
  for (Page& page : pages) {
    page.capacity = capacity;
    page.f16.resize(static_cast<size_t>(shape_.n_head_kv));
  }
  // Head by head: the allocator hands out consecutive buffers next to each other, so one head's pages end up back
  // to back in memory, and decode attention, which reads a head's pages in order, streams them as one run that the
  // hardware prefetcher follows (docs/benchmarks.md, "KV pages of a head back to back").
  for (int32_t h = 0; h < shape_.n_head_kv; ++h)
    for (Page& page : pages) page.f16[static_cast<size_t>(h)] = new_f16_head_buffer(capacity);
  return pages;
}

std::shared_ptr<uint16_t[]> KvCache::new_f16_head_buffer(int32_t capacity) const {
  const size_t elements = static_cast<size_t>(capacity) * (shape_.head_dim_k + shape_.head_dim_v);
  const size_t bytes = elements * sizeof(uint16_t);
  // A buffer under one 4 KiB page gains nothing from huge pages (the f16 prefix page of a KIVI sequence).
  if (bytes < 4096) return std::make_shared<uint16_t[]>(elements);
  for (const auto& pool : head_buffer_pools_)
    if (pool->block_bytes() == HugePageBlockPool::block_bytes_for(bytes)) return pool->allocate<uint16_t>();
  head_buffer_pools_.push_back(HugePageBlockPool::create(bytes));
  return head_buffer_pools_.back()->allocate<uint16_t>();
}

KvCache::Page KvCache::new_f16_page(int32_t capacity) const { return std::move(new_f16_pages(capacity, 1).front()); }

void KvCache::make_writable(Page& page) const {
  const size_t n = static_cast<size_t>(page.capacity) * (shape_.head_dim_k + shape_.head_dim_v);
  for (auto& head : page.f16) {
    if (head == nullptr || head.use_count() == 1) continue;
    std::shared_ptr<uint16_t[]> copy = new_f16_head_buffer(page.capacity);
    std::memcpy(copy.get(), head.get(), n * sizeof(uint16_t));
    head = std::move(copy);
  }
  if (page.quantized != nullptr && page.quantized.use_count() > 1)
    page.quantized = std::make_shared<QuantizedPage>(*page.quantized);
}

void KvCache::make_writable_from(LayerCells& layer, int32_t cell) const {
  if (cell >= layer.page_first.back()) return;
  for (size_t i = static_cast<size_t>(locate(layer, cell).first); i < layer.pages.size(); ++i)
    make_writable(layer.pages[i]);
}

bool KvCache::page_shared(SeqId seq, int32_t il, int32_t i_page) const {
  const Page& page = layer(seq, il).pages[static_cast<size_t>(i_page)];
  if (page.quantized != nullptr) return page.quantized.use_count() > 1;
  for (const auto& head : page.f16)
    if (head != nullptr && head.use_count() > 1) return true;
  return false;
}

void KvCache::add_fresh_spares(const Sequence& s, LayerCells& layer, int32_t n_pages) const {
  if (n_pages <= 0) return;
  std::vector<Page> fresh = new_f16_pages(s.options.page_tokens, n_pages);
  // take_spare takes the last spare first: the first new page goes last.
  for (auto it = fresh.rbegin(); it != fresh.rend(); ++it) layer.spare.push_back(std::move(*it));
}

KvCache::Page KvCache::take_spare(const Sequence& s, LayerCells& layer) {
  if (layer.spare.empty()) return new_f16_page(s.options.page_tokens);
  Page page = std::move(layer.spare.back());
  layer.spare.pop_back();
  return page;
}

void KvCache::release(const Sequence& s, LayerCells& layer, Page&& page) {
  // Only whole f16 pages are worth keeping: a quantized page is sized to its cells, the prefix page to the prefix.
  if (!page.is_f16() || page.pinned || page.capacity != s.options.page_tokens) return;
  // A page that lost head rows (release_head_rows) is freed rather than completed again, and one that another
  // sequence still reads is only let go.
  for (const auto& head : page.f16)
    if (head == nullptr || head.use_count() > 1) return;
  // Quantized storage empties f16 pages all the time (freezing): keep two for the residual to grow into and free
  // the rest, so that the memory saved is returned. f16 storage keeps every page (a bounded policy reuses them).
  if (s.options.quant.bits < 16 && layer.spare.size() >= kQuantizedSparePages) return;
  page.n_cells = 0;
  layer.spare.push_back(std::move(page));
}

void KvCache::reindex(LayerCells& layer) {
  layer.page_first.resize(layer.pages.size() + 1);
  layer.page_first[0] = 0;
  for (size_t i = 0; i < layer.pages.size(); ++i) layer.page_first[i + 1] = layer.page_first[i] + layer.pages[i].n_cells;
}

std::pair<int32_t, int32_t> KvCache::locate(const LayerCells& layer, int32_t cell) {
  LH_CHECK_MSG(cell >= 0 && cell < layer.page_first.back(), "KV cache: cell index out of range");
  const auto it = std::upper_bound(layer.page_first.begin(), layer.page_first.end(), cell);
  const auto page = static_cast<int32_t>(it - layer.page_first.begin()) - 1;
  return {page, cell - layer.page_first[static_cast<size_t>(page)]};
}

uint16_t* KvCache::f16_key(const Page& page, int32_t head, int32_t slot) const {
  uint16_t* rows = page.f16[static_cast<size_t>(head)].get();
  LH_CHECK_MSG(rows != nullptr, "KV cache: the head's rows of this page were released");
  return rows + static_cast<int64_t>(slot) * shape_.head_dim_k;
}

uint16_t* KvCache::f16_value(const Page& page, int32_t head, int32_t slot) const {
  uint16_t* rows = page.f16[static_cast<size_t>(head)].get();
  LH_CHECK_MSG(rows != nullptr, "KV cache: the head's rows of this page were released");
  return rows + static_cast<int64_t>(page.capacity) * shape_.head_dim_k + static_cast<int64_t>(slot) * shape_.head_dim_v;
}

int32_t KvCache::Page::n_heads_present() const {
  int32_t n = 0;
  for (const auto& head : f16) n += head != nullptr;
  return n;
}

void KvCache::copy_f16_slot(const Page& from, int32_t from_slot, const Page& to, int32_t to_slot) const {
  for (int32_t h = 0; h < shape_.n_head_kv; ++h) copy_f16_head_slot(from, from_slot, to, to_slot, h);
}

void KvCache::copy_f16_head_slot(const Page& from, int32_t from_slot, const Page& to, int32_t to_slot,
                                 int32_t head) const {
  // A released head has no rows to move: no query of that head sees these cells any more.
  if (from.f16[static_cast<size_t>(head)] == nullptr || to.f16[static_cast<size_t>(head)] == nullptr) return;
  std::memcpy(f16_key(to, head, to_slot), f16_key(from, head, from_slot), shape_.head_dim_k * sizeof(uint16_t));
  std::memcpy(f16_value(to, head, to_slot), f16_value(from, head, from_slot), shape_.head_dim_v * sizeof(uint16_t));
}

void KvCache::pop_front_f16(const Sequence& s, LayerCells& layer, size_t i_page, int32_t n,
                            std::vector<uint16_t>& keys, std::vector<uint16_t>& values) {
  const int32_t n_head = shape_.n_head_kv, dk = shape_.head_dim_k, dv = shape_.head_dim_v;
  keys.resize(static_cast<size_t>(n) * n_head * dk);
  values.resize(static_cast<size_t>(n) * n_head * dv);
  for (int32_t done = 0; done < n;) {
    LH_CHECK(i_page < layer.pages.size() && layer.pages[i_page].is_f16() && !layer.pages[i_page].pinned);
    Page& page = layer.pages[i_page];
    make_writable(page);
    const int32_t t = std::min(n - done, page.n_cells);
    for (int32_t c = 0; c < t; ++c)
      for (int32_t h = 0; h < n_head; ++h) {
        const int64_t i = static_cast<int64_t>(done + c) * n_head + h;
        std::memcpy(keys.data() + i * dk, f16_key(page, h, c), dk * sizeof(uint16_t));
        std::memcpy(values.data() + i * dv, f16_value(page, h, c), dv * sizeof(uint16_t));
      }
    const int32_t rest = page.n_cells - t;
    for (int32_t h = 0; h < n_head; ++h) {
      std::memmove(f16_key(page, h, 0), f16_key(page, h, t), static_cast<size_t>(rest) * dk * sizeof(uint16_t));
      std::memmove(f16_value(page, h, 0), f16_value(page, h, t), static_cast<size_t>(rest) * dv * sizeof(uint16_t));
    }
    page.n_cells = rest;
    done += t;
    if (rest == 0) {
      Page empty = std::move(page);
      layer.pages.erase(layer.pages.begin() + static_cast<int64_t>(i_page));
      release(s, layer, std::move(empty));
    }
  }
}

void KvCache::freeze(const Sequence& s, LayerCells& layer) {
  const KvQuantOptions& q = s.options.quant;
  const auto n = static_cast<int32_t>(layer.positions.size());
  auto first_f16 = [&] {
    size_t i = 0;
    while (i < layer.pages.size() && (layer.pages[i].pinned || layer.pages[i].quantized != nullptr)) ++i;
    return i;
  };
  size_t i_hot = first_f16();
  if (i_hot == layer.pages.size()) return;
  const int32_t hot_begin = layer.page_first[i_hot];
  // The first f16_prefix cells join the prefix page, unless quantized cells already precede the f16 ones (after an
  // eviction moved quantized cells below f16_prefix): the prefix page must stay first.
  const bool has_prefix = !layer.pages.empty() && layer.pages[0].pinned;
  const bool can_extend = i_hot == (has_prefix ? 1u : 0u);
  const int32_t prefix_end = std::min(q.f16_prefix, n);
  const int32_t start = can_extend ? std::max(hot_begin, prefix_end) : hot_begin;
  const int32_t n_groups = n - q.residual - start >= q.group ? (n - q.residual - start) / q.group : 0;
  if (n_groups == 0) return;  // nothing leaves the residual: leave the layout alone

  const int32_t n_head = shape_.n_head_kv, dk = shape_.head_dim_k, dv = shape_.head_dim_v;
  std::vector<uint16_t> keys, values;  // [cells, n_head, dk], [cells, n_head, dv]
  if (start > hot_begin) {
    const int32_t m = start - hot_begin;
    pop_front_f16(s, layer, i_hot, m, keys, values);
    if (!has_prefix) {
      Page prefix = new_f16_page(std::max(q.f16_prefix, 1));
      prefix.pinned = true;
      layer.pages.insert(layer.pages.begin(), std::move(prefix));
    }
    Page& prefix = layer.pages[0];
    make_writable(prefix);
    LH_CHECK(prefix.n_cells + m <= prefix.capacity);
    for (int32_t c = 0; c < m; ++c)
      for (int32_t h = 0; h < n_head; ++h) {
        const int64_t i = static_cast<int64_t>(c) * n_head + h;
        std::memcpy(f16_key(prefix, h, prefix.n_cells + c), keys.data() + i * dk, dk * sizeof(uint16_t));
        std::memcpy(f16_value(prefix, h, prefix.n_cells + c), values.data() + i * dv, dv * sizeof(uint16_t));
      }
    prefix.n_cells += m;
    i_hot = first_f16();
  }

  const int32_t n_freeze = n_groups * q.group;
  pop_front_f16(s, layer, i_hot, n_freeze, keys, values);
  // Whole groups go into the quantized page just before the f16 ones while it has room for page_tokens cells
  // (rounded down to whole groups), then into new quantized pages.
  const int32_t page_cells = std::max(1, s.options.page_tokens / q.group) * q.group;
  for (int32_t done = 0; done < n_freeze;) {
    Page* target = nullptr;
    // A page that lost a head's rows (release_head_rows) takes no more cells: that head would have none of them.
    if (i_hot > 0 && layer.pages[i_hot - 1].quantized != nullptr && layer.pages[i_hot - 1].n_cells + q.group <= page_cells &&
        layer.pages[i_hot - 1].quantized->all_heads_present())
      target = &layer.pages[i_hot - 1];
    if (target == nullptr) {
      Page page;
      page.quantized = std::make_shared<QuantizedPage>(quant_format(q));
      layer.pages.insert(layer.pages.begin() + static_cast<int64_t>(i_hot), std::move(page));
      target = &layer.pages[i_hot];
      ++i_hot;
    }
    const int32_t t = std::min((page_cells - target->n_cells) / q.group * q.group, n_freeze - done);
    make_writable(*target);
    target->quantized->append(keys.data() + static_cast<int64_t>(done) * n_head * dk,
                              values.data() + static_cast<int64_t>(done) * n_head * dv, t);
    target->n_cells += t;
    done += t;
  }
  reindex(layer);
}

// ---- cells ----

Result<int32_t> KvCache::append_cells(SeqId seq, std::span<const int32_t> positions) {
  Sequence& s = sequence(seq);
  const auto n_new = static_cast<int32_t>(positions.size());
  LH_RETURN_IF_ERROR(check_room(seq, n_new));
  const auto first = static_cast<int32_t>(s.layers[0].positions.size());
  for (LayerCells& layer : s.layers) {
    // Every cell already appended has been written by its step, so the ones that left the residual can be frozen.
    if (s.options.quant.bits < 16) freeze(s, layer);
    auto back_room = [&] {  // cells the last page still takes
      const Page* back = layer.pages.empty() ? nullptr : &layer.pages.back();
      const bool open = back != nullptr && back->is_f16() && !back->pinned &&
                        back->n_heads_present() == shape_.n_head_kv;
      return open ? back->capacity - back->n_cells : 0;
    };
    const int32_t page_tokens = s.options.page_tokens;
    const int32_t new_pages = (std::max(0, n_new - back_room()) + page_tokens - 1) / page_tokens;
    add_fresh_spares(s, layer, new_pages - static_cast<int32_t>(layer.spare.size()));
    for (int32_t remaining = n_new; remaining > 0;) {
      if (back_room() == 0) layer.pages.push_back(take_spare(s, layer));
      Page& last = layer.pages.back();
      make_writable(last);  // a forked sequence's partially filled page: the new cells go into its own copy
      const int32_t t = std::min(remaining, last.capacity - last.n_cells);
      last.n_cells += t;
      remaining -= t;
    }
    layer.positions.insert(layer.positions.end(), positions.begin(), positions.end());
    reindex(layer);
  }
  for (int32_t p : positions) s.next_position = std::max(s.next_position, p + 1);
  return first;
}

void KvCache::retain_f16(const Sequence& s, LayerCells& layer, std::span<const int32_t> keep) {
  // Every page is full but the last: moving cells to the front keeps it so. Pages from the first cell that
  // changes on are written.
  int32_t first_moved = 0;
  while (first_moved < static_cast<int32_t>(keep.size()) && keep[static_cast<size_t>(first_moved)] == first_moved)
    ++first_moved;
  make_writable_from(layer, first_moved);
  int32_t out = 0;
  for (int32_t cell : keep) {
    if (cell != out) {
      const auto [fp, fs] = locate(layer, cell);
      const auto [tp, ts] = locate(layer, out);
      copy_f16_slot(layer.pages[static_cast<size_t>(fp)], fs, layer.pages[static_cast<size_t>(tp)], ts);
    }
    ++out;
  }
  trim_f16_pages(s, layer, out);
}

void KvCache::trim_f16_pages(const Sequence& s, LayerCells& layer, int32_t n_kept) {
  int32_t remaining = n_kept;
  for (Page& page : layer.pages) {
    page.n_cells = std::min(page.capacity, remaining);
    remaining -= page.n_cells;
  }
  while (!layer.pages.empty() && layer.pages.back().n_cells == 0) {
    Page empty = std::move(layer.pages.back());
    layer.pages.pop_back();
    release(s, layer, std::move(empty));
  }
}

void KvCache::retain_per_page(const Sequence& s, LayerCells& layer, std::span<const int32_t> keep) {
  std::vector<Page> kept;
  std::vector<int32_t> local;  // kept slots of one page
  size_t k = 0;
  for (size_t i = 0; i < layer.pages.size(); ++i) {
    Page& page = layer.pages[i];
    const int32_t begin = layer.page_first[i], end = layer.page_first[i + 1];
    local.clear();
    for (; k < keep.size() && keep[k] < end; ++k) local.push_back(keep[k] - begin);
    if (static_cast<int32_t>(local.size()) == page.n_cells) {
      kept.push_back(std::move(page));
      continue;
    }
    if (local.empty()) {
      release(s, layer, std::move(page));
      continue;
    }
    make_writable(page);
    if (page.quantized != nullptr) {
      page.quantized->retain(local);
    } else {
      for (size_t j = 0; j < local.size(); ++j)
        if (local[j] != static_cast<int32_t>(j)) copy_f16_slot(page, local[j], page, static_cast<int32_t>(j));
    }
    page.n_cells = static_cast<int32_t>(local.size());
    kept.push_back(std::move(page));
  }
  layer.pages = std::move(kept);
}

void KvCache::retain_cells(SeqId seq, int32_t il, std::span<const int32_t> keep) {
  Sequence& s = sequence(seq);
  LayerCells& layer = s.layers[static_cast<size_t>(il)];
  const auto n = static_cast<int32_t>(layer.positions.size());
  int32_t prev = -1;
  for (int32_t cell : keep) {
    LH_CHECK_MSG(cell > prev && cell < n, "retain_cells: indices must be ascending and < n_cells");
    prev = cell;
  }
  if (s.options.quant.bits < 16) {
    retain_per_page(s, layer, keep);
  } else {
    retain_f16(s, layer, keep);
  }
  for (size_t i = 0; i < keep.size(); ++i) layer.positions[i] = layer.positions[static_cast<size_t>(keep[i])];
  layer.positions.resize(keep.size());
  reindex(layer);
}

void KvCache::retain_cells_per_head(SeqId seq, int32_t il, std::span<const std::vector<int32_t>> keep) {
  Sequence& s = sequence(seq);
  LH_CHECK_MSG(s.options.quant.bits >= 16, "retain_cells_per_head: per-head retention needs f16 storage (bits=16)");
  LH_CHECK_MSG(static_cast<int32_t>(keep.size()) == shape_.n_head_kv, "retain_cells_per_head: one list per KV head");
  LayerCells& layer = s.layers[static_cast<size_t>(il)];
  const auto n = static_cast<int32_t>(layer.positions.size());
  const size_t n_keep = keep[0].size();
  for (const std::vector<int32_t>& head : keep) {
    LH_CHECK_MSG(head.size() == n_keep, "retain_cells_per_head: every head keeps the same count");
    int32_t prev = -1;
    for (int32_t cell : head) {
      LH_CHECK_MSG(cell > prev && cell < n, "retain_cells_per_head: indices must be ascending and < n_cells");
      prev = cell;
    }
  }
  int32_t first_moved = static_cast<int32_t>(n_keep);
  for (const std::vector<int32_t>& head : keep)
    for (size_t i = 0; i < n_keep; ++i)
      if (head[i] != static_cast<int32_t>(i)) {
        first_moved = std::min(first_moved, static_cast<int32_t>(i));
        break;
      }
  make_writable_from(layer, first_moved);
  for (int32_t h = 0; h < shape_.n_head_kv; ++h) {
    // Row keep[h][i] >= i moves to row i, in ascending i: a row is overwritten only after it was read.
    const std::vector<int32_t>& cells = keep[static_cast<size_t>(h)];
    for (size_t i = 0; i < n_keep; ++i) {
      const auto to = static_cast<int32_t>(i);
      if (cells[i] == to) continue;
      const auto [fp, fs] = locate(layer, cells[i]);
      const auto [tp, ts] = locate(layer, to);
      copy_f16_head_slot(layer.pages[static_cast<size_t>(fp)], fs, layer.pages[static_cast<size_t>(tp)], ts, h);
    }
  }
  std::vector<int32_t> positions(n_keep, 0);
  for (size_t i = 0; i < n_keep; ++i) {
    int32_t latest = layer.positions[static_cast<size_t>(keep[0][i])];
    for (const std::vector<int32_t>& head : keep) latest = std::max(latest, layer.positions[static_cast<size_t>(head[i])]);
    positions[i] = latest;
  }
  layer.positions = std::move(positions);
  trim_f16_pages(s, layer, static_cast<int32_t>(n_keep));
  reindex(layer);
}

void KvCache::truncate(SeqId seq, int32_t n_keep) {
  Sequence& s = sequence(seq);
  int32_t next = 0;
  for (auto& layer : s.layers) {
    if (static_cast<int32_t>(layer.positions.size()) > n_keep) {
      layer.positions.resize(static_cast<size_t>(std::max(0, n_keep)));
      std::vector<Page> kept;
      for (size_t i = 0; i < layer.pages.size(); ++i) {
        Page& page = layer.pages[i];
        const int32_t begin = layer.page_first[i];
        if (begin >= n_keep) {
          release(s, layer, std::move(page));
          continue;
        }
        const int32_t n_page = std::min(page.n_cells, n_keep - begin);
        if (page.quantized != nullptr && n_page < page.n_cells) {
          make_writable(page);
          page.quantized->truncate(n_page);
        }
        page.n_cells = n_page;
        kept.push_back(std::move(page));
      }
      layer.pages = std::move(kept);
      reindex(layer);
    }
    for (int32_t p : layer.positions) next = std::max(next, p + 1);
  }
  s.next_position = next;
}

int32_t KvCache::free_cells(SeqId seq) const {
  const Sequence& s = sequence(seq);
  if (s.options.max_cells <= 0) return INT32_MAX;
  int32_t most = 0;  // layers hold the same count under every policy; take the fullest to be safe
  for (const LayerCells& layer : s.layers) most = std::max(most, static_cast<int32_t>(layer.positions.size()));
  return std::max(0, s.options.max_cells - most);
}

Status KvCache::check_room(SeqId seq, int32_t n_new) const {
  if (n_new <= free_cells(seq)) return Status::ok();
  const int32_t max_cells = sequence(seq).options.max_cells;
  return Status::error("context full: " + std::to_string(max_cells - free_cells(seq)) + " cached + " +
                       std::to_string(n_new) + " new tokens exceed the context size of " + std::to_string(max_cells) +
                       " (raise -c/--ctx-size)");
}

int32_t KvCache::n_cells(SeqId seq, int32_t il) const { return static_cast<int32_t>(layer(seq, il).positions.size()); }

std::span<const int32_t> KvCache::positions(SeqId seq, int32_t il) const { return layer(seq, il).positions; }

int32_t KvCache::next_position(SeqId seq) const { return sequence(seq).next_position; }

}  // namespace longhaul::kv
