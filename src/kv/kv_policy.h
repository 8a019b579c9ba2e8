// KvPolicy: what the KV cache keeps when a conversation outgrows its budget.
//
// A policy is one object per sequence (each sequence of an engine has its own, with its own statistics and
// parameters) and decides, between
// forward steps, which cells of each layer survive. It never runs inside a step
// except to observe attention probabilities (observe_scores), which policies
// ranking cells by attention (H2O, A2SF, TOVA, SnapKV) accumulate.
//
// Protocol, per sequence, as the Session drives it:
//   1. plan_eviction(cache, seq, next)   const: which cells each layer keeps so that
//                                        the next step's tokens fit. Changes nothing.
//   2. apply_eviction(plan, cache, seq)  THE ONE CALL THAT MUTATES: retains the planned
//                                        cells in the cache, compacts the policy's
//                                        per-cell statistics the same way, and re-positions
//                                        keys if the policy does that (StreamingLLM).
//   3. begin_step(seq, next)             announces the step's query positions (for
//                                        policies that only listen to some queries).
//   4. Model::forward(...)               appends the step's cells; during it,
//                                        observe_scores(...) is called from worker threads
//                                        and observe_queries(...) from the step's thread.
// Step 2 is skipped when the plan changes nothing (plan.changes() == false).
// When the Session rewinds (reset, chat truncation) the cache is cut first, then
// truncate(cache, seq, n_cells) lets the policy drop its state past the cut.
//
// Cells of a layer stay in position order (eviction keeps order, appends come last),
// and every layer holds the same number of cells (plans keep a count that depends
// only on the cell count and the incoming tokens), because the model appends a
// token at the same cell index in every layer.
//
// Adding a policy: one file in kv/policies/<name>.cc defining its options struct and a factory that reads them
// from a PolicyParams (kv/policy_params.h), plus one line in kv/policy_registry.cc.
//
// Thread-safety: plan/apply/begin_step/truncate run on the Session's thread between
// steps. observe_scores may be called concurrently from the attention threads of a
// step, for any (layer, kv_head); implementations synchronise internally.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"
#include "kv/kv_cache.h"

namespace longhaul::kv {

struct HeadProfile;  // kv/head_profile.h

// The budget of h2o, a2sf, tova and snapkv when none is given: the 1024 cells of the papers' own runs.
constexpr int32_t kDefaultKvBudget = 1024;

// Attention sinks kept by streaming, lm-infinite and duo when none are given, and the first cells every policy keeps
// in f16 under quantized storage: StreamingLLM (Xiao et al., 2023) found 4 start tokens enough to hold the sink.
constexpr int32_t kDefaultSinkTokens = 4;

// Rotary embedding of one layer, for policies that move keys to new positions.
struct RopeSpec {
  int32_t n_rot = 0;          // leading dims of each head that are rotated (0 = no RoPE)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;    // 1 = no position scaling
  kernels::RopeStyle style = kernels::RopeStyle::kNormal;
};

// What a policy knows about the model whose cache it manages.
// Model-level inputs live here, not in a policy's name:key=value parameters (a file path may hold ':').
struct KvPolicyContext {
  KvShape shape;
  std::vector<RopeSpec> rope;           // [n_layer]
  std::vector<int32_t> layer_window;    // [n_layer] the model's sliding window of each layer (0 = global attention)
  std::shared_ptr<const HeadProfile> head_profile;  // the model's head profile (duo reads it); null = none given
};

// The cells one KV head attends to, beyond causality and the layer's own sliding window: those at positions
// < n_sink (attention sinks) and those within `window` positions of the query (query - position < window).
// window = 0: every cell. DuoAttention (Xiao et al., 2024) gives its streaming heads such a span.
struct HeadSpan {
  int32_t n_sink = 0;
  int32_t window = 0;
};

// One head's rows of one page that a plan frees (KvCache::release_head_rows).
struct HeadRelease {
  int32_t il = 0;
  int32_t kv_head = 0;
  int32_t i_page = 0;
};

// The tokens the next step appends to one sequence.
struct StepInfo {
  int32_t first_position = 0;  // position of the first new token
  int32_t n_tokens = 0;        // new tokens (cells) in this step
  bool starts_feed = false;    // true when this step begins a new feed() (the previous feed is complete)
};

// Cells each layer keeps; indices ascending, the same count in every layer. A layer may instead keep a different
// set of cells per KV head (head_keep, KvCache::retain_cells_per_head; SnapKV). And head rows to free, for
// policies that retain per head (duo): those pages are released after the cells are retained.
struct EvictionPlan {
  bool evict = false;                     // false: keep every cell
  std::vector<std::vector<int32_t>> keep;  // [n_layer][n_keep] when evict (ignored for a layer with head_keep)
  // Empty, or [n_layer] with, per layer, nothing (the layer keeps `keep`) or [n_head_kv][n_keep] cells per head.
  std::vector<std::vector<std::vector<int32_t>>> head_keep;
  std::vector<HeadRelease> release;       // head rows to free (indices of pages after the retention)
  bool changes() const { return evict || !release.empty(); }
};

class CellScores;

class KvPolicy {
 public:
  explicit KvPolicy(KvPolicyContext context) : context_(std::move(context)) {}
  virtual ~KvPolicy() = default;
  KvPolicy& operator=(const KvPolicy&) = delete;

  // The policy of sequence `to`, forked from sequence `from` (KvCache::fork_sequence gave `to` from's cells): the
  // same parameters and a copy of from's state, so both go on as from would have alone. Null: this policy cannot
  // fork (the engine then refuses the fork).
  virtual std::unique_ptr<KvPolicy> fork(SeqId from, SeqId to) const {
    (void)from;
    (void)to;
    return nullptr;
  }

  // True when the cells a sequence holds after its first n tokens depend on those n tokens alone: the policy never
  // evicts, releases or re-positions a cell and keeps no state from the queries it heard, so a sequence cut to its
  // first n tokens (Engine::truncate) holds what a fresh one fed them would. Then a prefix may be shared across
  // requests (generate/prefix_cache.h). A sliding-window layer is no obstacle while every cell stays: its window
  // is a mask on positions (attention plan), not a cut of the cache. Under quantized storage the kept cells may be
  // quantized where a fresh sequence would still hold the newest `residual` in f16 — the same format those cells
  // reach after `residual` more tokens.
  virtual bool shares_prefix() const { return false; }

  virtual std::string name() const = 0;
  // One line naming the policy and its effective parameters, e.g. "streaming(sink=4, window=1020)".
  virtual std::string describe() const = 0;

  // Cells per sequence and layer the cache ever holds under this policy; 0 = the
  // policy does not bound memory and the context size applies.
  virtual int32_t max_cells() const = 0;
  // Most tokens one step may bring so the plan can still make room (0 = no limit).
  virtual int32_t max_step_tokens() const { return 0; }
  // True when the policy needs observe_scores during steps.
  virtual bool needs_scores() const { return false; }
  // True when the policy needs observe_queries during steps.
  virtual bool needs_queries() const { return false; }
  // With needs_scores: whether the query at `query_position` of the current step is observed at all. The
  // attention skips the probabilities of the others, which for a policy that listens to a few queries (SnapKV's
  // observation window) saves the quadratic second pass over a long prompt. Called from the attention threads
  // after begin_step; must not depend on anything observe_scores changes.
  virtual bool wants_scores(int32_t query_position) const {
    (void)query_position;
    return true;
  }
  // Bits per cell when the spec gives no bits= (read_kv_storage): 16 (f16) for every policy but kv-quant.
  virtual int32_t default_kv_bits() const { return 16; }
  // Refuses a cell storage the policy cannot use (kv-quant refuses f16, which would be the full policy).
  virtual Status check_storage(const KvQuantOptions& storage) const {
    (void)storage;
    return Status::ok();
  }
  // First cells of a sequence that quantized storage keeps in f16 (KvQuantOptions::f16_prefix): the attention
  // sinks, which streaming and lm-infinite re-write in place and so must stay f16, and which every other policy
  // keeps in f16 too because they draw much of the attention.
  virtual int32_t f16_prefix_tokens() const { return kDefaultSinkTokens; }
  // Cells per page the cache should use (0 = the cache's default). A per-head policy frees memory a page at a
  // time, so smaller pages track its windows more closely.
  virtual int32_t page_tokens() const { return 0; }
  // True when some heads attend to less than every cell (head_span); attention asks head_span per (layer, head).
  virtual bool has_head_spans() const { return false; }
  // The span of KV head kv_head of layer il. Constant for the policy's lifetime.
  virtual HeadSpan head_span(int32_t il, int32_t kv_head) const {
    (void)il;
    (void)kv_head;
    return {};
  }

  // Query-aware sparse attention: true when the policy picks, per step, the pages each KV head reads
  // (select_pages). Attention then reads only those (plus the pages of the step's own cells).
  virtual bool selects_pages() const { return false; }
  // The pages (ascending indices into the layer's pages) that KV head query.kv_head of layer query.il reads for
  // the queries of one block of the step. Called from the attention threads during a step, for any (layer, head):
  // must be thread-safe and must not change what observe_scores reads.
  struct PageQuery {
    const KvCache& cache;
    SeqId seq;
    int32_t il;
    int32_t kv_head;
    const float* q;        // [n_q, dk] the queries (after RoPE and the attention scale)
    const int32_t* q_pos;  // [n_q]
    int32_t n_q;
    int32_t dk;
  };
  virtual void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const {
    (void)query;
    pages.clear();
  }

  // A page read at positions other than its own. Policies that extend a model past the context it was trained at
  // (InfLLM, Xiao et al., 2024; LongHeads, Lu et al., 2024) show a query distant pages as if they were near, so that
  // no query-key distance exceeds what the model saw in training. The keys' rotary embedding is what moves
  // (the query is rotated by -shift for this page); the mask still reads true positions.
  struct PagePlacement {
    int32_t page = 0;
    int32_t shift = 0;         // keys read as if at their position + shift
    int32_t min_distance = 0;  // > 0: only keys at least this far behind the query (by true position) are visible
  };
  // True when the policy reads some pages at other positions (select_placed_pages returns placements).
  virtual bool places_pages() const { return false; }
  // What the attention plan asks of a policy that selects pages: `pages` (select_pages: read at their own
  // positions, under the layer's window and the head's span) and `placed` (read as placed; causal by true position
  // and the placement's min_distance, no window or span). A page may be in both, e.g. InfLLM's page at the edge of
  // the local window: its near cells at their own positions, its far ones placed. Same thread-safety as select_pages.
  // A policy that places pages overrides this instead of select_pages (the plan asks select_reads, below).
  virtual void select_placed_pages(const PageQuery& query, std::vector<int32_t>& pages,
                                   std::vector<PagePlacement>& placed) const {
    placed.clear();
    select_pages(query, pages);
  }

  // Everything one (block, KV head) reads: pages at their positions, placed pages, and single cells. Token-level
  // sparse attention (RetrievalAttention, Liu et al., 2024: the keys an index retrieves) reads `cells` (cell
  // indices, any order) at their own positions under the same rule as `pages`; the plan drops cells that lie in
  // `pages` (they are read there) and cells of the step itself. A policy's cells must not lie in its placed pages.
  struct PageReads {
    std::vector<int32_t> pages;
    std::vector<PagePlacement> placed;
    std::vector<int32_t> cells;
    int64_t scanned = 0;  // keys the policy's own search scored to choose (an index's distance computations)
  };
  // What the attention plan asks of a policy that selects pages; the default reads no single cells. A policy that
  // reads cells overrides this instead of select_placed_pages. Same thread-safety as select_pages.
  virtual void select_reads(const PageQuery& query, PageReads& reads) const {
    reads.cells.clear();
    select_placed_pages(query, reads.pages, reads.placed);
  }

  // The policy's statistics (per-cell scores and the like), flattened, for tests and introspection: two policies
  // that would make the same future decisions have equal statistics. Empty for a policy without state.
  virtual std::vector<double> statistics() const { return {}; }

  // Step 1: which cells to keep so that `next.n_tokens` more fit. Pure.
  virtual EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const = 0;

  // Step 2: the single mutating call. Retains plan.keep in every layer of the cache
  // and of the policy's per-cell statistics, then lets the policy fix up the survivors,
  // then frees plan.release.
  void apply_eviction(const EvictionPlan& plan, KvCache& cache, SeqId seq);

  // Step 3: the step's query positions are [next.first_position, + next.n_tokens).
  virtual void begin_step(SeqId seq, const StepInfo& next) {
    (void)seq;
    (void)next;
  }

  // During a step, from any thread: attention probabilities of one query head (of
  // the group sharing kv_head) at query_position over the layer's cells.
  //   probs: [n_cells] after softmax, 0 for masked cells; the step's new cells included.
  virtual void observe_scores(SeqId seq, int32_t il, int32_t kv_head, int32_t query_position,
                              std::span<const float> probs) {
    (void)seq;
    (void)il;
    (void)kv_head;
    (void)query_position;
    (void)probs;
  }

  // During a step, from the step's calling thread, once per (layer, token) in token order: the token's queries of
  // every query head, as attention reads them (after RoPE and the attention scale). Calibration reads them beside
  // the cached keys, to study attention rows it chooses (eval/prefill_calibration.h).
  //   q: [n_head, dk]
  virtual void observe_queries(SeqId seq, int32_t il, int32_t query_position, std::span<const float> q) {
    (void)seq;
    (void)il;
    (void)query_position;
    (void)q;
  }

  // The cache has just cut the sequence to its first n_cells cells (0 = cleared); per-cell
  // state past them is dropped.
  virtual void truncate(KvCache& cache, SeqId seq, int32_t n_cells) {
    (void)cache;
    (void)seq;
    (void)n_cells;
  }

  const KvPolicyContext& context() const { return context_; }

 protected:
  // Copies are made only by fork().
  KvPolicy(const KvPolicy&) = default;

  // The model's sliding window of layer il (0 = global attention).
  int32_t layer_window(int32_t il) const {
    const auto& w = context_.layer_window;
    return static_cast<size_t>(il) < w.size() ? w[static_cast<size_t>(il)] : 0;
  }
  // Whether layer il may keep its own cells per KV head (KvCache::retain_cells_per_head): f16 storage and no
  // sliding window, whose mask needs every cell's exact position.
  bool can_retain_per_head(const KvCache& cache, SeqId seq, int32_t il) const {
    return !cache.quantized(seq) && layer_window(il) == 0;
  }
  // An eviction plan for every layer from scores kept per (layer, KV head), row il * n_head_kv + h of `scores`:
  // each head keeps choose(its scores) where per_head and can_retain_per_head allow it, else every head of the
  // layer keeps choose(the layer's summed scores). choose maps a score row [n_cells] to ascending cells to keep.
  EvictionPlan plan_from_head_scores(const KvCache& cache, SeqId seq, const CellScores& scores, int32_t n_cells,
                                     bool per_head,
                                     const std::function<std::vector<int32_t>(const std::vector<float>&)>& choose) const;
  // ", select=layer" when a policy that can rank per head was asked to rank per layer, else "" (for describe()).
  static std::string describe_select(bool per_head) { return per_head ? "" : ", select=layer"; }

  // Called by apply_eviction after the cache retained `keep` in layer il.
  virtual void after_retain(KvCache& cache, SeqId seq, int32_t il, std::span<const int32_t> keep) {
    (void)cache;
    (void)seq;
    (void)il;
    (void)keep;
  }
  // Called instead when layer il kept cells per head (plan.head_keep): keep [n_head_kv][n_keep].
  virtual void after_retain_per_head(KvCache& cache, SeqId seq, int32_t il, std::span<const std::vector<int32_t>> keep) {
    (void)cache;
    (void)seq;
    (void)il;
    (void)keep;
  }

  KvPolicyContext context_;

 private:
  void retain(const EvictionPlan& plan, KvCache& cache, SeqId seq);
};

// Per-cell attention statistics shared by the score-based policies: one float per
// (sequence, row, cell), where a row is a layer or a (layer, KV head), summed over the query heads that observe it. Thread-safe
// accumulation (one mutex per layer); compaction follows retain_cells.
class CellScores {
 public:
  explicit CellScores(int32_t n_layer) : layers_(static_cast<size_t>(n_layer)) {}
  CellScores(const CellScores& other);
  CellScores& operator=(const CellScores&) = delete;

  // scores[c] += weight * probs[c] for c < probs.size(); cells past the stored ones start at 0.
  void accumulate(int32_t il, std::span<const float> probs, float weight = 1.0f);
  // Sets every stored score of layer il to 0 (keeps the size).
  void zero(int32_t il);
  // Multiplies every stored score of layer il by factor.
  void scale(int32_t il, float factor);
  void retain(int32_t il, std::span<const int32_t> keep);
  // Rows [first, first + count) keep the same cells, or row first + h keeps keep[h] (a per-head retention).
  void retain_rows(int32_t first, int32_t count, std::span<const int32_t> keep);
  void retain_rows(int32_t first, std::span<const std::vector<int32_t>> keep);
  // Drops the scores of cells >= n_cells in every layer.
  void truncate(int32_t n_cells);
  // Scores of layer il padded with zeros to n_cells.
  std::vector<float> get(int32_t il, int32_t n_cells) const;
  // Sum of get(i, n_cells) over i in [first, first + count): e.g. a layer's KV heads when scores are kept per head.
  std::vector<float> get_sum(int32_t first, int32_t count, int32_t n_cells) const;
  // Every row's stored scores, row after row, each preceded by its length (KvPolicy::statistics).
  std::vector<double> values() const;

 private:
  struct Layer {
    mutable std::mutex mutex;
    std::vector<double> sum;  // [n_cells seen]
  };
  std::vector<Layer> layers_;  // [n_layer]
};

// Indices (ascending) of the `n_keep` largest values of `score` among cells
// [begin, end), ties broken toward the older (smaller) index.
std::vector<int32_t> top_cells(std::span<const float> score, int32_t begin, int32_t end, int32_t n_keep);

}  // namespace longhaul::kv
