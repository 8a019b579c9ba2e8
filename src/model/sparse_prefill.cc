#include "model/sparse_prefill.h"

#include <algorithm>
#include <cmath>
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
// The smallest budget that holds them, in whole key blocks: 256 keys.
constexpr int32_t kMinBudget = ((kForcedColumns + kForcedSlashBlocks * kB) / kB + 1) * kB;

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
    read_budget(kMinBudget);
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
                         "' (dense, minference, hip, hyper)");
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
      return "minference" + budget + ")";
    case PrefillAttention::kHip:
      return "hip" + budget + ")";
    case PrefillAttention::kHyper:
      return "hyper" + budget + ", bits=" + std::to_string(options.lsh_bits) +
             ", samples=" + std::to_string(options.n_samples) + ")";
  }
  return "?";
}

std::string prefill_attention_help() {
  return "prefill attention: dense (every key); minference[:budget=N][:min_context=N] (MInference 1.0 sparse "
         "prefill: per head A-shape, vertical-slash or block-sparse, N keys per query, default 2048; contexts "
         "under min_context tokens, default 4096, stay dense); hip[:budget=N][:min_context=N] (HiP: per 64-token "
         "query block, a hierarchical top-k tree search over key blocks, N >= 448); "
         "hyper[:budget=N][:min_context=N][:bits=N][:samples=N] (HyperAttention: key blocks whose keys share "
         "angular-hash buckets (2^bits, default 7 bits) with the block's queries, plus `samples` key columns "
         "sampled uniformly, default 256; N >= samples + 192)";
}

const char* sparse_pattern_name(SparsePattern pattern) {
  switch (pattern) {
    case SparsePattern::kAShape:
      return "a-shape";
    case SparsePattern::kVerticalSlash:
      return "vertical-slash";
    case SparsePattern::kBlockSparse:
      return "block-sparse";
    case SparsePattern::kHip:
      return "hip";
    case SparsePattern::kHyper:
      return "hyper";
  }
  return "?";
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
  s.diagonals = diagonals.data();
  s.n_diagonals = static_cast<int32_t>(diagonals.size());
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
  diagonals.clear();
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

void build_vertical_slash(const HeadQueriesKeys& h, const std::vector<float>& probs, int32_t n_last, int32_t n_vertical,
                          int32_t n_slash_blocks, HeadSparseKeys& out) {
  out.reset_blocks(h, SparsePattern::kVerticalSlash);
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
  out.columns = top_indices(column, n_vertical);
  // Diagonals in order of their sums (ties to the nearer), each taking the key blocks it crosses: for query block
  // qb, diagonal d runs through key blocks qb - ceil(d / 64) .. qb - floor(d / 64), the same offsets for every
  // query block. A diagonal is taken while its offsets fit in n_slash_blocks.
  std::vector<int32_t> order(diagonal.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return diagonal[static_cast<size_t>(a)] > diagonal[static_cast<size_t>(b)];
  });
  std::vector<bool> offset_taken(static_cast<size_t>(h.n_k / kB + 2), false);
  int32_t n_offsets = 0;
  for (int32_t d : order) {
    if (diagonal[static_cast<size_t>(d)] <= 0.0) break;  // no query of the estimate reaches it
    const int32_t lo = d / kB, hi = (d + kB - 1) / kB;
    const int32_t add = (offset_taken[static_cast<size_t>(lo)] ? 0 : 1) + (hi != lo && !offset_taken[static_cast<size_t>(hi)] ? 1 : 0);
    if (n_offsets + add > n_slash_blocks) continue;
    offset_taken[static_cast<size_t>(lo)] = offset_taken[static_cast<size_t>(hi)] = true;
    n_offsets += add;
    if (n_offsets == n_slash_blocks) break;
  }
  for (int32_t qb = out.first_qblock; qb < out.first_qblock + out.n_qblocks; ++qb)
    for (int32_t off = 0; off <= qb && off < static_cast<int32_t>(offset_taken.size()); ++off)
      if (offset_taken[static_cast<size_t>(off)]) out.select_block(qb, qb - off);
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
  // Per row: the mass in the selected blocks, plus the columns outside them, plus the diagonal keys that are
  // neither -- each key once.
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
    for (int32_t d : keys.diagonals) {
      if (d > q) break;
      const int32_t k = q - d;
      if (!keys.block_selected(q / kB, k / kB) && !kernels::sorted_contains(keys.columns.data(), static_cast<int32_t>(keys.columns.size()), k))
        kept += row[k];
    }
    total += kept;
  }
  return n_last > 0 ? total / n_last : 1.0;
}

void build_minference(const HeadQueriesKeys& h, const PrefillAttentionOptions& options, std::vector<float>& probs,
                      HeadSparseKeys& out) {
  const int32_t n_last = std::min(options.n_last_queries, h.n_q);
  last_query_attention(h, n_last, probs);
  // Equal compute: budget keys per query row in each pattern.
  const int32_t n_blocks = std::max(2, options.budget / kB);
  // A costlier pattern replaces a cheaper one only when it keeps noticeably more of the mass: recalls within
  // kRecallMargin of each other differ by the noise of keys nobody attends to.
  constexpr double kRecallMargin = 1e-3;
  HeadSparseKeys candidate;
  build_a_shape(h, 1, n_blocks - 1, out);
  out.recall = last_query_recall(h, probs, n_last, out);
  build_block_sparse(h, n_blocks - 1, candidate);  // the query's own block comes on top of the top ones
  candidate.recall = last_query_recall(h, probs, n_last, candidate);
  if (candidate.recall > out.recall + kRecallMargin) std::swap(out, candidate);
  // Vertical-slash at the same compute: budget / 8 columns, and the rest as the key blocks its diagonals cross.
  const int32_t n_vertical = std::max(kForcedColumns, options.budget / 8);
  build_vertical_slash(h, probs, n_last, n_vertical, std::max(kForcedSlashBlocks, (options.budget - n_vertical) / kB),
                       candidate);
  candidate.recall = last_query_recall(h, probs, n_last, candidate);
  if (candidate.recall > out.recall + kRecallMargin) std::swap(out, candidate);
}

}  // namespace longhaul::model
