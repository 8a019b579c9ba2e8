// HyperAttention's hashed blocks and sampled columns for sparse prefill: see sparse_prefill_hyper.h.
#include "model/sparse_prefill_hyper.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <random>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"

namespace longhaul::model {

namespace {

constexpr int32_t kB = HeadSparseKeys::kBlock;
constexpr uint64_t kHyperplaneSeed = 0x4879706572ull;  // fixed: every run, head and layer hashes alike
constexpr uint64_t kSampleSeed = 0x53616d706c65ull;

// SplitMix64's finaliser: spreads a seed and a stream number over all 64 bits before they seed the generator.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// [bits, dk] random hyperplane normals, N(0, 1) components. Box-Muller over std::mt19937_64, whose output the
// standard fixes (std::normal_distribution's algorithm is left to the library), so every build hashes alike.
std::vector<float> hyperplanes(int32_t bits, int32_t dk) {
  std::mt19937_64 rng(mix(kHyperplaneSeed));
  auto uniform01 = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  std::vector<float> planes(static_cast<size_t>(bits) * dk);
  for (size_t i = 0; i < planes.size(); i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform01())), a = 2.0 * std::numbers::pi * uniform01();
    planes[i] = static_cast<float>(r * std::cos(a));
    if (i + 1 < planes.size()) planes[i + 1] = static_cast<float>(r * std::sin(a));
  }
  return planes;
}

// n_samples distinct key positions of [0, n_k), uniform, ascending (Floyd's sampling without replacement).
std::vector<int32_t> sample_columns(int32_t n_k, int32_t n_samples, uint64_t stream) {
  std::vector<int32_t> columns;
  if (n_samples >= n_k) {
    columns.resize(static_cast<size_t>(n_k));
    std::iota(columns.begin(), columns.end(), 0);
    return columns;
  }
  std::mt19937_64 rng(mix(kSampleSeed ^ mix(stream)));
  std::vector<uint8_t> taken(static_cast<size_t>(n_k), 0);
  for (int32_t j = n_k - n_samples; j < n_k; ++j) {
    // rng() % (j + 1): the bias is below (j + 1) / 2^64, nothing next to the sample's own noise.
    const auto t = static_cast<int32_t>(rng() % static_cast<uint64_t>(j + 1));
    taken[static_cast<size_t>(taken[static_cast<size_t>(t)] ? j : t)] = 1;
  }
  for (int32_t k = 0; k < n_k; ++k)
    if (taken[static_cast<size_t>(k)]) columns.push_back(k);
  return columns;
}

}  // namespace

void build_hyper(const HeadQueriesKeys& h, const PrefillAttentionOptions& options, uint64_t stream,
                 HeadSparseKeys& out) {
  LH_CHECK(options.lsh_bits >= 1 && options.lsh_bits <= kHyperMaxBits && options.n_samples >= 0 &&
           options.budget >= hyper_min_budget(options.n_samples));
  out.reset_blocks(h, SparsePattern::kHyper);
  const int32_t dk = h.dk, bits = options.lsh_bits;
  const std::vector<float> planes = hyperplanes(bits, dk);  // [bits, dk]

  // Buckets: bit i set when the vector lies on the positive side of hyperplane i.
  std::vector<uint32_t> key_bucket(static_cast<size_t>(h.n_k), 0), query_bucket(static_cast<size_t>(h.n_q), 0);
  std::vector<float> side(static_cast<size_t>(h.n_k));
  for (int32_t i = 0; i < bits; ++i) {
    const float* plane = planes.data() + static_cast<int64_t>(i) * dk;
    kernels::dot_f16_rows(plane, h.k, dk, h.n_k, dk, side.data());
    for (int32_t j = 0; j < h.n_k; ++j)
      key_bucket[static_cast<size_t>(j)] |= uint32_t{side[static_cast<size_t>(j)] > 0.0f} << i;
    for (int32_t q = 0; q < h.n_q; ++q) {
      const float* x = h.q + static_cast<int64_t>(q) * dk;
      double dot = 0.0;
      for (int32_t c = 0; c < dk; ++c) dot += static_cast<double>(x[c]) * plane[c];
      query_bucket[static_cast<size_t>(q)] |= uint32_t{dot > 0.0} << i;
    }
  }
  // sortLSH's order: keys by bucket, ascending positions within one (a counting sort).
  const size_t n_buckets = size_t{1} << bits;
  std::vector<int32_t> bucket_begin(n_buckets + 1, 0), sorted_keys(static_cast<size_t>(h.n_k));
  for (uint32_t b : key_bucket) ++bucket_begin[b + 1];
  std::partial_sum(bucket_begin.begin(), bucket_begin.end(), bucket_begin.begin());
  {
    std::vector<int32_t> next(bucket_begin.begin(), bucket_begin.end() - 1);
    for (int32_t j = 0; j < h.n_k; ++j) {
      int32_t& slot = next[key_bucket[static_cast<size_t>(j)]];
      sorted_keys[static_cast<size_t>(slot++)] = j;
    }
  }

  const int32_t n_hashed = (options.budget - options.n_samples) / kB - 2;  // besides the sink and own blocks
  std::vector<int64_t> collisions;  // [qb] per earlier key block
  std::vector<uint32_t> buckets;    // the block's query buckets, sorted
  std::vector<int32_t> ranked;
  for (int32_t qb = out.first_qblock; qb < out.first_qblock + out.n_qblocks; ++qb) {
    out.select_block(qb, 0);
    out.select_block(qb, qb);
    if (qb <= 1) continue;
    // Candidates 1 .. qb - 1: every key of them precedes every query of the block.
    if (qb - 1 <= n_hashed) {
      for (int32_t kb = 1; kb < qb; ++kb) out.select_block(qb, kb);
      continue;
    }
    const std::pair<int32_t, int32_t> queries = HeadSparseKeys::block_queries(h, qb);
    buckets.assign(query_bucket.begin() + queries.first, query_bucket.begin() + queries.second);
    std::sort(buckets.begin(), buckets.end());
    collisions.assign(static_cast<size_t>(qb), 0);
    for (size_t i = 0; i < buckets.size();) {
      const uint32_t b = buckets[i];
      size_t n_queries = 1;  // queries of the block in bucket b
      while (i + n_queries < buckets.size() && buckets[i + n_queries] == b) ++n_queries;
      i += n_queries;
      const auto run_begin = sorted_keys.begin() + bucket_begin[b];
      const auto run_end = sorted_keys.begin() + bucket_begin[b + 1];
      for (auto it = std::lower_bound(run_begin, run_end, kB); it != run_end && *it < qb * kB; ++it)
        collisions[static_cast<size_t>(*it / kB)] += static_cast<int64_t>(n_queries);
    }
    ranked.resize(static_cast<size_t>(qb - 1));
    std::iota(ranked.begin(), ranked.end(), 1);
    std::partial_sort(ranked.begin(), ranked.begin() + n_hashed, ranked.end(), [&](int32_t a, int32_t b) {
      const int64_t ca = collisions[static_cast<size_t>(a)], cb = collisions[static_cast<size_t>(b)];
      return ca != cb ? ca > cb : a > b;  // ties to the nearer block
    });
    for (int32_t r = 0; r < n_hashed; ++r) out.select_block(qb, ranked[static_cast<size_t>(r)]);
  }
  out.columns = sample_columns(h.n_k, options.n_samples, stream);
}

}  // namespace longhaul::model
