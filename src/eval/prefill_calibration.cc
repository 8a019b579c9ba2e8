#include "eval/prefill_calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "eval/passkey.h"
#include "generate/engine.h"
#include "model/sparse_prefill.h"

namespace longhaul::eval {
namespace {

constexpr int32_t kB = model::HeadSparseKeys::kBlock;
// Queries per sample: a 64-query block (block-sparse pools whole query blocks), and the paper's last 64 queries.
constexpr int32_t kSampleQueries = 64;
// Recalls this close count as a tie: they differ by the mass of keys nobody attends to.
constexpr double kRecallMargin = 1e-3;

// A full-attention policy that keeps, per layer, the queries of the sampled positions (observe_queries). Keeps
// every cell, so cell index == position.   queries_[il]: [n_samples * 64, n_head * dk]
class QueryRecorder final : public kv::KvPolicy {
 public:
  QueryRecorder(const kv::KvPolicyContext& context, int32_t n_layer, int32_t q_row, std::vector<int32_t> sample_starts,
                int32_t n_tokens)
      : kv::KvPolicy(context), q_row_(q_row), slot_of_position_(static_cast<size_t>(n_tokens), -1) {
    for (size_t s = 0; s < sample_starts.size(); ++s)
      for (int32_t i = 0; i < kSampleQueries; ++i)
        slot_of_position_[static_cast<size_t>(sample_starts[s] + i)] = static_cast<int32_t>(s) * kSampleQueries + i;
    queries_.assign(static_cast<size_t>(n_layer),
                    std::vector<float>(sample_starts.size() * kSampleQueries * static_cast<size_t>(q_row), 0.0f));
  }

  std::string name() const override { return "query-recorder"; }
  std::string describe() const override { return "query-recorder"; }
  int32_t max_cells() const override { return 0; }
  bool needs_queries() const override { return true; }
  kv::EvictionPlan plan_eviction(const kv::KvCache&, kv::SeqId, const kv::StepInfo&) const override { return {}; }

  void observe_queries(kv::SeqId, int32_t il, int32_t query_position, std::span<const float> q) override {
    if (query_position < 0 || static_cast<size_t>(query_position) >= slot_of_position_.size()) return;
    const int32_t slot = slot_of_position_[static_cast<size_t>(query_position)];
    if (slot < 0) return;
    std::copy(q.begin(), q.end(), queries_[static_cast<size_t>(il)].begin() + static_cast<int64_t>(slot) * q_row_);
  }

  // The query of sample row `slot` (sample * 64 + i) of layer il: [n_head * dk].
  const float* query(int32_t il, int32_t slot) const {
    return queries_[static_cast<size_t>(il)].data() + static_cast<int64_t>(slot) * q_row_;
  }

 private:
  int32_t q_row_;
  std::vector<int32_t> slot_of_position_;    // [n_tokens] sample row of each position, -1 = not sampled
  std::vector<std::vector<float>> queries_;  // [n_layer][n_samples * 64 * q_row]
};

// Starts of the sampled 64-query blocks of an n-token prompt: n_spread blocks evenly over the prompt before its
// last 64 queries (block-aligned, distinct), then n - 64 (the last 64 queries).
std::vector<int32_t> sample_starts(int32_t n, int32_t n_spread) {
  std::vector<int32_t> starts;
  const int32_t n_blocks_before = (n - kSampleQueries) / kB;  // whole blocks that end before the last 64 queries
  for (int32_t i = 0; i < n_spread && n_blocks_before > 0; ++i) {
    const auto b = static_cast<int32_t>((i + 0.5) * n_blocks_before / n_spread);
    if (starts.empty() || starts.back() != b * kB) starts.push_back(b * kB);
  }
  starts.push_back(n - kSampleQueries);
  return starts;
}

// The MInference candidates at `budget` keys per query, cheapest first (recall 0).
std::vector<PatternCandidate> candidate_list(int32_t budget) {
  std::vector<PatternCandidate> c = {{kv::PrefillPattern::kAShape, 0, 0.0}, {kv::PrefillPattern::kBlockSparse, 0, 0.0}};
  // Vertical-slash at a few splits of the same budget, as the reference searches (30 to 3500 columns).
  for (int32_t share : {32, 8, 2}) {
    const int32_t n_columns = model::vertical_slash_columns(budget, budget / share, budget);
    if (c.back().n_columns != n_columns) c.push_back({kv::PrefillPattern::kVerticalSlash, n_columns, 0.0});
  }
  return c;
}

// Adds the mass of each of the rows [n_q, n_k] (queries at first_pos + r) to MoA's block histogram: sink (key
// block 0) and by[d] for key block qb - d >= 1 of the row's query block qb.
void add_block_mass(const std::vector<float>& probs, int32_t first_pos, int32_t n_q, int32_t n_k, double& sink,
                    std::vector<double>& by_distance) {
  for (int32_t r = 0; r < n_q; ++r) {
    const int32_t q = first_pos + r, qb = q / kB;
    const float* row = probs.data() + static_cast<int64_t>(r) * n_k;
    for (int32_t kb = 0; kb <= qb; ++kb) {
      double m = 0.0;
      for (int32_t k = kb * kB; k <= std::min(q, kb * kB + kB - 1); ++k) m += row[k];
      if (kb == 0) {
        sink += m;
      } else {
        by_distance[static_cast<size_t>(qb - kb)] += m;
      }
    }
  }
}

std::string base_name(const std::string& path) { return path.substr(path.find_last_of('/') + 1); }

}  // namespace

HeadSearch search_head(std::span<const model::HeadQueriesKeys> samples, int32_t budget, SpanRecall* curve) {
  LH_CHECK(!samples.empty());
  HeadSearch out;
  out.candidates = candidate_list(budget);
  std::vector<PatternCandidate>& cands = out.candidates;
  const model::HeadQueriesKeys& last = samples.back();
  std::vector<float> last_probs, spread_probs;  // [64, n_k] attention rows of the last queries, of a spread sample
  model::last_query_attention(last, last.n_q, last_probs);
  std::vector<model::VerticalSlashLines> vertical_slash(cands.size());
  for (size_t c = 0; c < cands.size(); ++c)
    if (cands[c].pattern == kv::PrefillPattern::kVerticalSlash)
      vertical_slash[c] = model::select_vertical_slash(last, last_probs, last.n_q, cands[c].n_columns,
                                                       model::vertical_slash_blocks(budget, cands[c].n_columns));
  const int32_t n_blocks = std::max(2, budget / kB);
  double sink = 0.0;
  std::vector<double> by_distance(static_cast<size_t>(last.n_k / kB + 2), 0.0);
  int64_t n_rows = 0;
  model::HeadSparseKeys keys;
  for (size_t s = 0; s < samples.size(); ++s) {
    const model::HeadQueriesKeys& h = samples[s];
    const bool is_last = s + 1 == samples.size();
    if (!is_last) model::last_query_attention(h, h.n_q, spread_probs);
    const std::vector<float>& probs = is_last ? last_probs : spread_probs;
    add_block_mass(probs, h.first_pos, h.n_q, h.n_k, sink, by_distance);
    n_rows += h.n_q;
    // A sample none of whose queries sees more keys than the budget tells the candidates apart by nothing but
    // vertical-slash's line choice; the reference skips such early queries too (it scores those past 2500).
    if (h.first_pos + h.n_q <= budget) continue;
    ++out.n_scored;
    for (size_t c = 0; c < cands.size(); ++c) {
      switch (cands[c].pattern) {
        case kv::PrefillPattern::kAShape:
          model::build_a_shape(h, 1, n_blocks - 1, keys);
          break;
        case kv::PrefillPattern::kBlockSparse:
          model::build_block_sparse(h, n_blocks - 1, keys);
          break;
        case kv::PrefillPattern::kVerticalSlash:
          // The lines of the last 64 queries, for every query of the prompt, as at run time.
          model::build_vertical_slash(h, vertical_slash[c], keys);
          break;
        case kv::PrefillPattern::kHip:
        case kv::PrefillPattern::kHyper:
          LH_CHECK(false);  // not candidates of the search
      }
      cands[c].recall += model::last_query_recall(h, probs, h.n_q, keys);
    }
  }
  for (PatternCandidate& c : cands) c.recall = out.n_scored > 0 ? c.recall / out.n_scored : 1.0;
  if (curve != nullptr) {
    curve->n_tokens = last.n_k;
    curve->kept.assign(by_distance.size() + 1, 0.0);
    double kept = sink;
    curve->kept[0] = kept / static_cast<double>(n_rows);
    for (size_t w = 1; w < curve->kept.size(); ++w) {
      kept += by_distance[w - 1];
      curve->kept[w] = kept / static_cast<double>(n_rows);
    }
  }
  return out;
}

size_t best_candidate(std::span<const PatternCandidate> candidates) {
  LH_CHECK(!candidates.empty());
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i)
    if (candidates[i].recall > candidates[best].recall + kRecallMargin) best = i;
  return best;
}

double SpanRecall::at_span(double span) const {
  LH_CHECK(!kept.empty());
  const auto w = static_cast<size_t>(std::max(1.0, std::ceil(span / kB)));
  return kept[std::min(w, kept.size() - 1)];
}

std::vector<SpanRule> moa_candidate_rules() {
  std::vector<SpanRule> rules;
  for (double alpha : {0.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0})
    for (double beta : {0.0, 1.0 / 64, 1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 3.0 / 8, 1.0 / 2, 3.0 / 4, 1.0})
      rules.push_back({alpha, beta});
  return rules;
}

Result<std::vector<SpanRule>> choose_span_rules(const std::vector<std::vector<SpanRecall>>& curves,
                                                std::span<const SpanRule> rules, double density) {
  if (curves.empty() || rules.empty()) return Status::error("MoA: no heads or no candidate rules");
  const size_t n_heads = curves.size(), n_rules = rules.size(), n_lengths = curves[0].size();
  // loss[h][r]: mass dropped summed over the lengths; cost[(h * n_rules + r) * n_lengths + l]: span / N.
  std::vector<double> loss(n_heads * n_rules), cost(n_heads * n_rules * n_lengths), cost_sum(n_heads * n_rules);
  for (size_t h = 0; h < n_heads; ++h) {
    if (curves[h].size() != n_lengths) return Status::error("MoA: heads profiled at different lengths");
    for (size_t r = 0; r < n_rules; ++r) {
      double l_sum = 0.0, c_sum = 0.0;
      for (size_t l = 0; l < n_lengths; ++l) {
        const SpanRecall& c = curves[h][l];
        const double n = c.n_tokens, span = std::min(n, rules[r].alpha + rules[r].beta * n);
        l_sum += 1.0 - c.at_span(span);
        cost[(h * n_rules + r) * n_lengths + l] = span / n;
        c_sum += span / n;
      }
      loss[h * n_rules + r] = l_sum;
      cost_sum[h * n_rules + r] = c_sum;
    }
  }
  // Each head's rule of least loss + lambda * density (ties: the cheaper rule, then the earlier).
  auto choose = [&](double lambda) {
    std::vector<size_t> pick(n_heads);
    for (size_t h = 0; h < n_heads; ++h) {
      size_t best = 0;
      double best_value = std::numeric_limits<double>::infinity();
      for (size_t r = 0; r < n_rules; ++r) {
        const double value = loss[h * n_rules + r] + lambda * cost_sum[h * n_rules + r];
        if (value < best_value - 1e-12 ||
            (value <= best_value + 1e-12 && cost_sum[h * n_rules + r] < cost_sum[h * n_rules + best])) {
          best_value = std::min(value, best_value);
          best = r;
        }
      }
      pick[h] = best;
    }
    return pick;
  };
  // The largest mean density over the profiled lengths.
  auto worst_density = [&](const std::vector<size_t>& pick) {
    double worst = 0.0;
    for (size_t l = 0; l < n_lengths; ++l) {
      double sum = 0.0;
      for (size_t h = 0; h < n_heads; ++h) sum += cost[(h * n_rules + pick[h]) * n_lengths + l];
      worst = std::max(worst, sum / static_cast<double>(n_heads));
    }
    return worst;
  };
  auto to_rules = [&](const std::vector<size_t>& pick) {
    std::vector<SpanRule> out;
    for (size_t r : pick) out.push_back(rules[r]);
    return out;
  };
  std::vector<size_t> pick = choose(0.0);
  if (worst_density(pick) <= density + 1e-12) return to_rules(pick);
  double lo = 0.0, hi = 1.0;
  while (worst_density(choose(hi)) > density + 1e-12) {
    hi *= 2.0;
    if (hi > 1e12) {
      return Status::error("MoA: no choice of span rules keeps the mean density under " + std::to_string(density) +
                           " (the smallest spans alone average " + std::to_string(worst_density(choose(hi))) + ")");
    }
  }
  // Bisection on lambda: the smallest penalty (most mass kept) that meets the budget.
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (worst_density(choose(mid)) <= density + 1e-12) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  pick = choose(hi);
  // The relaxation may leave budget unused (its duality gap): spend it, one head's move at a time, on the move that
  // drops the most lost mass while every length stays within the budget.
  std::vector<double> sum(n_lengths, 0.0);  // [n_lengths] the choice's summed span / N
  for (size_t h = 0; h < n_heads; ++h)
    for (size_t l = 0; l < n_lengths; ++l) sum[l] += cost[(h * n_rules + pick[h]) * n_lengths + l];
  const double limit = density * static_cast<double>(n_heads) + 1e-9;
  for (;;) {
    double best_gain = 1e-12;
    size_t best_h = n_heads, best_r = 0;
    for (size_t h = 0; h < n_heads; ++h) {
      const size_t was = pick[h];
      for (size_t r = 0; r < n_rules; ++r) {
        const double gain = loss[h * n_rules + was] - loss[h * n_rules + r];
        if (gain <= best_gain) continue;
        bool fits = true;
        for (size_t l = 0; l < n_lengths && fits; ++l)
          fits = sum[l] - cost[(h * n_rules + was) * n_lengths + l] + cost[(h * n_rules + r) * n_lengths + l] <= limit;
        if (fits) {
          best_gain = gain;
          best_h = h;
          best_r = r;
        }
      }
    }
    if (best_h == n_heads) break;
    for (size_t l = 0; l < n_lengths; ++l)
      sum[l] +=
          cost[(best_h * n_rules + best_r) * n_lengths + l] - cost[(best_h * n_rules + pick[best_h]) * n_lengths + l];
    pick[best_h] = best_r;
  }
  return to_rules(pick);
}

Result<kv::HeadProfile> calibrate_prefill(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                          const PrefillCalibrationOptions& options,
                                          const std::function<void(const std::string&)>& progress) {
  const model::ModelConfig& cfg = model.config();
  if (options.lengths.empty()) return Status::error("calibrate-prefill: no prompt lengths");
  for (int32_t n : options.lengths)
    if (n < 2 * kSampleQueries || n > kv::kMaxProfileTokens)
      return Status::error("calibrate-prefill: prompt length " + std::to_string(n) + " is outside [128, " +
                           std::to_string(kv::kMaxProfileTokens) + "]");
  if (options.budget < 2 * kB) return Status::error("calibrate-prefill: budget must be at least 128 keys per query");
  if (!(options.density > 0.0f && options.density <= 1.0f))
    return Status::error("calibrate-prefill: density must be in (0, 1]");
  if (options.n_spread_blocks < 0) return Status::error("calibrate-prefill: spread blocks must be >= 0");
  const int32_t n_head = cfg.n_head, dk = cfg.head_dim_k, group = cfg.n_head / cfg.n_head_kv;
  std::vector<int32_t> global_layers;
  for (int32_t il = 0; il < cfg.n_layer; ++il)
    if (!cfg.is_local(il)) global_layers.push_back(il);
  if (global_layers.empty()) return Status::error("calibrate-prefill: the model has no global attention layer");
  const auto n_tasks = static_cast<int64_t>(global_layers.size()) * n_head;

  ThreadPool pool(options.n_threads > 0 ? options.n_threads : default_thread_count());
  generate::EngineOptions eo;
  eo.n_ctx = *std::max_element(options.lengths.begin(), options.lengths.end()) + 64;
  eo.max_sequences = 1;
  LH_ASSIGN_OR_RETURN(std::unique_ptr<generate::Engine> engine, generate::Engine::create(model, eo, &pool));

  // Per task (global layer, head): the candidates' recall summed over the prompts, and MoA's curve per prompt.
  std::vector<std::vector<PatternCandidate>> found(static_cast<size_t>(n_tasks));
  std::vector<int64_t> n_scored(static_cast<size_t>(n_tasks), 0);
  std::vector<std::vector<SpanRecall>> curves(static_cast<size_t>(n_tasks),
                                              std::vector<SpanRecall>(options.lengths.size()));
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int> digits(10000, 99999);
  const auto n_prompts = static_cast<int32_t>(options.lengths.size());
  int64_t n_tokens_total = 0;
  for (int32_t i = 0; i < n_prompts; ++i) {
    const std::string of = " (" + std::to_string(i + 1) + "/" + std::to_string(n_prompts) + ")";
    const double depth = (i + 0.5) / n_prompts;
    PasskeyPrompt prompt =
        build_passkey_prompt(tokenizer, options.lengths[static_cast<size_t>(i)], depth, std::to_string(digits(rng)));
    const auto n = static_cast<int32_t>(prompt.tokens.size());
    if (n < 2 * kSampleQueries)
      return Status::error("calibrate-prefill: a passkey prompt of only " + std::to_string(n) + " tokens");
    if (progress) progress("calibrating prefill: passkey prompt of " + std::to_string(n) + " tokens" + of);
    const std::vector<int32_t> starts = sample_starts(n, options.n_spread_blocks);
    auto owned =
        std::make_unique<QueryRecorder>(generate::kv_policy_context(model), cfg.n_layer, n_head * dk, starts, n);
    const QueryRecorder* recorder = owned.get();
    LH_ASSIGN_OR_RETURN(const kv::SeqId seq, engine->add_sequence(generate::SequenceOptions{}, std::move(owned)));
    LH_RETURN_IF_ERROR(engine->feed(seq, prompt.tokens, nullptr));
    n_tokens_total += n;

    if (progress) progress("calibrating prefill: searching the attention of " + std::to_string(n) + " tokens" + of);
    const kv::KvCache& cache = engine->cache();
    pool.for_each_chunk(n_tasks, [&](int64_t task, int) {
      const int32_t il = global_layers[static_cast<size_t>(task / n_head)];
      const auto h = static_cast<int32_t>(task % n_head);
      std::vector<uint16_t> keys(static_cast<size_t>(n) * dk);  // [n, dk] the head's keys by position
      for (int32_t c = 0; c < n; ++c) {
        const uint16_t* k = cache.key(seq, il, h / group, c);
        std::copy(k, k + dk, keys.data() + static_cast<int64_t>(c) * dk);
      }
      std::vector<float> q(starts.size() * kSampleQueries * static_cast<size_t>(dk));  // [samples * 64, dk]
      std::vector<model::HeadQueriesKeys> samples;
      for (size_t s = 0; s < starts.size(); ++s) {
        for (int32_t r = 0; r < kSampleQueries; ++r) {
          const int32_t slot = static_cast<int32_t>(s) * kSampleQueries + r;
          const float* src = recorder->query(il, slot) + static_cast<int64_t>(h) * dk;
          std::copy(src, src + dk, q.data() + static_cast<int64_t>(slot) * dk);
        }
        samples.push_back({q.data() + s * kSampleQueries * static_cast<size_t>(dk), kSampleQueries, starts[s],
                           keys.data(), starts[s] + kSampleQueries, dk});
      }
      const HeadSearch found_here =
          search_head(samples, options.budget, &curves[static_cast<size_t>(task)][static_cast<size_t>(i)]);
      // Summed over every scored sample of every prompt.
      std::vector<PatternCandidate>& sum = found[static_cast<size_t>(task)];
      if (sum.empty()) {
        sum = found_here.candidates;
        for (PatternCandidate& c : sum) c.recall = 0.0;
      }
      for (size_t c = 0; c < sum.size(); ++c) sum[c].recall += found_here.candidates[c].recall * found_here.n_scored;
      n_scored[static_cast<size_t>(task)] += found_here.n_scored;
    });
    engine->remove(seq);
  }

  if (progress) progress("calibrating prefill: choosing MoA's spans under density " + std::to_string(options.density));
  LH_ASSIGN_OR_RETURN(const std::vector<SpanRule> rules,
                      choose_span_rules(curves, moa_candidate_rules(), options.density));

  kv::HeadProfile p;
  p.model = base_name(model.file().path());
  p.n_layer = cfg.n_layer;
  p.n_head_kv = cfg.n_head_kv;
  p.n_head = n_head;
  p.prefill.assign(static_cast<size_t>(cfg.n_layer) * n_head, kv::HeadPrefill{});
  p.prefill_tokens = static_cast<int32_t>(std::min<int64_t>(n_tokens_total, kv::kMaxProfileTokens));
  p.prefill_budget = options.budget;
  p.prefill_density = options.density;
  for (int64_t task = 0; task < n_tasks; ++task) {
    std::vector<PatternCandidate>& cands = found[static_cast<size_t>(task)];
    const int64_t n = n_scored[static_cast<size_t>(task)];
    for (PatternCandidate& c : cands) c.recall = n > 0 ? c.recall / static_cast<double>(n) : 1.0;
    const PatternCandidate& best = cands[best_candidate(cands)];
    const int32_t il = global_layers[static_cast<size_t>(task / n_head)];
    kv::HeadPrefill& e = p.prefill[static_cast<size_t>(il) * n_head + static_cast<size_t>(task % n_head)];
    e.listed = true;
    e.pattern = best.pattern;
    e.n_columns = best.n_columns;
    e.recall = static_cast<float>(std::clamp(best.recall, 0.0, 1.0));
    e.moa_alpha = static_cast<float>(rules[static_cast<size_t>(task)].alpha);
    e.moa_beta = static_cast<float>(rules[static_cast<size_t>(task)].beta);
  }
  return p;
}

}  // namespace longhaul::eval
