// The generation loop run open-ended, as the server runs it: choices of one prompt forking its sequence (prefilled
// once, the same greedy tokens, with a draft source too), log-probabilities equal to the log-softmax of the logits,
// cancellation freeing the sequence at the next step, submissions from another thread while the loop runs, and
// mean-pooled embeddings.
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "engine_testing.h"
#include "generate/generator.h"
#include "generate/speculative/ngram.h"
#include "sampling/sampler_chain.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

struct Fixture {
  const model::Model* model = nullptr;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
};

Fixture smollm2() {
  Fixture f;
  f.model = shared_model(longhaul::testing::smollm2_path());
  if (f.model == nullptr) return f;
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf(f.model->file());
  EXPECT_TRUE(tok.is_ok());
  f.tokenizer = std::make_unique<tokenizer::Tokenizer>(std::move(tok).value());
  return f;
}

Request greedy_request(const std::vector<int32_t>& prompt, int32_t n_predict) {
  Request r;
  r.prompt = prompt;
  sampling::SamplingOptions so;
  so.temperature = 0.0f;
  r.sampler = std::make_shared<sampling::SamplerChain>(std::move(sampling::SamplerChain::create(so)).value());
  r.options.n_predict = n_predict;
  r.options.ignore_eos = true;
  return r;
}

// Submits `make()`'s request and n_forks more that fork it, steps the loop until it is idle and returns the tokens
// its steps carried.
int64_t run_with_forks(Generator& g, const std::function<Request()>& make, int n_forks) {
  const size_t parent = g.submit(make());
  for (int k = 0; k < n_forks; ++k) {
    Request r = make();
    r.fork_of = static_cast<int64_t>(parent);
    g.submit(std::move(r));
  }
  int64_t step_tokens = 0;
  for (int guard = 0; guard < 100 && g.wait_for_work(0); ++guard) {
    EXPECT_TRUE(g.step().is_ok());
    step_tokens += g.last_step_tokens();
  }
  return step_tokens;
}

TEST(GeneratorOpen, ForkedChoicesPrefillOnceAndEqualAPlainRequest) {
  Fixture f = smollm2();
  if (f.model == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  ThreadPool pool(2);
  std::unique_ptr<Engine> engine = make_engine(*f.model, pool);
  const std::vector<int32_t> prompt = some_tokens(40, 3);
  const int32_t n = 8;
  std::vector<int32_t> alone;
  {
    Generator g(*engine, *f.tokenizer, 1);
    g.submit(greedy_request(prompt, n));
    ASSERT_TRUE(g.run().is_ok());
    ASSERT_TRUE(g.result(0).is_ok());
    alone = g.result(0)->tokens;
  }
  Generator g(*engine, *f.tokenizer, 4);
  const int64_t step_tokens = run_with_forks(g, [&] { return greedy_request(prompt, n); }, 2);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(g.result(i).is_ok()) << g.result(i).message();
    EXPECT_EQ(g.result(i)->tokens, alone) << "choice " << i;
  }
  // The prompt once, then each choice's n - 1 decode tokens (its first token comes from the prompt's logits).
  EXPECT_EQ(step_tokens, 40 + 3 * (n - 1));
  EXPECT_EQ(engine->cache().used_bytes(), 0) << "every sequence removed";
}

// Choices with a draft source fork too: the prompt is fed once, each choice speculates on its own sequence, and
// greedy choices agree with each other.
TEST(GeneratorOpen, ForkedChoicesSpeculateOnTheirOwnSequences) {
  Fixture f = smollm2();
  if (f.model == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  ThreadPool pool(2);
  std::unique_ptr<Engine> engine = make_engine(*f.model, pool);
  // A passage twice: prompt lookup finds what followed its tail the first time.
  std::vector<int32_t> prompt = some_tokens(20, 7);
  prompt.insert(prompt.end(), prompt.begin(), prompt.end());
  const int32_t n = 12;
  auto source = std::make_shared<speculative::NgramSource>();
  Generator g(*engine, *f.tokenizer, 4);
  auto request = [&] {
    Request r = greedy_request(prompt, n);
    r.options.draft = source;
    r.options.draft_max = 4;
    return r;
  };
  const int64_t step_tokens = run_with_forks(g, request, 2);
  int64_t decode_tokens = 0;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(g.result(i).is_ok()) << g.result(i).message();
    const GenerateResult& r = *g.result(i);
    EXPECT_EQ(r.tokens.size(), static_cast<size_t>(n));
    EXPECT_EQ(r.tokens, g.result(0)->tokens) << "choice " << i;
    EXPECT_GT(r.speculative.n_drafted, 0) << "choice " << i;
    // Each decode step fed the pending token and its draft.
    decode_tokens += r.speculative.n_steps + r.speculative.n_drafted;
  }
  EXPECT_EQ(step_tokens, static_cast<int64_t>(prompt.size()) + decode_tokens) << "the prompt fed once";
  EXPECT_EQ(engine->cache().used_bytes(), 0) << "every sequence removed";
}

TEST(GeneratorOpen, LogprobsAreTheLogSoftmaxOfTheLogits) {
  Fixture f = smollm2();
  if (f.model == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  ThreadPool pool(2);
  std::unique_ptr<Engine> engine = make_engine(*f.model, pool);
  const std::vector<int32_t> prompt = some_tokens(16, 5);
  // Independently: the prompt's last logits, log-softmax in double.
  const kv::SeqId seq = add_sequence(*engine, "full");
  const std::vector<float> logits = feed(*engine, seq, prompt);
  engine->remove(seq);
  double sum = 0.0;
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  for (float z : logits) sum += std::exp(z - max_logit);
  const int32_t best = argmax(logits);
  const double want = logits[static_cast<size_t>(best)] - max_logit - std::log(sum);

  Generator g(*engine, *f.tokenizer, 1);
  Request r = greedy_request(prompt, 2);
  r.options.top_logprobs = 3;
  int32_t n_events = 0;
  r.on_token = [&](const TokenEvent& e) {
    EXPECT_NE(e.logprob, nullptr);
    ++n_events;
    return true;
  };
  g.submit(std::move(r));
  ASSERT_TRUE(g.run().is_ok());
  const GenerateResult& res = *g.result(0);
  ASSERT_EQ(res.logprobs.size(), 2u);
  EXPECT_EQ(n_events, 2);
  EXPECT_EQ(res.logprobs[0].token, best);
  EXPECT_NEAR(res.logprobs[0].logprob, want, 1e-4);
  ASSERT_EQ(res.logprobs[0].top.size(), 3u);
  EXPECT_EQ(res.logprobs[0].top[0].first, best);
  EXPECT_FLOAT_EQ(res.logprobs[0].top[0].second, res.logprobs[0].logprob);
  EXPECT_GE(res.logprobs[0].top[1].second, res.logprobs[0].top[2].second);
  EXPECT_LE(res.logprobs[0].top[0].second, 0.0f);
}

TEST(GeneratorOpen, CancelEndsARunningAndAWaitingRequestAndFreesThePages) {
  Fixture f = smollm2();
  if (f.model == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  ThreadPool pool(2);
  std::unique_ptr<Engine> engine = make_engine(*f.model, pool);
  Generator g(*engine, *f.tokenizer, 1);
  std::vector<std::string> ends;
  g.set_on_done([&](size_t i, const Result<GenerateResult>& r) {
    ends.push_back(std::to_string(i) + ":" + (r.is_ok() ? "ok" : r.message()));
  });
  const size_t running = g.submit(greedy_request(some_tokens(8, 1), 1000));
  const size_t waiting = g.submit(greedy_request(some_tokens(8, 2), 1000));
  for (int k = 0; k < 3; ++k) ASSERT_TRUE(g.step().is_ok());
  EXPECT_EQ(g.n_live(), 1);
  EXPECT_EQ(g.n_waiting(), 1);
  EXPECT_GT(engine->cache().used_bytes(), 0);
  g.cancel(waiting);
  g.cancel(running);
  ASSERT_TRUE(g.step().is_ok());
  EXPECT_EQ(ends, (std::vector<std::string>{std::to_string(waiting) + ":cancelled", std::to_string(running) + ":cancelled"}));
  EXPECT_EQ(g.n_live(), 0);
  EXPECT_EQ(engine->cache().used_bytes(), 0);
  EXPECT_FALSE(g.wait_for_work(0));
}

TEST(GeneratorOpen, RequestsSubmittedFromAnotherThreadWhileItRuns) {
  Fixture f = smollm2();
  if (f.model == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  ThreadPool pool(2);
  std::unique_ptr<Engine> engine = make_engine(*f.model, pool);
  std::vector<std::vector<int32_t>> alone;
  for (int k = 0; k < 4; ++k) {
    Generator g(*engine, *f.tokenizer, 1);
    g.submit(greedy_request(some_tokens(10, 20 + k), 6));
    ASSERT_TRUE(g.run().is_ok());
    alone.push_back(g.result(0)->tokens);
  }
  Generator g(*engine, *f.tokenizer, 4);
  g.set_on_done([](size_t, const Result<GenerateResult>&) {});
  std::mutex mutex;
  std::map<int, std::vector<int32_t>> got;
  std::atomic<int> n_ended{0};
  std::thread client([&] {
    for (int k = 0; k < 4; ++k) {
      Request r = greedy_request(some_tokens(10, 20 + k), 6);
      r.on_end = [&, k](const Result<GenerateResult>& res) {
        std::lock_guard<std::mutex> lock(mutex);
        got[k] = res.is_ok() ? res->tokens : std::vector<int32_t>{};
        ++n_ended;
      };
      g.submit(std::move(r));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (int guard = 0; guard < 10000 && n_ended < 4; ++guard) {
    if (!g.wait_for_work(0.05)) continue;
    ASSERT_TRUE(g.step().is_ok());
  }
  client.join();
  ASSERT_EQ(n_ended.load(), 4);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(got[k], alone[static_cast<size_t>(k)]) << k;
}

TEST(GeneratorOpen, MeanPooledEmbeddingIsTheMeanOfTheHiddenStates) {
  Fixture f = smollm2();
  if (f.model == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  ThreadPool pool(2);
  std::unique_ptr<Engine> engine = make_engine(*f.model, pool, 1024, 8);  // 8-token steps: the input in 3 chunks
  const std::vector<int32_t> input = some_tokens(20, 9);
  const int32_t n_embd = f.model->config().n_embd;
  // Independently: one step returning every token's hidden state.
  std::vector<double> want(static_cast<size_t>(n_embd), 0.0);
  {
    std::unique_ptr<Engine> whole = make_engine(*f.model, pool, 1024, 64);
    const kv::SeqId seq = add_sequence(*whole, "full");
    SequenceStep s;
    s.seq = seq;
    s.tokens = input;
    s.output = StepOutput::kAllEmbeddings;
    s.prompt = true;  // as the generator marks a request's prompt chunks
    StepResult r;
    ASSERT_TRUE(whole->step({&s, 1}, r).is_ok());
    for (int32_t k = 0; k < 20; ++k)
      for (int32_t d = 0; d < n_embd; ++d) want[static_cast<size_t>(d)] += r.embedding(0, k)[d] / 20.0;
  }
  Generator g(*engine, *f.tokenizer, 2);
  Request r;
  r.prompt = input;
  r.pooling = Pooling::kMean;
  g.submit(std::move(r));
  g.submit(greedy_request(some_tokens(6, 4), 4));  // a generating request beside it
  ASSERT_TRUE(g.run().is_ok());
  ASSERT_TRUE(g.result(0).is_ok()) << g.result(0).message();
  ASSERT_EQ(g.result(0)->embedding.size(), static_cast<size_t>(n_embd));
  double max_diff = 0.0;
  for (int32_t d = 0; d < n_embd; ++d)
    max_diff = std::max(max_diff, std::fabs(g.result(0)->embedding[static_cast<size_t>(d)] - want[static_cast<size_t>(d)]));
  // Chunked (8 + 8 + 4 tokens) against one 20-token step: the same math, rounded in a different grouping.
  EXPECT_LT(max_diff, 2e-2);
  EXPECT_TRUE(g.result(1).is_ok());
  EXPECT_EQ(g.result(1)->tokens.size(), 4u);
}

}  // namespace
}  // namespace longhaul::generate
