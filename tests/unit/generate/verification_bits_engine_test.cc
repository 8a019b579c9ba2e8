// What lossless greedy speculation stands on: a verification step of k tokens (one tentative step, every token's
// logits) gives each token, bit for bit, the logits that plain decoding of the same tokens one step at a time gives.
// A greedy run with speculation then picks what the plain run picks even where two tokens are nearly tied. Checked
// on both models, on the ISA the machine runs, with drafts of 3 tokens (one kernel call's queries), 9 (more queries
// than the AVX-512 row kernel takes in one call) and 17 (two attention blocks of tokens), and with a tree of drafts,
// whose nodes must each get what plain decoding of their own branch gives.
#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class VerificationBitsTest : public EachModelTest {};

// One tentative step of `tokens` (a tree when `parents` is not empty) that returns every token's logits.
Status verification_step(Engine& engine, kv::SeqId seq, std::span<const int32_t> tokens,
                         std::span<const int32_t> parents, StepResult& r) {
  SequenceStep s;
  s.seq = seq;
  s.tokens = tokens;
  s.parents = parents;
  s.output = StepOutput::kAllLogits;
  s.tentative = true;
  return engine.step({&s, 1}, r);
}

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
    StepResult r;
    const Status st = verification_step(*engine, *verifying, draft, {}, r);
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

TEST_P(VerificationBitsTest, EachTreeNodeGetsItsBranchsPlainLogits) {
  // A tree of 25 drafts after 1020 cells: its cells run from the middle of a 64-key pass of the fourth page into the
  // fifth, node by node, so every branch's ancestors lie elsewhere than plain decoding puts them (the root's cell
  // onwards, one per depth); branches reach depth 9 and the tree spans two attention blocks of tokens.
  const std::vector<int32_t> parents = {model::kStepRoot, 0, 0, 0, 1, 1, 2, 3, 4, 4, 6, 7, 8,
                                        10, 11, 11, 12, 13, 14, 16, 18, 19, 20, 21, 23};
  const auto n_nodes = static_cast<int32_t>(parents.size());
  std::unique_ptr<Engine> engine = make_engine(*model_, pool_, 2048);
  ASSERT_NE(engine, nullptr);
  const kv::SeqId prompt = add_sequence(*engine, "full");
  feed(*engine, prompt, some_tokens(1020, 21));
  const std::vector<int32_t> drafts = some_tokens(n_nodes, 23);

  Result<kv::SeqId> verifying = engine->fork(prompt);
  ASSERT_TRUE(verifying.is_ok()) << verifying.message();
  StepResult r;
  const Status st = verification_step(*engine, *verifying, drafts, parents, r);
  ASSERT_TRUE(st.is_ok()) << st.message();
  const auto n_vocab = static_cast<size_t>(r.n_vocab);

  // Each leaf's branch decoded plainly checks every node on it.
  std::vector<bool> has_child(static_cast<size_t>(n_nodes), false);
  for (int32_t i = 1; i < n_nodes; ++i) has_child[static_cast<size_t>(parents[static_cast<size_t>(i)])] = true;
  int32_t n_checked = 0;
  for (int32_t leaf = 0; leaf < n_nodes; ++leaf) {
    if (has_child[static_cast<size_t>(leaf)]) continue;
    std::vector<int32_t> branch;  // node numbers, root first
    for (int32_t node = leaf; node != model::kStepRoot; node = parents[static_cast<size_t>(node)])
      branch.push_back(node);
    std::reverse(branch.begin(), branch.end());
    std::vector<int32_t> tokens;
    for (const int32_t node : branch) tokens.push_back(drafts[static_cast<size_t>(node)]);
    Result<kv::SeqId> plain = engine->fork(prompt);
    ASSERT_TRUE(plain.is_ok()) << plain.message();
    const std::vector<float> want = decode_each(*engine, *plain, tokens);  // [branch length, n_vocab]
    engine->remove(*plain);
    ASSERT_EQ(want.size(), n_vocab * branch.size());
    for (size_t d = 0; d < branch.size(); ++d) {
      const std::span<const float> got(r.logits(0, branch[d]), n_vocab);
      const std::span<const float> expected = std::span(want).subspan(d * n_vocab, n_vocab);
      EXPECT_TRUE(bit_identical(got, expected))
          << "node " << branch[d] << " at depth " << d << " of leaf " << leaf << ": " << max_abs_diff(got, expected);
      ++n_checked;
    }
  }
  EXPECT_GE(n_checked, n_nodes);
  engine->remove(*verifying);
}

INSTANTIATE_TEST_SUITE_P(Models, VerificationBitsTest, ::testing::Values("SmolLM2", "Gemma3"), each_model_name);

}  // namespace
}  // namespace longhaul::generate
