// The head profile's sub-layer section (version 2): round trip, the errors it names, and the seed corpus of
// tests/testdata/head_profile_corpus (the head_profile_fuzz driver's seeds): every valid_* file parses and
// survives formatting, every other file fails with a message.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "kv/head_profile.h"

namespace longhaul::kv {
namespace {

HeadProfile sublayer_profile() {
  HeadProfile p;
  p.model = "tiny.gguf";
  p.n_layer = 3;
  p.n_head_kv = 2;
  p.sublayer_tokens = 96;
  p.sublayer_order = {{{2, SublayerKind::kAttention}, 0.0f, 1.0f},
                      {{0, SublayerKind::kFeedForward}, 0.125f, 0.875f},
                      {{1, SublayerKind::kAttention}, 1.5f, 0.5f}};
  return p;
}

TEST(HeadProfileSublayers, RoundTripWithAndWithoutHeadScores) {
  HeadProfile p = sublayer_profile();
  for (bool with_heads : {false, true}) {
    if (with_heads) p.heads.assign(6, HeadScore{0.5f, 0.5f, 0.0f, 0.0f});
    const std::string text = format_head_profile(p);
    EXPECT_EQ(text.rfind("longhaul-head-profile 2\n", 0), 0u) << text;
    Result<HeadProfile> q = parse_head_profile(text);
    ASSERT_TRUE(q.is_ok()) << q.message() << "\n" << text;
    EXPECT_EQ(q->has_head_scores(), with_heads);
    EXPECT_EQ(q->sublayer_tokens, 96);
    ASSERT_EQ(q->sublayer_order.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(q->sublayer_order[i].sublayer, p.sublayer_order[i].sublayer);
      EXPECT_FLOAT_EQ(q->sublayer_order[i].kl, p.sublayer_order[i].kl);
      EXPECT_FLOAT_EQ(q->sublayer_order[i].agreement, p.sublayer_order[i].agreement);
    }
  }
  EXPECT_EQ(sublayer_name({7, SublayerKind::kFeedForward}), "ffn.7");
  EXPECT_EQ(sublayer_name({0, SublayerKind::kAttention}), "attn.0");
}

TEST(HeadProfileSublayers, RejectsBadSections) {
  const std::string head = "longhaul-head-profile 2\nn_layer 2\nn_head_kv 1\n";
  struct Case {
    std::string text;
    std::string needle;
  };
  const Case cases[] = {
      {"longhaul-head-profile 1\nn_layer 2\nn_head_kv 1\nsublayers 1 8\n", "needs version 2"},
      {head + "sublayers 2 8\n", "sub-layer section version 2 is not 1"},
      {head + "sublayers 1 0\n", "calibration tokens"},
      {head + "sublayers 1\n", "expected 'sublayers VERSION TOKENS'"},
      {head + "sublayers 1 8\nsublayers 1 8\n", "a second sub-layer section"},
      {head + "sublayer 1 ffn.0 0 1\n", "before the 'sublayers' line"},
      {head + "sublayers 1 8\nsublayer 1 ffn.2 0 1\n", "is not attn.L or ffn.L with L in [0, 2)"},
      {head + "sublayers 1 8\nsublayer 1 mlp.0 0 1\n", "is not attn.L or ffn.L"},
      {head + "sublayers 1 8\nsublayer 1 ffn.0 0 1\nsublayer 2 ffn.0 0 1\n", "ffn.0 listed twice"},
      {head + "sublayers 1 8\nsublayer 2 ffn.0 0 1\n", "rank must be 1"},
      {head + "sublayers 1 8\nsublayer 1 ffn.0 nan 1\n", "kl must be"},
      {head + "sublayers 1 8\nsublayer 1 ffn.0 0 1.5\n", "agreement one in [0, 1]"},
      {head + "sublayers 1 8\nsublayer 1 ffn.0 0\n", "expected 'sublayer RANK"},
      {head + "0 0 0.5 0.5 0 0\n", "1 of 2 heads"},
      {"longhaul-head-profile 2\nsublayers 1 8\n", "before n_layer"},
      {head + "sublayers 1 8\nn_layer 3\n", "must come before the head and sub-layer lines"},
  };
  for (const Case& c : cases) {
    Result<HeadProfile> p = parse_head_profile(c.text);
    ASSERT_FALSE(p.is_ok()) << c.text;
    EXPECT_NE(p.message().find(c.needle), std::string::npos) << c.text << "\n" << p.message();
  }
}

TEST(HeadProfileSublayers, SeedCorpusParsesOrFailsCleanly) {
  const std::filesystem::path dir = std::filesystem::path(LONGHAUL_TESTDATA_DIR) / "head_profile_corpus";
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 4u);
  int n_valid = 0;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    Result<std::string> text = read_text_file(f.string());
    ASSERT_TRUE(text.is_ok()) << text.message();
    Result<HeadProfile> p = parse_head_profile(*text);
    if (f.filename().string().rfind("valid_", 0) != 0) {
      EXPECT_FALSE(p.is_ok());
      continue;
    }
    ++n_valid;
    ASSERT_TRUE(p.is_ok()) << p.message();
    Result<HeadProfile> q = parse_head_profile(format_head_profile(*p));
    ASSERT_TRUE(q.is_ok()) << q.message();
    EXPECT_EQ(q->heads.size(), p->heads.size());
    EXPECT_EQ(q->sublayer_order.size(), p->sublayer_order.size());
  }
  EXPECT_GE(n_valid, 3);
}

}  // namespace
}  // namespace longhaul::kv
