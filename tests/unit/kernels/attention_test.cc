// Flash attention (kernels::attention_update) under every kind of mask: each ISA's kernel against the scalar twin,
// and the twin against a direct softmax(q k^T) v computed in double, whose visibility rule is written out here for
// each case rather than taken from kernels/attention_mask.h. Sparse prefill cases: the direct softmax runs over
// exactly the keys the blocks and columns list (dense attention restricted to them).
//
// Tolerance 1e-5 * sqrt(dk / 64) absolute on outputs of magnitude ~1 for both comparisons: scores are float sums of dk
// products in other orders (their rounding error grows about as the square root of the number of terms), and the
// SIMD exp is within a few ulp of std::exp. The largest differences seen are 4e-6 at dk = 64 and 8e-6 at dk = 256.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_mask.h"
#include "kernels/ops.h"
#include "kernels/ops_isa.h"
#include "tensor/half.h"

namespace longhaul::kernels {
namespace {

using AttentionFn = decltype(FloatOps::attention_update);

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = tensor::f32_to_f16(v[i]);
  return h;
}

// One call's worth of attention: queries, keys, values and the arrays of the mask.
struct Problem {
  std::string name;
  int32_t dk = 64, dv = 64;
  std::vector<int32_t> q_pos, k_pos;    // [n_q], [n_k]
  std::vector<int32_t> q_node, k_node;  // [n_q], [n_k]; both empty = no tree
  std::vector<std::vector<int32_t>> tree_ancestors;  // per tree node: the nodes it sees (itself included)
  std::vector<uint64_t> ancestor_bits;               // [n_nodes, 1] the same as bit rows
  int32_t window = 0, n_sink = 0;
  // Sparse prefill: per query, the index of its key set in `sparse_sets`, or -1 (dense); empty = all dense.
  struct SparseSet {
    std::vector<int32_t> blocks;  // selected 64-position key blocks
    std::vector<int32_t> columns;  // ascending
  };
  std::vector<SparseSet> sparse_sets;
  std::vector<int32_t> q_set;  // [n_q]
  bool queries_apart = false;  // AttentionMask::queries_apart
  std::vector<float> q;        // [n_q, dk]
  std::vector<uint16_t> k, v;  // [n_k, dk], [n_k, dv]

  int32_t n_q() const { return static_cast<int32_t>(q_pos.size()); }
  int32_t n_k() const { return static_cast<int32_t>(k_pos.size()); }
  // Queries scaled by 1/sqrt(dk) as the model scales them, so that scores spread alike at every head size (standard
  // deviation 4: sharp enough that most keys get probabilities far below the largest).
  void fill(uint32_t seed) {
    q = random_floats(static_cast<int64_t>(n_q()) * dk, seed, 4.0f / std::sqrt(static_cast<float>(dk)));
    k = to_f16(random_floats(static_cast<int64_t>(n_k()) * dk, seed + 1, 1.0f));
    v = to_f16(random_floats(static_cast<int64_t>(n_k()) * dv, seed + 2, 1.0f));
  }
  // The mask of the run of keys that starts at key `first`.
  AttentionMask mask(int32_t first) const {
    AttentionMask m;
    m.q_pos = q_pos.data();
    m.k_pos = k_pos.data() + first;
    m.window = window;
    m.n_sink = n_sink;
    m.queries_apart = queries_apart;
    if (!k_node.empty()) {
      m.k_node = k_node.data() + first;
      m.q_node = q_node.data();
      m.ancestors = ancestor_bits.data();
      m.n_ancestor_words = 1;
    }
    if (!q_set.empty()) {
      // The kernel's form of the sets, rebuilt here so that a copied Problem never points into another one.
      block_bits.assign(sparse_sets.size(), std::vector<uint64_t>(8, 0));
      sparse_keys.assign(sparse_sets.size(), SparseKeys{});
      for (size_t i = 0; i < sparse_sets.size(); ++i) {
        for (int32_t b : sparse_sets[i].blocks) block_bits[i][static_cast<size_t>(b / 64)] |= uint64_t{1} << (b % 64);
        SparseKeys& sk = sparse_keys[i];
        sk.blocks = block_bits[i].data();
        sk.n_block_words = 8;
        sk.columns = sparse_sets[i].columns.data();
        sk.n_columns = static_cast<int32_t>(sparse_sets[i].columns.size());
      }
      q_sparse.clear();
      for (int32_t set : q_set) q_sparse.push_back(set < 0 ? nullptr : &sparse_keys[static_cast<size_t>(set)]);
      m.q_sparse = q_sparse.data();
    }
    return m;
  }
  mutable std::vector<std::vector<uint64_t>> block_bits;
  mutable std::vector<SparseKeys> sparse_keys;
  mutable std::vector<const SparseKeys*> q_sparse;
  // The rule, written out independently of attention_mask.h.
  bool visible(int32_t i, int32_t j) const {
    if (!k_node.empty() && k_node[j] >= 0) {
      if (q_node[i] < 0) return false;
      const std::vector<int32_t>& seen = tree_ancestors[static_cast<size_t>(q_node[i])];
      return std::find(seen.begin(), seen.end(), k_node[j]) != seen.end();
    }
    const int64_t behind = static_cast<int64_t>(q_pos[i]) - k_pos[j];
    if (behind < 0) return false;  // the key is in the query's future
    if (!(window <= 0 || behind < window || k_pos[j] < n_sink)) return false;
    if (q_set.empty() || q_set[i] < 0) return true;
    // Sparse prefill: the key's 64-position block or its column must be listed.
    const SparseSet& set = sparse_sets[static_cast<size_t>(q_set[i])];
    auto listed = [](const std::vector<int32_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); };
    return listed(set.blocks, k_pos[j] / 64) || listed(set.columns, k_pos[j]);
  }
};

// Keys at positions first_pos, first_pos + 1, ... and the given queries.
Problem positional(std::string name, int32_t d, std::vector<int32_t> q_pos, int32_t n_k, int32_t first_pos,
                   int32_t window, int32_t n_sink) {
  Problem p;
  p.name = std::move(name);
  p.dk = p.dv = d;
  p.q_pos = std::move(q_pos);
  for (int32_t j = 0; j < n_k; ++j) p.k_pos.push_back(first_pos + j);
  p.window = window;
  p.n_sink = n_sink;
  p.fill(100 + static_cast<uint32_t>(d));
  return p;
}

// A tree verification step: 37 cached keys at positions 0..36, then the step's 5 new tokens as a tree: root 0 at
// position 37 and two sibling branches 1 -> 2 and 3 -> 4 that share positions 38 and 39. The keys come in node order
// (positions 37, 38, 39, 38, 39: not ascending), the cached run and the tree share a 16-key block (keys 32..47).
// Each query is a node (or -1: a token outside the tree at position 36).
constexpr int32_t kPrefix = 37;
const int32_t kNodePos[5] = {37, 38, 39, 38, 39};

Problem tree(std::string name, int32_t d, const std::vector<int32_t>& query_nodes, int32_t window, int32_t n_sink) {
  Problem p;
  p.name = std::move(name);
  p.dk = p.dv = d;
  p.window = window;
  p.n_sink = n_sink;
  p.tree_ancestors = {{0}, {0, 1}, {0, 1, 2}, {0, 3}, {0, 3, 4}};
  for (const auto& seen : p.tree_ancestors) {
    uint64_t row = 0;
    for (int32_t node : seen) row |= uint64_t{1} << node;
    p.ancestor_bits.push_back(row);
  }
  for (int32_t j = 0; j < kPrefix; ++j) {
    p.k_pos.push_back(j);
    p.k_node.push_back(-1);
  }
  for (int32_t node = 0; node < 5; ++node) {
    p.k_pos.push_back(kNodePos[node]);
    p.k_node.push_back(node);
  }
  for (int32_t node : query_nodes) {
    p.q_node.push_back(node);
    p.q_pos.push_back(node >= 0 ? kNodePos[node] : kPrefix - 1);
  }
  p.fill(200 + static_cast<uint32_t>(d));
  return p;
}

// A sparse prefill call: queries at `q_pos` over keys at `k_pos`, query i using set i % (sets + 1) (the last
// choice: dense). A query whose set holds no key it may see keeps its starting state (expect_state checks it).
Problem sparse(std::string name, int32_t d, std::vector<int32_t> q_pos, std::vector<int32_t> k_pos, int32_t window,
               int32_t n_sink) {
  Problem p;
  p.name = std::move(name);
  p.dk = p.dv = d;
  p.q_pos = std::move(q_pos);
  p.k_pos = std::move(k_pos);
  p.window = window;
  p.n_sink = n_sink;
  // Block-sparse (the sink block and a middle one), vertical-slash (scattered columns and the blocks of the
  // queries' local diagonals: 256..319 for the chunk, 448..511 and 576..639 for the gaps and spread cases), A-shape
  // (the sink block and the local blocks), and columns alone (some in the queries' future).
  p.sparse_sets = {{{0, 2}, {}},
                   {{4, 7, 9}, {3, 17, 64, 100, 129, 130, 200, 301}},
                   {{0, 3, 4, 6, 7, 8, 9}, {}},
                   {{}, {0, 5, 150, 289, 290, 305, 452}}};
  const auto n_choices = static_cast<int32_t>(p.sparse_sets.size()) + 1;
  for (int32_t i = 0; i < p.n_q(); ++i) p.q_set.push_back(i % n_choices == n_choices - 1 ? -1 : i % n_choices);
  p.fill(300 + static_cast<uint32_t>(d));
  return p;
}

std::vector<int32_t> iota(int32_t first, int32_t n, int32_t step = 1) {
  std::vector<int32_t> v;
  for (int32_t i = 0; i < n; ++i) v.push_back(first + i * step);
  return v;
}

struct Flash {
  std::vector<float> m, l, o;  // [n_q], [n_q], [n_q, dv] (o unnormalised)
};

// Keys fed in runs of 7, 16, then 64 (partial and whole blocks, as KV pages are), or all in one call.
Flash run_flash(AttentionFn fn, const Problem& p, bool in_runs) {
  Flash f;
  f.m.assign(static_cast<size_t>(p.n_q()), -INFINITY);
  f.l.assign(static_cast<size_t>(p.n_q()), 0.0f);
  f.o.assign(static_cast<size_t>(p.n_q()) * p.dv, 0.0f);
  for (int32_t first = 0, run = in_runs ? 7 : p.n_k(); first < p.n_k(); first += run, run = run == 7 ? 16 : 64) {
    const int32_t n = std::min(run, p.n_k() - first);
    fn(p.q.data(), p.dk, p.n_q(), p.k.data() + static_cast<int64_t>(first) * p.dk, p.dk,
       p.v.data() + static_cast<int64_t>(first) * p.dv, p.dv, n, p.mask(first), p.dk, p.dv, f.m.data(), f.l.data(),
       f.o.data(), p.dv);
  }
  return f;
}

// Direct softmax over the keys p.visible admits, in double: [n_q, dv]; sees_any[i] = query i sees some key.
// key(j, c) and value(j, c) give element c of key / value j (the problem's f16 rows by default).
template <typename Key, typename Value>
std::vector<double> direct(const Problem& p, std::vector<bool>& sees_any, Key&& key, Value&& value) {
  std::vector<double> out(static_cast<size_t>(p.n_q()) * p.dv, 0.0);
  sees_any.assign(static_cast<size_t>(p.n_q()), false);
  for (int32_t i = 0; i < p.n_q(); ++i) {
    std::vector<double> s(static_cast<size_t>(p.n_k()), -INFINITY);
    double mx = -INFINITY;
    for (int32_t j = 0; j < p.n_k(); ++j) {
      if (!p.visible(i, j)) continue;
      double dot = 0;
      for (int32_t c = 0; c < p.dk; ++c) dot += static_cast<double>(p.q[static_cast<size_t>(i) * p.dk + c]) * key(j, c);
      s[static_cast<size_t>(j)] = dot;
      mx = std::max(mx, dot);
    }
    if (mx == -INFINITY) continue;
    sees_any[static_cast<size_t>(i)] = true;
    double sum = 0;
    for (auto& x : s) sum += (x = std::exp(x - mx));  // exp(-inf) = 0 for hidden keys
    for (int32_t j = 0; j < p.n_k(); ++j) {
      for (int32_t c = 0; c < p.dv; ++c)
        out[static_cast<size_t>(i) * p.dv + c] += s[static_cast<size_t>(j)] / sum * value(j, c);
    }
  }
  return out;
}

std::vector<double> direct(const Problem& p, std::vector<bool>& sees_any) {
  return direct(
      p, sees_any, [&](int32_t j, int32_t c) { return tensor::f16_to_f32(p.k[static_cast<size_t>(j) * p.dk + c]); },
      [&](int32_t j, int32_t c) { return tensor::f16_to_f32(p.v[static_cast<size_t>(j) * p.dv + c]); });
}

// A query that saw no key keeps the starting state exactly; the others carry a positive sum.
void expect_state(const Flash& f, const Problem& p, const std::vector<bool>& sees_any, const std::string& what) {
  for (int32_t i = 0; i < p.n_q(); ++i) {
    if (sees_any[static_cast<size_t>(i)]) {
      ASSERT_GT(f.l[i], 0.0f) << what << " query " << i;
      ASSERT_GT(f.m[i], -INFINITY) << what << " query " << i;
      continue;
    }
    ASSERT_EQ(f.m[i], -INFINITY) << what << " query " << i;
    ASSERT_EQ(f.l[i], 0.0f) << what << " query " << i;
    for (int32_t c = 0; c < p.dv; ++c) ASSERT_EQ(f.o[static_cast<size_t>(i) * p.dv + c], 0.0f) << what;
  }
}

double tolerance(int32_t dk) { return 1e-5 * std::sqrt(dk / 64.0); }

float normalised(const Flash& f, const Problem& p, int32_t i, int32_t c) {
  return f.o[static_cast<size_t>(i) * p.dv + c] / f.l[static_cast<size_t>(i)];
}

std::vector<Problem> all_problems() {
  std::vector<Problem> ps;
  // Head dims of the supported models (64: SmolLM2, 128, 256: Gemma 3) take the SIMD kernels; 40 falls back to the
  // twin. On AVX-512, 1 to 4 queries take the decode kernel (keys as rows, one instantiation per count); at 64
  // dimensions 5 and 6 do too, and 7 to 18 (12 with sparse key sets) run it over parts of up to 6; the rest take
  // the prompt kernel (transposed blocks, tiles of 6 queries).
  for (int32_t d : {64, 128, 256, 40}) {
    const std::string ds = " d=" + std::to_string(d);
    // Queries at 20..27 over keys 0..39 (n_k not a multiple of 16): the later keys are in their future.
    const std::vector<int32_t> prompt = {20, 21, 22, 23, 24, 25, 26, 27};
    ps.push_back(positional("causal prompt" + ds, d, prompt, 40, 0, 0, 0));
    ps.push_back(positional("causal decode" + ds, d, {20, 20, 20}, 40, 0, 0, 0));
    ps.push_back(positional("window prompt" + ds, d, prompt, 40, 0, 8, 0));
    ps.push_back(positional("window decode" + ds, d, {39, 39, 39, 39}, 40, 0, 8, 0));
    // One and two queries per call (a model without GQA, a group of two): the decode kernel's other query counts.
    ps.push_back(positional("causal decode one query" + ds, d, {33}, 40, 0, 0, 0));
    ps.push_back(positional("window decode two queries" + ds, d, {39, 39}, 40, 0, 8, 0));
    // A 2-token step of three query heads per KV head (six queries), and five: the decode kernel's largest counts.
    ps.push_back(positional("causal two-token step" + ds, d, {38, 38, 38, 39, 39, 39}, 40, 0, 0, 0));
    ps.push_back(positional("head span five queries" + ds, d, {36, 37, 37, 39, 39}, 40, 0, 8, 4));
    // Head span: sinks 0..3 exempt from the window; the first key block holds sinks, keys behind the window and
    // keys within it.
    ps.push_back(positional("head span prompt" + ds, d, prompt, 40, 0, 8, 4));
    ps.push_back(positional("head span decode" + ds, d, {30, 30, 30}, 40, 0, 8, 4));
    // Long runs: most blocks behind the window are skipped, the sink block and the diagonal are mixed.
    ps.push_back(positional("head span long decode" + ds, d, {299, 299, 299}, 300, 0, 64, 4));
    // Every key visible over many passes of the decode kernel's softmax (64 keys each); keys scaled up along the
    // run, so that scores reach new maxima (and new minima) in later passes and the outputs are rescaled there.
    ps.push_back(positional("causal long decode" + ds, d, {299, 299, 299}, 300, 0, 0, 0));
    Problem growing = positional("growing keys long decode" + ds, d, {299, 299, 299, 299, 299, 299}, 300, 0, 0, 0);
    for (int32_t j = 0; j < 300; ++j) {
      for (int32_t c = 0; c < d; ++c) {
        uint16_t& h = growing.k[static_cast<size_t>(j) * d + c];
        h = tensor::f32_to_f16(tensor::f16_to_f32(h) * (1.0f + static_cast<float>(j) / 150.0f));
      }
    }
    ps.push_back(growing);
    std::vector<int32_t> diagonal;
    for (int32_t t = 284; t < 300; ++t) diagonal.push_back(t);
    ps.push_back(positional("head span long prefill" + ds, d, diagonal, 300, 0, 64, 4));
    ps.push_back(positional("window long prefill" + ds, d, diagonal, 300, 0, 64, 0));
    // Queries that see no key: in the past of every key (5, 9), or with every key behind the window (200).
    ps.push_back(positional("some see nothing causal" + ds, d, {5, 30, 9, 60}, 40, 10, 0, 0));
    ps.push_back(positional("some see nothing window" + ds, d, {5, 30, 200, 45, 12, 13}, 40, 10, 8, 0));
    ps.push_back(positional("none sees anything" + ds, d, {3, 4, 5}, 40, 10, 0, 0));
    // Tree steps: every node with two query heads each plus a token outside the tree; and a decode-sized call.
    const std::vector<int32_t> all_nodes = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, -1};
    ps.push_back(tree("tree" + ds, d, all_nodes, 0, 0));
    ps.push_back(tree("tree few" + ds, d, {2, 4, -1}, 0, 0));
    ps.push_back(tree("tree head span" + ds, d, all_nodes, 16, 4));
    ps.push_back(tree("tree head span few" + ds, d, {4, 1, 2}, 16, 4));
    ps.push_back(tree("tree six" + ds, d, {0, 0, 3, 3, 4, 4}, 0, 0));
    // Sparse prefill: a prompt chunk's queries (two heads per token, as a GQA group) over contiguous keys, with and
    // without a window; a decode-sized call; keys with gaps (a 16-key block spans under 64 positions) and spread
    // wider (over 64 positions: the per-key path).
    std::vector<int32_t> chunk;
    for (int32_t t = 290; t < 310; ++t) chunk.insert(chunk.end(), {t, t});
    ps.push_back(sparse("sparse prefill" + ds, d, chunk, iota(0, 310), 0, 0));
    ps.push_back(sparse("sparse prefill window" + ds, d, chunk, iota(0, 310), 100, 4));
    ps.push_back(sparse("sparse few" + ds, d, {309, 309, 309}, iota(0, 310), 0, 0));
    // A chunk of 9 tokens of two heads: 18 queries with key sets (the prompt kernel: sparse calls keep it above 12
    // queries).
    std::vector<int32_t> short_chunk;
    for (int32_t t = 301; t < 310; ++t) short_chunk.insert(short_chunk.end(), {t, t});
    ps.push_back(sparse("sparse eighteen" + ds, d, short_chunk, iota(0, 310), 0, 0));
    ps.push_back(sparse("sparse five" + ds, d, {305, 306, 307, 309, 309}, iota(0, 310, 2), 0, 0));
    ps.push_back(sparse("sparse gaps" + ds, d, {450, 451, 452, 453, 454, 455, 456, 456, 456, 456}, iota(0, 152, 3), 0, 0));
    ps.push_back(sparse("sparse spread" + ds, d, {600, 601, 602, 603, 604, 605, 606, 606, 606, 606}, iota(0, 122, 5), 0, 0));
  }
  return ps;
}

TEST(FlashAttention, EveryMaskMatchesTwinAndDirectSoftmax) {
  for (const Problem& p : all_problems()) {
    std::vector<bool> sees_any;
    const std::vector<double> want = direct(p, sees_any);
    const Flash twin = run_flash(ref::attention_update, p, /*in_runs=*/true);
    expect_state(twin, p, sees_any, "twin " + p.name);
    for (int32_t i = 0; i < p.n_q(); ++i) {
      if (!sees_any[static_cast<size_t>(i)]) continue;
      for (int32_t c = 0; c < p.dv; ++c) {
        ASSERT_NEAR(normalised(twin, p, i, c), want[static_cast<size_t>(i) * p.dv + c], tolerance(p.dk))
            << "twin " << p.name << " query " << i << " dim " << c;
      }
    }
    for (Isa isa : supported_isas()) {
      for (bool in_runs : {true, false}) {
        const std::string what = std::string(isa_name(isa)) + " " + p.name + (in_runs ? " in runs" : " one call");
        const Flash got = run_flash(float_ops(isa).attention_update, p, in_runs);
        expect_state(got, p, sees_any, what);
        for (int32_t i = 0; i < p.n_q(); ++i) {
          if (!sees_any[static_cast<size_t>(i)]) continue;
          for (int32_t c = 0; c < p.dv; ++c)
            ASSERT_NEAR(normalised(got, p, i, c), normalised(twin, p, i, c), tolerance(p.dk)) << what << " query " << i;
        }
      }
    }
  }
}

// The cases meant to exercise queries that see nothing really have such queries (and others that see keys), so
// the m = -inf, l = 0 checks above are not vacuous.
TEST(FlashAttention, CasesWithInvisibleQueriesHaveThem) {
  for (const Problem& p : all_problems()) {
    std::vector<bool> sees_any;
    direct(p, sees_any);
    const auto n_blind = std::count(sees_any.begin(), sees_any.end(), false);
    if (p.name.starts_with("some see nothing")) {
      EXPECT_EQ(n_blind, 2) << p.name;
    } else if (p.name.starts_with("none sees anything")) {
      EXPECT_EQ(n_blind, p.n_q()) << p.name;
    } else {
      EXPECT_EQ(n_blind, 0) << p.name;
    }
  }
}

std::vector<std::pair<Isa, bool>> isas_and_runs() {
  std::vector<std::pair<Isa, bool>> out;
  for (Isa isa : supported_isas())
    for (bool in_runs : {true, false}) out.emplace_back(isa, in_runs);
  return out;
}

// Token t of a step whose queries are n_heads per token, in token order: its query heads alone, over the keys the
// step's problem holds, or over only the first n_k of them (n_k > 0: a plain decode step's cache ends at the token).
Problem token_alone(const Problem& all, int32_t t, int32_t n_heads, int32_t n_k = 0) {
  Problem one = all;
  one.queries_apart = false;
  const int32_t d = all.dk;
  one.q_pos.assign(all.q_pos.begin() + t * n_heads, all.q_pos.begin() + (t + 1) * n_heads);
  one.q.assign(all.q.begin() + static_cast<int64_t>(t) * n_heads * d,
               all.q.begin() + static_cast<int64_t>(t + 1) * n_heads * d);
  if (n_k > 0) {
    one.k_pos.resize(static_cast<size_t>(n_k));
    one.k.resize(static_cast<size_t>(n_k) * all.dk);
    one.v.resize(static_cast<size_t>(n_k) * all.dv);
  }
  return one;
}

// Token t's m, l and o in `whole` are, bit for bit, those of its heads in `alone`.
void expect_token_bits(const Flash& whole, const Flash& alone, int32_t t, int32_t n_heads, int32_t dv,
                       const std::string& what) {
  for (int32_t h = 0; h < n_heads; ++h) {
    const size_t i = static_cast<size_t>(t * n_heads + h);
    const std::string where = what + " token " + std::to_string(t) + " head " + std::to_string(h);
    ASSERT_EQ(whole.m[i], alone.m[static_cast<size_t>(h)]) << where;
    ASSERT_EQ(whole.l[i], alone.l[static_cast<size_t>(h)]) << where;
    for (int32_t c = 0; c < dv; ++c)
      ASSERT_EQ(whole.o[i * static_cast<size_t>(dv) + c], alone.o[static_cast<size_t>(h * dv + c)]) << where;
  }
}

// What lossless speculative decoding and batched greedy decoding lean on: in the decode kernel (1 to 18 queries at 64
// dimensions, 1 to 4 above), a query's result does not depend on the other queries of its call. A step of several
// tokens (6 with SmolLM2's 3 query heads each, 3 tokens of one head above) gives each token, bit for bit, what a
// call with that token's query heads alone gives, over a cache that holds keys in its future too (invisible to it),
// as a verification step's does.
TEST(FlashAttention, DecodeQueryResultIsIndependentOfItsCallmates) {
  for (int32_t d : {64, 128, 256}) {
    for (const auto& [window, n_sink] : {std::pair<int32_t, int32_t>{0, 0}, {96, 4}}) {
      const int32_t n_heads = d == 64 ? 3 : 1, n_tokens = d == 64 ? 6 : 3;
      // Tokens far apart (the last at 299), so that under the window each sees blocks the others do not.
      std::vector<int32_t> q_pos;
      for (int32_t t = 0; t < n_tokens; ++t)
        for (int32_t h = 0; h < n_heads; ++h) q_pos.push_back(299 - 30 * (n_tokens - 1 - t));
      const Problem all = positional("step", d, q_pos, 300, 0, window, n_sink);
      for (const auto& [isa, in_runs] : isas_and_runs()) {
        const AttentionFn fn = float_ops(isa).attention_update;
        const Flash whole = run_flash(fn, all, in_runs);
        const std::string what = std::string(isa_name(isa)) + (in_runs ? " in runs" : " one call") +
                                 " d=" + std::to_string(d) + " window=" + std::to_string(window);
        for (int32_t t = 0; t < n_tokens; ++t)
          expect_token_bits(whole, run_flash(fn, token_alone(all, t, n_heads), in_runs), t, n_heads, d, what);
      }
    }
  }
}

// The avx512 kernel with and without its requests for the next block's rows (the table takes the latter on AMD):
// the same bits on every problem, in runs and in one call.
TEST(FlashAttention, StreamedKernelGivesTheBitsOfTheOneThatAsksAhead) {
  const std::vector<Isa> isas = supported_isas();
  if (std::find(isas.begin(), isas.end(), Isa::kAvx512) == isas.end()) GTEST_SKIP() << "no avx512 on this CPU";
  for (const Problem& p : all_problems()) {
    for (bool in_runs : {true, false}) {
      const Flash ahead = run_flash(detail::attention_update_avx512, p, in_runs);
      const Flash streamed = run_flash(detail::attention_update_avx512_streamed, p, in_runs);
      const std::string what = p.name + (in_runs ? " in runs" : " one call");
      ASSERT_EQ(ahead.m, streamed.m) << what;
      ASSERT_EQ(ahead.l, streamed.l) << what;
      ASSERT_EQ(ahead.o, streamed.o) << what;
    }
  }
}

// The prompt kernel keeps a query's sums its own too: a prompt chunk's queries (16 tokens of 3 query heads, spread
// out so that under the window each sees blocks the others do not) get the same bits in one call as in calls of
// tokens 0-6 and 7-15 (21 and 27 queries, past the row kernel's 18, over the prompt kernel's tiles of 6 at other
// offsets).
TEST(FlashAttention, PromptQueryResultIsIndependentOfItsCallmates) {
  for (int32_t d : {64, 256}) {
    for (const auto& [window, n_sink] : {std::pair<int32_t, int32_t>{0, 0}, {96, 4}}) {
      const int32_t n_heads = 3, n_tokens = 16;
      std::vector<int32_t> q_pos;
      for (int32_t t = 0; t < n_tokens; ++t)
        for (int32_t h = 0; h < n_heads; ++h) q_pos.push_back(299 - 15 * (n_tokens - 1 - t));
      const Problem all = positional("chunk", d, q_pos, 300, 0, window, n_sink);
      for (const auto& [isa, in_runs] : isas_and_runs()) {
        const AttentionFn fn = float_ops(isa).attention_update;
        const Flash whole = run_flash(fn, all, in_runs);
        const std::string what = std::string(isa_name(isa)) + (in_runs ? " in runs" : " one call") +
                                 " d=" + std::to_string(d) + " window=" + std::to_string(window);
        for (const auto& [t0, t1] : {std::pair<int32_t, int32_t>{0, 7}, {7, 16}}) {
          Problem part = all;
          part.q_pos.assign(all.q_pos.begin() + t0 * n_heads, all.q_pos.begin() + t1 * n_heads);
          part.q.assign(all.q.begin() + static_cast<int64_t>(t0) * n_heads * d,
                        all.q.begin() + static_cast<int64_t>(t1) * n_heads * d);
          const Flash got = run_flash(fn, part, in_runs);
          for (int32_t i = 0; i < (t1 - t0) * n_heads; ++i) {
            const size_t w = static_cast<size_t>(t0 * n_heads + i), g = static_cast<size_t>(i);
            const std::string where = what + " query " + std::to_string(w);
            ASSERT_EQ(whole.m[w], got.m[g]) << where;
            ASSERT_EQ(whole.l[w], got.l[g]) << where;
            for (int32_t c = 0; c < d; ++c)
              ASSERT_EQ(whole.o[w * static_cast<size_t>(d) + c], got.o[g * static_cast<size_t>(d) + c]) << where;
          }
        }
      }
    }
  }
}

// What lossless speculation leans on when a verification step has more queries than the row kernel's calls take
// (AttentionMask::queries_apart, set by the engine for a verification step's tokens): each of 17 consecutive tokens
// (3 query heads each at 64 dimensions, 4 above, as SmolLM2 and Gemma 3 have) gets, bit for bit, what plain
// decoding gives it: a call with its own query heads over the keys up to its own position only.
TEST(FlashAttention, VerificationTokenGetsItsDecodeBits) {
  for (int32_t d : {64, 128, 256}) {
    for (const auto& [window, n_sink] : {std::pair<int32_t, int32_t>{0, 0}, {96, 4}}) {
      const int32_t n_heads = d == 64 ? 3 : 4, n_tokens = 17, last = 299;
      std::vector<int32_t> q_pos;
      for (int32_t t = 0; t < n_tokens; ++t)
        for (int32_t h = 0; h < n_heads; ++h) q_pos.push_back(last - (n_tokens - 1 - t));
      Problem all = positional("verification", d, q_pos, last + 1, 0, window, n_sink);
      all.queries_apart = true;
      for (const auto& [isa, in_runs] : isas_and_runs()) {
        const AttentionFn fn = float_ops(isa).attention_update;
        const Flash whole = run_flash(fn, all, in_runs);
        const std::string what = std::string(isa_name(isa)) + (in_runs ? " in runs" : " one call") +
                                 " d=" + std::to_string(d) + " window=" + std::to_string(window);
        for (int32_t t = 0; t < n_tokens; ++t) {
          // The plain decode step of token t: its query heads, the keys up to its position.
          const int32_t n_k = all.q_pos[static_cast<size_t>(t * n_heads)] + 1;
          expect_token_bits(whole, run_flash(fn, token_alone(all, t, n_heads, n_k), in_runs), t, n_heads, d, what);
        }
      }
    }
  }
}

// What a tree verification step leans on to lay a node's branch out as plain decoding does (model/attention.cc,
// attend_tree_page): a call split at a multiple of kAttentionPassKeys keys gives every query the bits of one call,
// on every ISA, with queries kept apart or not, under a window with sinks or none.
TEST(FlashAttention, CallSplitAtPassKeysKeepsBits) {
  for (int32_t d : {64, 128, 256}) {
    for (const auto& [window, n_sink] : {std::pair<int32_t, int32_t>{0, 0}, {96, 4}}) {
      for (const int32_t n_tokens : {1, 5}) {
        std::vector<int32_t> q_pos;
        for (int32_t t = 0; t < n_tokens; ++t)
          for (int32_t h = 0; h < 3; ++h) q_pos.push_back(299 - (n_tokens - 1 - t));
        Problem p = positional("split", d, q_pos, 300, 0, window, n_sink);
        for (const bool apart : {false, true}) {
          p.queries_apart = apart;
          for (Isa isa : supported_isas()) {
            const AttentionFn fn = float_ops(isa).attention_update;
            const Flash whole = run_flash(fn, p, /*in_runs=*/false);
            constexpr int32_t kPass = kAttentionPassKeys;
            const std::vector<std::vector<int32_t>> cut_sets = {{kPass}, {2 * kPass, 4 * kPass}, {kPass, 3 * kPass}};
            for (const std::vector<int32_t>& cuts : cut_sets) {
              Flash split;
              split.m.assign(static_cast<size_t>(p.n_q()), -INFINITY);
              split.l.assign(static_cast<size_t>(p.n_q()), 0.0f);
              split.o.assign(static_cast<size_t>(p.n_q()) * p.dv, 0.0f);
              for (size_t c = 0; c <= cuts.size(); ++c) {
                const int32_t first = c == 0 ? 0 : cuts[c - 1], end = c == cuts.size() ? p.n_k() : cuts[c];
                fn(p.q.data(), p.dk, p.n_q(), p.k.data() + static_cast<int64_t>(first) * p.dk, p.dk,
                   p.v.data() + static_cast<int64_t>(first) * p.dv, p.dv, end - first, p.mask(first), p.dk, p.dv,
                   split.m.data(), split.l.data(), split.o.data(), p.dv);
              }
              const std::string what = std::string(isa_name(isa)) + " d=" + std::to_string(d) + " window=" +
                                       std::to_string(window) + " tokens=" + std::to_string(n_tokens) +
                                       (apart ? " apart" : "") + " first cut " + std::to_string(cuts[0]);
              EXPECT_EQ(whole.m, split.m) << what;
              EXPECT_EQ(whole.l, split.l) << what;
              EXPECT_EQ(whole.o, split.o) << what;
            }
          }
        }
      }
    }
  }
}

// What makes tree verification correct: a node's output over the whole tree step equals the output of a plain
// sequential decode over the cached prefix and that node's own branch (its ancestors, in position order).
TEST(FlashAttention, TreeBranchEqualsDecodeOfThatBranchAlone) {
  for (int32_t d : {64, 128, 256}) {
    for (const auto& [window, n_sink] : {std::pair<int32_t, int32_t>{0, 0}, {16, 4}}) {
      const Problem t = tree("tree", d, {0, 1, 2, 3, 4}, window, n_sink);
      for (Isa isa : supported_isas()) {
        const AttentionFn fn = float_ops(isa).attention_update;
        const Flash whole = run_flash(fn, t, /*in_runs=*/false);
        std::vector<std::vector<float>> branch_out(5);  // [node][dv]
        for (int32_t node = 0; node < 5; ++node) {
          // The prefix and the node's ancestors as an ordinary positional problem (no tree).
          Problem b;
          b.dk = b.dv = d;
          b.window = window;
          b.n_sink = n_sink;
          b.q_pos = {kNodePos[node]};
          b.q.assign(t.q.begin() + static_cast<int64_t>(node) * d, t.q.begin() + static_cast<int64_t>(node + 1) * d);
          std::vector<int32_t> keys;
          for (int32_t j = 0; j < kPrefix; ++j) keys.push_back(j);
          for (int32_t a : t.tree_ancestors[static_cast<size_t>(node)]) keys.push_back(kPrefix + a);
          for (int32_t j : keys) {
            b.k_pos.push_back(t.k_pos[static_cast<size_t>(j)]);
            b.k.insert(b.k.end(), t.k.begin() + static_cast<int64_t>(j) * d, t.k.begin() + static_cast<int64_t>(j + 1) * d);
            b.v.insert(b.v.end(), t.v.begin() + static_cast<int64_t>(j) * d, t.v.begin() + static_cast<int64_t>(j + 1) * d);
          }
          const Flash alone = run_flash(fn, b, /*in_runs=*/true);
          for (int32_t c = 0; c < d; ++c) {
            ASSERT_NEAR(normalised(whole, t, node, c), normalised(alone, b, 0, c), tolerance(d))
                << isa_name(isa) << " d=" << d << " window=" << window << " node " << node << " dim " << c;
            branch_out[static_cast<size_t>(node)].push_back(normalised(alone, b, 0, c));
          }
        }
        // The sibling leaves 2 and 4 sit at the same position but see different keys: their outputs differ, so the
        // equality above could not hold if the kernel mixed the branches.
        float max_diff = 0.0f;
        for (int32_t c = 0; c < d; ++c) max_diff = std::max(max_diff, std::fabs(branch_out[2][c] - branch_out[4][c]));
        EXPECT_GT(max_diff, 1e-2f) << isa_name(isa) << " d=" << d;
      }
    }
  }
}

// KIVI-quantized keys and values (attention_update_quantized): random codes under random per-group parameters, in
// key groups of irregular sizes (eviction leaves groups of any size), so that the kernels' blocks end at group
// boundaries that are not multiples of 16.
struct QuantizedProblem {
  int32_t bits = 8;
  std::vector<uint8_t> key_codes, value_codes;     // [n_k, dk * bits / 8], [n_k, dv * bits / 8]
  std::vector<uint16_t> key_params, value_params;  // [n_groups, 2, dk], [n_k, dv / 32, 2]
  std::vector<int32_t> group_end;                  // [n_groups]
  std::vector<float> keys, values;                 // [n_k, dk], [n_k, dv]: code * scale + zero, written out here

  QuantizedRows rows(int32_t first_group = 0) const {
    // Keys from the start of group first_group, with their groups renumbered from 0 (a page's later cells).
    const int32_t first_key = first_group == 0 ? 0 : group_end[static_cast<size_t>(first_group - 1)];
    rebased.clear();
    for (size_t g = static_cast<size_t>(first_group); g < group_end.size(); ++g)
      rebased.push_back(group_end[g] - first_key);
    const int64_t dk = static_cast<int64_t>(key_params.size()) / (2 * static_cast<int64_t>(group_end.size()));
    const int64_t dv = static_cast<int64_t>(values.size()) / static_cast<int64_t>(group_end.back());
    QuantizedRows r;
    r.bits = bits;
    r.key_codes = key_codes.data() + first_key * dk * bits / 8;
    r.key_params = key_params.data() + first_group * 2 * dk;
    r.group_end = rebased.data();
    r.n_groups = static_cast<int32_t>(rebased.size());
    r.value_codes = value_codes.data() + first_key * dv * bits / 8;
    r.value_params = value_params.data() + first_key * (dv / kQuantizedValueGroup) * 2;
    return r;
  }
  mutable std::vector<int32_t> rebased;
};

QuantizedProblem quantize_randomly(const Problem& p, int32_t bits, uint32_t seed) {
  std::mt19937 rng(seed);
  const int32_t levels = (1 << bits) - 1;
  std::uniform_int_distribution<int32_t> code(0, levels);
  std::uniform_real_distribution<float> spread(0.5f, 4.0f), shift(-2.5f, -0.25f);
  QuantizedProblem qp;
  qp.bits = bits;
  const int32_t group_sizes[] = {32, 5, 16, 1, 27, 40, 32, 32};
  for (int32_t end = 0, i = 0; end < p.n_k(); ++i) {
    end = std::min(p.n_k(), end + group_sizes[i % 8]);
    qp.group_end.push_back(end);
  }
  // Codes as numbers first ([n, d] ints), packed as the format says.
  auto pack = [&](int32_t n, int32_t d, std::vector<int32_t>& ints) {
    std::vector<uint8_t> bytes(static_cast<size_t>(n) * d * bits / 8, 0);
    ints.resize(static_cast<size_t>(n) * d);
    for (int32_t r = 0; r < n; ++r) {
      for (int32_t c = 0; c < d; ++c) {
        const int32_t x = code(rng);
        ints[static_cast<size_t>(r) * d + c] = x;
        uint8_t* row = bytes.data() + static_cast<int64_t>(r) * d * bits / 8;
        if (bits == 8) row[c] = static_cast<uint8_t>(x);
        else if (c < d / 2) row[c] |= static_cast<uint8_t>(x);
        else row[c - d / 2] |= static_cast<uint8_t>(x << 4);
      }
    }
    return bytes;
  };
  std::vector<int32_t> kc, vc;
  qp.key_codes = pack(p.n_k(), p.dk, kc);
  qp.value_codes = pack(p.n_k(), p.dv, vc);
  auto f16 = [](float x) { return tensor::f32_to_f16(x); };
  for (size_t g = 0; g < qp.group_end.size(); ++g) {
    for (int32_t c = 0; c < p.dk; ++c) qp.key_params.push_back(f16(spread(rng) / levels));
    for (int32_t c = 0; c < p.dk; ++c) qp.key_params.push_back(f16(shift(rng)));
  }
  const int32_t n_value_groups = p.dv / kQuantizedValueGroup;
  for (int32_t j = 0; j < p.n_k() * n_value_groups; ++j) {
    qp.value_params.push_back(f16(spread(rng) / levels));
    qp.value_params.push_back(f16(shift(rng)));
  }
  size_t g = 0;
  for (int32_t j = 0; j < p.n_k(); ++j) {
    while (qp.group_end[g] <= j) ++g;
    for (int32_t c = 0; c < p.dk; ++c)
      qp.keys.push_back(static_cast<float>(kc[static_cast<size_t>(j) * p.dk + c]) *
                            tensor::f16_to_f32(qp.key_params[g * 2 * p.dk + c]) +
                        tensor::f16_to_f32(qp.key_params[g * 2 * p.dk + p.dk + c]));
    for (int32_t c = 0; c < p.dv; ++c) {
      const size_t vg = static_cast<size_t>(j) * n_value_groups + c / kQuantizedValueGroup;
      qp.values.push_back(static_cast<float>(vc[static_cast<size_t>(j) * p.dv + c]) *
                              tensor::f16_to_f32(qp.value_params[2 * vg]) +
                          tensor::f16_to_f32(qp.value_params[2 * vg + 1]));
    }
  }
  return qp;
}

using QuantizedFn = decltype(FloatOps::attention_update_quantized);

// All keys in one call, or in two: the groups before the middle one, then the rest (a caller's two pages).
Flash run_quantized(QuantizedFn fn, const Problem& p, const QuantizedProblem& qp, bool split) {
  Flash f;
  f.m.assign(static_cast<size_t>(p.n_q()), -INFINITY);
  f.l.assign(static_cast<size_t>(p.n_q()), 0.0f);
  f.o.assign(static_cast<size_t>(p.n_q()) * p.dv, 0.0f);
  const auto middle = static_cast<int32_t>(qp.group_end.size() / 2);
  const int32_t cut = split && middle > 0 ? qp.group_end[static_cast<size_t>(middle - 1)] : 0;
  if (cut > 0) {
    fn(p.q.data(), p.dk, p.n_q(), qp.rows(0), cut, p.mask(0), p.dk, p.dv, f.m.data(), f.l.data(), f.o.data(), p.dv);
  }
  fn(p.q.data(), p.dk, p.n_q(), qp.rows(cut > 0 ? middle : 0), p.n_k() - cut, p.mask(cut), p.dk, p.dv, f.m.data(),
     f.l.data(), f.o.data(), p.dv);
  return f;
}

// The twin against a direct softmax in double over the dequantized keys and values written out above, and every
// ISA against the twin, for every mask of all_problems(), with 8- and 4-bit codes.
TEST(FlashAttention, QuantizedMatchesTwinAndDirectSoftmax) {
  for (const Problem& p : all_problems()) {
    if (p.dk % kQuantizedValueGroup != 0) continue;  // value groups are whole: 64, 128, 256
    for (int32_t bits : {8, 4}) {
      const QuantizedProblem qp = quantize_randomly(p, bits, 400 + static_cast<uint32_t>(p.dk + bits));
      std::vector<bool> sees_any;
      const std::vector<double> want = direct(
          p, sees_any, [&](int32_t j, int32_t c) { return qp.keys[static_cast<size_t>(j) * p.dk + c]; },
          [&](int32_t j, int32_t c) { return qp.values[static_cast<size_t>(j) * p.dv + c]; });
      const std::string name = p.name + " bits=" + std::to_string(bits);
      const Flash twin = run_quantized(ref::attention_update_quantized, p, qp, /*split=*/true);
      expect_state(twin, p, sees_any, "twin " + name);
      for (int32_t i = 0; i < p.n_q(); ++i) {
        if (!sees_any[static_cast<size_t>(i)]) continue;
        for (int32_t c = 0; c < p.dv; ++c)
          ASSERT_NEAR(normalised(twin, p, i, c), want[static_cast<size_t>(i) * p.dv + c], 2 * tolerance(p.dk))
              << "twin " << name << " query " << i << " dim " << c;
      }
      for (Isa isa : supported_isas()) {
        for (bool split : {true, false}) {
          const std::string what = std::string(isa_name(isa)) + " " + name + (split ? " in two calls" : " one call");
          const Flash got = run_quantized(float_ops(isa).attention_update_quantized, p, qp, split);
          expect_state(got, p, sees_any, what);
          for (int32_t i = 0; i < p.n_q(); ++i) {
            if (!sees_any[static_cast<size_t>(i)]) continue;
            for (int32_t c = 0; c < p.dv; ++c)
              ASSERT_NEAR(normalised(got, p, i, c), normalised(twin, p, i, c), 2 * tolerance(p.dk))
                  << what << " query " << i << " dim " << c;
          }
        }
      }
    }
  }
}

TEST(FlashAttentionDeathTest, TreeMaskWithoutQueryNodesAborts) {
  Problem p = tree("tree", 64, {0, 1}, 0, 0);
  AttentionMask mask = p.mask(0);
  mask.q_node = nullptr;
  std::vector<float> m(2, -INFINITY), l(2, 0.0f), o(2 * 64, 0.0f);
  EXPECT_DEATH(attention_update(p.q.data(), p.dk, p.n_q(), p.k.data(), p.dk, p.v.data(), p.dv, p.n_k(), mask, p.dk,
                                p.dv, m.data(), l.data(), o.data(), p.dv),
               "q_node");
}

}  // namespace
}  // namespace longhaul::kernels
