// Self-speculation's inputs: the default number of skipped sub-layers read from the calibrated order, and the
// errors of a head profile that cannot give the draft's sub-layers (none ranked, too few, another model's depth).
// Its output equals plain decoding's: greedy_test.cc.
#include <gtest/gtest.h>

#include <memory>

#include "engine_testing.h"
#include "generate/speculative/registry.h"
#include "generate/speculative/self_draft.h"

namespace longhaul::generate::speculative {
namespace {

std::vector<kv::SublayerRemoval> order_with(const std::vector<float>& agreements) {
  std::vector<kv::SublayerRemoval> order;
  for (size_t i = 0; i < agreements.size(); ++i)
    order.push_back({{static_cast<int32_t>(i), kv::SublayerKind::kFeedForward}, 0.1f * static_cast<float>(i), agreements[i]});
  return order;
}

TEST(SelfDraft, DefaultSkipIsTheLongestPrefixAgreeingOn80Percent) {
  EXPECT_EQ(default_draft_skip(order_with({1.0f, 0.9f, 0.8f, 0.7f, 0.95f})), 3);
  EXPECT_EQ(default_draft_skip(order_with({0.5f, 0.9f})), 1);  // at least one: a draft that skips nothing is the target
  EXPECT_EQ(default_draft_skip(order_with({})), 0);
}

TEST(SelfDraft, ProfilesThatCannotGiveTheSublayersAreErrors) {
  const model::Model* m = engine_testing::shared_model(longhaul::testing::smollm2_path());
  if (m == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  const int32_t n_layer = m->config().n_layer;
  SpeculativeOptions o;
  o.type = "self";
  DraftSourceInputs in;
  in.n_vocab = m->config().n_vocab;
  in.model = m;
  auto message = [&](int32_t draft_skip) {
    o.draft_skip = draft_skip;
    Result<std::unique_ptr<DraftSource>> s = make_draft_source(o, in);
    return s.is_ok() ? std::string("ok") : s.message();
  };
  EXPECT_NE(message(-1).find("needs the model's head profile"), std::string::npos);
  auto p = std::make_shared<kv::HeadProfile>(kv::blank_head_profile(n_layer, m->kv_shape().n_head_kv));
  p->source = "x.heads";
  in.head_profile = p;
  EXPECT_NE(message(2).find("'x.heads' holds no sub-layer order"), std::string::npos) << message(2);
  p->sublayer_order = order_with({0.99f, 0.9f, 0.5f});
  EXPECT_NE(message(4).find("ranks 3 sub-layers; asked for 4"), std::string::npos) << message(4);
  EXPECT_EQ(message(-1), "ok");  // the default: the first 2
  EXPECT_EQ(message(3), "ok");
  p->n_layer = n_layer + 1;
  EXPECT_NE(message(1).find("measured on a model of 31 layers"), std::string::npos) << message(1);
  p->n_layer = n_layer;
  o.draft_skip = -2;
  EXPECT_FALSE(validate(o).is_ok());
}

}  // namespace
}  // namespace longhaul::generate::speculative
