// quest on the real models, through the engine's attention plan: with a budget that covers the cache it reads
// every page and gives full's logits bit for bit (f16 and KIVI int8 storage); smaller budgets move a decode
// step's logits away from full's, larger ones back towards them; a fork selects as its parent.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class QuestEngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const bool smollm = std::string(GetParam()) == "SmolLM2";
    model_ = shared_model(smollm ? longhaul::testing::smollm2_path() : longhaul::testing::gemma3_path());
    if (model_ == nullptr) GTEST_SKIP() << GetParam() << " is not installed";
  }
  const model::Model* model_ = nullptr;
  ThreadPool pool_{2};
};

// Greedy decode of n tokens after `logits`; returns the chosen ids.
std::vector<int32_t> greedy(Engine& engine, kv::SeqId seq, std::vector<float> logits, int32_t n) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i < n && !logits.empty(); ++i) {
    out.push_back(argmax(logits));
    logits = step_one(engine, seq, slice(out, out.size() - 1, 1));
  }
  return out;
}

TEST_P(QuestEngineTest, CoveringBudgetGivesFullLogits) {
  for (int32_t bits : {16, 8}) {
    // Both sequences in pages of quest's 32 cells: the flash pass sums page by page, so equal page boundaries
    // make the sums equal bit for bit.
    auto engine = make_engine(*model_, pool_, 2048, 256, 32);
    ASSERT_NE(engine, nullptr);
    const std::string storage = ":bits=" + std::to_string(bits);
    const kv::SeqId full = add_sequence(*engine, "full" + storage);
    const kv::SeqId quest = add_sequence(*engine, "quest:budget=4096" + storage);
    const std::vector<int32_t> prompt = some_tokens(700, 3);
    const std::vector<float> a = feed(*engine, full, prompt);
    const std::vector<float> b = feed(*engine, quest, prompt);
    EXPECT_TRUE(bit_identical(a, b)) << "bits " << bits << ": " << max_abs_diff(a, b);
    EXPECT_EQ(greedy(*engine, full, a, 6), greedy(*engine, quest, b, 6)) << "bits " << bits;
  }
}

// Decode-step logits of `full` and of quest at each budget, after the same 840-token prompt, in pages of 32.
std::vector<std::vector<float>> decode_logits(const model::Model& model, ThreadPool& pool,
                                              const std::vector<int32_t>& budgets) {
  auto engine = make_engine(model, pool, 2048, 256, 32);
  std::vector<std::vector<float>> out;
  if (engine == nullptr) return out;
  const std::vector<int32_t> prompt = some_tokens(840, 12);
  std::vector<int32_t> next;
  for (size_t i = 0; i <= budgets.size(); ++i) {
    const kv::SeqId seq =
        add_sequence(*engine, i == 0 ? std::string("full") : "quest:budget=" + std::to_string(budgets[i - 1]));
    const std::vector<float> first = feed(*engine, seq, prompt);
    if (i == 0) next = {argmax(first)};
    out.push_back(step_one(*engine, seq, next));
    engine->remove(seq);
  }
  return out;
}

TEST_P(QuestEngineTest, LargerBudgetsComeCloserToFull) {
  // 8, 16 and 24 of the 27 pages (plus sinks and window); 24 leaves out only the least promising ones.
  const std::vector<std::vector<float>> l = decode_logits(*model_, pool_, {256, 512, 768});
  ASSERT_EQ(l.size(), 4u);
  const float d256 = max_abs_diff(l[1], l[0]), d512 = max_abs_diff(l[2], l[0]), d768 = max_abs_diff(l[3], l[0]);
  // The selection is active (reading every page would match full bit for bit) ...
  EXPECT_GT(d256, 0.0f);
  // ... and reading more of the pages Quest ranks highest brings the step closer to full attention.
  EXPECT_LT(d768, d256) << d256 << " " << d512 << " " << d768;
  EXPECT_EQ(argmax(l[3]), argmax(l[0])) << d256 << " " << d512 << " " << d768;
}

TEST_P(QuestEngineTest, ForkSelectsAsItsParent) {
  auto engine = make_engine(*model_, pool_, 2048);
  ASSERT_NE(engine, nullptr);
  const kv::SeqId parent = add_sequence(*engine, "quest:budget=128");
  const std::vector<float> logits = feed(*engine, parent, some_tokens(600, 5));
  Result<kv::SeqId> child = engine->fork(parent);
  ASSERT_TRUE(child.is_ok()) << child.message();
  const std::vector<int32_t> next = {argmax(logits)};
  const std::vector<float> a = step_one(*engine, parent, next);
  const std::vector<float> b = step_one(*engine, *child, next);
  EXPECT_TRUE(bit_identical(a, b)) << max_abs_diff(a, b);
}

INSTANTIATE_TEST_SUITE_P(Models, QuestEngineTest, ::testing::Values("SmolLM2", "Gemma3"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace longhaul::generate
