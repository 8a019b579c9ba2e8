// duo (DuoAttention): the head profile file, the choice of retrieval heads, and the pages each head frees.
// Expected values follow the paper's rule written out in the test: a streaming head keeps its sinks and the last
// `window` positions, a retrieval head keeps everything, a sliding-window layer keeps its window.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <string>

#include "kv/head_profile.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

using testing::tiny_context;
using testing::tiny_shape;

HeadProfile profile_with(int32_t n_layer, int32_t n_head, const std::vector<float>& scores) {
  HeadProfile p;
  p.model = "tiny.gguf";
  p.n_layer = n_layer;
  p.n_head_kv = n_head;
  for (float s : scores) p.heads.push_back({s, s, 0.0f, 0.0f});
  return p;
}

TEST(HeadProfile, RoundTripsThroughText) {
  const HeadProfile p = profile_with(2, 2, {0.5f, 0.25f, 0.125f, 1e-3f});
  Result<HeadProfile> q = parse_head_profile(format_head_profile(p));
  ASSERT_TRUE(q.is_ok()) << q.message();
  EXPECT_EQ(q->model, "tiny.gguf");
  ASSERT_EQ(q->n_layer, 2);
  ASSERT_EQ(q->n_head_kv, 2);
  for (int32_t il = 0; il < 2; ++il)
    for (int32_t h = 0; h < 2; ++h) EXPECT_FLOAT_EQ(q->at(il, h).score, p.at(il, h).score);
}

TEST(HeadProfile, RejectsMalformedFiles) {
  const std::string head = "longhaul-head-profile 1\nn_layer 1\nn_head_kv 2\n";
  struct Case {
    std::string text;
    std::string needle;  // part of the expected message
  };
  const Case cases[] = {
      {"", "empty"},
      {"GGUF\n", "not a head profile"},
      {"longhaul-head-profile 4\n", "newer version"},
      {head + "0 0 0.5 0.5 0 0\n", "1 of 2 heads"},
      {head + "0 0 0.5 0.5 0 0\n0 0 0.5 0.5 0 0\n", "listed twice"},
      {head + "0 2 0.5 0.5 0 0\n", "head is not"},
      {head + "1 0 0.5 0.5 0 0\n", "layer is not"},
      {head + "0 0 nan 0.5 0 0\n0 1 1 1 0 0\n", "finite"},
      {head + "0 0 -1 0.5 0 0\n0 1 1 1 0 0\n", "finite"},
      {head + "0 0 0.5 0.5 0\n", "expected 'layer head"},
      {"longhaul-head-profile 1\n0 0 1 1 1 1\n", "before n_layer"},
      {"longhaul-head-profile 1\nn_layer 5000\n", "n_layer must be"},
      {"longhaul-head-profile 1\nn_layer 4096\nn_head_kv 4096\n0 0 1 1 1 1\n", "exceeds"},
  };
  for (const Case& c : cases) {
    Result<HeadProfile> p = parse_head_profile(c.text);
    ASSERT_FALSE(p.is_ok()) << c.text;
    EXPECT_NE(p.message().find(c.needle), std::string::npos) << p.message();
  }
}

TEST(DuoPolicy, ChoosesTheBestScoredHeadsOfGlobalLayers) {
  // 3 layers x 2 heads; layer 1 is a sliding-window layer, so its heads (scored highest) are never chosen.
  const HeadProfile p = profile_with(3, 2, {0.1f, 0.4f, 0.9f, 0.8f, 0.3f, 0.2f});
  const std::vector<int32_t> windows = {0, 512, 0};
  // 4 global heads, scores 0.1 0.4 | 0.3 0.2: half of them are (0,1) and (2,0).
  EXPECT_EQ(choose_retrieval_heads(p, windows, 0.5f), (std::vector<bool>{false, true, false, false, true, false}));
  EXPECT_EQ(choose_retrieval_heads(p, windows, 0.0f), std::vector<bool>(6, false));
  EXPECT_EQ(choose_retrieval_heads(p, windows, 1.0f), (std::vector<bool>{true, true, false, false, true, true}));
}

class DuoCache : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "duo_profile_" + std::to_string(::getpid()) + ".heads";
    // Layer 0 global: head 0 retrieves, head 1 streams. Layer 1: sliding window of 100.
    ASSERT_TRUE(save_head_profile(profile_with(2, 2, {0.9f, 0.1f, 0.0f, 0.0f}), path_).is_ok());
    context_ = tiny_context(tiny_shape(2));
    context_.layer_window = {0, 100};
    Result<HeadProfile> loaded = load_head_profile(path_);
    ASSERT_TRUE(loaded.is_ok()) << loaded.message();
    context_.head_profile = std::make_shared<HeadProfile>(std::move(loaded).value());
  }
  void TearDown() override { std::remove(path_.c_str()); }

  std::string path_;
  KvPolicyContext context_;
  const std::string spec_ = "duo:retrieval=0.5:sink=4:window=70";
};

TEST_F(DuoCache, StreamingHeadsKeepSinksAndWindowAndRetrievalHeadsKeepEverything) {
  std::unique_ptr<KvPolicy> duo = testing::make(spec_, context_);
  EXPECT_TRUE(duo->has_head_spans());
  EXPECT_EQ(duo->head_span(0, 0).window, 0);  // retrieval
  EXPECT_EQ(duo->head_span(0, 1).window, 70);
  EXPECT_EQ(duo->head_span(0, 1).n_sink, 64);  // sink=4 rounded up to the page that holds it
  EXPECT_EQ(duo->head_span(1, 0).window, 0);  // the layer's own window applies
  ASSERT_EQ(duo->page_tokens(), 64);

  KvCacheOptions co;
  co.page_tokens = duo->page_tokens();
  co.max_cells = 4096;
  KvCache cache(context_.shape, co);
  const SeqId seq = *cache.add_sequence();
  const int64_t head_cell_bytes = 2 * (context_.shape.head_dim_k + context_.shape.head_dim_v);
  for (int32_t step_tokens : {50, 50, 1, 100, 37, 1, 1, 200, 1}) {
    testing::step(*duo, cache, seq, step_tokens);
    // What the next query (at next_position) may still see decides what a plan frees; check the state left by
    // the plan of the step just taken, whose first query was at q0.
    const int32_t q0 = cache.next_position(seq) - step_tokens;
    int64_t expected_bytes = 0;
    for (int32_t il = 0; il < 2; ++il) {
      const int32_t n_pages = cache.n_pages(seq, il);
      for (int32_t h = 0; h < 2; ++h) {
        const bool retrieval = il == 0 && h == 0;
        const int32_t n_sink = il == 0 ? 64 : 0, window = il == 0 ? 70 : 100;
        for (int32_t ip = 0; ip < n_pages; ++ip) {
          const KvCache::PageSpan span = cache.page_span(seq, il, ip);
          const int32_t first = span.first_cell, last = span.first_cell + span.n_cells - 1;  // cell == position
          // The plan before this step saw the pages holding cells < q0, the last of which (the one holding cell
          // q0 - 1) takes appends and is kept; frees are never undone, and later plans only see later queries.
          const bool before_last = last < q0 - 1;
          const bool holds_last_cell = first <= q0 - 1 && q0 - 1 <= last;
          const bool expect_freed =
              !retrieval && before_last && !holds_last_cell && first >= n_sink && q0 - last >= window;
          EXPECT_EQ(cache.head_rows_present(seq, il, h, ip), !expect_freed)
              << "layer " << il << " head " << h << " page " << ip << " q0 " << q0;
          if (cache.head_rows_present(seq, il, h, ip)) expected_bytes += span.n_cells * head_cell_bytes;
        }
      }
    }
    EXPECT_EQ(cache.used_bytes(), expected_bytes);
  }
  // After 441 tokens the streaming head of layer 0 holds its sink page and the pages of the last 70 positions.
  EXPECT_FALSE(cache.head_rows_present(seq, 0, 1, 1));
  EXPECT_TRUE(cache.head_rows_present(seq, 0, 1, 0));
  EXPECT_TRUE(cache.head_rows_present(seq, 0, 0, 1));
  KvCache::Scratch scratch;
  EXPECT_EQ(cache.head_rows(seq, 0, 1, 1, scratch).keys, nullptr);
}

// With KIVI storage a streaming head frees its rows of quantized pages by the same rule, and keeps the f16 prefix
// and residual, which the next append quantizes; the bytes are those of the rows still held.
TEST_F(DuoCache, QuantizedStorageFreesTheStreamingHeadsQuantizedRows) {
  std::unique_ptr<KvPolicy> duo = testing::make(spec_, context_);
  KvCacheOptions co;
  co.page_tokens = duo->page_tokens();
  co.max_cells = 4096;
  KvQuantOptions q;
  q.bits = 8;
  q.group = 8;
  q.residual = 16;
  q.f16_prefix = 4;
  KvCache cache(context_.shape, co, q);
  const SeqId seq = *cache.add_sequence();
  const KvShape& shape = context_.shape;
  KvQuantFormat f;
  f.bits = 8;
  f.group = 8;
  f.n_head = shape.n_head_kv;
  f.dk = shape.head_dim_k;
  f.dv = shape.head_dim_v;
  const int64_t head_cell = f.key_row_bytes() + f.value_row_bytes() + 4 * f.n_value_groups();
  const int64_t head_group = 4 * static_cast<int64_t>(f.dk);
  const int64_t f16_head_cell = 2 * (shape.head_dim_k + shape.head_dim_v);
  int32_t n_freed = 0, prev_tokens = 0;
  for (int32_t step_tokens : {50, 50, 1, 100, 37, 1, 1, 200, 1, 1}) {
    testing::step(*duo, cache, seq, step_tokens);
    // The plan before this step saw f16 cells (not freeable yet) from position q0 - f16_tail on: the residual
    // left by the previous append's freeze (< R + G) plus the previous step's cells.
    const int32_t f16_tail = q.residual + q.group - 1 + prev_tokens;
    prev_tokens = step_tokens;
    const int32_t q0 = cache.next_position(seq) - step_tokens;
    int64_t expected_bytes = 0;
    for (int32_t il = 0; il < 2; ++il) {
      const int32_t n_pages = cache.n_pages(seq, il);
      for (int32_t ip = 0; ip < n_pages; ++ip) {
        const KvCache::PageSpan span = cache.page_span(seq, il, ip);
        const int32_t first = span.first_cell, last = span.first_cell + span.n_cells - 1;  // cell == position
        int32_t n_present = 0;
        for (int32_t h = 0; h < 2; ++h) {
          const bool retrieval = il == 0 && h == 0;
          const int32_t n_sink = il == 0 ? 64 : 0, window = il == 0 ? 70 : 100;
          const bool present = cache.head_rows_present(seq, il, h, ip);
          n_present += present;
          if (!span.quantized || retrieval || first < n_sink) {
            EXPECT_TRUE(present) << "layer " << il << " head " << h << " page " << ip;
          } else if (!present) {
            // Freed only once every cell was behind the window of a query before this step's.
            EXPECT_GE(q0 - last, window) << "layer " << il << " head " << h << " page " << ip;
            ++n_freed;
          } else if (ip + 1 < n_pages && q0 - last >= window && last < q0 - f16_tail) {
            ADD_FAILURE() << "layer " << il << " head " << h << " page " << ip << " should have been freed";
          }
        }
        if (span.quantized) {
          // Freezing makes whole groups of G cells, and eviction never happens here: n_cells / G groups.
          const int64_t n_groups = span.n_cells / q.group;
          EXPECT_EQ(span.n_cells % q.group, 0);
          expected_bytes += n_present * (span.n_cells * head_cell + n_groups * head_group) + 4 * n_groups;
        } else {
          expected_bytes += n_present * span.n_cells * f16_head_cell;
        }
      }
    }
    EXPECT_EQ(cache.used_bytes(), expected_bytes);
  }
  EXPECT_GT(n_freed, 0);
  // The freed head reads nothing there; the others still dequantize their rows.
  for (int32_t ip = 0; ip < cache.n_pages(seq, 0); ++ip) {
    if (cache.head_rows_present(seq, 0, 1, ip)) continue;
    KvCache::Scratch scratch;
    EXPECT_EQ(cache.head_rows(seq, 0, 1, ip, scratch).keys, nullptr);
    EXPECT_NE(cache.head_rows(seq, 0, 0, ip, scratch).keys, nullptr);
    break;
  }
}

TEST_F(DuoCache, RejectsMissingOrMismatchedProfiles) {
  KvPolicyContext none = context_;
  none.head_profile = nullptr;
  Result<BuiltKvPolicy> p = make_kv_policy(spec_, none);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("no head profile"), std::string::npos);

  // The profile is a file the caller loads (the policy is given the model's profile, not a path).
  const Result<HeadProfile> missing = load_head_profile(path_ + ".missing");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.message().find(".missing"), std::string::npos);

  KvPolicyContext three = tiny_context(tiny_shape(3));
  three.layer_window = {0, 0, 0};
  three.head_profile = context_.head_profile;
  p = make_kv_policy(spec_, three);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("is for 2 layers x 2 KV heads, the model has 3 x 2"), std::string::npos) << p.message();
  EXPECT_NE(p.message().find(path_), std::string::npos) << p.message();  // names the file
}

}  // namespace
}  // namespace longhaul::kv
