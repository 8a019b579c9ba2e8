// Greedy speculative decoding on both default models gives plain greedy decoding's output: for prompt lookup,
// Token Recycling, ADED, retrieval (with and without a corpus), SmolLM2 as its own draft model, self-speculation
// (each model drafting for itself with sub-layers skipped), and
// test sources whose drafts are always right, always wrong, or a tree with the right token as the second child.
// The reference is plain greedy decoding by ordinary one-token engine steps (the argmax of each step's logits),
// outside the generation loop.
//
// Exactness depends on the kernels. Where a row's logits have the same bits in a one-token step and in a step of
// several tokens (kernels_exact; with the AVX2 kernels on SmolLM2 the ctest speculative_greedy_avx2 requires it),
// the outputs must be identical token for token, and the always-right and always-wrong drafts must be accepted
// entirely and never. Where they do not, a verification step may see logits that differ from plain decoding's in
// the last bits, amplified through the layers; the outputs may then part at a near tie, and the test checks that
// they are equal up to the first difference and that there the reference's own logits put the two tokens within
// kTieTolerance of each other. (A chain's verification step has plain decoding's bits on every model since
// attention keeps its tokens apart: VerificationBitsTest. A tree's nodes share 16-key blocks with their siblings'
// keys, which sums them in another order.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine_testing.h"
#include "generate/generator.h"
#include "generate/speculative/aded.h"
#include "generate/speculative/draft_model.h"
#include "generate/speculative/ngram.h"
#include "generate/speculative/recycle.h"
#include "generate/speculative/retrieval.h"
#include "generate/speculative/self_draft.h"
#include "sampling/sampler_chain.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

// Largest logit gap at which a lone and a batched row may order two tokens differently (engine_test.cc's bound
// between a lone and a batched Gemma 3 row).
constexpr float kTieTolerance = 2.5f;
constexpr size_t kDraftMax = 8;

struct Prompt {
  const char* kind;
  const char* text;
};

const Prompt kPrompts[] = {
    {"input-grounded",
     "The report says: the bridge was closed on Monday because of ice, and it will reopen on Friday after repairs. "
     "Question: when will the bridge reopen, and why was it closed? Quote the report.\nAnswer: The report says: the"},
    {"code",
     "def add(a, b):\n    return a + b\n\n\ndef subtract(a, b):\n    return a - b\n\n\ndef multiply(a, b):\n"},
    {"open-ended", "Once upon a time, in a small village by the sea, there lived"},
};

// Test drafts made from the reference output: always right, always wrong, or a tree whose first child at each
// depth is wrong and whose second is right (the right one's subtree goes on).
// kAlternate: right and wrong chains by turns (right first), each with its own evidence class (Draft::evidence).
class OracleSource final : public speculative::DraftSource {
 public:
  enum class Mode { kRight, kWrong, kTree, kAlternate };
  OracleSource(std::vector<int32_t> reference, size_t n_prompt, Mode mode, int32_t n_vocab)
      : reference_(std::move(reference)), n_prompt_(n_prompt), mode_(mode), n_vocab_(n_vocab) {}
  std::string name() const override { return "oracle"; }
  void propose(const speculative::DraftContext& context, int32_t max_tokens, speculative::Draft& draft) override {
    const size_t from = context.tokens.size() - n_prompt_;  // tokens generated so far
    int32_t right_parent = speculative::kDraftRoot;
    last_right_ = mode_ != Mode::kAlternate || n_proposals_++ % 2 == 0;
    if (mode_ == Mode::kAlternate) draft.evidence = last_right_ ? right_evidence : wrong_evidence;
    for (size_t i = from; i < reference_.size() && static_cast<int32_t>(draft.size()) < max_tokens; ++i) {
      const int32_t right = reference_[i], wrong = (right + 1) % n_vocab_;
      if (mode_ == Mode::kRight || (mode_ == Mode::kAlternate && last_right_)) {
        draft.tokens.push_back(right);
      } else if (mode_ == Mode::kWrong || mode_ == Mode::kAlternate) {
        draft.tokens.push_back(wrong);
      } else {
        draft.tokens.push_back(wrong);
        draft.parents.push_back(right_parent);
        if (static_cast<int32_t>(draft.size()) == max_tokens) break;
        draft.tokens.push_back(right);
        draft.parents.push_back(right_parent);
        right_parent = static_cast<int32_t>(draft.size()) - 1;
        ++n_right_;
      }
    }
    if (mode_ == Mode::kRight) n_right_ += static_cast<int64_t>(draft.size());
  }
  void observe(const speculative::DraftContext&, const speculative::VerifiedStep& step) override {
    if (step.tokens.size() > 1) (last_right_ ? n_right_verified_ : n_wrong_verified_) += step.tokens.size() - 1;
  }
  int64_t n_right() const { return n_right_; }  // right tokens proposed
  // Draft tokens of right and of wrong proposals that the loop verified (after cutting them to its chosen length).
  int64_t n_right_verified() const { return n_right_verified_; }
  int64_t n_wrong_verified() const { return n_wrong_verified_; }
  int32_t right_evidence = 0, wrong_evidence = 0;  // kAlternate: the proposals' evidence classes

 private:
  std::vector<int32_t> reference_;
  size_t n_prompt_;
  Mode mode_;
  int32_t n_vocab_;
  int64_t n_right_ = 0;
  int64_t n_proposals_ = 0;
  bool last_right_ = true;
  int64_t n_right_verified_ = 0, n_wrong_verified_ = 0;
};

struct Reference {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // [n][n_vocab] the logits each token was chosen from
};

class SpeculativeGreedy : public ::testing::Test {
 protected:
  void run_model(const std::string& path, const char* name, int32_t n_generate);

  Reference reference(const std::vector<int32_t>& prompt, int32_t n) {
    Reference r;
    const kv::SeqId seq = add_sequence(*engine_, "full", {});
    std::vector<float> logits = feed(*engine_, seq, prompt);
    for (int32_t i = 0; i < n; ++i) {
      const int32_t t = argmax(logits);
      r.tokens.push_back(t);
      r.logits.push_back(logits);
      if (i + 1 < n) logits = step_one(*engine_, seq, {&t, 1});
    }
    engine_->remove(seq);
    return r;
  }

  // Whether each row of a tentative step of 1 + draft_max tokens gets the same bits as plain decoding's one-token
  // steps: the steps verification runs, on the reference's own tokens.
  bool kernels_exact(const std::vector<int32_t>& prompt, const Reference& ref) {
    const kv::SeqId seq = add_sequence(*engine_, "full", {});
    feed(*engine_, seq, prompt);
    SequenceStep s;
    s.seq = seq;
    s.tokens = std::span<const int32_t>(ref.tokens).first(std::min<size_t>(ref.tokens.size() - 1, kDraftMax + 1));
    s.output = StepOutput::kAllLogits;
    s.tentative = true;
    StepResult out;
    EXPECT_TRUE(engine_->step({&s, 1}, out).is_ok());
    const auto n_vocab = static_cast<size_t>(out.n_vocab);
    bool exact = true;
    for (size_t k = 0; k < s.tokens.size(); ++k)
      exact = exact && bit_identical(std::span<const float>(out.logits(0, static_cast<int32_t>(k)), n_vocab), ref.logits[k + 1]);
    engine_->remove(seq);
    return exact;
  }

  static sampling::SamplingOptions greedy() {
    sampling::SamplingOptions so;
    so.temperature = 0.0f;
    return so;
  }

  // Generates n tokens (or up to a stop string) through the loop on a sequence of the test's engine; null source:
  // plain decoding.
  GenerateResult speculate(const std::vector<int32_t>& prompt, int32_t n, std::shared_ptr<speculative::DraftSource> source,
                           const sampling::SamplingOptions& so = greedy(), const std::vector<std::string>& stop = {}) {
    Generator generator(*engine_, *tokenizer_, 1);
    Request req;
    req.prompt = prompt;
    req.sampler = std::make_shared<sampling::SamplerChain>(std::move(sampling::SamplerChain::create(so)).value());
    req.options.n_predict = n;
    req.options.ignore_eos = true;
    req.options.stop = stop;
    req.options.draft = std::move(source);
    req.options.draft_max = static_cast<int32_t>(kDraftMax);
    req.options.draft_adaptive = adaptive_;
    const kv::SeqId seq = add_sequence(*engine_, "full", {});
    req.seq = seq;
    generator.submit(std::move(req));
    EXPECT_TRUE(generator.run().is_ok());
    EXPECT_TRUE(generator.result(0).is_ok()) << generator.result(0).message();
    GenerateResult r = generator.result(0).is_ok() ? std::move(generator.result(0)).value() : GenerateResult{};
    // The cache holds what plain decoding's would: the prompt and every generated token but the last.
    EXPECT_EQ(engine_->n_past(seq), static_cast<int32_t>(prompt.size() + r.tokens.size()) - 1);
    EXPECT_FALSE(engine_->has_tentative(seq));
    engine_->remove(seq);
    return r;
  }

  // Equal to the reference, or equal up to a near tie of the reference's logits when the kernels are not exact.
  void expect_same(const Reference& ref, const GenerateResult& got, bool exact, const std::string& what) {
    ASSERT_EQ(got.tokens.size(), ref.tokens.size()) << what;
    if (exact) {
      EXPECT_EQ(got.tokens, ref.tokens) << what;
      return;
    }
    for (size_t i = 0; i < ref.tokens.size(); ++i) {
      if (got.tokens[i] == ref.tokens[i]) continue;
      const std::vector<float>& l = ref.logits[i];
      const float gap = l[static_cast<size_t>(ref.tokens[i])] - l[static_cast<size_t>(got.tokens[i])];
      EXPECT_LE(gap, kTieTolerance) << what << ": token " << i << " is " << got.tokens[i] << ", plain decoding's "
                                    << ref.tokens[i] << " leads it by " << gap << " logits";
      return;  // the texts differ from here on
    }
  }

  bool load(const std::string& path) {
    const model::Model* m = shared_model(path);
    if (m == nullptr) return false;
    engine_ = make_engine(*m, pool_, 512, 256);
    tokenizer_ = std::make_unique<tokenizer::Tokenizer>(std::move(tokenizer::Tokenizer::from_gguf(m->file())).value());
    return engine_ != nullptr;
  }

  // The code prompt, plain decoding's n_generate tokens after it and the vocabulary size: the loop tests' setting.
  struct CodeCase {
    std::vector<int32_t> prompt;
    Reference ref;
    int32_t n_vocab = 0;
  };
  CodeCase code_case(int32_t n_generate) {
    CodeCase c;
    c.prompt = tokenizer_->encode(kPrompts[1].text, true, false);
    c.ref = reference(c.prompt, n_generate);
    c.n_vocab = engine_->model().config().n_vocab;
    return c;
  }

  bool adaptive_ = true;  // GenerateOptions::draft_adaptive of speculate()'s requests
  ThreadPool pool_{2};
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
};

void SpeculativeGreedy::run_model(const std::string& path, const char* name, int32_t n_generate) {
  if (!load(path)) GTEST_SKIP() << name << " not installed";
  const int32_t n_vocab = engine_->model().config().n_vocab;
  // One Token Recycling matrix for all prompts (the paper's hot start): a fresh one drafts only once a token recurs.
  auto recycle_source = std::make_shared<speculative::RecycleSource>(n_vocab);
  auto aded_source = std::make_shared<speculative::AdedSource>(n_vocab);  // one table for all prompts too
  int64_t n_recycled = 0;
  int64_t n_aded = 0;
  for (const Prompt& p : kPrompts) {
    const std::vector<int32_t> prompt = tokenizer_->encode(p.text, true, false);
    const Reference ref = reference(prompt, n_generate);
    const bool exact = kernels_exact(prompt, ref);
    // SmolLM2's rows have the same bits in any step under the AVX2 kernels (engine_test.cc): the ctest variant
    // speculative_greedy_avx2 runs this test there, so the exact comparison runs wherever the suite does.
    const char* isa = std::getenv("LONGHAUL_ISA");
    if (isa != nullptr && std::string(isa) == "avx2" && std::string(name) == "SmolLM2") {
      EXPECT_TRUE(exact) << p.kind;
    }
    const std::string where = std::string(name) + ", " + p.kind + (exact ? " (exact kernels)" : " (rounding kernels)");

    const GenerateResult ngram = speculate(prompt, n_generate, std::make_shared<speculative::NgramSource>());
    expect_same(ref, ngram, exact, where + ", ngram");
    const GenerateResult recycle = speculate(prompt, n_generate, recycle_source);
    expect_same(ref, recycle, exact, where + ", recycle");
    n_recycled += recycle.speculative.n_drafted;
    const GenerateResult aded = speculate(prompt, n_generate, aded_source);
    expect_same(ref, aded, exact, where + ", aded");
    n_aded += aded.speculative.n_drafted;
    const GenerateResult retrieval = speculate(prompt, n_generate, std::make_shared<speculative::RetrievalSource>());
    expect_same(ref, retrieval, exact, where + ", retrieval");
    // A corpus that holds the prompt and plain decoding's continuation: the drafts are mostly right.
    std::vector<int32_t> corpus = tokenizer_->encode(p.text, false, false);
    corpus.insert(corpus.end(), ref.tokens.begin(), ref.tokens.end());
    const GenerateResult corpus_run =
        speculate(prompt, n_generate, std::make_shared<speculative::RetrievalSource>(std::move(corpus)));
    expect_same(ref, corpus_run, exact, where + ", retrieval with a corpus");
    // The corpus's drafts are right while the run follows plain decoding. Where the kernels round differently in a
    // verification step and a near tie turns the run aside early (expect_same checked that it is a tie), they are
    // wrong from there on, so acceptance is asserted only when the run followed plain decoding for 3 tokens or more.
    size_t common = 0;
    while (common < ref.tokens.size() && corpus_run.tokens[common] == ref.tokens[common]) ++common;
    if (exact || common >= 3) {
      EXPECT_GT(corpus_run.speculative.n_accepted, 0) << where << ": drafted " << corpus_run.speculative.n_drafted
                                                     << ", common prefix with plain decoding " << common << " of "
                                                     << ref.tokens.size();
    }
    {
      // Self-speculation: the model without the attention of its second-to-last layer and the FFN of its last
      // (any set keeps the output; which set only changes the acceptance), on a draft engine of its own sharing
      // the pool, so the draft's tentative tokens never reach the target's cache.
      const int32_t n_layer = engine_->model().config().n_layer;
      model::SublayerSkip skip(n_layer);
      skip.skip({n_layer - 2, kv::SublayerKind::kAttention});
      skip.skip({n_layer - 1, kv::SublayerKind::kFeedForward});
      auto source = speculative::make_self_draft(engine_->model(), skip, &pool_, 1024, 0.0f);
      ASSERT_TRUE(source.is_ok()) << source.message();
      EXPECT_EQ((*source)->name(), "self");
      // Fixed lengths: the acceptance asserted below is the source's; adaptive lengths would seldom draft here,
      // where a draft token costs nearly a target token.
      adaptive_ = false;
      const GenerateResult self = speculate(prompt, n_generate, std::shared_ptr<speculative::DraftSource>(std::move(source).value()));
      adaptive_ = true;
      expect_same(ref, self, exact, where + ", self");
      EXPECT_GT(self.speculative.n_drafted, 0) << where;
      EXPECT_GT(self.speculative.n_accepted, 0) << where;
    }
    if (std::string(name) == "SmolLM2") {
      // The target as its own draft model, on the engine's pool: greedy drafts the target accepts but where the
      // kernels round differently.
      auto draft_model = speculative::EngineDraftModel::create(engine_->model(), &pool_, 1024);
      ASSERT_TRUE(draft_model.is_ok()) << draft_model.message();
      const GenerateResult self = speculate(
          prompt, n_generate, std::make_shared<speculative::DraftModelSource>(std::move(draft_model).value(), 0.5f));
      expect_same(ref, self, exact, where + ", draft model");
      EXPECT_GT(self.speculative.n_drafted, 0) << where;
      if (exact) {
        EXPECT_EQ(self.speculative.n_accepted, self.speculative.n_drafted) << where;
      }
    }

    if (p.kind != std::string("code")) continue;  // the test sources on one prompt: they test the loop, not the text
    // Fixed draft lengths, so the step counts below are known (adaptive lengths: SpeculativeLoop below).
    adaptive_ = false;
    using Mode = OracleSource::Mode;
    auto right = std::make_shared<OracleSource>(ref.tokens, prompt.size(), Mode::kRight, n_vocab);
    const GenerateResult r = speculate(prompt, n_generate, right);
    expect_same(ref, r, exact, where + ", always right");
    auto wrong = std::make_shared<OracleSource>(ref.tokens, prompt.size(), Mode::kWrong, n_vocab);
    const GenerateResult w = speculate(prompt, n_generate, wrong);
    expect_same(ref, w, exact, where + ", always wrong");
    auto tree = std::make_shared<OracleSource>(ref.tokens, prompt.size(), Mode::kTree, n_vocab);
    const GenerateResult t = speculate(prompt, n_generate, tree);
    expect_same(ref, t, exact, where + ", tree");
    EXPECT_GT(r.speculative.n_drafted, 0);
    EXPECT_GT(w.speculative.n_drafted, 0);
    EXPECT_GT(t.speculative.n_drafted, 0);
    if (exact) {
      // Right drafts are all accepted: 1 + draft_max tokens per step but where fewer remain.
      EXPECT_EQ(r.speculative.n_accepted, r.speculative.n_drafted) << where;
      EXPECT_LE(r.speculative.n_steps, (n_generate - 1 + 8) / 9 + 1) << where;
      EXPECT_EQ(w.speculative.n_accepted, 0) << where;
      EXPECT_EQ(w.speculative.n_steps, n_generate - 1) << where;
      EXPECT_EQ(t.speculative.n_accepted, tree->n_right()) << where;
    } else {
      EXPECT_GT(r.speculative.n_accepted, r.speculative.n_drafted / 2) << where;
      EXPECT_GT(t.speculative.n_accepted, 0) << where;
    }
    adaptive_ = true;
  }
  EXPECT_GT(n_recycled, 0) << name << ": Token Recycling never drafted";
  EXPECT_GT(n_aded, 0) << name << ": ADED never drafted";
}

TEST_F(SpeculativeGreedy, SmolLM2SameAsPlainDecoding) { run_model(longhaul::testing::smollm2_path(), "SmolLM2", 20); }

TEST_F(SpeculativeGreedy, Gemma3SameAsPlainDecoding) { run_model(longhaul::testing::gemma3_path(), "Gemma 3", 12); }

// The loop's other paths with drafts: sampling (seeded, so reproducible), and a stop string met inside an accepted
// draft, where the request ends at the stop and the cache holds exactly what plain decoding's would.
using SpeculativeLoop = SpeculativeGreedy;

TEST_F(SpeculativeLoop, SeededSampledRunsEmitPlainSamplingsTokensAndKeepTheCacheConsistent) {
  if (!load(longhaul::testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 not installed";
  const std::vector<int32_t> prompt = tokenizer_->encode(kPrompts[1].text, true, false);
  sampling::SamplingOptions so;
  so.temperature = 0.8f;
  so.repeat_penalty = 1.1f;
  so.seed = 42;
  // Verification draws what plain sampling draws (speculative/verify.h) on plain decoding's logits bit for bit, so
  // a seeded run gives plain sampling's tokens under that seed, however its drafts went.
  const GenerateResult plain = speculate(prompt, 16, nullptr, so);
  const GenerateResult a = speculate(prompt, 16, std::make_shared<speculative::NgramSource>(), so);
  const GenerateResult b = speculate(prompt, 16, std::make_shared<speculative::NgramSource>(), so);
  ASSERT_EQ(a.tokens.size(), 16u);
  EXPECT_EQ(a.tokens, plain.tokens);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_GT(a.speculative.n_steps, 0);
  EXPECT_LE(a.speculative.n_steps, 15);
  EXPECT_LE(a.speculative.n_accepted, a.speculative.n_drafted);
  so.seed = 43;
  const GenerateResult plain43 = speculate(prompt, 16, nullptr, so);
  const GenerateResult c = speculate(prompt, 16, std::make_shared<speculative::RecycleSource>(engine_->model().config().n_vocab), so);
  EXPECT_EQ(c.tokens, plain43.tokens);
  EXPECT_NE(plain43.tokens, plain.tokens);  // the seed matters, so the equalities above are not trivial
}

// Adaptive draft lengths (speculative/draft_length.h) follow the drafts' acceptance: always-right drafts keep
// their full length, so the run takes the steps of fixed lengths; always-wrong ones stop being drafted but for
// the occasional probe as their estimates age, and the output is plain decoding's throughout.
TEST_F(SpeculativeLoop, AdaptiveDraftLengthsFollowAcceptance) {
  if (!load(longhaul::testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 not installed";
  constexpr int32_t kGenerate = 60;
  const auto [prompt, ref, n_vocab] = code_case(kGenerate);
  using Mode = OracleSource::Mode;
  const GenerateResult right =
      speculate(prompt, kGenerate, std::make_shared<OracleSource>(ref.tokens, prompt.size(), Mode::kRight, n_vocab));
  const GenerateResult wrong =
      speculate(prompt, kGenerate, std::make_shared<OracleSource>(ref.tokens, prompt.size(), Mode::kWrong, n_vocab));
  const bool exact = kernels_exact(prompt, ref);
  expect_same(ref, right, exact, "always right, adaptive");
  expect_same(ref, wrong, exact, "always wrong, adaptive");
  if (exact) {
    // 59 tokens after the prefill's. Fixed lengths of 8 take 8 steps (7 of 1 + 8 tokens, one of 3). Adaptive ones
    // start at the prior (p_i = 0.5^(i+1): a node or two) and grow with α, which every accepted draft raises: they
    // reach 8 within two or three steps (measured: 8 steps in all under the AVX2 kernels). Plain decoding: 59.
    EXPECT_EQ(right.speculative.n_accepted, right.speculative.n_drafted);
    EXPECT_LE(right.speculative.n_steps, 10);
    EXPECT_EQ(wrong.speculative.n_accepted, 0);
  }
  // Fixed lengths would draft 8 tokens in each of the 59 steps (472). The wrong drafts' estimates fall below what
  // a token costs within a few steps, and an aged estimate is probed with a node or two only (measured: 6 draft
  // tokens in all under the AVX2 kernels).
  EXPECT_EQ(wrong.speculative.n_steps, kGenerate - 1);
  EXPECT_GT(wrong.speculative.n_drafted, 0);
  EXPECT_LE(wrong.speculative.n_drafted, 24) << "drafted " << wrong.speculative.n_drafted;
}

// Acceptance is estimated per evidence class (speculative::Draft::evidence): a source whose right guesses come with
// one class and its wrong ones with another gets the right ones verified deep and the wrong ones cut to nothing but
// the occasional probe. With one class for both, the wrong drafts share the right ones' estimates and are verified
// far more often.
TEST_F(SpeculativeLoop, DraftLengthsFollowTheAcceptanceOfTheirEvidenceClass) {
  if (!load(longhaul::testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 not installed";
  constexpr int32_t kGenerate = 60;
  const CodeCase c = code_case(kGenerate);
  auto run = [&](int32_t right_evidence, int32_t wrong_evidence) {
    auto source =
        std::make_shared<OracleSource>(c.ref.tokens, c.prompt.size(), OracleSource::Mode::kAlternate, c.n_vocab);
    source->right_evidence = right_evidence;
    source->wrong_evidence = wrong_evidence;
    const GenerateResult r = speculate(c.prompt, kGenerate, source);
    expect_same(c.ref, r, kernels_exact(c.prompt, c.ref), "alternating right and wrong drafts");
    return source;
  };
  const auto apart = run(3, 1);
  const auto shared = run(0, 0);
  // Apart: the wrong class's first drafts start from the prior (a node or two), then its estimates fall below what
  // a token costs; it is probed with one node after 8 of its proposals without a draft (about 30 wrong proposals
  // in 60 tokens). Shared: every wrong draft is verified as deep as the right ones' record says. Measured under the
  // amx, avx2 and generic kernels: 8-12 wrong tokens verified apart, 32-37 shared.
  EXPECT_LE(apart->n_wrong_verified(), 20) << "wrong draft tokens verified, classes apart";
  EXPECT_GE(shared->n_wrong_verified(), 2 * apart->n_wrong_verified())
      << "wrong draft tokens verified: " << shared->n_wrong_verified() << " shared, " << apart->n_wrong_verified()
      << " apart";
  EXPECT_GT(apart->n_right_verified(), 0);
}

TEST_F(SpeculativeLoop, AStopStringInsideAnAcceptedDraftEndsTheRequestThere) {
  if (!load(longhaul::testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 not installed";
  const std::vector<int32_t> prompt = tokenizer_->encode(kPrompts[1].text, true, false);
  const Reference ref = reference(prompt, 20);
  // Stop at the text of reference tokens 6..7: always-right drafts of 8 run past it.
  const std::string stop = tokenizer_->decode(std::vector<int32_t>(ref.tokens.begin() + 6, ref.tokens.begin() + 8));
  ASSERT_FALSE(stop.empty());
  const GenerateResult plain = speculate(prompt, 20, nullptr, greedy(), {stop});
  auto right = std::make_shared<OracleSource>(ref.tokens, prompt.size(), OracleSource::Mode::kRight,
                                              engine_->model().config().n_vocab);
  const GenerateResult fast = speculate(prompt, 20, right, greedy(), {stop});  // checks the cache, too
  EXPECT_EQ(plain.stop, StopReason::kStopString);
  EXPECT_EQ(fast.stop, StopReason::kStopString);
  EXPECT_EQ(fast.text.find(stop), std::string::npos);
  if (kernels_exact(prompt, ref)) {
    EXPECT_EQ(fast.tokens, plain.tokens);
    EXPECT_EQ(fast.text, plain.text);
  }
  EXPECT_LT(fast.tokens.size(), 20u);
}

}  // namespace
}  // namespace longhaul::generate
