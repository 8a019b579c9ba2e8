// duo through a Session on the real models. What duo frees must be exactly what no query sees any more:
//   - Gemma 3's sliding-window layers see 512 positions; duo frees their older pages, and with every global head
//     kept (retrieval=1) the logits stay those of full attention;
//   - before any cell falls behind a streaming head's window, duo (retrieval=0) gives full attention's logits too;
//   - past it, each streaming head holds at most its sink page and the pages of its window.
// Full attention runs with duo's 64-cell pages, so that the flash kernel visits the cells in the same groups: the
// logits must then be identical (a different grouping moves them by up to a few tenths, through the int8
// rounding of the activations that follow).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "engine_testing.h"
#include "generate/session.h"
#include "kv/head_profile.h"
#include "testing/model_paths.h"

namespace longhaul::generate {
namespace {

using engine_testing::flat_profile;

std::vector<int32_t> some_tokens(int32_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = 100 + (i * 7919) % 20000;
  return t;
}


struct RunResult {
  std::vector<float> logits;  // [n_vocab] after the prompt and each decoded token, concatenated
  int64_t kv_bytes = 0;
  int64_t bytes_per_cell = 0;  // all layers and heads, in the cache's storage format
};

RunResult run(const model::Model& model, const std::string& policy, int32_t n_prompt, int32_t n_decode,
              std::shared_ptr<const kv::HeadProfile> profile = nullptr) {
  SessionOptions so;
  so.n_ctx = n_prompt + n_decode + 8;
  so.n_batch = 256;
  so.n_threads = 2;
  so.kv_policy = policy;
  so.head_profile = std::move(profile);
  so.page_tokens = 64;
  auto session = Session::create(model, so);
  EXPECT_TRUE(session.is_ok()) << session.message();
  RunResult r;
  if (!session.is_ok()) return r;
  Session& s = **session;
  const std::vector<int32_t> tokens = some_tokens(n_prompt + n_decode);
  EXPECT_TRUE(s.feed(std::span<const int32_t>(tokens.data(), static_cast<size_t>(n_prompt))).is_ok());
  const int32_t n_vocab = model.config().n_vocab;
  r.logits.insert(r.logits.end(), s.logits(), s.logits() + n_vocab);
  for (int32_t i = 0; i < n_decode; ++i) {
    const int32_t one[1] = {tokens[static_cast<size_t>(n_prompt + i)]};
    EXPECT_TRUE(s.feed(one).is_ok());
    r.logits.insert(r.logits.end(), s.logits(), s.logits() + n_vocab);
  }
  r.kv_bytes = s.cache().used_bytes();
  r.bytes_per_cell = s.cache().bytes_per_cell();
  return r;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::unique_ptr<model::Model> load(const std::string& path) {
  if (!longhaul::testing::file_exists(path)) return nullptr;
  Result<std::unique_ptr<model::Model>> m = model::Model::load(path);
  return m.is_ok() ? std::move(m).value() : nullptr;
}


TEST(DuoSession, GemmaSlidingLayersFreeTheirOldPagesWithoutChangingLogits) {
  std::unique_ptr<model::Model> m = load(longhaul::testing::gemma3_path());
  if (m == nullptr) GTEST_SKIP() << "Gemma 3 not installed";
  const int32_t n_prompt = 1100, n_decode = 4;
  const RunResult full = run(*m, "full", n_prompt, n_decode);
  const RunResult duo = run(*m, "duo:retrieval=1", n_prompt, n_decode, flat_profile(*m));
  EXPECT_EQ(max_abs_diff(full.logits, duo.logits), 0.0f);
  // Global layers keep all 1104 cells; a sliding layer keeps at most its 512-position window plus two partial
  // pages of 64.
  const model::ModelConfig& cfg = m->config();
  int32_t n_global = 0;
  for (int32_t il = 0; il < cfg.n_layer; ++il) n_global += !cfg.is_local(il);
  ASSERT_GT(n_global, 0);
  ASSERT_LT(n_global, cfg.n_layer);
  const int64_t cell_layer_bytes = full.kv_bytes / (cfg.n_layer * (n_prompt + n_decode));
  const int64_t bound = cell_layer_bytes * (static_cast<int64_t>(n_global) * (n_prompt + n_decode) +
                                            static_cast<int64_t>(cfg.n_layer - n_global) * (cfg.sliding_window + 2 * 64));
  EXPECT_LE(duo.kv_bytes, bound);
  EXPECT_LT(duo.kv_bytes, full.kv_bytes * 2 / 3);
}

TEST(DuoSession, StreamingHeadsMatchFullAttentionUntilTheirWindowAndThenHoldOnlyIt) {
  std::unique_ptr<model::Model> m = load(longhaul::testing::smollm2_path());
  if (m == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  // Every head streams (retrieval=0). No sinks: they make the kernel visit a page in two parts, which changes the
  // float grouping.
  // 200 tokens + 4 decoded: every position is within the window of every query.
  const RunResult full_short = run(*m, "full", 200, 4);
  const RunResult duo_short = run(*m, "duo:retrieval=0:sink=0:window=256", 200, 4, flat_profile(*m));
  EXPECT_EQ(max_abs_diff(full_short.logits, duo_short.logits), 0.0f);

  // 900 tokens: far behind the window, the heads see only sinks + window, so the logits move, stay finite, and
  // each head holds at most its sink page and window / 64 + 2 pages.
  const RunResult full_long = run(*m, "full", 900, 4);
  const RunResult duo_long = run(*m, "duo:retrieval=0:sink=4:window=256", 900, 4, flat_profile(*m));
  for (float v : duo_long.logits) ASSERT_TRUE(std::isfinite(v));
  EXPECT_GT(max_abs_diff(full_long.logits, duo_long.logits), 0.1f);
  const int64_t cell_bytes = full_long.kv_bytes / 904;  // all layers and heads
  EXPECT_LE(duo_long.kv_bytes, cell_bytes * (64 + 256 + 2 * 64));
}

// duo combines with KIVI storage: the streaming heads free their quantized rows, so the bytes follow the same
// bound at int8 size (plus the f16 residual the next append quantizes), and the logits stay within int8's
// tolerance of duo's with f16 cells (the bound kv_quant_session_test holds full attention to).
TEST(DuoSession, QuantizedCellsHoldTheSameBoundAtTheirOwnSize) {
  std::unique_ptr<model::Model> m = load(longhaul::testing::smollm2_path());
  if (m == nullptr) GTEST_SKIP() << "SmolLM2 not installed";
  // Every head streams (retrieval=0).
  const RunResult f16 = run(*m, "duo:retrieval=0:window=256", 900, 4, flat_profile(*m));
  const RunResult q8 = run(*m, "duo:retrieval=0:window=256:bits=8", 900, 4, flat_profile(*m));
  ASSERT_EQ(q8.logits.size(), f16.logits.size());
  double sum = 0;
  for (size_t i = 0; i < q8.logits.size(); ++i) {
    ASSERT_TRUE(std::isfinite(q8.logits[i]));
    sum += std::fabs(q8.logits[i] - f16.logits[i]);
  }
  EXPECT_LT(max_abs_diff(q8.logits, f16.logits), 3.0f);
  EXPECT_LT(sum / static_cast<double>(q8.logits.size()), 0.3);
  // Streaming heads: sink page + window / 64 + 2 pages at int8 size, and at most R + G - 1 + 1 residual cells
  // (+ the 4 prefix cells) in f16.
  const int64_t f16_cell_bytes = f16.bytes_per_cell;
  EXPECT_LE(q8.kv_bytes, q8.bytes_per_cell * (64 + 256 + 2 * 64) + f16_cell_bytes * (128 + 32 + 4));
  // With a 256-token window the f16 residual is a large part of what a head holds: smaller, not by half.
  EXPECT_LT(q8.kv_bytes, f16.kv_bytes);
}

}  // namespace
}  // namespace longhaul::generate
