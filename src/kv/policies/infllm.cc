// infllm: InfLLM (Xiao et al., 2024, "InfLLM: Training-Free Long-Context Extrapolation for LLMs with an Efficient
// Context Memory"). Every cell is kept; what changes is what a query reads and where it sees it. Each query attends
//   - to its local window (the last `window` positions) at the true distances, and
//   - to a context memory of everything behind that window: the initial tokens, the pages just behind the window
//     (InfLLM's "remainder", not yet a full memory block), and the `budget / page` memory blocks (pages wholly
//     behind every query's window) most relevant to the query,
// with every memory key seen at the window's distance. No query-key distance then exceeds window + page, so a model
// reads contexts far past the length it was trained at.
//
// Relevance: each memory block is represented by the mean of its `repr` keys that received the most attention
// while they were in some query's local window (InfLLM's representative tokens), taken without their rotary
// embedding. A block's score is that representative against the mean of the block of queries, each rotated to the
// window's distance: the score the representative would get sitting where the memory sits.
//
// Positions: InfLLM gives every memory token the same position, the window's edge, which needs each key without its
// rotary embedding. The cache stores rotated keys, and un-rotating every memory key at every step would cost more
// than the attention itself; instead each memory page is placed whole (KvPolicy::PagePlacement) so that its last
// key sits at the window's edge and its other keys follow in their order: distances window .. window + page - 1
// instead of window for all. The memory pages overlap there, as in InfLLM.
//
// GQA: InfLLM selects one set of blocks per layer from the mean of every head; here each KV head selects its own
// from its group's queries (finer, and the attention plan reads pages per KV head anyway), and the attention its
// cells received is summed over the group.
//
// The first tokens of a prompt shorter than the window see everything at true distances: infllm is then `full`.
#include <algorithm>
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

struct InfllmOptions {
  int32_t window = 4096;      // local window (InfLLM's n_local) at true distances
  int32_t budget = 2048;      // tokens of memory blocks each query reads (InfLLM: topk 16 x block 128)
  int32_t page_tokens = 128;  // cells per page = memory block (InfLLM's block_size)
  int32_t sink_tokens = 128;  // initial tokens always read from memory (InfLLM's n_init)
  int32_t repr = 4;           // representative tokens per block (InfLLM's repr_topk)
  // Queries heard for the representatives' local attention: one position in `listen` (those at p % listen ==
  // listen - 1, and every decode query). InfLLM hears every query; the probability pass that hears them costs as
  // much again as the attention of a long prompt, and one query in 8 still ranks a block's tokens.
  int32_t listen = 8;
  // How memory blocks are scored: by Quest's bound over every key of the block as it is placed (Tang et al., 2024:
  // sum_c max(q_c min_c, q_c max_c) >= q . k for each of its keys), or by their representatives (InfLLM's). The
  // bound is the default: on SmolLM2 the representatives miss the passkey's block (docs/long-context.md).
  bool score_by_bound = true;
};

class InfllmPolicy final : public KvPolicy {
 public:
  InfllmPolicy(KvPolicyContext context, const InfllmOptions& options)
      : KvPolicy(std::move(context)), options_(options), heads_(context_.shape) {}

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new InfllmPolicy(*this));
  }
  std::string name() const override { return "infllm"; }
  std::string describe() const override {
    return "infllm(window=" + std::to_string(options_.window) + ", budget=" + std::to_string(options_.budget) +
           ", page=" + std::to_string(options_.page_tokens) + ", sink=" + std::to_string(options_.sink_tokens) +
           ", repr=" + std::to_string(options_.repr) + ", listen=" + std::to_string(options_.listen) +
           (options_.score_by_bound ? "" : ", score=repr") + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  bool places_pages() const override { return true; }
  // Only the representatives need the local attention; the bound reads the keys alone.
  bool needs_scores() const override { return !options_.score_by_bound; }
  bool wants_scores(int32_t query_position) const override {
    return decode_step_ || query_position % options_.listen == options_.listen - 1;
  }
  void begin_step(SeqId, const StepInfo& next) override { decode_step_ = next.n_tokens == 1; }
  // The local window at true distances: the rest is read placed.
  bool has_head_spans() const override { return true; }
  HeadSpan head_span(int32_t il, int32_t) const override {
    return layer_window(il) > 0 ? HeadSpan{} : HeadSpan{0, options_.window};
  }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  // Attention a cell receives from the queries whose local window holds it. Cells are positions (infllm never
  // evicts), so the window of the query at p is cells p - window + 1 .. p.
  void observe_scores(SeqId, int32_t il, int32_t kv_head, int32_t query_position,
                      std::span<const float> probs) override {
    if (layer_window(il) > 0) return;
    const auto n = static_cast<int32_t>(probs.size());
    const int32_t begin = std::max(0, query_position - options_.window + 1), end = std::min(n, query_position + 1);
    heads_.with(il, kv_head, [&](HeadState& head) {
      if (static_cast<int32_t>(head.local_score.size()) < n) head.local_score.resize(static_cast<size_t>(n), 0.0);
      for (int32_t c = begin; c < end; ++c) head.local_score[static_cast<size_t>(c)] += probs[static_cast<size_t>(c)];
      return 0;
    });
  }

  void truncate(KvCache&, SeqId, int32_t n_cells) override {
    heads_.for_each([&](HeadState& head) {
      if (static_cast<int32_t>(head.local_score.size()) > n_cells)
        head.local_score.resize(static_cast<size_t>(n_cells));
      // A block whose span changed is represented again (its span is checked); drop those past the cut now.
      for (Block& b : head.blocks)
        if (b.first_cell + b.n_cells > n_cells) b.repr.clear();
    });
  }

  void select_placed_pages(const PageQuery& query, std::vector<int32_t>& pages,
                           std::vector<PagePlacement>& placed) const override {
    placed.clear();
    const KvCache& cache = query.cache;
    const int32_t n_pages = cache.n_pages(query.seq, query.il);
    const auto [q_first, q_last] = query_span(query);
    const int32_t window = options_.window;
    // A sliding-window layer reads its window already; a step whose queries all see position 0 in their window
    // reads everything at true distances.
    if (layer_window(query.il) > 0 || q_last - window < 0) {
      select_every_page(n_pages, pages);
      return;
    }
    const int32_t near_after = q_first - window;  // cells at positions > near_after are in some query's window
    const int32_t far_upto = q_last - window;     // cells at positions <= far_upto are behind some query's window
    const std::span<const int32_t> positions = cache.positions(query.seq, query.il);
    pages.clear();
    std::vector<int32_t> memory;  // candidate blocks
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      const KvCache::PageSpan span = cache.page_span(query.seq, query.il, ip);
      if (span.n_cells == 0) continue;
      const int32_t first_pos = positions[static_cast<size_t>(span.first_cell)];
      const int32_t last_pos = positions[static_cast<size_t>(span.first_cell + span.n_cells - 1)];
      const bool near = last_pos > near_after;
      if (near) pages.push_back(ip);
      if (first_pos > far_upto) continue;
      if (near || first_pos < options_.sink_tokens) {
        placed.push_back(placement(ip, last_pos, near_after));  // initial tokens and the remainder: always
      } else {
        memory.push_back(ip);
      }
    }
    const int32_t n_select = options_.budget / options_.page_tokens;
    if (static_cast<int32_t>(memory.size()) > n_select) {
      const std::vector<float> score = score_blocks(query, memory);
      std::vector<std::pair<float, int32_t>> ranked;  // (-score, page): ascending = best first, ties to the earlier
      for (size_t i = 0; i < memory.size(); ++i) ranked.emplace_back(-score[i], memory[i]);
      std::partial_sort(ranked.begin(), ranked.begin() + n_select, ranked.end());
      memory.clear();
      for (int32_t i = 0; i < n_select; ++i) memory.push_back(ranked[static_cast<size_t>(i)].second);
    }
    for (int32_t ip : memory) {
      const KvCache::PageSpan span = cache.page_span(query.seq, query.il, ip);
      placed.push_back(placement(ip, positions[static_cast<size_t>(span.first_cell + span.n_cells - 1)], near_after));
    }
    std::sort(placed.begin(), placed.end(),
              [](const PagePlacement& a, const PagePlacement& b) { return a.page < b.page; });
  }

  std::vector<double> statistics() const override {
    std::vector<double> out;
    heads_.for_each([&](const HeadState& head) {
      out.push_back(static_cast<double>(head.local_score.size()));
      out.insert(out.end(), head.local_score.begin(), head.local_score.end());
    });
    return out;
  }

 private:
  // One memory block's representative, per (layer, KV head) and page.
  struct Block {
    int32_t first_cell = 0;
    int32_t n_cells = 0;
    std::vector<float> repr;  // [dk] mean of the representative keys without rotary embedding; empty = not yet
    // [dk] per-channel min / max of the block's keys rotated as if its last key sat at position 0: where a
    // placement puts them, up to the distance of the window's edge
    std::vector<float> key_min, key_max;
  };
  struct HeadState {  // one (layer, KV head)
    // [cells seen] attention received within local windows, summed in double: the query heads of a group add in
    // the threads' order, and a fork must go on exactly as its parent
    std::vector<double> local_score;
    std::vector<Block> blocks;  // [pages seen]
  };

  InfllmPolicy(const InfllmPolicy& other) = default;

  // The page placed so that its last key sits at the window's edge for the step's first query (a page whose keys
  // reach into the window already stays where it is: its far keys are just behind the edge).
  PagePlacement placement(int32_t page, int32_t last_pos, int32_t near_after) const {
    return {page, std::max(0, near_after - last_pos), options_.window};
  }

  // Scores of the candidate blocks `memory` for the query block. By representative: the representative against
  // the mean of the queries, each turned to the window's distance (InfLLM gives its memory lookup the window's
  // position). By bound: the largest bound over the queries, turned so that a block's keys, rotated with its last
  // key at 0, sit where the placement puts them for the block's first query.
  std::vector<float> score_blocks(const PageQuery& query, const std::vector<int32_t>& memory) const {
    const int32_t dk = query.dk;
    const RopeSpec& rope = context_.rope[static_cast<size_t>(query.il)];
    const int32_t q_first = query_span(query).first;
    std::vector<float> turned(query.q, query.q + static_cast<int64_t>(query.n_q) * dk);  // [n_q, dk]
    std::vector<float> mean_q(static_cast<size_t>(dk), 0.0f);
    kernels::RopeAngles angles;
    for (int32_t i = 0; i < query.n_q; ++i) {
      float* q = turned.data() + static_cast<int64_t>(i) * dk;
      rotate_by(rope, options_.window - (options_.score_by_bound ? q_first : query.q_pos[i]), q, 1, dk, angles);
      for (int32_t c = 0; c < dk; ++c) mean_q[static_cast<size_t>(c)] += q[c] / static_cast<float>(query.n_q);
    }
    return heads_.with(query.il, query.kv_head, [&](HeadState& head) {
      std::vector<float> score(memory.size());
      for (size_t i = 0; i < memory.size(); ++i) {
        const Block& block = summarized_block(query, head, memory[i]);
        if (options_.score_by_bound) {
          score[i] = page_key_bound(turned.data(), query.n_q, dk, block.key_min.data(), block.key_max.data(), 1);
          continue;
        }
        float s = 0.0f;
        for (int32_t c = 0; c < dk; ++c) s += mean_q[static_cast<size_t>(c)] * block.repr[static_cast<size_t>(c)];
        score[i] = s;
      }
      return score;
    });
  }

  // Page ip of the query's (layer, KV head) as a memory block, summarized the first time it is needed (the block
  // is then behind every window: its local attention is complete). Called with the head's lock held.
  const Block& summarized_block(const PageQuery& query, HeadState& head, int32_t ip) const {
    const KvCache::PageSpan span = query.cache.page_span(query.seq, query.il, ip);
    if (static_cast<int32_t>(head.blocks.size()) <= ip) head.blocks.resize(static_cast<size_t>(ip) + 1);
    Block& block = head.blocks[static_cast<size_t>(ip)];
    if (!block.repr.empty() && block.first_cell == span.first_cell && block.n_cells == span.n_cells) return block;
    const int32_t dk = query.dk, n = span.n_cells;
    const RopeSpec& rope = context_.rope[static_cast<size_t>(query.il)];
    const std::span<const int32_t> positions = query.cache.positions(query.seq, query.il);
    std::vector<float> keys = page_keys(query, ip);  // [n, dk]
    kernels::RopeAngles angles;
    // Representative: the mean of the repr keys with the most local attention (ties to the earlier cell), each
    // without its rotation.
    std::vector<std::pair<double, int32_t>> ranked;
    for (int32_t j = 0; j < n; ++j) {
      const auto c = static_cast<size_t>(span.first_cell + j);
      ranked.emplace_back(c < head.local_score.size() ? -head.local_score[c] : 0.0, j);
    }
    const int32_t n_repr = std::min(options_.repr, n);
    std::partial_sort(ranked.begin(), ranked.begin() + n_repr, ranked.end());
    block.repr.assign(static_cast<size_t>(dk), 0.0f);
    std::vector<float> key(static_cast<size_t>(dk));
    for (int32_t r = 0; r < n_repr; ++r) {
      const int32_t j = ranked[static_cast<size_t>(r)].second;
      std::copy_n(keys.data() + static_cast<int64_t>(j) * dk, dk, key.data());
      rotate_by(rope, -positions[static_cast<size_t>(span.first_cell + j)], key.data(), 1, dk, angles);
      for (int32_t c = 0; c < dk; ++c)
        block.repr[static_cast<size_t>(c)] += key[static_cast<size_t>(c)] / static_cast<float>(n_repr);
    }
    // Bounds of every key, turned back by the block's last position.
    rotate_by(rope, -positions[static_cast<size_t>(span.first_cell + n - 1)], keys.data(), n, dk, angles);
    key_bounds(keys, n, dk, block.key_min, block.key_max);
    block.first_cell = span.first_cell;
    block.n_cells = span.n_cells;
    return block;
  }

  InfllmOptions options_;
  PerHeadState<HeadState> heads_;
  bool decode_step_ = false;  // the current step brings one token
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_infllm_policy(const KvPolicyContext& context, PolicyParams& params) {
  InfllmOptions o;
  o.window = params.get_int("window", o.window, 1, kMaxParamCount, "local window read at true distances");
  o.budget = params.get_int("budget", o.budget, 1, kMaxParamCount, "tokens of memory blocks each query reads");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, the memory block");
  o.sink_tokens = params.get_int("sink", o.sink_tokens, 0, kMaxParamCount, "initial tokens always read from memory");
  o.repr = params.get_int("repr", o.repr, 1, 4096, "representative tokens per memory block");
  o.listen =
      params.get_int("listen", o.listen, 1, 4096, "one prompt position in N adds to the representatives' scores");
  o.score_by_bound = params.get_word("score", "bound", {"bound", "repr"},
                                     "memory blocks scored by Quest's bound, or by representative tokens") == "bound";
  if (Status st = params.refusal(); !st.is_ok()) return st;
  if (o.budget < o.page_tokens)
    return Status::error("infllm: budget=" + std::to_string(o.budget) + " is less than one page (page=" +
                         std::to_string(o.page_tokens) + " tokens)");
  if (o.repr > o.page_tokens)
    return Status::error("infllm: repr=" + std::to_string(o.repr) + " exceeds the page's " +
                         std::to_string(o.page_tokens) + " tokens");
  return std::unique_ptr<KvPolicy>(new InfllmPolicy(context, o));
}

}  // namespace longhaul::kv
