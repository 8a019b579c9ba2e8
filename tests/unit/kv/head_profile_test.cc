// The head profile's sub-layer section (version 2) and prefill section (version 3): round trip, the errors they
// name, and the seed corpus of tests/testdata/head_profile_corpus (the head_profile_fuzz driver's seeds): every
// valid_* file parses and survives formatting, every other file fails with a message.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "kv/head_profile.h"

namespace longhaul::kv {
namespace {

// A text the parser must refuse, and part of the message it must give.
struct Rejected {
  std::string text;
  std::string needle;
};
void expect_rejected(std::span<const Rejected> cases) {
  for (const Rejected& c : cases) {
    Result<HeadProfile> p = parse_head_profile(c.text);
    ASSERT_FALSE(p.is_ok()) << c.text;
    EXPECT_NE(p.message().find(c.needle), std::string::npos) << c.text << "\n" << p.message();
  }
}

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
  const Rejected cases[] = {
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
      {head + "sublayers 1 8\nn_layer 3\n", "must come before the head, sub-layer and prefill lines"},
  };
  expect_rejected(cases);
}

// Two layers of four query heads; layer 1 is a sliding-window layer the section does not list.
HeadProfile prefill_profile() {
  HeadProfile p;
  p.model = "tiny.gguf";
  p.n_layer = 2;
  p.n_head_kv = 2;
  p.n_head = 4;
  p.prefill_tokens = 6144;
  p.prefill_budget = 1024;
  p.prefill_density = 0.25f;
  p.prefill.assign(8, HeadPrefill{});
  const PrefillPattern patterns[] = {PrefillPattern::kAShape, PrefillPattern::kVerticalSlash,
                                     PrefillPattern::kBlockSparse, PrefillPattern::kVerticalSlash};
  for (int32_t h = 0; h < 4; ++h) {
    HeadPrefill& e = p.prefill[static_cast<size_t>(h)];
    e.listed = true;
    e.pattern = patterns[h];
    e.n_columns = e.pattern == PrefillPattern::kVerticalSlash ? 128 * (h + 1) : 0;
    e.recall = 0.5f + 0.125f * static_cast<float>(h);
    e.moa_alpha = 64.0f * static_cast<float>(h);
    e.moa_beta = 0.0625f * static_cast<float>(h);
  }
  return p;
}

TEST(HeadProfilePrefill, RoundTripKeepsEveryField) {
  HeadProfile p = prefill_profile();
  p.sublayer_tokens = 8;
  p.sublayer_order = {{{1, SublayerKind::kFeedForward}, 0.25f, 0.75f}};
  const std::string text = format_head_profile(p);
  EXPECT_EQ(text.rfind("longhaul-head-profile 3\n", 0), 0u) << text;
  Result<HeadProfile> q = parse_head_profile(text);
  ASSERT_TRUE(q.is_ok()) << q.message() << "\n" << text;
  EXPECT_EQ(q->n_head, 4);
  EXPECT_EQ(q->prefill_tokens, 6144);
  EXPECT_EQ(q->prefill_budget, 1024);
  EXPECT_FLOAT_EQ(q->prefill_density, 0.25f);
  EXPECT_EQ(q->sublayer_order.size(), 1u);
  ASSERT_TRUE(q->has_prefill());
  for (int32_t il = 0; il < 2; ++il)
    for (int32_t h = 0; h < 4; ++h) {
      const HeadPrefill& want = p.prefill_at(il, h);
      const HeadPrefill& got = q->prefill_at(il, h);
      SCOPED_TRACE(std::to_string(il) + " " + std::to_string(h));
      EXPECT_EQ(got.listed, want.listed);
      EXPECT_EQ(got.pattern, want.pattern);
      EXPECT_EQ(got.n_columns, want.n_columns);
      EXPECT_FLOAT_EQ(got.recall, want.recall);
      EXPECT_FLOAT_EQ(got.moa_alpha, want.moa_alpha);
      EXPECT_FLOAT_EQ(got.moa_beta, want.moa_beta);
    }
  // The line as the format says: layer, head, pattern, columns, recall, alpha, beta.
  EXPECT_NE(text.find("\nprefill-head 0 1 vertical-slash 256 0.625 64 0.0625\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nprefill 1 6144 1024 0.25\n"), std::string::npos) << text;
  // Without the prefill section the file stays at version 2 (older readers take it).
  p.prefill.clear();
  EXPECT_EQ(format_head_profile(p).rfind("longhaul-head-profile 2\n", 0), 0u);
}

TEST(HeadProfilePrefill, RejectsBadLinesNamingThem) {
  const std::string head = "longhaul-head-profile 3\nn_layer 2\nn_head_kv 1\nn_head 2\n";
  const std::string section = head + "prefill 1 4096 1024 0.5\n";
  const Rejected cases[] = {
      {"longhaul-head-profile 2\nn_layer 2\nn_head_kv 1\nn_head 2\n", "line 4: n_head needs version 3"},
      {"longhaul-head-profile 2\nn_layer 2\nn_head_kv 1\nprefill 1 4096 1024 0.5\n",
       "line 4: a prefill section needs version 3"},
      {"longhaul-head-profile 3\nn_layer 2\nn_head_kv 1\nprefill 1 4096 1024 0.5\n", "before n_layer and n_head"},
      {head + "prefill 2 4096 1024 0.5\n", "line 5: prefill section version 2 is not 1"},
      {head + "prefill 1 4096 1024\n", "expected 'prefill VERSION TOKENS BUDGET DENSITY'"},
      {head + "prefill 1 0 1024 0.5\n", "calibration tokens and budget"},
      {head + "prefill 1 4096 1024 0\n", "density must be a finite number in (0, 1]"},
      {head + "prefill 1 4096 1024 1.5\n", "density must be"},
      {section + "prefill 1 4096 1024 0.5\n", "line 6: a second prefill section"},
      {head + "prefill-head 0 0 a-shape 0 1 0 0\n", "line 5: prefill-head line before the 'prefill' line"},
      {section + "prefill-head 2 0 a-shape 0 1 0 0\n", "line 6: layer is not an integer in [0, n_layer)"},
      {section + "prefill-head 0 2 a-shape 0 1 0 0\n", "line 6: head is not an integer in [0, n_head)"},
      {section + "prefill-head 0 0 a-shape 0 1 0 0\nprefill-head 0 0 a-shape 0 1 0 0\n",
       "line 7: layer 0 head 0 listed twice"},
      {section + "prefill-head 0 0 x-shape 0 1 0 0\n",
       "line 6: pattern 'x-shape' is not a-shape, vertical-slash or block-sparse"},
      {section + "prefill-head 0 0 a-shape 5 1 0 0\n", "columns must be in [1, budget]"},
      {section + "prefill-head 0 0 vertical-slash 0 1 0 0\n", "columns must be in [1, budget]"},
      {section + "prefill-head 0 0 vertical-slash 2048 1 0 0\n", "columns must be in [1, budget]"},
      {section + "prefill-head 0 0 a-shape 0 nan 0 0\n", "line 6: recall must be a finite number in [0, 1]"},
      {section + "prefill-head 0 0 a-shape 0 1.5 0 0\n", "recall must be"},
      {section + "prefill-head 0 0 a-shape 0 1 -64 0\n", "line 6: MoA's alpha"},
      {section + "prefill-head 0 0 a-shape 0 1 64 inf\n", "MoA's alpha"},
      {section + "prefill-head 0 0 a-shape 0 1 64 2\n", "beta one in [0, 1]"},
      {section + "prefill-head 0 0 a-shape 0 1 64\n",
       "expected 'prefill-head LAYER HEAD PATTERN COLUMNS RECALL ALPHA BETA'"},
      {section, "the prefill section lists no heads"},
      {"longhaul-head-profile 3\nn_layer 2\nn_head_kv 2\nn_head 3\nprefill 1 8 128 0.5\nprefill-head 0 0 a-shape 0 1 0 "
       "0\n",
       "n_head 3 is not a multiple of n_head_kv 2"},
      {section + "prefill-head 0 0 a-shape 0 1 0 0\nn_head 4\n",
       "must come before the head, sub-layer and prefill lines"},
  };
  expect_rejected(cases);
  EXPECT_STREQ(prefill_pattern_name(PrefillPattern::kBlockSparse), "block-sparse");
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
