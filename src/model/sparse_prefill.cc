#include "model/sparse_prefill.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "base/status.h"
#include "kernels/ops.h"
#include "kv/policy_params.h"
#include "model/sparse_prefill_hip.h"
#include "model/sparse_prefill_hyper.h"

namespace longhaul::model {

namespace {

constexpr int32_t kB = HeadSparseKeys::kBlock;
// The reference implementation's forced indices: the first 30 key columns (attention sinks) and the 100 nearest
// diagonals (the local band) are always among the vertical-slash selections.
constexpr int32_t kForcedColumns = 30;
constexpr int32_t kForcedDiagonals = 100;
// The key blocks those diagonals cross (offsets 0, 1 and 2 from the query's block).
constexpr int32_t kForcedSlashBlocks = (kForcedDiagonals - 1) / HeadSparseKeys::kBlock + 2;
static_assert(kMInferenceMinBudget == ((kForcedColumns + kForcedSlashBlocks * kB) / kB + 1) * kB,
              "the smallest budget holds the forced lines in whole key blocks");

int32_t query_block_count(const HeadQueriesKeys& h) {
  return h.n_q == 0 ? 0 : (h.first_pos + h.n_q - 1) / kB - h.first_pos / kB + 1;
}

// Indices of the n largest entries of score[0 .. n_all) (all of them when n >= n_all), ascending.
std::vector<int32_t> top_indices(const std::vector<double>& score, int32_t n) {
  std::vector<int32_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  if (n < static_cast<int32_t>(idx.size())) {
    // Ties go to the lower index, so that the selection does not depend on the sort's internals.
    std::nth_element(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
      return score[static_cast<size_t>(a)] != score[static_cast<size_t>(b)]
                 ? score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)]
                 : a < b;
    });
    idx.resize(static_cast<size_t>(std::max(0, n)));
  }
  std::sort(idx.begin(), idx.end());
  return idx;
}

// A density as the profile and the messages write it ("0.5", "0.125").
std::string format_density(float density) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", static_cast<double>(density));
  return text;
}

}  // namespace

// ---- options ----

Result<PrefillAttentionOptions> parse_prefill_attention(std::string_view spec) {
  Result<kv::PolicyParams> parsed = kv::PolicyParams::parse(spec);
  if (!parsed) return Status::error("--prefill-attn " + std::string(spec) + ": " + parsed.message());
  kv::PolicyParams params = std::move(parsed).value();
  PrefillAttentionOptions o;
  // The keys every sparse pattern reads; min_budget: the fewest keys per query the pattern can be held to.
  auto read_budget = [&](int32_t min_budget) {
    o.budget = params.get_int("budget", o.budget, min_budget, kv::kMaxParamCount, "keys per query a pattern computes");
    o.min_context = params.get_int("min_context", o.min_context, 0, kv::kMaxParamCount,
                                   "shorter contexts prefill densely (tokens)");
  };
  if (params.name() == "dense") {
    o.mode = PrefillAttention::kDense;
  } else if (params.name() == "minference") {
    o.mode = PrefillAttention::kMInference;
    // At least vertical-slash's forced lines: 30 columns and the 3 key blocks of the 100 nearest diagonals.
    read_budget(kMInferenceMinBudget);
    o.min_recall = params.get_float("min_recall", o.min_recall, 0.0f, 1.0f, false,
                                    "heads whose searched recall is below it attend densely");
  } else if (params.name() == "moa") {
    o.mode = PrefillAttention::kMoA;
    o.density = params.get_float("density", o.density, 0.0f, 1.0f, true, "mean span / N over heads");
    o.min_context = params.get_int("min_context", o.min_context, 0, kv::kMaxParamCount,
                                   "shorter contexts prefill densely (tokens)");
  } else if (params.name() == "hip") {
    o.mode = PrefillAttention::kHip;
    read_budget(kHipMinBudget);
  } else if (params.name() == "hyper") {
    o.mode = PrefillAttention::kHyper;
    o.lsh_bits = params.get_int("bits", o.lsh_bits, 1, kHyperMaxBits, "hyperplanes of the angular hash");
    o.n_samples = params.get_int("samples", o.n_samples, 0, kv::kMaxParamCount, "sampled key columns per head");
    read_budget(hyper_min_budget(o.n_samples));
  } else {
    return Status::error("--prefill-attn " + std::string(spec) + ": unknown prefill attention '" + params.name() +
                         "' (dense, minference, moa, hip, hyper)");
  }
  const Status st = params.status();
  if (!st.is_ok()) {
    // The spec reader words an unread key for KV policies; this one is a prefill attention.
    std::string message = st.message();
    const std::string kv_words = "KV policy ";
    if (message.rfind(kv_words, 0) == 0) message = "prefill attention " + message.substr(kv_words.size());
    return Status::error("--prefill-attn " + std::string(spec) + ": " + message);
  }
  return o;
}

std::string describe_prefill_attention(const PrefillAttentionOptions& options) {
  const std::string budget =
      "(budget=" + std::to_string(options.budget) + ", min_context=" + std::to_string(options.min_context);
  switch (options.mode) {
    case PrefillAttention::kDense:
      return "dense";
    case PrefillAttention::kMInference:
      return "minference" + budget +
             (options.min_recall > 0.0f ? ", min_recall=" + format_density(options.min_recall) : std::string()) + ")";
    case PrefillAttention::kMoA:
      return "moa(density=" + format_density(options.density) + ", min_context=" + std::to_string(options.min_context) +
             ")";
    case PrefillAttention::kHip:
      return "hip" + budget + ")";
    case PrefillAttention::kHyper:
      return "hyper" + budget + ", bits=" + std::to_string(options.lsh_bits) +
             ", samples=" + std::to_string(options.n_samples) + ")";
  }
  return "?";
}

std::string prefill_attention_help() {
  return "prefill attention: dense (every key); minference[:budget=N][:min_context=N][:min_recall=R] (MInference "
         "1.0 sparse prefill: each head's A-shape, vertical-slash or block-sparse pattern from the head profile, N "
         "keys per query, default 2048; heads whose pattern kept less than R of their attention in the search attend "
         "densely, default 0); or moa[:density=D][:min_context=N] (MoA: each head's sink block and local band, "
         "its width growing with the input by the head's rule from the head profile, mean width D of the input, "
         "default 0.5). The profile's prefill section comes from `longhaul calibrate-prefill` and is computed on "
         "first use; hip[:budget=N][:min_context=N] (HiP: per 64-token query block, a hierarchical top-k tree "
         "search over key blocks, N >= 448); hyper[:budget=N][:min_context=N][:bits=N][:samples=N] "
         "(HyperAttention: key blocks whose keys share angular-hash buckets (2^bits, default 7 bits) with the "
         "block's queries, plus `samples` key columns sampled uniformly, default 256; N >= samples + 192); contexts "
         "under min_context tokens, default 4096, stay dense";
}

Status check_prefill_profile(const PrefillAttentionOptions& options, const ModelConfig& config,
                             const std::string& model_name) {
  if (options.mode != PrefillAttention::kMInference && options.mode != PrefillAttention::kMoA) return Status::ok();
  const std::string what = "--prefill-attn " + describe_prefill_attention(options);
  const kv::HeadProfile* p = options.profile.get();
  if (p == nullptr || !p->has_prefill())
    return Status::error(what + " needs the prefill section of the model's head profile (longhaul calibrate-prefill)");
  const std::string source = p->source.empty() ? "the head profile" : "the head profile '" + p->source + "'";
  if (p->n_layer != config.n_layer || p->n_head != config.n_head || (!p->model.empty() && p->model != model_name))
    return Status::error(source + " is for " + (p->model.empty() ? "a model" : p->model) + " of " +
                         std::to_string(p->n_layer) + " layers x " + std::to_string(p->n_head) + " heads, not " +
                         model_name + " of " + std::to_string(config.n_layer) + " x " + std::to_string(config.n_head) +
                         ": remove it to have it computed again");
  for (int32_t il = 0; il < config.n_layer; ++il) {
    if (config.is_local(il)) continue;
    for (int32_t h = 0; h < config.n_head; ++h)
      if (!p->prefill_at(il, h).listed)
        return Status::error(source + ": the prefill section lacks layer " + std::to_string(il) + " head " +
                             std::to_string(h) + " (a global layer)");
  }
  if (options.mode == PrefillAttention::kMoA && std::abs(p->prefill_density - options.density) > 1e-4)
    return Status::error(source + ": MoA's spans were chosen for density " + format_density(p->prefill_density) +
                         ", not " + format_density(options.density) +
                         " (longhaul calibrate-prefill --density D chooses them again)");
  return Status::ok();
}

// ---- key sets ----

kernels::SparseKeys HeadSparseKeys::keys(int32_t qblock) const {
  kernels::SparseKeys s;
  if (!blocks.empty()) {
    s.blocks = blocks.data() + static_cast<int64_t>(qblock - first_qblock) * n_block_words;
    s.n_block_words = n_block_words;
  }
  s.columns = columns.data();
  s.n_columns = static_cast<int32_t>(columns.size());
  return s;
}

bool HeadSparseKeys::block_selected(int32_t qblock, int32_t key_block) const {
  if (blocks.empty() || key_block < 0 || key_block >= n_block_words * 64) return false;
  const uint64_t* row = blocks.data() + static_cast<int64_t>(qblock - first_qblock) * n_block_words;
  return ((row[key_block / 64] >> (key_block % 64)) & 1u) != 0;
}

void HeadSparseKeys::reset_blocks(const HeadQueriesKeys& h, SparsePattern pattern_of_sets) {
  pattern = pattern_of_sets;
  first_qblock = h.first_pos / kB;
  n_qblocks = query_block_count(h);
  n_block_words = (h.n_k + kB - 1) / kB / 64 + 1;
  blocks.assign(static_cast<size_t>(n_qblocks) * n_block_words, 0);
  columns.clear();
}

void HeadSparseKeys::select_block(int32_t qblock, int32_t key_block) {
  LH_CHECK(qblock >= first_qblock && qblock < first_qblock + n_qblocks && key_block >= 0 &&
           key_block < n_block_words * 64);
  uint64_t* row = blocks.data() + static_cast<int64_t>(qblock - first_qblock) * n_block_words;
  row[key_block / 64] |= uint64_t{1} << (key_block % 64);
}

std::pair<int32_t, int32_t> HeadSparseKeys::block_queries(const HeadQueriesKeys& h, int32_t qblock) {
  return {std::max(0, qblock * kB - h.first_pos), std::min(h.n_q, (qblock + 1) * kB - h.first_pos)};
}

// ---- builders ----

void last_query_attention(const HeadQueriesKeys& h, int32_t n_last, std::vector<float>& probs) {
  LH_CHECK(n_last >= 1 && n_last <= h.n_q);
  probs.assign(static_cast<size_t>(n_last) * h.n_k, 0.0f);
  for (int32_t r = 0; r < n_last; ++r) {
    const int32_t i = h.n_q - n_last + r;
    const int32_t n_seen = h.first_pos + i + 1;  // causal: keys 0 .. position
    float* row = probs.data() + static_cast<int64_t>(r) * h.n_k;
    kernels::dot_f16_rows(h.q + static_cast<int64_t>(i) * h.dk, h.k, h.dk, n_seen, h.dk, row);
    kernels::softmax(row, n_seen);
  }
}

void build_a_shape(const HeadQueriesKeys& h, int32_t n_sink_blocks, int32_t n_local_blocks, HeadSparseKeys& out) {
  out.reset_blocks(h, SparsePattern::kAShape);
  for (int32_t qb = out.first_qblock; qb < out.first_qblock + out.n_qblocks; ++qb) {
    for (int32_t kb = 0; kb <= qb; ++kb)
      if (kb < n_sink_blocks || kb > qb - n_local_blocks) out.select_block(qb, kb);
  }
}

VerticalSlashLines select_vertical_slash(const HeadQueriesKeys& h, const std::vector<float>& probs, int32_t n_last,
                                         int32_t n_vertical, int32_t n_slash_blocks) {
  // Column sums and diagonal sums (offset q - k) of the last queries' probabilities.
  std::vector<double> column(static_cast<size_t>(h.n_k), 0.0), diagonal(static_cast<size_t>(h.n_k), 0.0);
  for (int32_t r = 0; r < n_last; ++r) {
    const int32_t q = h.first_pos + h.n_q - n_last + r;
    const float* row = probs.data() + static_cast<int64_t>(r) * h.n_k;
    for (int32_t k = 0; k <= q; ++k) {
      column[static_cast<size_t>(k)] += row[k];
      diagonal[static_cast<size_t>(q - k)] += row[k];
    }
  }
  for (int32_t k = 0; k < std::min(kForcedColumns, h.n_k); ++k) column[static_cast<size_t>(k)] = INFINITY;
  for (int32_t d = 0; d < std::min(kForcedDiagonals, h.n_k); ++d) diagonal[static_cast<size_t>(d)] = INFINITY;
  VerticalSlashLines lines;
  lines.columns = top_indices(column, n_vertical);
  // Diagonals in order of their sums (ties to the nearer), each taking the key blocks it crosses: for query block
  // qb, diagonal d runs through key blocks qb - ceil(d / 64) .. qb - floor(d / 64), the same offsets for every
  // query block. A diagonal is taken while its offsets fit in n_slash_blocks.
  std::vector<int32_t> order(diagonal.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return diagonal[static_cast<size_t>(a)] > diagonal[static_cast<size_t>(b)];
  });
  std::vector<bool> taken(static_cast<size_t>(h.n_k / kB + 2), false);
  int32_t n_taken = 0;
  for (int32_t d : order) {
    if (n_taken == n_slash_blocks || diagonal[static_cast<size_t>(d)] <= 0.0) break;  // full, or no query reaches d
    const auto lo = static_cast<size_t>(d / kB), hi = static_cast<size_t>((d + kB - 1) / kB);
    const int32_t add = (taken[lo] ? 0 : 1) + (hi != lo && !taken[hi] ? 1 : 0);
    if (n_taken + add > n_slash_blocks) continue;
    taken[lo] = taken[hi] = true;
    n_taken += add;
  }
  for (size_t off = 0; off < taken.size(); ++off)
    if (taken[off]) lines.block_offsets.push_back(static_cast<int32_t>(off));
  return lines;
}

void build_vertical_slash(const HeadQueriesKeys& h, const VerticalSlashLines& lines, HeadSparseKeys& out) {
  out.reset_blocks(h, SparsePattern::kVerticalSlash);
  out.columns = lines.columns;
  for (int32_t qb = out.first_qblock; qb < out.first_qblock + out.n_qblocks; ++qb)
    for (int32_t off : lines.block_offsets)
      if (off <= qb) out.select_block(qb, qb - off);
}

void build_block_sparse(const HeadQueriesKeys& h, int32_t n_top_blocks, HeadSparseKeys& out) {
  out.reset_blocks(h, SparsePattern::kBlockSparse);
  const int32_t dk = h.dk;
  const int32_t n_kblocks = (h.n_k + kB - 1) / kB;
  // Mean-pooled keys per key block [n_kblocks, dk] (the last block may be partial), with the SIMD f16 accumulate.
  std::vector<float> pooled_k(static_cast<size_t>(n_kblocks) * dk, 0.0f), weight(kB);
  for (int32_t kb = 0; kb < n_kblocks; ++kb) {
    const int32_t n = std::min(kB, h.n_k - kb * kB);
    std::fill(weight.begin(), weight.end(), 1.0f / static_cast<float>(n));
    kernels::accumulate_f16_rows(weight.data(), h.k + static_cast<int64_t>(kb) * kB * dk, dk, n, dk,
                                 pooled_k.data() + static_cast<int64_t>(kb) * dk);
  }
  std::vector<float> pooled_q(static_cast<size_t>(dk));
  std::vector<double> score;
  for (int32_t qb = out.first_qblock; qb < out.first_qblock + out.n_qblocks; ++qb) {
    // The chunk's queries in this block (a chunk edge may cut it).
    const auto [i0, i1] = HeadSparseKeys::block_queries(h, qb);
    std::fill(pooled_q.begin(), pooled_q.end(), 0.0f);
    for (int32_t i = i0; i < i1; ++i)
      for (int32_t c = 0; c < dk; ++c) pooled_q[static_cast<size_t>(c)] += h.q[static_cast<int64_t>(i) * dk + c];
    for (float& x : pooled_q) x /= static_cast<float>(i1 - i0);
    score.assign(static_cast<size_t>(qb + 1), 0.0);
    for (int32_t kb = 0; kb <= qb; ++kb) {
      double s = 0.0;
      for (int32_t c = 0; c < dk; ++c) s += static_cast<double>(pooled_q[static_cast<size_t>(c)]) * pooled_k[static_cast<size_t>(kb) * dk + c];
      score[static_cast<size_t>(kb)] = s;
    }
    for (int32_t kb : top_indices(score, n_top_blocks)) out.select_block(qb, kb);
    out.select_block(qb, qb);
  }
}

double last_query_recall(const HeadQueriesKeys& h, const std::vector<float>& probs, int32_t n_last,
                         const HeadSparseKeys& keys) {
  // Per row: the mass in the selected blocks, plus the columns outside them -- each key once.
  double total = 0.0;
  for (int32_t r = 0; r < n_last; ++r) {
    const int32_t q = h.first_pos + h.n_q - n_last + r;
    const float* row = probs.data() + static_cast<int64_t>(r) * h.n_k;
    double kept = 0.0;
    for (int32_t kb = 0; kb <= q / kB; ++kb) {
      if (!keys.block_selected(q / kB, kb)) continue;
      for (int32_t k = kb * kB; k <= std::min(q, kb * kB + kB - 1); ++k) kept += row[k];
    }
    for (int32_t c : keys.columns) {
      if (c > q) break;
      if (!keys.block_selected(q / kB, c / kB)) kept += row[c];
    }
    total += kept;
  }
  return n_last > 0 ? total / n_last : 1.0;
}

int32_t vertical_slash_columns(int32_t budget, int32_t n_columns, int32_t profile_budget) {
  const double share = profile_budget > 0 ? static_cast<double>(n_columns) / profile_budget : 0.125;
  const auto scaled = static_cast<int32_t>(std::lround(share * budget));
  return std::max(kForcedColumns, std::min(scaled, budget - kForcedSlashBlocks * kB));
}

int32_t vertical_slash_blocks(int32_t budget, int32_t n_columns) {
  return std::max(kForcedSlashBlocks, (budget - n_columns) / kB);
}

namespace {
// min_recall: no pattern fits the head at this budget.
bool head_kept_dense(const PrefillAttentionOptions& options, const kv::HeadPrefill& assigned) {
  return assigned.recall < options.min_recall;
}
}  // namespace

bool head_reads_no_rows(const PrefillAttentionOptions& options, const kv::HeadPrefill& assigned) {
  return assigned.pattern == SparsePattern::kAShape || head_kept_dense(options, assigned);
}

void build_assigned_pattern(const HeadQueriesKeys& h, const PrefillAttentionOptions& options,
                            const kv::HeadPrefill& assigned, std::vector<float>& probs, HeadSparseKeys& out) {
  // Equal compute: budget keys per query row in each pattern.
  const int32_t n_blocks = std::max(2, options.budget / kB);
  if (head_kept_dense(options, assigned)) {
    // The sink block and a band reaching back to it: every causal key.
    build_a_shape(h, 1, (h.n_k + kB - 1) / kB, out);
    out.recall = assigned.recall;
    return;
  }
  switch (assigned.pattern) {
    case SparsePattern::kAShape:
      build_a_shape(h, 1, n_blocks - 1, out);
      break;
    case SparsePattern::kBlockSparse:
      build_block_sparse(h, n_blocks - 1, out);  // the query's own block comes on top of the top ones
      break;
    case SparsePattern::kVerticalSlash: {
      const int32_t n_last = std::min(options.n_last_queries, h.n_q);
      last_query_attention(h, n_last, probs);
      const int32_t profile_budget = options.profile != nullptr ? options.profile->prefill_budget : 0;
      const int32_t n_vertical = vertical_slash_columns(options.budget, assigned.n_columns, profile_budget);
      build_vertical_slash(
          h, select_vertical_slash(h, probs, n_last, n_vertical, vertical_slash_blocks(options.budget, n_vertical)), out);
      break;
    }
    case SparsePattern::kHip:
    case SparsePattern::kHyper:
      LH_CHECK(false);  // a profile never assigns them
  }
  out.recall = assigned.recall;
}

}  // namespace longhaul::model
