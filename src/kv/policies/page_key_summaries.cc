#include "kv/policies/page_key_summaries.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/ops.h"
#include "tensor/half.h"

namespace longhaul::kv {

float page_key_bound(const float* q, int32_t n_q, int32_t dk, const float* key_min, const float* key_max,
                     int32_t n_sub) {
  return kernels::key_bound(q, n_q, dk, key_min, key_max, n_sub);
}

PageKeySummaries::PageKeySummaries(const KvShape& shape, int32_t logical_tokens, KeySummary kind, float std_scale)
    : shape_(shape),
      logical_tokens_(logical_tokens),
      kind_(kind),
      std_scale_(std_scale),
      units_(static_cast<size_t>(shape.n_layer) * static_cast<size_t>(shape.n_head_kv)) {
  for (auto& u : units_) u = std::make_unique<Unit>();
}

PageKeySummaries::PageKeySummaries(const PageKeySummaries& other)
    : shape_(other.shape_),
      logical_tokens_(other.logical_tokens_),
      kind_(other.kind_),
      std_scale_(other.std_scale_),
      units_(other.units_.size()) {
  for (size_t i = 0; i < units_.size(); ++i) {
    units_[i] = std::make_unique<Unit>();
    std::lock_guard<std::mutex> lock(other.units_[i]->mutex);
    units_[i]->pages = other.units_[i]->pages;
    units_[i]->slots_per_page = other.units_[i]->slots_per_page;
    units_[i]->blocks = other.units_[i]->blocks;
    units_[i]->kept = other.units_[i]->kept;
  }
}

void PageKeySummaries::truncate(int32_t n_cells) {
  for (auto& u : units_) {
    std::lock_guard<std::mutex> lock(u->mutex);
    for (Summary& s : u->pages)
      if (s.first_cell + s.n_cells > n_cells) s = Summary{};
    // A rejected draft cuts only cells appended after the kept selection was made: it stays.
    if (u->kept.n_cells > n_cells) u->kept = KeptSelection{};
  }
}

std::vector<double> PageKeySummaries::kept_selections() const {
  std::vector<double> out;
  for (const auto& u : units_) {
    std::lock_guard<std::mutex> lock(u->mutex);
    out.push_back(u->kept.valid);
    out.push_back(u->kept.position);
    out.push_back(u->kept.n_cells);
    out.push_back(static_cast<double>(u->kept.pages.size()));
    out.insert(out.end(), u->kept.pages.begin(), u->kept.pages.end());
  }
  return out;
}

void PageKeySummaries::select(const KvPolicy::PageQuery& query, const BoundSelection& how,
                              std::vector<int32_t>& pages) const {
  const KvCache& cache = query.cache;
  Unit& u = *units_[static_cast<size_t>(query.il) * static_cast<size_t>(shape_.n_head_kv) +
                    static_cast<size_t>(query.kv_head)];
  std::lock_guard<std::mutex> lock(u.mutex);
  const int32_t n_cells = cache.n_cells(query.seq, query.il);
  classify_pages(cache, query.seq, query.il, how.sink_tokens, n_cells - how.window, u.layout);
  const auto n_pages = static_cast<int32_t>(u.layout.spans.size());
  if (u.layout.n_candidates <= how.n_select && how.top_p >= 1.0f) {  // the budget covers every page
    select_every_page(n_pages, pages);
    return;
  }
  pages.clear();
  for (int32_t ip = 0; ip < n_pages; ++ip)
    if (u.layout.always[static_cast<size_t>(ip)]) pages.push_back(ip);
  if (how.n_select == 0) return;  // only the pages always read (a streaming head's sinks and window)
  const int32_t position = query.q_pos[0];
  if (how.reuse > 1 && u.kept.valid && position > u.kept.position && position - u.kept.position < how.reuse) {
    // LServe: consecutive queries attend to much the same pages; the kept choice plus today's pages always read.
    for (int32_t ip : u.kept.pages)
      if (ip < n_pages && !u.layout.always[static_cast<size_t>(ip)]) pages.push_back(ip);
    std::sort(pages.begin(), pages.end());
    return;
  }
  const int32_t dk = shape_.head_dim_k;
  if (u.pages.size() < static_cast<size_t>(n_pages)) u.pages.resize(static_cast<size_t>(n_pages));
  // Slots per page: a page's logical pages, at least those of a full page; a candidate that needs more (a larger
  // page than the sequence's page size) lays the blocks out again, every summary to be recomputed.
  int32_t need = u.slots_per_page > 0 ? u.slots_per_page : logical_pages(cache.sequence_options(query.seq).page_tokens);
  for (int32_t ip = 0; ip < n_pages; ++ip)
    if (!u.layout.always[static_cast<size_t>(ip)])
      need = std::max(need, logical_pages(u.layout.spans[static_cast<size_t>(ip)].n_cells));
  if (need != u.slots_per_page) {
    u.slots_per_page = need;
    u.blocks.clear();
    for (Summary& s : u.pages) s = Summary{};
  }
  const int64_t n_blocks = (static_cast<int64_t>(n_pages) * u.slots_per_page + 15) / 16;
  if (static_cast<int64_t>(u.blocks.size()) < n_blocks * 2 * dk * 16)
    u.blocks.resize(static_cast<size_t>(n_blocks * 2 * dk * 16));
  for (int32_t ip = 0; ip < n_pages; ++ip)
    if (!u.layout.always[static_cast<size_t>(ip)]) ensure_summary(u, query, ip, u.layout.spans[static_cast<size_t>(ip)]);
  // Every slot up to the last page's is scored (the pages always read among them too: fewer branches than
  // skipping them, and their bounds are not read).
  u.slot_bound.resize(static_cast<size_t>(n_blocks) * 16);
  kernels::key_bounds_f16_blocked(query.q, query.n_q, dk, u.blocks.data(), n_blocks, u.slot_bound.data());
  u.bound.resize(static_cast<size_t>(n_pages));
  for (int32_t ip = 0; ip < n_pages; ++ip) {
    if (u.layout.always[static_cast<size_t>(ip)]) continue;
    const float* slot = u.slot_bound.data() + static_cast<int64_t>(ip) * u.slots_per_page;
    u.bound[static_cast<size_t>(ip)] = *std::max_element(slot, slot + u.slots_per_page);
  }
  const TopPPruning top_p{how.top_p, {}};
  if (top_p.active()) page_mass_from_scores(u.bound, u.layout.spans, u.layout.always, u.mass);
  select_top_pages(u.bound, u.layout.always, how.n_select, pages, u.ranked, top_p.with_mass(u.mass));
  if (how.reuse > 1) {
    u.kept.valid = true;
    u.kept.position = position;
    u.kept.n_cells = n_cells;
    u.kept.pages.clear();
    for (int32_t ip : pages)
      if (!u.layout.always[static_cast<size_t>(ip)]) u.kept.pages.push_back(ip);
  }
}

void PageKeySummaries::ensure_summary(Unit& u, const KvPolicy::PageQuery& query, int32_t ip,
                                      const KvCache::PageSpan& span) const {
  Summary& s = u.pages[static_cast<size_t>(ip)];
  if (s.first_cell == span.first_cell && s.n_cells == span.n_cells && s.n_sub > 0) return;
  const int32_t dk = shape_.head_dim_k, n_head_kv = shape_.n_head_kv;
  u.keys.resize(static_cast<size_t>(span.n_cells) * n_head_kv * dk);  // [n_cells, n_head_kv, dk]
  query.cache.read_keys(query.seq, query.il, span.first_cell, span.n_cells, u.keys.data());
  const int32_t logical = logical_tokens_ > 0 ? std::min(logical_tokens_, span.n_cells) : span.n_cells;
  s.first_cell = span.first_cell;
  s.n_cells = span.n_cells;
  s.n_sub = logical_pages(span.n_cells);
  summarize(u, s, ip, query.kv_head, logical);
}

int32_t PageKeySummaries::logical_pages(int32_t n_cells) const {
  if (logical_tokens_ <= 0 || n_cells <= logical_tokens_) return 1;
  return (n_cells + logical_tokens_ - 1) / logical_tokens_;
}

void PageKeySummaries::summarize(Unit& u, const Summary& s, int32_t ip, int32_t kv_head, int32_t logical) const {
  const int32_t dk = shape_.head_dim_k, n_head_kv = shape_.n_head_kv;
  u.lo.resize(static_cast<size_t>(dk));
  u.hi.resize(static_cast<size_t>(dk));
  float* lo = u.lo.data();
  float* hi = u.hi.data();
  for (int32_t sub = 0; sub < s.n_sub; ++sub) {
    const int32_t first = sub * logical, end = std::min(s.n_cells, first + logical);
    auto key = [&](int32_t i) { return u.keys.data() + (static_cast<int64_t>(i) * n_head_kv + kv_head) * dk; };
    if (kind_ == KeySummary::kMinMax) {
      std::fill(lo, lo + dk, std::numeric_limits<float>::infinity());
      std::fill(hi, hi + dk, -std::numeric_limits<float>::infinity());
      for (int32_t i = first; i < end; ++i) {
        const float* k = key(i);
        for (int32_t c = 0; c < dk; ++c) {
          lo[c] = std::min(lo[c], k[c]);
          hi[c] = std::max(hi[c], k[c]);
        }
      }
    } else {
      u.sum.assign(static_cast<size_t>(dk), 0.0);
      u.sum_sq.assign(static_cast<size_t>(dk), 0.0);
      for (int32_t i = first; i < end; ++i) {
        const float* k = key(i);
        for (int32_t c = 0; c < dk; ++c) {
          u.sum[static_cast<size_t>(c)] += k[c];
          u.sum_sq[static_cast<size_t>(c)] += static_cast<double>(k[c]) * k[c];
        }
      }
      const double n = end - first;
      for (int32_t c = 0; c < dk; ++c) {
        const double mean = u.sum[static_cast<size_t>(c)] / n;
        const double spread = std::sqrt(std::max(0.0, u.sum_sq[static_cast<size_t>(c)] / n - mean * mean));
        lo[c] = static_cast<float>(mean - std_scale_ * spread);
        hi[c] = static_cast<float>(mean + std_scale_ * spread);
      }
    }
    // This logical page's slot, and the page's spare slots after its last logical page.
    const int32_t last_slot = sub + 1 == s.n_sub ? u.slots_per_page : sub + 1;
    for (int32_t slot = sub; slot < last_slot; ++slot) {
      const int64_t at = static_cast<int64_t>(ip) * u.slots_per_page + slot;
      uint16_t* lo16 = u.blocks.data() + (at / 16) * 2 * dk * 16 + at % 16;  // channel c at lo16[16 c]
      uint16_t* hi16 = lo16 + static_cast<int64_t>(dk) * 16;
      for (int32_t c = 0; c < dk; ++c) {
        lo16[16 * c] = tensor::f32_to_f16_down(lo[c]);
        hi16[16 * c] = tensor::f32_to_f16_up(hi[c]);
      }
    }
  }
}

}  // namespace longhaul::kv
