// Engine::fork (pages shared copy on write, each sequence with its own policy) and tree steps (sibling draft
// branches in one tentative step), on SmolLM2. Below 32 tokens a step's rows go through the same matrix kernel
// whatever their number, and SmolLM2's kernels give a row the same bits alone or among others (engine_test.cc), so
// where both runs hold the same cells the logits must be identical.
#include <gtest/gtest.h>

#include "engine_testing.h"

namespace longhaul::generate {
namespace {

using namespace engine_testing;

class EngineFork : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = shared_model(longhaul::testing::smollm2_path());
    if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  }
  const model::Model* model_ = nullptr;
  ThreadPool pool_{2};
};

// Whether every layer's page i_page of `seq` is shared with another sequence (all = true) or none is (false).
bool pages_shared(const kv::KvCache& cache, kv::SeqId seq, int32_t i_page, bool all) {
  for (int32_t il = 0; il < cache.shape().n_layer; ++il)
    if (cache.page_shared(seq, il, i_page) != all) return false;
  return true;
}

TEST_F(EngineFork, SharesPagesCopiesOnWriteAndLeavesTheParentAlone) {
  // Streaming with 4 sinks + 124 recent tokens (128 cells) and 64-cell pages: the 100-token prefix fills page 0
  // and 36 cells of page 1.
  const std::string o = "streaming:sink=4:window=124";
  constexpr int32_t kPage = 64, kPrefix = 100, kSuffix = 10, kMore = 30;
  const std::vector<int32_t> prefix = some_tokens(kPrefix, 1), suffix = some_tokens(kSuffix, 2),
                             more = some_tokens(kMore, 3);
  const int32_t x = 4321;  // A's next token

  std::unique_ptr<Engine> engine = make_engine(*model_, pool_, 1024, 256, kPage);
  const kv::SeqId a = add_sequence(*engine, o);
  feed(*engine, a, prefix);
  const kv::KvCache& cache = engine->cache();
  const int64_t cell_bytes = cache.bytes_per_cell(a);  // f16 K + V of one cell, every layer and head
  const int64_t bytes_before = cache.used_bytes();
  ASSERT_EQ(bytes_before, kPrefix * cell_bytes);

  Result<kv::SeqId> forked = engine->fork(a);
  ASSERT_TRUE(forked.is_ok()) << forked.message();
  const kv::SeqId b = *forked;
  EXPECT_EQ(engine->n_past(b), kPrefix);
  EXPECT_EQ(engine->n_cells(b), kPrefix);
  EXPECT_EQ(engine->policy(b).describe(), engine->policy(a).describe());
  // Stored once: the fork adds no byte, and both pages of every layer are shared.
  EXPECT_EQ(cache.used_bytes(), bytes_before);
  for (int32_t ip = 0; ip < 2; ++ip) {
    EXPECT_TRUE(pages_shared(cache, a, ip, true)) << ip;
    EXPECT_TRUE(pages_shared(cache, b, ip, true)) << ip;
  }

  // B after the suffix predicts what a fresh sequence fed the prefix and then the suffix does: the same cells, the
  // same steps.
  const std::vector<float> b_logits = step_one(*engine, b, suffix);
  {
    std::unique_ptr<Engine> fresh = make_engine(*model_, pool_, 1024, 256, kPage);
    const kv::SeqId f = add_sequence(*fresh, o);
    feed(*fresh, f, prefix);
    EXPECT_TRUE(bit_identical(b_logits, step_one(*fresh, f, suffix)));
    // Fed prefix + suffix in one step, the suffix's rows go through the prompt kernel (>= 32 rows), which sums in
    // another order, and the int8 rounding of later activations amplifies that: measured 0.84 at most.
    const std::vector<float> whole = feed(*fresh, add_sequence(*fresh, o), concat(prefix, suffix));
    EXPECT_LT(max_abs_diff(b_logits, whole), 1.5f);
  }
  // Appending to B copied its partially filled page 1 (36 of A's cells, now with B's 10 after them); page 0 is
  // still shared. Used bytes count each buffer once, at the most cells a holder uses: A's 64 + 36 cells, plus
  // B's own page 1 of 36 + 10 cells.
  EXPECT_EQ(cache.used_bytes(), bytes_before + (kPrefix - kPage + kSuffix) * cell_bytes);
  EXPECT_TRUE(pages_shared(cache, a, 0, true));
  EXPECT_TRUE(pages_shared(cache, b, 0, true));
  EXPECT_TRUE(pages_shared(cache, a, 1, false));
  EXPECT_TRUE(pages_shared(cache, b, 1, false));

  // 30 more tokens take B past its 128 cells: streaming keeps the 4 sinks and the last 94 cells before the step,
  // which moves cells into page 0 (and re-rotates the sinks there): B copies page 0 too, and nothing stays shared.
  step_one(*engine, b, more);
  EXPECT_EQ(engine->n_past(b), kPrefix + kSuffix + kMore);
  EXPECT_EQ(engine->n_cells(b), 128);
  EXPECT_EQ(engine->n_cells(a), kPrefix);
  EXPECT_EQ(cache.used_bytes(), (kPrefix + 128) * cell_bytes);
  for (int32_t ip = 0; ip < 2; ++ip) {
    EXPECT_TRUE(pages_shared(cache, a, ip, false)) << ip;
    EXPECT_TRUE(pages_shared(cache, b, ip, false)) << ip;
  }

  // A never saw any of it: its next logits are those of A in an engine where B never existed.
  const std::vector<float> a_logits = step_one(*engine, a, {&x, 1});
  std::unique_ptr<Engine> lone = make_engine(*model_, pool_, 1024, 256, kPage);
  const kv::SeqId l = add_sequence(*lone, o);
  feed(*lone, l, prefix);
  EXPECT_TRUE(bit_identical(a_logits, step_one(*lone, l, {&x, 1})));
}

TEST_F(EngineFork, SiblingBranchesOfATreeStepSeeOnlyTheirAncestors) {
  const std::vector<int32_t> prefix = some_tokens(40, 4);
  const int32_t ta = 1001, tb = 2002, tc = 3003, td = 4004, next = 5005;
  // One tentative step: [a, a->b] and [c, c->d]; a and c share position 40, b and d position 41.
  const int32_t tokens[] = {ta, tb, tc, td};
  const int32_t parents[] = {model::kStepRoot, 0, model::kStepRoot, 2};
  std::unique_ptr<Engine> engine = make_engine(*model_, pool_);
  const kv::SeqId t = add_sequence(*engine, "full");
  feed(*engine, t, prefix);
  SequenceStep s;
  s.seq = t;
  s.tokens = tokens;
  s.parents = parents;
  s.tentative = true;
  s.output = StepOutput::kAllLogits;
  StepResult r;
  ASSERT_TRUE(engine->step({&s, 1}, r).is_ok());
  ASSERT_EQ(r.first_logits.back(), 4);
  auto row = [&](int32_t k) { return std::span<const float>(r.logits(0, k), static_cast<size_t>(r.n_vocab)); };

  // Each branch fed alone after the prefix, as a chain.
  std::unique_ptr<Engine> ref = make_engine(*model_, pool_);
  const kv::SeqId first = add_sequence(*ref, "full"), second = add_sequence(*ref, "full");
  feed(*ref, first, prefix);
  feed(*ref, second, prefix);
  // Ordinary steps of generated tokens (not a prompt's feed, whose products may take the ISA's prompt kernels).
  std::vector<float> first_rows, second_rows;
  const int32_t branch1[] = {ta, tb}, branch2[] = {tc, td};
  auto chain_rows = [&](kv::SeqId seq, std::span<const int32_t> branch, std::vector<float>& rows) {
    SequenceStep c;
    c.seq = seq;
    c.tokens = branch;
    c.output = StepOutput::kAllLogits;
    StepResult cr;
    ASSERT_TRUE(ref->step({&c, 1}, cr).is_ok());
    rows = cr.data.logits;
  };
  chain_rows(first, branch1, first_rows);
  chain_rows(second, branch2, second_rows);
  const auto n_vocab = static_cast<size_t>(r.n_vocab);
  auto ref_row = [&](const std::vector<float>& rows, size_t k) {
    return std::span<const float>(rows).subspan(k * n_vocab, n_vocab);
  };
  // The tree's masked cells contribute exact zeros and the rows share the kernel: identical.
  EXPECT_TRUE(bit_identical(row(0), ref_row(first_rows, 0)));
  EXPECT_TRUE(bit_identical(row(1), ref_row(first_rows, 1)));
  EXPECT_TRUE(bit_identical(row(2), ref_row(second_rows, 0)));
  EXPECT_TRUE(bit_identical(row(3), ref_row(second_rows, 1)));
  EXPECT_GT(max_abs_diff(row(1), row(3)), 1.0f);  // the branches really differ

  // Keeping the second branch leaves prefix + c + d.
  const int32_t path[] = {2, 3};
  ASSERT_TRUE(engine->accept(t, path).is_ok());
  EXPECT_FALSE(engine->has_tentative(t));
  EXPECT_EQ(engine->n_past(t), 42);
  EXPECT_EQ(engine->n_cells(t), 42);
  const std::span<const int32_t> pos = engine->cache().positions(t, 0);
  EXPECT_EQ(pos[40], 40);
  EXPECT_EQ(pos[41], 41);
  EXPECT_TRUE(bit_identical(step_one(*engine, t, {&next, 1}), step_one(*ref, second, {&next, 1})));
}

}  // namespace
}  // namespace longhaul::generate
