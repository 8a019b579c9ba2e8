// KvCache: reading and writing cells (the accessors attention and policies use) and memory accounting. The cell
// bookkeeping is kv_cache.cc.
#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>

#include "kernels/ops.h"
#include "kv/kv_cache.h"
#include "tensor/half.h"

namespace longhaul::kv {

// ---- reading and writing ----

// The writing accessors serve the step's new cells, whose pages append_cells made writable; a shared page here
// would be a write into another sequence's cells.
uint16_t* KvCache::key(SeqId seq, int32_t il, int32_t head, int32_t cell) {
  const LayerCells& l = layer(seq, il);
  LH_CHECK_MSG(l.pages[static_cast<size_t>(locate(l, cell).first)].f16[static_cast<size_t>(head)].use_count() <= 1,
               "KvCache::key: the cell's page is shared with another sequence");
  return const_cast<uint16_t*>(static_cast<const KvCache*>(this)->key(seq, il, head, cell));
}
uint16_t* KvCache::value(SeqId seq, int32_t il, int32_t head, int32_t cell) {
  const LayerCells& l = layer(seq, il);
  LH_CHECK_MSG(l.pages[static_cast<size_t>(locate(l, cell).first)].f16[static_cast<size_t>(head)].use_count() <= 1,
               "KvCache::value: the cell's page is shared with another sequence");
  return const_cast<uint16_t*>(static_cast<const KvCache*>(this)->value(seq, il, head, cell));
}

const uint16_t* KvCache::key(SeqId seq, int32_t il, int32_t head, int32_t cell) const {
  const LayerCells& l = layer(seq, il);
  const auto [page, slot] = locate(l, cell);
  const Page& p = l.pages[static_cast<size_t>(page)];
  LH_CHECK_MSG(p.is_f16(), "KvCache::key: the cell is quantized (use read_keys / head_rows)");
  return f16_key(p, head, slot);
}

const uint16_t* KvCache::value(SeqId seq, int32_t il, int32_t head, int32_t cell) const {
  const LayerCells& l = layer(seq, il);
  const auto [page, slot] = locate(l, cell);
  const Page& p = l.pages[static_cast<size_t>(page)];
  LH_CHECK_MSG(p.is_f16(), "KvCache::value: the cell is quantized (use read_values / head_rows)");
  return f16_value(p, head, slot);
}

bool KvCache::is_f16(SeqId seq, int32_t il, int32_t cell) const {
  const LayerCells& l = layer(seq, il);
  return l.pages[static_cast<size_t>(locate(l, cell).first)].is_f16();
}

int32_t KvCache::n_pages(SeqId seq, int32_t il) const { return static_cast<int32_t>(layer(seq, il).pages.size()); }

KvCache::PageSpan KvCache::page_span(SeqId seq, int32_t il, int32_t i_page) const {
  const LayerCells& l = layer(seq, il);
  const auto i = static_cast<size_t>(i_page);
  return {l.page_first[i], l.pages[i].n_cells, l.pages[i].quantized != nullptr};
}

void KvCache::page_spans(SeqId seq, int32_t il, std::vector<PageSpan>& out) const {
  const LayerCells& l = layer(seq, il);
  out.resize(l.pages.size());
  for (size_t i = 0; i < l.pages.size(); ++i)
    out[i] = {l.page_first[i], l.pages[i].n_cells, l.pages[i].quantized != nullptr};
}

KvCache::HeadRows KvCache::head_rows(SeqId seq, int32_t il, int32_t head, int32_t i_page, Scratch& scratch,
                                     bool want_keys, bool want_values) const {
  const Page& page = layer(seq, il).pages[static_cast<size_t>(i_page)];
  HeadRows rows;
  if (page.is_f16()) {
    if (page.f16[static_cast<size_t>(head)] == nullptr) return rows;  // released: nothing to attend to
    if (want_keys) rows.keys = f16_key(page, head, 0);
    if (want_values) rows.values = f16_value(page, head, 0);
    return rows;
  }
  if (!page.quantized->head_present(head)) return rows;  // released
  if (want_keys) scratch.keys.resize(static_cast<size_t>(page.n_cells) * shape_.head_dim_k);
  if (want_values) scratch.values.resize(static_cast<size_t>(page.n_cells) * shape_.head_dim_v);
  page.quantized->dequantize_head(head, want_keys ? scratch.keys.data() : nullptr,
                                  want_values ? scratch.values.data() : nullptr, scratch.dequantize);
  if (want_keys) rows.keys = scratch.keys.data();
  if (want_values) rows.values = scratch.values.data();
  return rows;
}

kernels::QuantizedRows KvCache::quantized_rows(SeqId seq, int32_t il, int32_t head, int32_t i_page) const {
  const Page& page = layer(seq, il).pages[static_cast<size_t>(i_page)];
  LH_CHECK_MSG(page.quantized != nullptr, "KvCache::quantized_rows: page " + std::to_string(i_page) + " is f16");
  if (!page.quantized->head_present(head)) return {};  // released: nothing to attend to
  return page.quantized->head_view(head);
}

void KvCache::release_head_rows(SeqId seq, int32_t il, int32_t head, int32_t i_page) {
  LH_CHECK_MSG(head >= 0 && head < shape_.n_head_kv, "release_head_rows: head out of range");
  Sequence& s = sequence(seq);
  LayerCells& l = s.layers[static_cast<size_t>(il)];
  LH_CHECK_MSG(i_page >= 0 && static_cast<size_t>(i_page) < l.pages.size(), "release_head_rows: page out of range");
  Page& page = l.pages[static_cast<size_t>(i_page)];
  if (page.quantized != nullptr) {
    make_writable(page);
    page.quantized->release_head(head);
    return;
  }
  // The f16 pages of quantized storage are the prefix and the residual that freezing moves into key groups.
  LH_CHECK_MSG(s.options.quant.bits >= 16,
               "release_head_rows: with quantized storage only quantized pages release head rows");
  page.f16[static_cast<size_t>(head)].reset();  // drops this sequence's reference only
}

bool KvCache::head_rows_present(SeqId seq, int32_t il, int32_t head, int32_t i_page) const {
  const Page& page = layer(seq, il).pages[static_cast<size_t>(i_page)];
  if (page.quantized != nullptr) return page.quantized->head_present(head);
  return page.f16[static_cast<size_t>(head)] != nullptr;
}

namespace {
// Calls fn(page, slot, count, done) for the runs of cells [first, first + count) that share a page.
template <typename Layer, typename Locate, typename Fn>
void for_each_run(Layer& layer, int32_t first, int32_t count, Locate&& locate, Fn&& fn) {
  LH_CHECK_MSG(first >= 0 && count >= 0 && first + count <= layer.page_first.back(), "KV cache: cells out of range");
  for (int32_t c = first; c < first + count;) {
    const auto [page, slot] = locate(layer, c);
    const int32_t t = std::min(first + count - c, layer.pages[static_cast<size_t>(page)].n_cells - slot);
    fn(layer.pages[static_cast<size_t>(page)], slot, t, c - first);
    c += t;
  }
}
}  // namespace

void KvCache::read_rows(SeqId seq, int32_t il, int32_t first, int32_t count, bool keys, float* out) const {
  const int32_t n_head = shape_.n_head_kv, dim = keys ? shape_.head_dim_k : shape_.head_dim_v;
  for_each_run(layer(seq, il), first, count, locate, [&](const Page& page, int32_t slot, int32_t t, int32_t done) {
    float* o = out + static_cast<int64_t>(done) * n_head * dim;
    if (page.quantized != nullptr) {
      page.quantized->read(slot, t, keys ? o : nullptr, keys ? nullptr : o);
      return;
    }
    for (int32_t i = 0; i < t; ++i)
      for (int32_t h = 0; h < n_head; ++h) {
        float* row = o + (static_cast<int64_t>(i) * n_head + h) * dim;
        if (page.f16[static_cast<size_t>(h)] == nullptr) {  // released rows read as zeros
          std::fill_n(row, dim, 0.0f);
          continue;
        }
        const uint16_t* src = keys ? f16_key(page, h, slot + i) : f16_value(page, h, slot + i);
        for (int32_t d = 0; d < dim; ++d) row[d] = tensor::f16_to_f32(src[d]);
      }
  });
}

void KvCache::read_keys(SeqId seq, int32_t il, int32_t first, int32_t count, float* out) const {
  read_rows(seq, il, first, count, true, out);
}

void KvCache::read_values(SeqId seq, int32_t il, int32_t first, int32_t count, float* out) const {
  read_rows(seq, il, first, count, false, out);
}

void KvCache::write_keys(SeqId seq, int32_t il, int32_t first, int32_t count, const float* keys) {
  const int32_t n_head = shape_.n_head_kv, dk = shape_.head_dim_k;
  LayerCells& l = sequence(seq).layers[static_cast<size_t>(il)];
  for_each_run(l, first, count, locate, [&](Page& page, int32_t slot, int32_t t, int32_t done) {
    make_writable(page);
    const float* k = keys + static_cast<int64_t>(done) * n_head * dk;
    if (page.quantized != nullptr) {
      std::vector<uint16_t> rows(static_cast<size_t>(t) * n_head * dk);  // [t, n_head, dk] f16
      kernels::f32_to_f16_row(k, rows.data(), static_cast<int64_t>(rows.size()));
      page.quantized->write_keys(slot, t, rows.data());
      return;
    }
    for (int32_t i = 0; i < t; ++i)
      for (int32_t h = 0; h < n_head; ++h)
        if (page.f16[static_cast<size_t>(h)] != nullptr)
          kernels::f32_to_f16_row(k + (static_cast<int64_t>(i) * n_head + h) * dk, f16_key(page, h, slot + i), dk);
  });
}

// ---- memory ----

namespace {
// Adds each distinct buffer once: a buffer shared by forked sequences is one allocation. For used bytes, the most
// cells any sharer holds in it.
struct BufferTally {
  std::unordered_map<const void*, int64_t> bytes;
  void add(const void* buffer, int64_t n) {
    int64_t& b = bytes[buffer];
    b = std::max(b, n);
  }
  int64_t total() const {
    int64_t t = 0;
    for (const auto& [buffer, n] : bytes) t += n;
    return t;
  }
};
}  // namespace

int64_t KvCache::used_bytes() const {
  BufferTally tally;
  for (const auto& s : sequences_)
    if (s.live)
      for (const auto& layer : s.layers)
        for (const Page& page : layer.pages) {
          if (page.quantized != nullptr) {
            tally.add(page.quantized.get(), page.quantized->used_bytes());
            continue;
          }
          for (const auto& head : page.f16)
            if (head != nullptr) tally.add(head.get(), page.n_cells * f16_head_cell_bytes());
        }
  return tally.total();
}

int64_t KvCache::used_bytes(SeqId seq) const {
  int64_t bytes = 0;
  for (const auto& layer : sequence(seq).layers)
    for (const Page& page : layer.pages)
      bytes += page.quantized != nullptr ? page.quantized->used_bytes()
                                         : page.n_cells * f16_head_cell_bytes() * page.n_heads_present();
  return bytes;
}

int64_t KvCache::allocated_bytes() const {
  BufferTally tally;
  for (const auto& s : sequences_)
    for (const auto& layer : s.layers) {
      for (const Page& page : layer.pages) {
        if (page.quantized != nullptr) {
          tally.add(page.quantized.get(), page.quantized->allocated_bytes());
          continue;
        }
        for (const auto& head : page.f16)
          if (head != nullptr) tally.add(head.get(), page.capacity * f16_head_cell_bytes());
      }
      for (const Page& page : layer.spare)
        for (const auto& head : page.f16)
          if (head != nullptr) tally.add(head.get(), page.capacity * f16_head_cell_bytes());
    }
  return tally.total();
}

}  // namespace longhaul::kv
