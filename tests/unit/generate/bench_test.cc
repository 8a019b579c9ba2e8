// The bench runner's bookkeeping (test names and order, bytes per token, repetitions,
// rewinding to the depth between repetitions). Nothing here asserts a time: only that
// the measured structure is what was asked for and the throughputs are positive numbers.
#include <gtest/gtest.h>

#include <cmath>

#include "generate/bench.h"
#include "model/model.h"
#include "testing/model_paths.h"

namespace longhaul::generate {
namespace {

TEST(BenchNamesTest, NamesFollowLlamaBench) {
  EXPECT_EQ((BenchTest{512, 0, 0}).name(), "pp512");
  EXPECT_EQ((BenchTest{0, 128, 0}).name(), "tg128");
  EXPECT_EQ((BenchTest{0, 32, 4096}).name(), "tg32@d4096");
  EXPECT_EQ((BenchTest{512, 0, 8192}).name(), "pp512@d8192");
}

TEST(BenchNamesTest, ExpandsListsPerDepthPromptTestsFirstSkippingZeros) {
  const std::vector<BenchTest> tests = expand_bench_tests({512, 0}, {128, 32}, {0, 4096});
  std::vector<std::string> names;
  for (const auto& t : tests) names.push_back(t.name());
  EXPECT_EQ(names, (std::vector<std::string>{"pp512", "tg128", "tg32", "pp512@d4096", "tg128@d4096", "tg32@d4096"}));
  EXPECT_TRUE(expand_bench_tests({0}, {0}, {0}).empty());
  // No depth list means depth 0.
  ASSERT_EQ(expand_bench_tests({8}, {}, {}).size(), 1u);
}

TEST(BenchNamesTest, KvBytesAttendedCapsSlidingWindowLayers) {
  // Two layers of 4 bytes per cell each; layer 1 is local with a window of 2 cells.
  model::ModelConfig config;
  config.n_layer = 2;
  config.sliding_window = 2;
  config.layer_is_local = {0, 1};
  // Growing from 0 to 3 cells, the three tokens see 1+1, 2+2 and 3+2 layer-cells:
  // (2 + 4 + 5) * 4 bytes / 3 tokens = 14.67 -> 15.
  EXPECT_EQ(kv_bytes_attended_per_token(config, 8, 0, 3), 15);
  // Without local layers it is the mean cell count times the cell size: cells 11..14 -> 12.5 * 8.
  config.layer_is_local = {0, 0};
  EXPECT_EQ(kv_bytes_attended_per_token(config, 8, 10, 14), 100);
  EXPECT_EQ(kv_bytes_attended_per_token(config, 8, 5, 5), 0);
}

TEST(BenchNamesTest, SummarizesSamplesAsMeanAndSampleStddev) {
  const SampleSummary one = summarize_samples({4.0});
  EXPECT_DOUBLE_EQ(one.mean, 4.0);
  EXPECT_DOUBLE_EQ(one.stddev, 0.0);
  // 2, 4, 6: mean 4, sample variance (4 + 0 + 4) / 2 = 4.
  const SampleSummary three = summarize_samples({2.0, 4.0, 6.0});
  EXPECT_DOUBLE_EQ(three.mean, 4.0);
  EXPECT_DOUBLE_EQ(three.stddev, 2.0);
  EXPECT_DOUBLE_EQ(summarize_samples({}).mean, 0.0);
}

class SmolLm2BenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = testing::smollm2_path();
    if (!testing::file_exists(path)) GTEST_SKIP() << "model not installed: " << path;
    Result<std::unique_ptr<model::Model>> m = model::Model::load(path);
    ASSERT_TRUE(m.is_ok()) << m.message();
    model_ = std::move(m).value();
    for (const auto& t : model_->file().tensors()) file_tensor_bytes_ += t.size_bytes;
  }
  std::unique_ptr<model::Model> model_;
  int64_t file_tensor_bytes_ = 0;
};

// SmolLM2-135M (its Hugging Face config): 30 layers, 3 KV heads of 64 dims, f16 K and V.
constexpr int64_t kSmolLm2CellBytes = 30 * 3 * (64 + 64) * 2;

void expect_sane_samples(const BenchResult& r, int32_t n_reps) {
  ASSERT_EQ(static_cast<int32_t>(r.tokens_per_s_samples.size()), n_reps);
  double sum = 0;
  for (double s : r.tokens_per_s_samples) {
    EXPECT_TRUE(std::isfinite(s));
    EXPECT_GT(s, 0.0);
    sum += s;
  }
  EXPECT_NEAR(r.tokens_per_s, sum / n_reps, 1e-9 * r.tokens_per_s);
  ASSERT_EQ(static_cast<int32_t>(r.cpu_tokens_per_s_samples.size()), n_reps);
  for (double s : r.cpu_tokens_per_s_samples) EXPECT_GT(s, 0.0);
  EXPECT_GE(r.stddev, 0.0);
  EXPECT_GT(r.peak_rss_bytes, 0);
}

TEST_F(SmolLm2BenchTest, PromptTestReadsTheWeightsOncePerStep) {
  BenchOptions options;
  options.n_threads = 1;
  options.n_reps = 2;
  Result<BenchResult> r = run_bench(*model_, BenchTest{8, 0, 0}, options);
  ASSERT_TRUE(r.is_ok()) << r.message();
  expect_sane_samples(*r, 2);
  EXPECT_EQ(r->n_threads, 1);
  // SmolLM2 ties its output matrix to token_embd, so one step reads every tensor of the file once, for 8 tokens.
  EXPECT_EQ(r->weight_bytes_per_token, file_tensor_bytes_ / 8);
  // The 8 tokens attend to 1..8 cells: 4.5 cells on average.
  EXPECT_EQ(r->kv_bytes_per_token, kSmolLm2CellBytes * 9 / 2);
  EXPECT_EQ(r->kv_cache_bytes, 8 * kSmolLm2CellBytes);
}

TEST_F(SmolLm2BenchTest, GenerationAtDepthRewindsToTheDepthEachRepetition) {
  BenchOptions options;
  options.n_threads = 1;
  options.n_reps = 3;
  options.n_warmup = 1;
  Result<BenchResult> r = run_bench(*model_, BenchTest{0, 4, 16}, options);
  ASSERT_TRUE(r.is_ok()) << r.message();
  expect_sane_samples(*r, 3);
  EXPECT_EQ(r->weight_bytes_per_token, file_tensor_bytes_);
  // Tokens at depth 16 attend to 17, 18, 19, 20 cells: 18.5 on average.
  EXPECT_EQ(r->kv_bytes_per_token, kSmolLm2CellBytes * 37 / 2);
  // Four runs of 4 tokens, yet the cache ends at depth + 4: each run started from the depth.
  EXPECT_EQ(r->kv_cache_bytes, 20 * kSmolLm2CellBytes);
  EXPECT_GE(r->n_ctx, 20);
}

TEST_F(SmolLm2BenchTest, RejectsMalformedTestsAndOptions) {
  BenchOptions options;
  options.n_threads = 1;
  EXPECT_FALSE(run_bench(*model_, BenchTest{8, 4, 0}, options).is_ok());
  EXPECT_FALSE(run_bench(*model_, BenchTest{0, 0, 0}, options).is_ok());
  EXPECT_FALSE(run_bench(*model_, BenchTest{0, 4, -1}, options).is_ok());
  options.n_reps = 0;
  EXPECT_FALSE(run_bench(*model_, BenchTest{8, 0, 0}, options).is_ok());
}

// Plain decoding through the speculative test: n_gen tokens past any end of generation, a step per token after the
// prefill's, and the error of an empty prompt or a single token (which the prefill alone yields) named.
TEST_F(SmolLm2BenchTest, SpeculativeTestDecodesNGenTokensAndNamesBadInput) {
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf(model_->file());
  ASSERT_TRUE(tok.is_ok()) << tok.message();
  BenchOptions options;
  options.n_threads = 1;
  options.n_reps = 2;
  options.n_warmup = 0;
  const std::vector<int32_t> prompt = tok->encode("The capital of France is", true, false);
  Result<SpeculativeBenchResult> r = run_speculative_bench(*model_, *tok, prompt, 12, options, {}, nullptr);
  ASSERT_TRUE(r.is_ok()) << r.message();
  EXPECT_EQ(r->tokens.size(), 12u);
  EXPECT_EQ(r->stats.n_steps, 11);
  EXPECT_EQ(r->stats.n_drafted, 0);
  ASSERT_EQ(r->tokens_per_s_samples.size(), 2u);
  for (double s : r->tokens_per_s_samples) EXPECT_GT(s, 0.0);
  const Result<SpeculativeBenchResult> empty = run_speculative_bench(*model_, *tok, {}, 12, options, {}, nullptr);
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.message().find("prompt of at least one token"), std::string::npos) << empty.message();
  const Result<SpeculativeBenchResult> one = run_speculative_bench(*model_, *tok, prompt, 1, options, {}, nullptr);
  ASSERT_FALSE(one.is_ok());
  EXPECT_NE(one.message().find("n_gen >= 2"), std::string::npos) << one.message();
}

}  // namespace
}  // namespace longhaul::generate
