// recycled: Recycled Attention (Xu, Goyal and Choi, 2024, "Recycled Attention: Efficient inference for
// long-context language models"). Every cell is kept, as under `full`; what changes is what a decode query reads.
// Consecutive tokens attend to much the same few context tokens, so the attention pattern of one step can stand in
// for the next ones: every `stride` decode steps one step attends to everything (a full step), and the steps in
// between (recycled steps) read only the tokens the last full step attended to most, plus the attention sinks,
// the local window and the tokens generated since (the paper appends those to its recycled cache).
//
// The paper gathers the top-K tokens of each head into a second, small cache. Here nothing is copied: each KV head
// reads the pages (KvPolicy::select_pages) that hold its most attended cells. A page's score is the largest
// attention one of its cells received at the last full step, and the `budget / page` best pages are read; walking
// the cells in order of attention and taking each one's page until the budget is full selects the same pages, so
// the pages read hold the top-K cells for the largest K that the budget allows. The attention a KV head's cell
// received is summed over the query heads of its GQA group, which read the same pages (the paper is written for
// multi-head attention).
//
// The scores come from the attention probabilities of the full step's last query (observe_scores): the last token
// of a prompt (a step with several queries always attends to everything, as the paper's prefill does), or the one
// token of a full decode step. Sliding-window layers read their window already and keep no scores.
#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kv/policies/page_selection.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

struct RecycledOptions {
  int32_t budget = kDefaultKvBudget;  // tokens' worth of pages a recycled step reads, besides those always read
  int32_t stride = 10;                // decode steps per full step: one full step, then stride - 1 recycled ones
  int32_t page_tokens = 32;           // cells per page: the unit of selection
  int32_t sink_tokens = kDefaultSinkTokens;  // pages holding positions < sink_tokens are always read
  int32_t window = 32;                // pages holding one of the last `window` cells are always read
  float top_p = 1.0f;                 // Twilight top-p over the selected pages' attention at the full step; 1 = off
};

class RecycledPolicy final : public KvPolicy {
 public:
  RecycledPolicy(KvPolicyContext context, const RecycledOptions& options)
      : KvPolicy(std::move(context)), options_(options), units_(n_units()) {
    for (auto& u : units_) u = std::make_unique<Unit>();
  }

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new RecycledPolicy(*this));
  }
  std::string name() const override { return "recycled"; }
  std::string describe() const override {
    return "recycled(budget=" + std::to_string(options_.budget) + ", stride=" + std::to_string(options_.stride) +
           ", page=" + std::to_string(options_.page_tokens) + ", sink=" + std::to_string(options_.sink_tokens) +
           ", window=" + std::to_string(options_.window) + describe_top_p(options_.top_p) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  bool needs_scores() const override { return true; }
  // Only a full step's last query is heard: the other steps' probabilities cover only the pages they read.
  bool wants_scores(int32_t query_position) const override { return full_step_ && query_position == scored_position_; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  void begin_step(SeqId, const StepInfo& next) override {
    // A step of several tokens (a prompt chunk, an accepted draft fed again) attends to everything; so does the
    // first decode step with no full step behind it, and every stride-th one.
    full_step_ = next.n_tokens > 1 || !scored_ || n_recycled_ + 1 >= options_.stride;
    if (!full_step_) {
      ++n_recycled_;
      return;
    }
    n_recycled_ = 0;
    scored_ = true;
    scored_position_ = next.first_position + next.n_tokens - 1;
    // Between steps: no attention thread runs, the units need no lock.
    for (auto& u : units_) u->scores.clear();
  }

  void observe_scores(SeqId, int32_t il, int32_t kv_head, int32_t, std::span<const float> probs) override {
    if (layer_window(il) > 0) return;
    Unit& u = unit(il, kv_head);
    std::lock_guard<std::mutex> lock(u.mutex);
    if (u.scores.size() < probs.size()) u.scores.resize(probs.size(), 0.0);
    for (size_t c = 0; c < probs.size(); ++c) u.scores[c] += probs[c];
  }

  void truncate(KvCache&, SeqId, int32_t n_cells) override {
    // A cut into the cells the last full step saw removes that step's query too: the next step attends fully.
    // (A rejected draft cuts only cells appended after it, and changes nothing.)
    for (auto& u : units_) {
      std::lock_guard<std::mutex> lock(u->mutex);
      if (u->scores.size() > static_cast<size_t>(n_cells)) {
        u->scores.resize(static_cast<size_t>(n_cells));
        scored_ = false;
      }
    }
    if (n_cells == 0) scored_ = false;
  }

  void select_pages(const PageQuery& query, std::vector<int32_t>& pages) const override {
    const KvCache& cache = query.cache;
    select_every_page(cache.n_pages(query.seq, query.il), pages);
    if (full_step_ || layer_window(query.il) > 0 || !is_decode_query(query)) return;
    Unit& u = unit(query.il, query.kv_head);
    std::lock_guard<std::mutex> lock(u.mutex);
    const auto n_scored = static_cast<int32_t>(u.scores.size());
    // Cells the last full step did not see (generated since) are always read, as the local window is.
    const int32_t first_local = std::min(cache.n_cells(query.seq, query.il) - options_.window, n_scored);
    classify_pages(cache, query.seq, query.il, options_.sink_tokens, first_local, u.layout);
    const int32_t n_select = options_.budget / options_.page_tokens;
    const TopPPruning top_p{options_.top_p, {}};
    if (u.layout.n_candidates <= n_select && !top_p.active()) return;  // the budget covers every page
    u.page_score.assign(u.layout.spans.size(), 0.0f);
    // Top-p's estimate of a page's attention mass is the attention its cells received at the full step: measured,
    // not estimated from keys, and as stale as the selection itself.
    u.mass.assign(u.layout.spans.size(), 0.0f);
    for (size_t ip = 0; ip < u.layout.spans.size(); ++ip) {
      if (u.layout.always[ip]) continue;
      const KvCache::PageSpan& span = u.layout.spans[ip];
      // Candidates end before first_local <= n_scored: every cell of theirs has a score.
      double best = 0.0, sum = 0.0;
      for (int32_t c = span.first_cell; c < span.first_cell + span.n_cells; ++c) {
        best = std::max(best, u.scores[static_cast<size_t>(c)]);
        sum += u.scores[static_cast<size_t>(c)];
      }
      u.page_score[ip] = static_cast<float>(best);
      u.mass[ip] = static_cast<float>(sum);
    }
    select_top_pages(u.page_score, u.layout.always, n_select, pages, u.ranked, top_p.with_mass(u.mass));
  }

  // Per (layer, KV head): the number of scored cells and their scores; then the schedule.
  std::vector<double> statistics() const override {
    std::vector<double> out;
    for (const auto& u : units_) {
      std::lock_guard<std::mutex> lock(u->mutex);
      out.push_back(static_cast<double>(u->scores.size()));
      out.insert(out.end(), u->scores.begin(), u->scores.end());
    }
    out.push_back(full_step_);
    out.push_back(scored_);
    out.push_back(n_recycled_);
    out.push_back(scored_position_);
    return out;
  }

 private:
  // One (layer, KV head).
  struct Unit {
    std::mutex mutex;
    // [n_cells seen by the last full step] the attention its last query gave each cell, summed over the group.
    std::vector<double> scores;
    // Scratch of select_pages, reused from step to step.
    PageCandidates layout;
    std::vector<float> page_score;  // [n_pages]
    std::vector<float> mass;        // [n_pages] attention the full step gave each page (top-p)
    std::vector<std::pair<float, int32_t>> ranked;
  };

  RecycledPolicy(const RecycledPolicy& other)
      : KvPolicy(other),
        options_(other.options_),
        units_(other.units_.size()),
        full_step_(other.full_step_),
        scored_(other.scored_),
        n_recycled_(other.n_recycled_),
        scored_position_(other.scored_position_) {
    for (size_t i = 0; i < units_.size(); ++i) {
      units_[i] = std::make_unique<Unit>();
      std::lock_guard<std::mutex> lock(other.units_[i]->mutex);
      units_[i]->scores = other.units_[i]->scores;
    }
  }

  size_t n_units() const {
    return static_cast<size_t>(context_.shape.n_layer) * static_cast<size_t>(context_.shape.n_head_kv);
  }
  Unit& unit(int32_t il, int32_t kv_head) const {
    return *units_[static_cast<size_t>(il) * static_cast<size_t>(context_.shape.n_head_kv) +
                   static_cast<size_t>(kv_head)];
  }

  RecycledOptions options_;
  // [n_layer * n_head_kv]; select_pages (const) and observe_scores run on the attention threads, one (layer, KV
  // head) per call: each unit has its own mutex.
  mutable std::vector<std::unique_ptr<Unit>> units_;
  // The schedule, set by begin_step between steps and only read during one.
  bool full_step_ = true;        // this step attends to everything and its last query is scored
  bool scored_ = false;          // a full step's scores are held
  int32_t n_recycled_ = 0;       // recycled steps since the last full one
  int32_t scored_position_ = 0;  // position of the query a full step scores
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_recycled_policy(const KvPolicyContext& context, PolicyParams& params) {
  RecycledOptions o;
  o.budget = params.get_int("budget", o.budget, 1, kMaxParamCount, "tokens of the most attended pages a recycled step reads");
  o.stride = params.get_int("stride", o.stride, 1, kMaxParamCount, "decode steps per full-attention step; 1 = full");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page, the unit of selection");
  o.sink_tokens = read_sink_tokens(params);
  o.window = params.get_int("window", o.window, 0, kMaxParamCount, "most recent tokens always read");
  o.top_p = read_top_p(params);
  if (Status st = params.refusal(); !st.is_ok()) return st;
  LH_RETURN_IF_ERROR(check_page_budget("recycled", o.budget, o.page_tokens));
  return std::unique_ptr<KvPolicy>(new RecycledPolicy(context, o));
}

}  // namespace longhaul::kv
