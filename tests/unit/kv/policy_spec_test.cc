// The one KV policy syntax every command and batch line reads: name[:key=value...]. Each policy reads its own keys
// (kv/policy_params.h); a parameter a policy does not read, or an explicit value outside its range, is refused
// with the parameter and the policy named, never silently replaced by a default.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "kv/head_profile.h"
#include "kv/policy_params.h"
#include "kv/policy_registry.h"
#include "policy_test_util.h"

namespace longhaul::kv {
namespace {

KvPolicyContext context_with_profile() {
  KvPolicyContext c = testing::tiny_context(testing::tiny_shape());
  c.layer_window = {0, 0};
  c.head_profile = std::make_shared<HeadProfile>(blank_head_profile(2, 2));
  return c;
}

std::string error_of(const std::string& spec) {
  const Result<BuiltKvPolicy> r = make_kv_policy(spec, context_with_profile());
  return r.is_ok() ? std::string("ok") : r.message();
}

std::string describe(const std::string& spec) {
  const Result<BuiltKvPolicy> r = make_kv_policy(spec, context_with_profile());
  return r.is_ok() ? r->policy->describe() : r.message();
}

TEST(KvPolicySpec, ParsesEveryPolicysOwnParameters) {
  EXPECT_EQ(describe("h2o:budget=512:recent=128:select=layer"), "h2o(budget=512, recent=128, select=layer)");
  EXPECT_EQ(describe("a2sf:budget=64:forget=0.5"), "a2sf(budget=64, recent=32, forget=0.5)");
  EXPECT_EQ(describe("snapkv:budget=100:obs=8:pool=3"), "snapkv(budget=100, obs=8, pool=3)");
  EXPECT_EQ(describe("lm-infinite:sink=10:window=100"), "lm-infinite(sink=10, window=100, ceiling=100)");
  const Result<BuiltKvPolicy> s = make_kv_policy("streaming:sink=0:window=60:bits=8", context_with_profile());
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(s->policy->describe(), "streaming(sink=0, window=60)");
  EXPECT_EQ(s->storage.bits, 8);
  EXPECT_EQ(s->storage.group, 32);
  EXPECT_EQ(s->storage.residual, 128);
  // duo's sinks are rounded up to its 64-cell pages.
  EXPECT_EQ(describe("duo:retrieval=0.5:window=100"), "duo(retrieval=0.50, sink=64, window=100)");
  // A key left out is the policy's own default.
  EXPECT_EQ(describe("tova"), "tova(budget=" + std::to_string(kDefaultKvBudget) + ")");
  EXPECT_EQ(describe("streaming"), "streaming(sink=4, window=1020)");
  EXPECT_EQ(describe("duo"), "duo(retrieval=0.25, sink=64, window=512)");
}

TEST(KvPolicySpec, RefusesParametersThePolicyDoesNotRead) {
  EXPECT_NE(error_of("full:budget=10").find("KV policy full has no parameter 'budget'"), std::string::npos)
      << error_of("full:budget=10");
  EXPECT_NE(error_of("full:budget=10").find("its parameters: bits, group, residual"), std::string::npos)
      << error_of("full:budget=10");
  EXPECT_NE(error_of("tova:recent=3").find("tova has no parameter 'recent'"), std::string::npos);
  EXPECT_NE(error_of("h2o:windw=3").find("in 'h2o:windw=3'; its parameters: budget, recent, select, bits, group, residual"),
            std::string::npos)
      << error_of("h2o:windw=3");
  EXPECT_NE(error_of("h2o:forget=0.5").find("h2o has no parameter 'forget'"), std::string::npos);
  EXPECT_NE(error_of("bogus:budget=3").find("unknown KV policy 'bogus'"), std::string::npos);
  EXPECT_NE(error_of("bogus").find("known: full, streaming"), std::string::npos) << error_of("bogus");
}

TEST(KvPolicySpec, RefusesExplicitValuesOutsideTheirRange) {
  EXPECT_NE(error_of("h2o:budget=0").find("'budget=0' in 'h2o:budget=0' must be >= 2"), std::string::npos)
      << error_of("h2o:budget=0");
  EXPECT_NE(error_of("streaming:window=0").find("must be >= 1"), std::string::npos);
  EXPECT_NE(error_of("streaming:window=-5").find("window=-5"), std::string::npos);
  EXPECT_NE(error_of("streaming:sink=2000").find("'sink=2000' in 'streaming:sink=2000' must be <= 1024"),
            std::string::npos)
      << error_of("streaming:sink=2000");
  EXPECT_NE(error_of("streaming:sink=-1").find("sink=-1"), std::string::npos);
  EXPECT_NE(error_of("duo:retrieval=2").find("'retrieval=2' in 'duo:retrieval=2' is not retrieval=F with F in [0, 1]"),
            std::string::npos)
      << error_of("duo:retrieval=2");
  EXPECT_NE(error_of("a2sf:forget=0").find("is not forget=F with F in (0, 1]"), std::string::npos)
      << error_of("a2sf:forget=0");
  EXPECT_NE(error_of("a2sf:forget=").find("forget="), std::string::npos);
  EXPECT_NE(error_of("a2sf:forget=nan").find("forget=nan"), std::string::npos);
  EXPECT_NE(error_of("kv-quant:bits=2").find("'bits=2' in 'kv-quant:bits=2' is not bits=16, bits=8 or bits=4"),
            std::string::npos)
      << error_of("kv-quant:bits=2");
  EXPECT_NE(error_of("h2o:select=heads").find("is not select=head or select=layer"), std::string::npos);
  EXPECT_NE(error_of("h2o:budget=12x").find("is not budget=N with N an integer in [2, 16777216]"), std::string::npos)
      << error_of("h2o:budget=12x");
  EXPECT_NE(error_of("h2o:budget=99999999999999999999").find("budget=99999999999999999999"), std::string::npos);
  EXPECT_NE(error_of("full:group=0").find("'group=0' in 'full:group=0' must be >= 1"), std::string::npos);
  EXPECT_EQ(error_of("streaming:sink=0"), "ok");  // no sinks is a valid choice
  EXPECT_EQ(error_of("full:residual=0"), "ok");
  // A refused value is reported before a key the policy does not have and before its own joint checks.
  EXPECT_NE(error_of("h2o:budget=0:recent=5:windw=3").find("budget=0"), std::string::npos);
  // Parameters that only hold together.
  EXPECT_NE(error_of("h2o:budget=8:recent=8").find("h2o: recent 8 must be below the budget 8 (in 'h2o:budget=8:recent=8')"),
            std::string::npos)
      << error_of("h2o:budget=8:recent=8");
  EXPECT_NE(error_of("snapkv:pool=4").find("snapkv: pool 4 must be odd"), std::string::npos);
}

TEST(KvPolicySpec, RefusesMalformedSpecs) {
  EXPECT_NE(error_of("").find("empty KV policy name"), std::string::npos) << error_of("");
  EXPECT_NE(error_of(":sink=1").find("empty KV policy name in ':sink=1'"), std::string::npos);
  EXPECT_NE(error_of("streaming:sink").find("'sink' in 'streaming:sink' is not key=value"), std::string::npos)
      << error_of("streaming:sink");
  EXPECT_NE(error_of("streaming:").find("is not key=value"), std::string::npos);
  EXPECT_NE(error_of("streaming:=4").find("is not key=value"), std::string::npos);
  EXPECT_NE(error_of("streaming:sink=1:sink=2").find("'sink' is given twice in 'streaming:sink=1:sink=2'"),
            std::string::npos);
}

// The reader on its own: defaults for absent keys, the keys asked for, and unread keys.
TEST(PolicyParams, GettersGiveDefaultsAndRecordWhatWasAsked) {
  Result<PolicyParams> p = PolicyParams::parse("x:a=3:c=0.5:d=layer");
  ASSERT_TRUE(p.is_ok()) << p.message();
  EXPECT_EQ(p->name(), "x");
  EXPECT_EQ(p->get_int("a", 7, 1, 10, "a count"), 3);
  EXPECT_EQ(p->get_int("b", 7, 1, 10, "another", "twice a"), 7);
  EXPECT_FLOAT_EQ(p->get_float("c", 0.1f, 0.0f, 1.0f, false, "a share"), 0.5f);
  EXPECT_EQ(p->get_word("d", "head", {"head", "layer"}, "a choice"), "layer");
  EXPECT_TRUE(p->status().is_ok()) << p->status().message();
  ASSERT_EQ(p->asked().size(), 4u);
  EXPECT_EQ(p->asked()[1].key, "b");
  EXPECT_EQ(p->asked()[1].fallback, "twice a");
  EXPECT_EQ(p->asked()[1].range, "[1, 10]");
  EXPECT_EQ(p->asked()[3].form, "head|layer");

  Result<PolicyParams> q = PolicyParams::parse("x:a=30:z=1");
  ASSERT_TRUE(q.is_ok());
  EXPECT_EQ(q->get_int("a", 7, 1, 10, "a count"), 7);  // refused: the default comes back
  EXPECT_NE(q->status().message().find("'a=30' in 'x:a=30:z=1' must be <= 10 (a: a count)"), std::string::npos)
      << q->status().message();
  Result<PolicyParams> r = PolicyParams::parse("x:z=1");
  ASSERT_TRUE(r.is_ok());
  r->get_int("a", 7, 1, 10, "a count");
  EXPECT_EQ(r->status().message(), "KV policy x has no parameter 'z' (in 'x:z=1'; its parameters: a)");
}

// --help and the README's table come from the factories themselves: every policy, each key it reads.
TEST(KvPolicySpec, HelpListsEveryPolicyAndItsParameters) {
  const std::string help = kv_policy_help();
  for (const std::string& name : kv_policy_names()) EXPECT_NE(help.find("  " + name + " "), std::string::npos) << name;
  for (const char* param : {"budget=N", "recent=N", "select=head|layer", "forget=F", "obs=N", "pool=N", "sink=N",
                            "window=N", "retrieval=F", "bits=16|8|4", "group=N", "residual=N"})
    EXPECT_NE(help.find(param), std::string::npos) << param;
  EXPECT_NE(help.find("default 16; kv-quant: 8"), std::string::npos) << help;
  for (const KvPolicyDoc& doc : kv_policy_docs()) {
    std::vector<std::string> keys;
    for (const ParamDoc& d : doc.params) keys.push_back(d.key);
    if (doc.name == "h2o") {
      EXPECT_EQ(keys, (std::vector<std::string>{"budget", "recent", "select"}));
    } else if (doc.name == "full" || doc.name == "kv-quant") {
      EXPECT_TRUE(keys.empty()) << doc.name;
    } else if (doc.name == "duo") {
      EXPECT_EQ(keys, (std::vector<std::string>{"retrieval", "sink", "window"}));
    }
  }
}

}  // namespace
}  // namespace longhaul::kv

namespace longhaul::kv {
namespace {

std::string markdown_cell(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// The README's table of policies and parameters is the registry's, row for row: a parameter added to a policy
// file, or a default changed there, fails this test until the README says so.
TEST(KvPolicySpec, ReadmeTableMatchesTheRegistry) {
  auto row = [](const std::string& policy, const ParamDoc& d) {
    return "| " + policy + " | `" + markdown_cell(d.key + "=" + d.form) + "` | " + markdown_cell(d.fallback) + " | " +
           d.range + " | " + d.meaning + " |\n";
  };
  std::string table = "| policy | parameter | default | range | meaning |\n|---|---|---|---|---|\n";
  for (const KvPolicyDoc& p : kv_policy_docs()) {
    if (p.params.empty()) table += "| `" + p.name + "` | (none) | | | |\n";
    for (const ParamDoc& d : p.params) table += row("`" + p.name + "`", d);
  }
  for (const ParamDoc& d : kv_storage_docs()) table += row("every policy", d);
  std::ifstream in(std::string(LONGHAUL_SOURCE_DIR) + "/README.md");
  const std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(readme.empty());
  EXPECT_NE(readme.find(table), std::string::npos) << "README.md should hold this table:\n" << table;
}

}  // namespace
}  // namespace longhaul::kv
