#include "kv/policy_registry.h"

#include <gtest/gtest.h>

#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

TEST(PolicyRegistry, KnowsEveryPolicyFile) {
  const std::vector<std::string> names = kv_policy_names();
  for (const char* want : {"full", "streaming", "h2o", "a2sf", "tova", "snapkv"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

TEST(PolicyRegistry, UnknownNameListsTheKnownOnes) {
  const KvPolicyContext ctx = testing::tiny_context(testing::tiny_shape());
  Result<BuiltKvPolicy> p = make_kv_policy("lru", ctx);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("lru"), std::string::npos);
  EXPECT_NE(p.message().find("streaming"), std::string::npos);
}

TEST(FullPolicy, NeverEvicts) {
  const KvShape shape = testing::tiny_shape();
  auto policy = testing::make("full", testing::tiny_context(shape));
  KvCache cache(shape, {4, 0, 1});
  const SeqId seq = *cache.add_sequence();
  for (int i = 0; i < 50; ++i) testing::step(*policy, cache, seq, 3);
  EXPECT_EQ(cache.n_cells(seq, 0), 150);
  EXPECT_EQ(policy->max_cells(), 0);
  const auto pos = testing::positions_of(cache, seq, 1);
  for (int32_t i = 0; i < 150; ++i) EXPECT_EQ(pos[static_cast<size_t>(i)], i);
}

}  // namespace
}  // namespace longhaul::kv
