// KV policies driven by a Session on SmolLM2: before anything is evicted a policy
// must not change a single logit (the observe hook and the eviction protocol are
// invisible), and after eviction the cache stays within the policy's bound with
// positions consistent.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "generate/session.h"
#include "testing/model_paths.h"

namespace longhaul::generate {
namespace {

class KvPolicySession : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = longhaul::testing::smollm2_path();
    if (!longhaul::testing::file_exists(path)) return;
    Result<std::unique_ptr<model::Model>> m = model::Model::load(path);
    if (m.is_ok()) model_ = std::move(m).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  }

  // Logits of every token of `tokens` fed in steps of n_batch under `policy`.
  static std::vector<float> all_logits(const std::string& policy, const std::vector<int32_t>& tokens,
                                       int32_t n_batch) {
    SessionOptions so;
    so.n_ctx = 1024;
    so.n_batch = n_batch;
    so.n_threads = 1;
    so.kv_policy = policy;
    auto session = Session::create(*model_, so);
    EXPECT_TRUE(session.is_ok()) << session.message();
    std::vector<float> out;
    EXPECT_TRUE((*session)->feed_all_logits(tokens, out).is_ok());
    return out;
  }

  static std::vector<int32_t> some_tokens(int32_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = 100 + (i * 7919) % 20000;
    return t;
  }

  static model::Model* model_;
};
model::Model* KvPolicySession::model_ = nullptr;

TEST_F(KvPolicySession, PoliciesChangeNothingBeforeTheyEvict) {
  const std::vector<int32_t> tokens = some_tokens(48);
  const std::vector<float> full = all_logits("full", tokens, 16);
  for (const char* policy :
       {"streaming:window=60", "h2o:budget=64", "a2sf:budget=64", "tova:budget=64", "snapkv:budget=64"}) {
    const std::vector<float> got = all_logits(policy, tokens, 16);
    ASSERT_EQ(got.size(), full.size());
    size_t n_diff = 0;
    for (size_t i = 0; i < got.size(); ++i) n_diff += got[i] != full[i];
    EXPECT_EQ(n_diff, 0u) << policy;
  }
}

TEST_F(KvPolicySession, EvictingPoliciesStayWithinTheirBound) {
  for (const char* policy : {"streaming:sink=4:window=28", "h2o:budget=32", "tova:budget=32"}) {
    SessionOptions so;
    so.n_ctx = 64;  // smaller than what is fed: only an evicting policy gets through
    so.n_threads = 1;
    so.kv_policy = policy;
    auto session = Session::create(*model_, so);
    ASSERT_TRUE(session.is_ok()) << session.message();
    Session& s = **session;
    const std::vector<int32_t> prompt = some_tokens(100);
    ASSERT_TRUE(s.feed(prompt).is_ok()) << policy;
    for (int i = 0; i < 20; ++i) {
      const int32_t one[1] = {prompt[static_cast<size_t>(i)]};
      ASSERT_TRUE(s.feed(one).is_ok()) << policy;
      EXPECT_LE(s.n_cells(), 32) << policy;
      EXPECT_FALSE(s.context_full());
    }
    EXPECT_EQ(s.n_past(), 120) << policy;
    for (int32_t il = 0; il < model_->config().n_layer; ++il) {
      const auto pos = s.cache().positions(0, il);
      ASSERT_EQ(static_cast<int32_t>(pos.size()), s.n_cells());
      EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
      EXPECT_EQ(pos.back(), 119) << policy;  // the newest token is always kept
    }
    const float* logits = s.logits();
    for (int32_t v = 0; v < model_->config().n_vocab; ++v) ASSERT_TRUE(std::isfinite(logits[v]));
    // Truncating to a position keeps exactly the cells before it.
    s.truncate(110);
    EXPECT_EQ(s.n_past(), 110) << policy;
    EXPECT_LT(s.cache().positions(0, 0).back(), 110);
  }
}

TEST_F(KvPolicySession, FullPolicyStillReportsAFullContext) {
  SessionOptions so;
  so.n_ctx = 16;
  so.n_threads = 1;
  auto session = Session::create(*model_, so);
  ASSERT_TRUE(session.is_ok());
  EXPECT_FALSE((*session)->feed(some_tokens(17)).is_ok());
  ASSERT_TRUE((*session)->feed(some_tokens(16)).is_ok());
  EXPECT_TRUE((*session)->context_full());
}

}  // namespace
}  // namespace longhaul::generate
