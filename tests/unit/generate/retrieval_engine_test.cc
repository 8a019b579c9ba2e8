// retrieval (RetrievalAttention) on the real models, through the engine's attention plan: single cells are gathered
// and attended at their own positions. A k that retrieves every key outside the static pattern gives full's logits
// (up to the order of the flash sums: pattern pages first, then the cells); a small k touches fewer keys; a fork,
// whose indexes are rebuilt by the same steps, decodes as its parent.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class RetrievalEngineTest : public EachModelTest {};

TEST_P(RetrievalEngineTest, RetrievingEveryKeyGivesFullLogits) {
  for (const char* storage : {":bits=16", ":bits=8"}) {
    // 600 prompt tokens: the index holds the ~500 keys between the first page and the 64-cell window.
    const std::vector<std::vector<float>> l = first_decode_logits(
        *model_, pool_,
        {std::string("full") + storage, std::string("retrieval:k=4096:ef=4096:window=64") + storage,
         std::string("retrieval:k=4:window=64") + storage},
        600, 32);
    ASSERT_EQ(l.size(), 3u);
    EXPECT_LT(max_abs_diff(l[1], l[0]), 2e-3f) << storage;
    EXPECT_EQ(argmax(l[1]), argmax(l[0])) << storage;
    // Four keys per query head instead of ~500: not full's logits (the test can tell the two apart).
    EXPECT_GT(max_abs_diff(l[2], l[0]), 1e-2f) << storage;
  }
}

// keys_read counts the cells attention reads and the keys the index search scores: a small k with a narrow search
// touches fewer keys than a search that walks the whole index and retrieves all of it.
TEST_P(RetrievalEngineTest, SmallKTouchesFewerKeys) {
  auto engine = make_engine(*model_, pool_, 2048);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = some_tokens(1500, 7);
  std::vector<double> share;
  for (const char* spec : {"retrieval:k=8:window=64:ef=16", "retrieval:k=4096:window=64:ef=4096"}) {
    const kv::SeqId seq = add_sequence(*engine, spec);
    share.push_back(decode_keys_share(*engine, seq, prompt, {300, 4000}));
    engine->remove(seq);
  }
  EXPECT_GT(share[0], 0.0);
  EXPECT_LT(share[0], share[1]);
}

TEST_P(RetrievalEngineTest, ForkDecodesAsItsParent) {
  // 40 decode steps first: the index is built at the first and extended as pages leave the window.
  expect_fork_decodes_as_parent(*model_, pool_, "retrieval:k=16:window=64", 40);
}

INSTANTIATE_TEST_SUITE_P(Models, RetrievalEngineTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
