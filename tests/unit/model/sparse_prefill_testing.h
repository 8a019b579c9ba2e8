// Helpers for the sparse prefill builders' tests: a head of crafted queries and keys, the blocks a query block
// selected, and the check that a --prefill-attn spec is refused with a message that names it.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_mask.h"
#include "model/sparse_prefill.h"
#include "tensor/half.h"

namespace longhaul::model::sparse_prefill_testing {

// `n_q` queries at the end of an `n_k`-key context, written as floats; keys handed to the builders as f16.
struct CraftedHead {
  CraftedHead(int32_t n_keys, int32_t n_queries, int32_t head_dim)
      : n_k(n_keys),
        n_q(n_queries),
        dk(head_dim),
        q(static_cast<size_t>(n_queries) * head_dim, 0.0f),
        k(static_cast<size_t>(n_keys) * head_dim, 0.0f) {}
  int32_t n_k, n_q, dk;
  std::vector<float> q;  // [n_q, dk] the chunk's queries, at positions n_k - n_q ..
  std::vector<float> k;  // [n_k, dk]
  std::vector<uint16_t> k16;

  float* query(int32_t i) { return q.data() + static_cast<int64_t>(i) * dk; }
  float* key(int32_t pos) { return k.data() + static_cast<int64_t>(pos) * dk; }
  // The builders' view; valid until the keys change.
  HeadQueriesKeys view() {
    k16.resize(k.size());
    for (size_t i = 0; i < k.size(); ++i) k16[i] = tensor::f32_to_f16(k[i]);
    return {q.data(), n_q, n_k - n_q, k16.data(), n_k, dk};
  }
};

// Components N(0, 1), seeded.
inline CraftedHead random_head(int32_t n_k, int32_t n_q, int32_t dk, uint32_t seed) {
  CraftedHead h(n_k, n_q, dk);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : h.q) x = normal(rng);
  for (float& x : h.k) x = normal(rng);
  return h;
}

// The key blocks query block qblock selected, ascending.
inline std::vector<int32_t> selected_blocks(const HeadSparseKeys& keys, int32_t qblock) {
  std::vector<int32_t> out;
  for (int32_t kb = 0; kb < keys.n_block_words * 64; ++kb)
    if (keys.block_selected(qblock, kb)) out.push_back(kb);
  return out;
}

// Every query at positions [q_begin, q_end) has every causal key in its set.
inline void expect_every_causal_key(const HeadSparseKeys& keys, int32_t q_begin, int32_t q_end) {
  for (int32_t q = q_begin; q < q_end; ++q) {
    const kernels::SparseKeys s = keys.keys(q / HeadSparseKeys::kBlock);
    for (int32_t k = 0; k <= q; ++k) ASSERT_TRUE(kernels::sparse_key_selected(s, k)) << q << " " << k;
  }
}

// The options `spec` parses to (the defaults, after a test failure, when it is refused).
inline PrefillAttentionOptions parsed(const std::string& spec) {
  Result<PrefillAttentionOptions> r = parse_prefill_attention(spec);
  EXPECT_TRUE(r.is_ok()) << spec << ": " << r.message();
  return r.is_ok() ? *r : PrefillAttentionOptions{};
}

// `spec` is refused, and the message names it (as --prefill-attn SPEC) and contains `names`.
inline void expect_refused(const std::string& spec, const std::string& names) {
  Result<PrefillAttentionOptions> r = parse_prefill_attention(spec);
  ASSERT_FALSE(r.is_ok()) << spec;
  EXPECT_NE(r.message().find("--prefill-attn " + spec), std::string::npos) << r.message();
  EXPECT_NE(r.message().find(names), std::string::npos) << r.message();
}

}  // namespace longhaul::model::sparse_prefill_testing
