// FinerCut's sub-layer calibration on a crafted model: the first four layers of each default model, with layer 2's
// attention output projection W_o zeroed, so that its attention branch adds exactly zero to the residual stream.
// Removing that sub-layer provably changes nothing (x + 0 == x in every bit), so the greedy order must remove it
// first, at KL 0 and full agreement, and everything it removes after changes the output (KL > 0). The skip itself
// is checked the same way: leaving attn.2 out gives bit-identical logits, leaving out a live sub-layer does not.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "eval/sublayer_calibration.h"
#include "generate/engine.h"
#include "testing/cut_model.h"
#include "testing/model_paths.h"

namespace longhaul::eval {
namespace {

constexpr int32_t kLayers = 4;
constexpr int32_t kDeadLayer = 2;  // its attention's W_o is all zeros

// The model at `source` cut to its first kLayers layers, blk.2.attn_output zeroed (zero bytes decode to zero in
// every GGUF quant type: the block scales are zero).
class CraftedModel : public longhaul::testing::CutModel {
 public:
  explicit CraftedModel(const std::string& source)
      : CutModel(source, kLayers, [](const std::string& name, std::vector<uint8_t>& bytes) {
          if (name == "blk." + std::to_string(kDeadLayer) + ".attn_output.weight") bytes.assign(bytes.size(), 0);
        }) {}
};

std::vector<int32_t> some_tokens(int32_t n) {
  std::vector<int32_t> t;
  for (int32_t i = 0; i < n; ++i) t.push_back(100 + (i * 7919) % 20000);
  return t;
}

std::vector<float> logits_with(const model::Model& m, const std::vector<int32_t>& tokens, const model::SublayerSkip& skip) {
  generate::EngineOptions eo;
  eo.n_ctx = 256;
  eo.n_threads = 2;
  eo.skip = skip;
  auto engine = generate::Engine::create(m, eo);
  EXPECT_TRUE(engine.is_ok()) << engine.message();
  auto seq = (*engine)->add_sequence(generate::SequenceOptions{});
  EXPECT_TRUE(seq.is_ok());
  std::vector<float> logits;
  EXPECT_TRUE((*engine)->feed(*seq, tokens, nullptr, &logits).is_ok());
  return logits;
}

class SublayerCalibration : public ::testing::TestWithParam<const char*> {
 protected:
  std::string path() const {
    return std::string(GetParam()) == "SmolLM2" ? longhaul::testing::smollm2_path() : longhaul::testing::gemma3_path();
  }
};

TEST_P(SublayerCalibration, SkippingADeadSublayerChangesNoBit) {
  if (!longhaul::testing::file_exists(path())) GTEST_SKIP() << GetParam() << " not installed";
  const CraftedModel crafted(path());
  ASSERT_NE(crafted.get(), nullptr);
  const model::Model& m = *crafted.get();
  const std::vector<int32_t> tokens = some_tokens(24);
  const std::vector<float> whole = logits_with(m, tokens, {});
  model::SublayerSkip dead(kLayers);
  dead.skip({kDeadLayer, kv::SublayerKind::kAttention});
  EXPECT_EQ(dead.describe(), "attn.2");
  EXPECT_EQ(logits_with(m, tokens, dead), whole);
  model::SublayerSkip live(kLayers);
  live.skip({1, kv::SublayerKind::kFeedForward});
  EXPECT_NE(logits_with(m, tokens, live), whole);
  // A set made for another depth is refused by the engine.
  generate::EngineOptions eo;
  eo.skip = model::SublayerSkip(kLayers + 1);
  EXPECT_FALSE(generate::Engine::create(m, eo).is_ok());
}

TEST_P(SublayerCalibration, RemovesTheDeadSublayerFirst) {
  if (!longhaul::testing::file_exists(path())) GTEST_SKIP() << GetParam() << " not installed";
  const CraftedModel crafted(path());
  ASSERT_NE(crafted.get(), nullptr);
  SublayerCalibrationOptions o;
  o.n_ranked = 3;
  o.n_threads = 2;
  int n_progress = 0;
  Result<std::vector<kv::SublayerRemoval>> order =
      calibrate_sublayers(*crafted.get(), some_tokens(32), o, [&](const std::string&) { ++n_progress; });
  ASSERT_TRUE(order.is_ok()) << order.message();
  EXPECT_EQ(n_progress, 8 + 7 + 6);  // every remaining candidate of each of the 3 rounds, 2 per layer
  ASSERT_EQ(order->size(), 3u);
  EXPECT_EQ((*order)[0].sublayer, (kv::Sublayer{kDeadLayer, kv::SublayerKind::kAttention}));
  EXPECT_EQ((*order)[0].kl, 0.0f);
  EXPECT_EQ((*order)[0].agreement, 1.0f);
  for (size_t i = 1; i < order->size(); ++i) {
    EXPECT_GT((*order)[i].kl, 0.0f) << i;
    EXPECT_NE((*order)[i].sublayer, (*order)[0].sublayer);
  }
  EXPECT_NE((*order)[1].sublayer, (*order)[2].sublayer);
  // More than the model has is refused.
  o.n_ranked = 2 * kLayers + 1;
  EXPECT_FALSE(calibrate_sublayers(*crafted.get(), some_tokens(8), o, nullptr).is_ok());
}

TEST_P(SublayerCalibration, CalibrationTokensComeFromTheEvalTextsTail) {
  if (!longhaul::testing::file_exists(path())) GTEST_SKIP() << GetParam() << " not installed";
  if (!std::filesystem::exists("/usr/share/common-licenses")) GTEST_SKIP() << "no default eval text";
  Result<std::unique_ptr<model::Model>> m = model::Model::load(path());
  ASSERT_TRUE(m.is_ok());
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf((*m)->file());
  ASSERT_TRUE(tok.is_ok());
  Result<std::vector<int32_t>> tokens = sublayer_calibration_tokens(*tok, 64);
  ASSERT_TRUE(tokens.is_ok()) << tokens.message();
  EXPECT_EQ(tokens->size(), 64u);
  const std::vector<int32_t> prefix = tok->encode("", true, false);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), tokens->begin()));
  EXPECT_FALSE(sublayer_calibration_tokens(*tok, 1).is_ok());
}

INSTANTIATE_TEST_SUITE_P(DefaultModels, SublayerCalibration, ::testing::Values("SmolLM2", "Gemma3"));

}  // namespace
}  // namespace longhaul::eval
