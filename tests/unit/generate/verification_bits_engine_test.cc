// What lossless greedy speculation stands on: a verification step of k tokens (one tentative step, every token's
// logits) gives each token, bit for bit, the logits that plain decoding of the same tokens one step at a time gives.
// A greedy run with speculation then picks what the plain run picks even where two tokens are nearly tied. Checked
// on both models, on the ISA the machine runs, with drafts of 3 tokens (one kernel call's queries), 9 (more queries
// than the AVX-512 row kernel takes in one call) and 17 (two attention blocks of tokens).
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class VerificationBitsTest : public EachModelTest {};

TEST_P(VerificationBitsTest, EachTokenGetsPlainDecodingsLogits) {
  // 1020 cells fill four pages of 256 but 4: the drafts of 9 and 17 tokens reach into a fifth page, which the plain
  // steps of their first tokens do not hold (a split chosen from the cells a step finds would differ there).
  std::unique_ptr<Engine> engine = make_engine(*model_, pool_, 2048);
  ASSERT_NE(engine, nullptr);
  const kv::SeqId prompt = add_sequence(*engine, "full");
  feed(*engine, prompt, some_tokens(1020, 21));
  for (const int32_t n_draft : {3, 9, 17}) {
    SCOPED_TRACE(std::to_string(n_draft) + " draft tokens");
    const std::vector<int32_t> draft = some_tokens(n_draft, 22);
    Result<kv::SeqId> plain = engine->fork(prompt);
    ASSERT_TRUE(plain.is_ok()) << plain.message();
    const std::vector<float> want = decode_each(*engine, *plain, draft);  // [n_draft, n_vocab]
    engine->remove(*plain);

    Result<kv::SeqId> verifying = engine->fork(prompt);
    ASSERT_TRUE(verifying.is_ok()) << verifying.message();
    SequenceStep s;
    s.seq = *verifying;
    s.tokens = draft;
    s.output = StepOutput::kAllLogits;
    s.tentative = true;
    StepResult r;
    const Status st = engine->step({&s, 1}, r);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const auto n_vocab = static_cast<size_t>(r.n_vocab);
    ASSERT_EQ(want.size(), n_vocab * static_cast<size_t>(n_draft));
    for (int32_t k = 0; k < n_draft; ++k) {
      const std::span<const float> got(r.logits(0, k), n_vocab);
      const std::span<const float> expected = std::span(want).subspan(static_cast<size_t>(k) * n_vocab, n_vocab);
      EXPECT_TRUE(bit_identical(got, expected)) << "token " << k << ": " << max_abs_diff(got, expected);
    }
    engine->remove(*verifying);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, VerificationBitsTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
