// snapkv: SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before
// Generation"). Compresses a prompt once, after its prefill: the last w prompt tokens
// (the observation window) vote with their attention for the earlier positions; the
// votes are smoothed by average pooling (kernel k, zero padding, divided by k, as
// torch's avg_pool1d does) so that neighbours of important tokens survive with them;
// the B - w best-voted positions plus the window itself are kept. Generated tokens are
// then appended without eviction, so memory is B + generated tokens.
//
// A "prompt" is a feed() of more than one token; compression happens before the first
// step of the next feed, when the cache holds more than B cells. As in the paper, each
// KV head keeps its own positions (votes summed over the query heads that share it;
// KvCache::retain_cells_per_head). Deviations forced by the cache layout: a layer with a
// sliding window (Gemma 3's local layers), whose mask needs each cell's exact position,
// and quantized storage (bits=8|4), whose cells cannot leave their key groups, keep
// one set per layer chosen by the votes summed over its heads; and only the attention
// rows of the prompt's last step are seen, so with a last step shorter than w the
// window is that step.
#include <algorithm>

#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {


class SnapKvPolicy final : public KvPolicy {
 public:
  SnapKvPolicy(const KvPolicyContext& context, int32_t budget, int32_t window, int32_t kernel, bool per_head)
      : KvPolicy(context),
        budget_(budget),
        window_(window),
        kernel_(kernel),
        per_head_(per_head),
        votes_(context.shape.n_layer * context.shape.n_head_kv) {}

  // No state indexed by sequence: a copy carries on for the forked sequence.
  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override { return std::unique_ptr<KvPolicy>(new SnapKvPolicy(*this)); }
  std::string name() const override { return "snapkv"; }
  std::string describe() const override {
    return "snapkv(budget=" + std::to_string(budget_) + ", obs=" + std::to_string(window_) +
           ", pool=" + std::to_string(kernel_) + describe_select(per_head_) + ")";
  }
  int32_t max_cells() const override { return 0; }
  bool needs_scores() const override { return true; }
  bool wants_scores(int32_t query_position) const override { return query_position >= first_voter_; }

  EvictionPlan plan_eviction(const KvCache& cache, SeqId seq, const StepInfo& next) const override {
    EvictionPlan plan;
    const int32_t n = cache.n_cells(seq, 0);
    if (!next.starts_feed || feed_tokens_ <= 1 || n <= budget_) return plan;
    // The observation window: the cells of the last step's voting queries (always kept).
    const int32_t n_window = std::min({window_, n_observed_, budget_});
    const int32_t n_prefix = n - n_window;
    return plan_from_head_scores(cache, seq, votes_, n, per_head_, [&](const std::vector<float>& votes) {
      std::vector<int32_t> keep = top_cells(pool(votes, n_prefix), 0, n_prefix, budget_ - n_window);
      for (int32_t c = n_prefix; c < n; ++c) keep.push_back(c);
      return keep;
    });
  }

  void begin_step(SeqId, const StepInfo& next) override {
    feed_tokens_ = next.starts_feed ? next.n_tokens : feed_tokens_ + next.n_tokens;
    // Only the last step of a feed matters; every step starts a fresh vote.
    const int32_t end = next.first_position + next.n_tokens;
    first_voter_ = end - std::min(window_, next.n_tokens);
    n_observed_ = end - first_voter_;
    for (int32_t i = 0; i < context_.shape.n_layer * context_.shape.n_head_kv; ++i) votes_.zero(i);
  }

  void observe_scores(SeqId, int32_t il, int32_t kv_head, int32_t query_position,
                      std::span<const float> probs) override {
    if (query_position >= first_voter_) votes_.accumulate(il * context_.shape.n_head_kv + kv_head, probs);
  }

  void truncate(KvCache&, SeqId, int32_t n_cells) override { votes_.truncate(n_cells); }

 protected:
  void after_retain(KvCache&, SeqId, int32_t il, std::span<const int32_t> keep) override {
    votes_.retain_rows(il * context_.shape.n_head_kv, context_.shape.n_head_kv, keep);
  }
  void after_retain_per_head(KvCache&, SeqId, int32_t il, std::span<const std::vector<int32_t>> keep) override {
    votes_.retain_rows(il * context_.shape.n_head_kv, keep);
  }

 private:

  // Average pooling over the first n_prefix votes (the window's own cells do not vote for each other).
  std::vector<float> pool(const std::vector<float>& votes, int32_t n_prefix) const {
    std::vector<float> out(static_cast<size_t>(n_prefix), 0.0f);
    const int32_t half = kernel_ / 2;
    for (int32_t c = 0; c < n_prefix; ++c) {
      double sum = 0.0;
      for (int32_t d = c - half; d <= c + half; ++d)
        if (d >= 0 && d < n_prefix) sum += votes[static_cast<size_t>(d)];
      out[static_cast<size_t>(c)] = static_cast<float>(sum / kernel_);
    }
    return out;
  }

 public:
  std::vector<double> statistics() const override {
    std::vector<double> s = votes_.values();
    s.insert(s.end(), {static_cast<double>(feed_tokens_), static_cast<double>(first_voter_),
                       static_cast<double>(n_observed_)});
    return s;
  }

 private:
  int32_t budget_;
  int32_t window_;
  int32_t kernel_;
  bool per_head_;             // each KV head keeps its own positions where the layer allows it
  int32_t feed_tokens_ = 0;   // tokens of the current (or last) feed
  int32_t first_voter_ = 0;   // position of the first voting query of the step
  int32_t n_observed_ = 0;    // voting queries of the step
  CellScores votes_;          // [n_layer * n_head_kv][n_cells] attention of the voters, summed per KV head
};

}  // namespace

namespace {

struct SnapKvOptions {
  int32_t budget = kDefaultKvBudget;  // B: cells a compressed prompt keeps per layer (window included)
  int32_t observation_window = 32;    // w: last prompt tokens whose attention votes (always kept), in [1, B)
  int32_t pool_kernel = 7;            // k: width of the average pooling over votes, odd (1 = off)
  bool select_per_head = true;        // each KV head keeps its own positions (the paper's rule), or the layer's
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_snapkv_policy(const KvPolicyContext& context, PolicyParams& params) {
  SnapKvOptions o;
  o.budget = read_budget(params);
  o.observation_window = params.get_int("obs", o.observation_window, 1, kMaxParamCount,
                                        "last prompt tokens whose attention votes, below the budget");
  o.pool_kernel = params.get_int("pool", o.pool_kernel, 1, 1025, "width of the vote pooling, odd; 1 = off");
  o.select_per_head = read_select_per_head(params);
  if (o.observation_window >= o.budget)
    return Status::error("snapkv: obs " + std::to_string(o.observation_window) + " must be below the budget " +
                         std::to_string(o.budget) + " (in '" + params.spec() + "')");
  if (o.pool_kernel % 2 == 0)
    return Status::error("snapkv: pool " + std::to_string(o.pool_kernel) + " must be odd (in '" + params.spec() + "')");
  return std::unique_ptr<KvPolicy>(
      new SnapKvPolicy(context, o.budget, o.observation_window, o.pool_kernel, o.select_per_head));
}

}  // namespace longhaul::kv
