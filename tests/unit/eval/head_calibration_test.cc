// Head calibration on SmolLM2: the scores are attention masses (in [0, 1]), the three kinds are measured on the
// queries that take part, and the model's known retrieval behaviour shows: on repeated random tokens some heads
// are induction heads (Olsson et al., 2022, find them in every transformer past two layers), putting most of their
// attention on the token after the previous occurrence, where a uniform head would put about 1 / (2 * 128).
#include <gtest/gtest.h>

#include <algorithm>

#include "eval/head_calibration.h"
#include "eval/report.h"
#include "testing/model_paths.h"

namespace longhaul::eval {
namespace {

TEST(HeadCalibration, FindsInductionAndNeedleHeadsInSmolLM2) {
  const std::string path = longhaul::testing::smollm2_path();
  if (!longhaul::testing::file_exists(path)) GTEST_SKIP() << "SmolLM2 not installed";
  Result<std::unique_ptr<model::Model>> m = model::Model::load(path);
  ASSERT_TRUE(m.is_ok()) << m.message();
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf((*m)->file());
  ASSERT_TRUE(tok.is_ok());
  CalibrationOptions o;
  o.passkey_samples = 1;
  o.passkey_length = 512;
  o.repeat_samples = 1;
  o.repeat_tokens = 128;
  o.n_threads = 2;
  int n_progress = 0;
  Result<kv::HeadProfile> p = calibrate_heads(**m, *tok, o, [&](const std::string&) { ++n_progress; });
  ASSERT_TRUE(p.is_ok()) << p.message();
  EXPECT_EQ(n_progress, 2);
  ASSERT_EQ(p->n_layer, 30);
  ASSERT_EQ(p->n_head_kv, 3);
  ASSERT_EQ(p->heads.size(), 90u);
  float best_induction = 0, best_needle = 0;
  for (const kv::HeadScore& s : p->heads) {
    for (float v : {s.needle, s.induction, s.echo}) {
      EXPECT_GE(v, 0.0f);
      EXPECT_LE(v, 1.0f + 1e-5f);
    }
    EXPECT_EQ(s.score, std::max({s.needle, s.induction, s.echo}));
    best_induction = std::max(best_induction, s.induction);
    best_needle = std::max(best_needle, s.needle);
  }
  EXPECT_GT(best_induction, 0.3f);
  // The key sentence is ~25 of 512 tokens: a uniform head would give it ~0.05.
  EXPECT_GT(best_needle, 0.15f);
}

// eval's list passes duo's retrieval share and snapkv's select on to the policy, which reads and checks them
// (kv/policy_spec_test); budget=P% is eval's own.
TEST(HeadCalibration, PolicySpecsTakeRetrievalSharesAndPercentBudgets) {
  Result<PolicySpec> s = parse_policy_spec("duo:retrieval=0.25");
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(s->name, "duo");
  EXPECT_EQ(s->spec_for(4096), "duo:retrieval=0.25");
  s = parse_policy_spec("h2o:budget=25%");
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_DOUBLE_EQ(s->budget_fraction, 0.25);
  EXPECT_EQ(s->spec_for(4096), "h2o:budget=1024");
  EXPECT_FALSE(parse_policy_spec("h2o:budget=0%").is_ok());
  EXPECT_FALSE(parse_policy_spec("h2o:budget=x%").is_ok());
  EXPECT_FALSE(parse_policy_spec("h2o:budget=150%").is_ok());
  s = parse_policy_spec("snapkv:select=layer:budget=50%");
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(s->spec_for(100), "snapkv:select=layer:budget=50");
}

}  // namespace
}  // namespace longhaul::eval
