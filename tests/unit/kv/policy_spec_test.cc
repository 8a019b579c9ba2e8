// The one KV policy syntax every command and batch line reads: name[:key=value...]. A parameter a policy does not
// read, or an explicit value outside its range, is refused with the parameter and the policy named, never silently
// replaced by a default.
#include <gtest/gtest.h>

#include "kv/policy_registry.h"

namespace longhaul::kv {
namespace {

std::string error_of(const std::string& spec) {
  const Result<KvPolicyChoice> r = parse_kv_policy(spec, KvPolicyOptions{});
  return r.is_ok() ? std::string("ok") : r.message();
}

TEST(KvPolicySpec, ParsesEveryPolicysOwnParameters) {
  const Result<KvPolicyChoice> h2o = parse_kv_policy("h2o:budget=512:recent=128:select=layer", KvPolicyOptions{});
  ASSERT_TRUE(h2o.is_ok()) << h2o.message();
  EXPECT_EQ(h2o->name, "h2o");
  EXPECT_EQ(h2o->options.budget, 512);
  EXPECT_EQ(h2o->options.recent, 128);
  EXPECT_FALSE(h2o->options.select_per_head);
  const Result<KvPolicyChoice> s = parse_kv_policy("streaming:sink=0:window=60:bits=8", KvPolicyOptions{});
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(s->options.sink_tokens, 0);
  EXPECT_EQ(s->options.window, 60);
  EXPECT_EQ(s->options.kv_bits, 8);
  const Result<KvPolicyChoice> duo = parse_kv_policy("duo:retrieval=0.5", KvPolicyOptions{});
  ASSERT_TRUE(duo.is_ok()) << duo.message();
  EXPECT_FLOAT_EQ(duo->options.retrieval_fraction, 0.5f);
  // The base options (command-line defaults) carry through where the spec says nothing.
  KvPolicyOptions base;
  base.budget = 300;
  EXPECT_EQ(parse_kv_policy("tova", base)->options.budget, 300);
}

TEST(KvPolicySpec, RefusesParametersThePolicyDoesNotRead) {
  EXPECT_NE(error_of("full:budget=10").find("KV policy full has no parameter 'budget'"), std::string::npos)
      << error_of("full:budget=10");
  EXPECT_NE(error_of("tova:recent=3").find("tova has no parameter 'recent'"), std::string::npos);
  EXPECT_NE(error_of("h2o:windw=3").find("its parameters: budget, recent, select, bits, group, residual"),
            std::string::npos)
      << error_of("h2o:windw=3");
  EXPECT_NE(error_of("bogus:budget=3").find("unknown KV policy 'bogus'"), std::string::npos);
}

TEST(KvPolicySpec, RefusesExplicitValuesOutsideTheirRange) {
  EXPECT_NE(error_of("h2o:budget=0").find("'budget=0' in 'h2o:budget=0' must be >= 2"), std::string::npos)
      << error_of("h2o:budget=0");
  EXPECT_NE(error_of("streaming:window=0").find("must be >= 1"), std::string::npos);
  EXPECT_NE(error_of("streaming:window=-5").find("window=-5"), std::string::npos);
  EXPECT_NE(error_of("duo:retrieval=2").find("retrieval=2"), std::string::npos);
  EXPECT_NE(error_of("kv-quant:bits=2").find("must be >= 4"), std::string::npos);
  EXPECT_EQ(error_of("streaming:sink=0"), "ok");  // no sinks is a valid choice
}

}  // namespace
}  // namespace longhaul::kv
