// longheads: LongHeads (Lu et al., 2024, "LongHeads: Multi-Head Attention is Secretly a Long Context Processor").
// Every cell is kept. Each KV head reads `span` tokens' worth of chunks (pages), at most: the first chunk, the
// chunks most relevant to its queries, and the local chunks (the last complete one and the partial one holding the
// newest tokens). The chunks it reads are laid side by side, in order, ending where the local chunks begin, so
// every query-key distance stays below `span` -- within the trained context when span is -- while the heads
// together, each choosing its own chunks, cover the whole context.
//
// Relevance, as the paper scores it: the query without its rotary embedding against a chunk representation, a
// key-like vector summarising the chunk with positions counted from the chunk's start. LongHeads forms that
// representation by attention inside the chunk: the mean of the chunk's attention outputs weighs its keys. The
// chunk's queries are gone by the time the chunk is complete here, so its mean key stands in for that query: the
// representation is the softmax(mean . k_j / sqrt(dk))-weighted mean of the chunk's keys k_j.
//
// GQA: LongHeads selects per attention head; here a KV head selects for its group, from the sum of its query
// heads' scores (the attention plan reads pages per KV head).
//
// Positions: a placed chunk's keys keep their order and move as a block (KvPolicy::PagePlacement), as LongHeads
// concatenates the selected chunks and numbers them from 0. Before the context reaches `span` every key is read in
// place: longheads is then `full`.
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kv/policies/page_key_summaries.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/placed_pages.h"
#include "kv/policy_registry.h"
#include "tensor/half.h"

namespace longhaul::kv {
namespace {

struct LongheadsOptions {
  int32_t span = 4096;         // tokens each head reads (LongHeads' atten_length), local chunks included
  int32_t page_tokens = 256;   // cells per page = chunk (LongHeads' window_size)
  // How chunks are scored: by Quest's bound over every key of the chunk (Tang et al., 2024), with LongHeads'
  // positions (keys counted from the chunk's start, queries without rotation), or by the chunk's representation
  // (LongHeads'). The bound is the default: on SmolLM2 the representations miss the passkey's chunk
  // (docs/long-context.md).
  bool score_by_bound = true;
};

class LongheadsPolicy final : public KvPolicy {
 public:
  LongheadsPolicy(KvPolicyContext context, const LongheadsOptions& options)
      : KvPolicy(std::move(context)), options_(options), heads_(context_.shape) {}

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new LongheadsPolicy(*this));
  }
  std::string name() const override { return "longheads"; }
  std::string describe() const override {
    return "longheads(span=" + std::to_string(options_.span) + ", page=" + std::to_string(options_.page_tokens) +
           (options_.score_by_bound ? "" : ", score=repr") + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  bool places_pages() const override { return true; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  void truncate(KvCache&, SeqId, int32_t n_cells) override {
    heads_.for_each([&](std::vector<Chunk>& chunks) {
      for (Chunk& c : chunks)
        if (c.first_cell + c.n_cells > n_cells) c.repr.clear();
    });
  }

  void select_placed_pages(const PageQuery& query, std::vector<int32_t>& pages,
                           std::vector<PagePlacement>& placed) const override {
    placed.clear();
    const KvCache& cache = query.cache;
    const int32_t n_pages = cache.n_pages(query.seq, query.il);
    const auto [q_first, q_last] = query_span(query);
    const int32_t chunk = options_.page_tokens;
    const std::span<const int32_t> positions = cache.positions(query.seq, query.il);
    // Local chunks, read in place: the chunk the earliest query falls in and the complete one before it (a later
    // query of a prompt chunk sees them closer still).
    const int32_t local_from = std::max(0, (q_first / chunk - 1) * chunk);  // first position read as local
    if (layer_window(query.il) > 0 || q_last < options_.span || n_pages == 0) {
      select_every_page(n_pages, pages);
      return;
    }
    pages.clear();
    std::vector<int32_t> candidates;  // complete chunks between the first and the local ones
    int32_t first_page = -1;
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      const KvCache::PageSpan span = cache.page_span(query.seq, query.il, ip);
      if (span.n_cells == 0) continue;
      const int32_t last_pos = positions[static_cast<size_t>(span.first_cell + span.n_cells - 1)];
      if (last_pos >= local_from) {
        pages.push_back(ip);
      } else if (first_page < 0) {
        first_page = ip;
      } else {
        candidates.push_back(ip);
      }
    }
    // Chunks read besides the local ones: span / chunk in all, the local two and the first one included.
    const int32_t n_select = std::max(0, options_.span / chunk - 3);
    std::vector<int32_t> chosen;
    if (first_page >= 0) chosen.push_back(first_page);
    if (static_cast<int32_t>(candidates.size()) > n_select) {
      const std::vector<float> score = score_chunks(query, candidates);
      std::vector<std::pair<float, int32_t>> ranked;  // (-score, page): ascending = best first, ties to the earlier
      for (size_t i = 0; i < candidates.size(); ++i) ranked.emplace_back(-score[i], candidates[i]);
      std::partial_sort(ranked.begin(), ranked.begin() + n_select, ranked.end());
      for (int32_t i = 0; i < n_select; ++i) chosen.push_back(ranked[static_cast<size_t>(i)].second);
    } else {
      chosen.insert(chosen.end(), candidates.begin(), candidates.end());
    }
    std::sort(chosen.begin(), chosen.end());
    // Side by side, in order, the last one ending where the local chunks begin.
    int32_t end = local_from;
    for (auto it = chosen.rbegin(); it != chosen.rend(); ++it) {
      const KvCache::PageSpan span = cache.page_span(query.seq, query.il, *it);
      const int32_t first_pos = positions[static_cast<size_t>(span.first_cell)];
      const int32_t last_pos = positions[static_cast<size_t>(span.first_cell + span.n_cells - 1)];
      const int32_t width = last_pos - first_pos + 1;
      placed.push_back({*it, (end - width) - first_pos, 0});
      end -= width;
    }
    std::reverse(placed.begin(), placed.end());
  }

 private:
  struct Chunk {
    int32_t first_cell = 0;
    int32_t n_cells = 0;
    std::vector<float> repr;  // [dk] the chunk's representation, positions from the chunk's start; empty = not yet
    std::vector<float> key_min, key_max;  // [dk] per-channel bounds of its keys, positions from the chunk's start
  };

  LongheadsPolicy(const LongheadsPolicy& other) = default;

  // Scores of the candidate chunks: the sum over the queries, without rotary embedding, of q . representation.
  std::vector<float> score_chunks(const PageQuery& query, const std::vector<int32_t>& candidates) const {
    const int32_t dk = query.dk;
    const RopeSpec& rope = context_.rope[static_cast<size_t>(query.il)];
    std::vector<float> unrotated(query.q, query.q + static_cast<int64_t>(query.n_q) * dk);  // [n_q, dk]
    std::vector<float> sum_q(static_cast<size_t>(dk), 0.0f);
    kernels::RopeAngles angles;
    for (int32_t i = 0; i < query.n_q; ++i) {
      float* q = unrotated.data() + static_cast<int64_t>(i) * dk;
      rotate_by(rope, -query.q_pos[i], q, 1, dk, angles);
      for (int32_t c = 0; c < dk; ++c) sum_q[static_cast<size_t>(c)] += q[c];
    }
    return heads_.with(query.il, query.kv_head, [&](std::vector<Chunk>& chunks) {
      std::vector<float> score(candidates.size());
      for (size_t i = 0; i < candidates.size(); ++i) {
        const Chunk& chunk = summarized_chunk(query, chunks, candidates[i]);
        if (options_.score_by_bound) {
          score[i] = page_key_bound(unrotated.data(), query.n_q, dk, chunk.key_min.data(), chunk.key_max.data(), 1);
          continue;
        }
        const std::vector<float>& repr = chunk.repr;
        float s = 0.0f;
        for (int32_t c = 0; c < dk; ++c) s += sum_q[static_cast<size_t>(c)] * repr[static_cast<size_t>(c)];
        score[i] = s;
      }
      return score;
    });
  }

  // Page ip as a chunk, summarized once it is first a candidate (complete). Called with the head's lock held;
  // chunks: the (layer, KV head)'s, [pages seen].
  const Chunk& summarized_chunk(const PageQuery& query, std::vector<Chunk>& chunks, int32_t ip) const {
    const KvCache::PageSpan span = query.cache.page_span(query.seq, query.il, ip);
    if (static_cast<int32_t>(chunks.size()) <= ip) chunks.resize(static_cast<size_t>(ip) + 1);
    Chunk& chunk = chunks[static_cast<size_t>(ip)];
    if (!chunk.repr.empty() && chunk.first_cell == span.first_cell && chunk.n_cells == span.n_cells) return chunk;
    const int32_t dk = query.dk, n = span.n_cells;
    // The chunk's keys [n, dk], turned back by the chunk's first position: positions from the chunk's start.
    std::vector<float> keys = page_keys(query, ip);  // [n, dk]
    const RopeSpec& rope = context_.rope[static_cast<size_t>(query.il)];
    kernels::RopeAngles angles;
    rotate_by(rope, -query.cache.positions(query.seq, query.il)[static_cast<size_t>(span.first_cell)], keys.data(), n,
              dk, angles);
    std::vector<float> mean(static_cast<size_t>(dk), 0.0f);
    for (int32_t j = 0; j < n; ++j)
      for (int32_t c = 0; c < dk; ++c)
        mean[static_cast<size_t>(c)] += keys[static_cast<size_t>(j) * dk + c] / static_cast<float>(n);
    // Softmax weights of the keys against the mean, then the weighted mean of the keys.
    std::vector<float> w(static_cast<size_t>(n));
    const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
    float w_max = -INFINITY;
    for (int32_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int32_t c = 0; c < dk; ++c) s += mean[static_cast<size_t>(c)] * keys[static_cast<size_t>(j) * dk + c];
      w[static_cast<size_t>(j)] = s * scale;
      w_max = std::max(w_max, w[static_cast<size_t>(j)]);
    }
    float w_sum = 0.0f;
    for (float& x : w) w_sum += (x = std::exp(x - w_max));
    chunk.repr.assign(static_cast<size_t>(dk), 0.0f);
    for (int32_t j = 0; j < n; ++j)
      for (int32_t c = 0; c < dk; ++c)
        chunk.repr[static_cast<size_t>(c)] += w[static_cast<size_t>(j)] / w_sum * keys[static_cast<size_t>(j) * dk + c];
    key_bounds(keys, n, dk, chunk.key_min, chunk.key_max);
    chunk.first_cell = span.first_cell;
    chunk.n_cells = span.n_cells;
    return chunk;
  }

  LongheadsOptions options_;
  PerHeadState<std::vector<Chunk>> heads_;  // per (layer, KV head): each page's chunk representation
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_longheads_policy(const KvPolicyContext& context, PolicyParams& params) {
  LongheadsOptions o;
  o.span = params.get_int("span", o.span, 1, kMaxParamCount, "tokens each head reads, within the trained context");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, the chunk");
  o.score_by_bound = params.get_word("score", "bound", {"bound", "repr"},
                                     "chunks scored by Quest's bound, or by their representation") == "bound";
  if (Status st = params.refusal(); !st.is_ok()) return st;
  if (o.span < 4 * o.page_tokens)
    return Status::error("longheads: span=" + std::to_string(o.span) + " is less than 4 chunks (page=" +
                         std::to_string(o.page_tokens) + " tokens): the first, the local two and one chosen");
  return std::unique_ptr<KvPolicy>(new LongheadsPolicy(context, o));
}

}  // namespace longhaul::kv
