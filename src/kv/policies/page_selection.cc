#include "kv/policies/page_selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace longhaul::kv {

bool is_decode_query(const KvPolicy::PageQuery& query) {
  for (int32_t i = 1; i < query.n_q; ++i)
    if (query.q_pos[i] != query.q_pos[0]) return false;
  return true;
}

void select_every_page(int32_t n_pages, std::vector<int32_t>& pages) {
  pages.resize(static_cast<size_t>(std::max(n_pages, 0)));
  std::iota(pages.begin(), pages.end(), 0);
}

void classify_pages(const KvCache& cache, SeqId seq, int32_t il, int32_t sink_tokens, int32_t first_local_cell,
                    PageCandidates& out) {
  cache.page_spans(seq, il, out.spans);
  const auto n_pages = static_cast<int32_t>(out.spans.size());
  const std::span<const int32_t> positions = cache.positions(seq, il);
  out.always.resize(static_cast<size_t>(n_pages));
  out.n_candidates = 0;
  for (int32_t ip = 0; ip < n_pages; ++ip) {
    const KvCache::PageSpan span = out.spans[static_cast<size_t>(ip)];
    const bool last = ip == n_pages - 1;
    const bool sink = span.n_cells > 0 && positions[static_cast<size_t>(span.first_cell)] < sink_tokens;
    const bool local = span.first_cell + span.n_cells > first_local_cell;
    const bool always = last || sink || local || span.n_cells == 0;
    out.always[static_cast<size_t>(ip)] = always ? 1 : 0;
    if (!always) ++out.n_candidates;
  }
}

int32_t select_top_pages(std::span<const float> score, std::span<const uint8_t> always, int32_t n_select,
                         std::vector<int32_t>& selected, std::vector<std::pair<float, int32_t>>& ranked,
                         const TopPPruning& top_p) {
  selected.clear();
  ranked.clear();
  for (size_t ip = 0; ip < always.size(); ++ip) {
    if (always[ip]) {
      selected.push_back(static_cast<int32_t>(ip));
    } else {
      ranked.emplace_back(-score[ip], static_cast<int32_t>(ip));  // (-score, page): ascending = best first
    }
  }
  const auto n = std::min<size_t>(static_cast<size_t>(std::max(n_select, 0)), ranked.size());
  // Ties go to the earlier page, so that the choice does not depend on the sort: (-score, page) is a strict order,
  // so the n best are the same set, in the same order, however they are found (a linear nth_element, then a sort
  // of the n alone, is cheaper than a partial sort's heap over every candidate).
  const auto nth = ranked.begin() + static_cast<std::ptrdiff_t>(n);
  if (nth != ranked.end()) std::nth_element(ranked.begin(), nth, ranked.end());
  std::sort(ranked.begin(), nth);
  size_t n_read = n;
  if (top_p.active() && n > 0) {
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += top_p.mass[static_cast<size_t>(ranked[i].second)];
    if (total > 0.0 && std::isfinite(total)) {
      const double reach = static_cast<double>(top_p.p) * total;
      double mass = 0.0;
      n_read = 0;
      while (n_read < n && (n_read == 0 || mass < reach))
        mass += top_p.mass[static_cast<size_t>(ranked[n_read++].second)];
    }
  }
  for (size_t i = 0; i < n_read; ++i) selected.push_back(ranked[i].second);
  std::sort(selected.begin(), selected.end());
  return static_cast<int32_t>(n_read);
}

void page_mass_from_scores(std::span<const float> score, std::span<const KvCache::PageSpan> spans,
                           std::span<const uint8_t> always, std::vector<float>& mass) {
  mass.assign(always.size(), 0.0f);
  float top = -std::numeric_limits<float>::infinity();
  for (size_t ip = 0; ip < always.size(); ++ip)
    if (!always[ip]) top = std::max(top, score[ip]);
  if (!std::isfinite(top)) return;  // no candidate, or none with a score: no mass to share
  for (size_t ip = 0; ip < always.size(); ++ip)
    if (!always[ip]) mass[ip] = static_cast<float>(spans[ip].n_cells) * std::exp(score[ip] - top);
}

}  // namespace longhaul::kv
