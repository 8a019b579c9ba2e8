// PrefixCache (generate/prefix_cache.h): a request served from cached blocks gets the logits it gets without the
// cache, the cached pages are stored once, least recently used blocks go first and free their pages, the counters
// count, and a policy that cannot share a prefix never touches the cache.
//
// Exactness: with n_batch equal to the page size, a prompt is fed in chunks that start at page boundaries whether or
// not its first pages come from the cache, so every cell and every query row goes through the same kernels with
// the same operands in both runs: the logits must be equal bit for bit, on any ISA.
#include <gtest/gtest.h>

#include "engine_testing.h"
#include "generate/generator.h"
#include "generate/prefix_cache.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

// Bytes of K/V data held by `n` f16 cells of a sequence of `engine` under the full policy.
int64_t cells_bytes(const Engine& engine, kv::SeqId seq, int64_t n) { return n * engine.cache().bytes_per_cell(seq); }

class PrefixCacheLogits : public EachModelTest {};

// Gemma 3's local layers see 512 positions: a 704-token cached prefix reaches past the window, and the cached cells
// stay put (full keeps every cell), so the window's mask is computed on the same positions as without the cache.
TEST_P(PrefixCacheLogits, AHitGivesTheLogitsOfTheUncachedRunBitForBit) {
  constexpr int32_t kPage = 64;
  const std::vector<int32_t> shared = some_tokens(730, 1);  // 11 whole pages + 26 tokens
  const std::vector<int32_t> first = concat(shared, some_tokens(40, 2));
  const std::vector<int32_t> second = concat(shared, some_tokens(50, 3));

  std::unique_ptr<Engine> engine = make_engine(*model_, pool_, 1024, kPage, kPage);
  PrefixCache cache(*engine);
  const kv::SeqId a = add_sequence(*engine, "full");
  feed(*engine, a, first);
  cache.insert(a, first);
  EXPECT_EQ(cache.n_blocks(), 12);  // 770 tokens: 12 whole pages
  engine->remove(a);
  ASSERT_EQ(cache.n_donors(), 1);
  const int64_t donor_bytes = engine->cache().used_bytes();

  kv::SeqId b = add_sequence(*engine, "full");
  Result<int32_t> hit = cache.reuse(b, second);
  ASSERT_TRUE(hit.is_ok()) << hit.message();
  EXPECT_EQ(*hit, 11 * kPage);  // the 12th page holds first's tokens, not second's
  EXPECT_EQ(engine->n_past(b), 11 * kPage);
  // The hit shares the donor's pages: no byte more.
  EXPECT_EQ(engine->cache().used_bytes(), donor_bytes);
  const std::vector<float> cached = feed(*engine, b, slice(second, static_cast<size_t>(*hit), second.size() - *hit));

  std::unique_ptr<Engine> fresh = make_engine(*model_, pool_, 1024, kPage, kPage);
  const std::vector<float> uncached = feed(*fresh, add_sequence(*fresh, "full"), second);
  EXPECT_TRUE(bit_identical(cached, uncached)) << "largest difference " << max_abs_diff(cached, uncached);

  EXPECT_EQ(cache.stats().n_lookups, 1);
  EXPECT_EQ(cache.stats().n_hits, 1);
  EXPECT_EQ(cache.stats().n_hit_tokens, 11 * kPage);
}

INSTANTIATE_TEST_SUITE_P(Models, PrefixCacheLogits, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

class PrefixCacheTest : public ::testing::Test {
 protected:
  static constexpr int32_t kPage = 32;
  void SetUp() override {
    model_ = shared_model(longhaul::testing::smollm2_path());
    if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
    engine_ = make_engine(*model_, pool_, 512, kPage, kPage);
  }
  // Feeds `tokens` to a new full sequence, offers it to `cache` and removes it.
  void store(PrefixCache& cache, const std::vector<int32_t>& tokens) {
    const kv::SeqId s = add_sequence(*engine_, "full");
    feed(*engine_, s, tokens);
    cache.insert(s, tokens);
    engine_->remove(s);
  }
  // The prompt tokens a new sequence under `policy` finds cached (the sequence is removed after).
  int32_t lookup(PrefixCache& cache, const std::vector<int32_t>& prompt, const std::string& policy = "full") {
    kv::SeqId s = add_sequence(*engine_, policy);
    Result<int32_t> hit = cache.reuse(s, prompt);
    EXPECT_TRUE(hit.is_ok()) << hit.message();
    if (engine_->has_sequence(s)) engine_->remove(s);
    return hit.is_ok() ? *hit : -1;
  }
  const model::Model* model_ = nullptr;
  ThreadPool pool_{2};
  std::unique_ptr<Engine> engine_;
};

TEST_F(PrefixCacheTest, SharedPagesCountOnceAndBranchesShareTheirCommonBlocks) {
  PrefixCache cache(*engine_);
  const std::vector<int32_t> common = some_tokens(2 * kPage, 1);
  const std::vector<int32_t> x = concat(common, some_tokens(kPage, 2)), y = concat(common, some_tokens(kPage, 3));
  const kv::SeqId probe = add_sequence(*engine_, "full");
  const int64_t page_bytes = cells_bytes(*engine_, probe, kPage);
  engine_->remove(probe);

  store(cache, x);
  EXPECT_EQ(cache.n_blocks(), 3);
  EXPECT_EQ(engine_->cache().used_bytes(), 3 * page_bytes);
  // y's first two blocks are x's: one new block. y was fed without the cache, so its donor holds pages of its own
  // for the common blocks; the common nodes now name it, and x's donor stays for x's last block.
  store(cache, y);
  EXPECT_EQ(cache.n_blocks(), 4);
  EXPECT_EQ(cache.n_donors(), 2);
  EXPECT_EQ(engine_->cache().used_bytes(), 6 * page_bytes);
  EXPECT_EQ(cache.stats().n_inserted_blocks, 4);
  // A third request forks y's donor for the common blocks: it adds no byte.
  const int64_t before = engine_->cache().used_bytes();
  kv::SeqId s = add_sequence(*engine_, "full");
  const std::vector<int32_t> z = concat(common, some_tokens(5, 4));
  Result<int32_t> hit = cache.reuse(s, z);
  ASSERT_TRUE(hit.is_ok()) << hit.message();
  EXPECT_EQ(*hit, 2 * kPage);
  EXPECT_EQ(engine_->cache().used_bytes(), before);
  for (int32_t il = 0; il < engine_->cache().shape().n_layer; ++il) {
    EXPECT_TRUE(engine_->cache().page_shared(s, il, 0));
    EXPECT_TRUE(engine_->cache().page_shared(s, il, 1));
  }
  // Its own tokens go to a page of its own: the shared ones stay as they were (5 cells more).
  feed(*engine_, s, slice(z, 2 * kPage, 5));
  EXPECT_EQ(engine_->cache().used_bytes(), before + cells_bytes(*engine_, s, 5));
  engine_->remove(s);
  EXPECT_EQ(engine_->cache().used_bytes(), before);
}

TEST_F(PrefixCacheTest, LeastRecentlyUsedBlocksGoFirstAndFreeTheirPages) {
  PrefixCacheOptions o;
  o.max_blocks = 4;
  PrefixCache cache(*engine_, o);
  const std::vector<int32_t> a = some_tokens(2 * kPage, 1), b = some_tokens(2 * kPage, 2), c = some_tokens(2 * kPage, 3);
  store(cache, a);
  store(cache, b);
  const int64_t two_prompts = engine_->cache().used_bytes();
  // Using a makes b the least recently used: c's blocks push b's out, not a's.
  EXPECT_EQ(lookup(cache, concat(a, some_tokens(3, 9))), 2 * kPage);
  store(cache, c);
  EXPECT_EQ(cache.n_blocks(), 4);
  EXPECT_EQ(cache.stats().n_evicted_blocks, 2);
  EXPECT_EQ(cache.n_donors(), 2);
  EXPECT_EQ(lookup(cache, concat(b, some_tokens(3, 9))), 0);
  EXPECT_EQ(lookup(cache, concat(a, some_tokens(3, 9))), 2 * kPage);
  EXPECT_EQ(lookup(cache, concat(c, some_tokens(3, 9))), 2 * kPage);
  EXPECT_EQ(engine_->cache().used_bytes(), two_prompts);  // b's pages are gone with its donor

  // One block at a time: the leaf goes and its donor is cut back to its parent block, freeing one page.
  ASSERT_TRUE(cache.evict_lru_block());
  EXPECT_EQ(cache.n_blocks(), 3);
  EXPECT_EQ(engine_->cache().used_bytes(), two_prompts * 3 / 4);
  // The least recently used path was a's (c was looked up last): a now matches one block only.
  EXPECT_EQ(lookup(cache, concat(a, some_tokens(3, 9))), kPage);
  // Under memory pressure: trim to one page's bytes keeps one block.
  cache.trim(two_prompts / 4);
  EXPECT_EQ(cache.n_blocks(), 1);
  EXPECT_EQ(engine_->cache().used_bytes(), two_prompts / 4);
  cache.clear();
  EXPECT_EQ(cache.n_blocks(), 0);
  EXPECT_EQ(cache.n_donors(), 0);
  EXPECT_EQ(engine_->cache().used_bytes(), 0);
}

TEST_F(PrefixCacheTest, APromptAlwaysFeedsItsLastTokenAndCountsAreKept) {
  PrefixCache cache(*engine_);
  const std::vector<int32_t> p = some_tokens(3 * kPage, 5);
  store(cache, p);
  // The whole prompt is cached, but its last token must be fed for its logits: two blocks, not three.
  EXPECT_EQ(lookup(cache, p), 2 * kPage);
  EXPECT_EQ(lookup(cache, concat(p, some_tokens(1, 6))), 3 * kPage);
  EXPECT_EQ(lookup(cache, some_tokens(3 * kPage, 7)), 0);  // a miss
  EXPECT_EQ(lookup(cache, std::vector<int32_t>(p.begin(), p.begin() + 10)), 0);  // shorter than a block
  EXPECT_EQ(cache.stats().n_lookups, 4);
  EXPECT_EQ(cache.stats().n_hits, 2);
  EXPECT_EQ(cache.stats().n_hit_tokens, 5 * kPage);
}

TEST_F(PrefixCacheTest, PoliciesThatCannotShareAPrefixNeverUseTheCache) {
  PrefixCache cache(*engine_);
  const std::vector<int32_t> p = some_tokens(4 * kPage, 8);
  store(cache, p);
  ASSERT_EQ(cache.n_blocks(), 4);
  const std::vector<int32_t> q = concat(p, some_tokens(7, 9));
  // Eviction, re-positioning, per-head release, attention statistics: none of them is offered or served.
  for (const std::string policy : {"streaming:window=60", "h2o:budget=64", "snapkv:budget=64", "tova:budget=64"}) {
    EXPECT_EQ(lookup(cache, q, policy), 0) << policy;
    const kv::SeqId s = add_sequence(*engine_, policy);
    EXPECT_FALSE(engine_->policy(s).shares_prefix()) << policy;
    feed(*engine_, s, q);
    EXPECT_FALSE(cache.cacheable(s)) << policy;
    cache.insert(s, q);
    engine_->remove(s);
  }
  EXPECT_EQ(cache.n_blocks(), 4);
  EXPECT_EQ(cache.stats().n_lookups, 0);
  // KIVI storage is cacheable, in a tree of its own: f16 blocks are not int8 ones.
  EXPECT_EQ(lookup(cache, q, "full:bits=8"), 0);
  EXPECT_EQ(cache.stats().n_lookups, 1);
}

// Through the generation loop: a later request with a shared prompt start reports its cached tokens and generates
// what it generates without the cache; a policy that cannot share a prefix runs as before.
TEST_F(PrefixCacheTest, TheGeneratorReusesPromptsAndRepliesOfEarlierRequests) {
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf(model_->file());
  ASSERT_TRUE(tok.is_ok()) << tok.message();
  const std::vector<int32_t> shared = some_tokens(5 * kPage + 3, 11);
  const std::vector<std::vector<int32_t>> prompts = {concat(shared, some_tokens(9, 12)), concat(shared, some_tokens(20, 13)),
                                                     concat(shared, some_tokens(4, 14))};
  sampling::SamplingOptions greedy;
  greedy.temperature = 0;
  auto run_all = [&](Engine& engine, PrefixCache* cache, const std::string& policy) {
    Generator generator(engine, *tok, 1);  // one at a time: each finishes before the next starts
    generator.set_prefix_cache(cache);
    for (const std::vector<int32_t>& p : prompts) {
      Request req;
      req.prompt = p;
      req.sampler = std::make_shared<sampling::SamplerChain>(std::move(sampling::SamplerChain::create(greedy)).value());
      req.options.n_predict = 8;
      req.options.ignore_eos = true;
      req.sequence.kv_policy = policy;
      req.use_prefix_cache = true;
      generator.submit(std::move(req));
    }
    EXPECT_TRUE(generator.run().is_ok());
    std::vector<GenerateResult> out;
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_TRUE(generator.result(i).is_ok()) << generator.result(i).message();
      if (generator.result(i).is_ok()) out.push_back(*generator.result(i));
    }
    return out;
  };

  std::unique_ptr<Engine> plain_engine = make_engine(*model_, pool_, 512, kPage, kPage);
  const std::vector<GenerateResult> plain = run_all(*plain_engine, nullptr, "full");
  PrefixCache cache(*engine_);
  const std::vector<GenerateResult> cached = run_all(*engine_, &cache, "full");
  ASSERT_EQ(plain.size(), 3u);
  ASSERT_EQ(cached.size(), 3u);
  EXPECT_EQ(cached[0].timings.n_cached, 0);
  EXPECT_EQ(cached[1].timings.n_cached, 5 * kPage);
  EXPECT_EQ(cached[2].timings.n_cached, 5 * kPage);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(cached[i].tokens, plain[i].tokens) << i;
    EXPECT_EQ(cached[i].timings.n_prompt, static_cast<int32_t>(prompts[i].size()));
  }
  EXPECT_EQ(cache.stats().n_hits, 2);
  EXPECT_EQ(cache.stats().n_hit_tokens, 10 * kPage);

  PrefixCache other(*engine_);
  const std::vector<GenerateResult> h2o = run_all(*engine_, &other, "h2o:budget=128");
  ASSERT_EQ(h2o.size(), 3u);
  for (const GenerateResult& r : h2o) EXPECT_EQ(r.timings.n_cached, 0);
  EXPECT_EQ(other.n_blocks(), 0);
  EXPECT_EQ(other.stats().n_lookups, 0);
}

}  // namespace
}  // namespace longhaul::generate
