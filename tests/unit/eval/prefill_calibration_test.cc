// Sparse prefill calibration (eval/prefill_calibration.h):
//   - the search's rule on crafted candidates (the most recall wins; a costlier candidate needs more than 0.001);
//   - the search on crafted attention: a head whose queries look at two key columns and one diagonal gets
//     vertical-slash, a head that looks at its neighbour gets A-shape, and the A-shape recall is the attention
//     mass a direct softmax in the test puts on the sink block and the local band;
//   - MoA's rule choice on crafted curves equals the best choice found by trying every combination, and meets the
//     density at every length;
//   - the whole calibration on a crafted model, SmolLM2 cut to one layer with every token's embedding the same and
//     W_q's rows those of W_k: each query is its key, rotated by RoPE, so a head's score depends only on the
//     distance q - k and peaks at 0 -- every head attends to its neighbours, and calibration must find A-shape
//     heads with small MoA spans.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "eval/prefill_calibration.h"
#include "gguf/gguf_file.h"
#include "tensor/half.h"
#include "testing/cut_model.h"
#include "testing/model_paths.h"

namespace longhaul::eval {
namespace {

using kv::PrefillPattern;

TEST(PrefillSearch, MostRecallWinsAndTiesGoToTheCheaper) {
  std::vector<PatternCandidate> c = {{PrefillPattern::kAShape, 0, 0.90},
                                     {PrefillPattern::kBlockSparse, 0, 0.95},
                                     {PrefillPattern::kVerticalSlash, 64, 0.97}};
  EXPECT_EQ(best_candidate(c), 2u);
  c[2].recall = 0.9505;  // within 0.001 of block-sparse: the cheaper keeps it
  EXPECT_EQ(best_candidate(c), 1u);
  c[0].recall = 0.9508;  // A-shape, first, is within 0.001 of both
  EXPECT_EQ(best_candidate(c), 0u);
}

constexpr int32_t kDk = 64;
constexpr int32_t kKeys = 1024;

// Unit rows with dimension 0 zero (so that the direction e0 is free for the keys some queries look for).
std::vector<float> unit_rows(int32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n) * kDk);
  for (int32_t i = 0; i < n; ++i) {
    float* row = v.data() + static_cast<int64_t>(i) * kDk;
    double norm = 0.0;
    for (int32_t c = 1; c < kDk; ++c) {
      row[c] = normal(rng);
      norm += static_cast<double>(row[c]) * row[c];
    }
    for (int32_t c = 1; c < kDk; ++c) row[c] = static_cast<float>(row[c] / std::sqrt(norm));
  }
  return v;
}

// A crafted head over kKeys keys: queries for every position (q[t] looks at what the crafting says).
struct CraftedHead {
  std::vector<float> k = unit_rows(kKeys, 7);                                      // [kKeys, dk]
  std::vector<float> q = std::vector<float>(static_cast<size_t>(kKeys) * kDk, 0);  // [kKeys, dk]
  std::vector<uint16_t> k16;
  float* key(int32_t t) { return k.data() + static_cast<int64_t>(t) * kDk; }
  float* query(int32_t t) { return q.data() + static_cast<int64_t>(t) * kDk; }
  void look_at(int32_t t, const float* target, float strength) {
    for (int32_t c = 0; c < kDk; ++c) query(t)[c] += strength * target[c];
  }
  // Samples: 64-query stretches starting at `starts` (the last one the last 64 queries).
  std::vector<model::HeadQueriesKeys> samples(const std::vector<int32_t>& starts) {
    k16.resize(k.size());
    for (size_t i = 0; i < k.size(); ++i) k16[i] = tensor::f32_to_f16(k[i]);
    std::vector<model::HeadQueriesKeys> out;
    for (int32_t s : starts) out.push_back({query(s), 64, s, k16.data(), s + 64, kDk});
    return out;
  }
  // Direct softmax of query t over keys 0 .. t, in double, with the f16 keys the search reads.
  std::vector<double> attention(int32_t t) const {
    std::vector<double> p(static_cast<size_t>(t) + 1);
    double mx = -INFINITY, sum = 0.0;
    for (int32_t j = 0; j <= t; ++j) {
      double dot = 0.0;
      for (int32_t c = 0; c < kDk; ++c)
        dot += static_cast<double>(q[static_cast<size_t>(t) * kDk + c]) *
               tensor::f16_to_f32(k16[static_cast<size_t>(j) * kDk + c]);
      p[static_cast<size_t>(j)] = dot;
      mx = std::max(mx, dot);
    }
    for (double& x : p) sum += (x = std::exp(x - mx));
    for (double& x : p) x /= sum;
    return p;
  }
};

// Mean over the samples' queries of the mass on key block 0 and the n_local blocks up to the query's own.
double a_shape_mass(const CraftedHead& h, const std::vector<int32_t>& starts, int32_t n_local) {
  double total = 0.0;
  for (int32_t s : starts) {
    double sample = 0.0;
    for (int32_t t = s; t < s + 64; ++t) {
      const std::vector<double> p = h.attention(t);
      for (int32_t j = 0; j <= t; ++j)
        if (j / 64 == 0 || j / 64 > t / 64 - n_local) sample += p[static_cast<size_t>(j)];
    }
    total += sample / 64;
  }
  return total / static_cast<double>(starts.size());
}

TEST(PrefillSearch, VerticalSlashHeadGetsVerticalSlash) {
  // Every query looks at eleven keys (70, 134, ..., 710, all e0), each in a key block of its own, and at the key
  // 333 behind it: at 512 keys per query, block-sparse's 8 blocks cannot hold eleven columns and the diagonal's two
  // blocks; vertical-slash's 30 columns and 7 diagonal blocks can.
  CraftedHead h;
  std::vector<float> e0(kDk, 0.0f);
  e0[0] = 1.0f;
  for (int32_t i = 0; i < 11; ++i) std::copy(e0.begin(), e0.end(), h.key(70 + 64 * i));
  for (int32_t t = 333; t < kKeys; ++t) {
    h.look_at(t, e0.data(), 16.0f);
    h.look_at(t, h.key(t - 333), 16.0f);
  }
  const std::vector<int32_t> starts = {768, kKeys - 64};
  const std::vector<model::HeadQueriesKeys> samples = h.samples(starts);
  SpanRecall curve;
  const std::vector<PatternCandidate> c = search_head(samples, 512, &curve).candidates;
  ASSERT_GE(c.size(), 3u);
  EXPECT_EQ(c[0].pattern, PrefillPattern::kAShape);
  EXPECT_EQ(c[1].pattern, PrefillPattern::kBlockSparse);
  // A-shape at 512 keys: the sink block and 7 local blocks.
  EXPECT_NEAR(c[0].recall, a_shape_mass(h, starts, 7), 1e-4);
  const PatternCandidate& best = c[best_candidate(c)];
  EXPECT_EQ(best.pattern, PrefillPattern::kVerticalSlash);
  EXPECT_GT(best.recall, 0.95);
  EXPECT_LT(c[0].recall, 0.5);
  // MoA's curve: the mass within w blocks is A-shape's at w = 3; the whole context keeps everything.
  EXPECT_NEAR(curve.at_span(3 * 64), a_shape_mass(h, starts, 3), 1e-4);
  EXPECT_NEAR(curve.at_span(kKeys), 1.0, 1e-4);
  EXPECT_NEAR(curve.at_span(1), a_shape_mass(h, starts, 1), 1e-4);
}

TEST(PrefillSearch, NeighbourHeadGetsAShape) {
  CraftedHead h;
  for (int32_t t = 1; t < kKeys; ++t) h.look_at(t, h.key(t - 1), 16.0f);
  // The first sample's queries see at most 64 keys, under the budget of 256: it is not scored.
  const HeadSearch search = search_head(h.samples({0, 512, kKeys - 64}), 256, nullptr);
  EXPECT_EQ(search.n_scored, 2);
  const std::vector<PatternCandidate>& c = search.candidates;
  const PatternCandidate& best = c[best_candidate(c)];
  EXPECT_EQ(best.pattern, PrefillPattern::kAShape);
  EXPECT_NEAR(best.recall, a_shape_mass(h, {512, kKeys - 64}, 3), 1e-4);
  EXPECT_GT(best.recall, 0.95);
}

// A curve at length n whose mass within w blocks is min(1, w / need) (need = 0: all mass in the sink block).
SpanRecall linear_curve(int32_t n, double need) {
  SpanRecall c;
  c.n_tokens = n;
  c.kept.resize(static_cast<size_t>(n / 64 + 2));
  for (size_t w = 0; w < c.kept.size(); ++w) c.kept[w] = need <= 0 ? 1.0 : std::min(1.0, static_cast<double>(w) / need);
  return c;
}

TEST(MoaRules, ChoiceUnderDensityMatchesExhaustiveSearch) {
  const std::vector<int32_t> lengths = {1024, 2048, 4096};
  // Head 0 needs nothing beyond the sinks, head 1 needs 4 blocks at any length, head 2 a quarter of the input,
  // head 3 all of it.
  std::vector<std::vector<SpanRecall>> curves(4);
  for (int32_t n : lengths) {
    curves[0].push_back(linear_curve(n, 0));
    curves[1].push_back(linear_curve(n, 4));
    curves[2].push_back(linear_curve(n, n / 64 / 4.0));
    curves[3].push_back(linear_curve(n, n / 64.0));
  }
  // A few of the rules, so that every combination can be tried.
  std::vector<SpanRule> rules;
  for (double alpha : {0.0, 256.0, 1024.0})
    for (double beta : {0.0, 0.125, 0.25, 0.5}) rules.push_back({alpha, beta});
  for (double density : {0.15, 0.3, 0.6}) {
    SCOPED_TRACE(density);
    Result<std::vector<SpanRule>> chosen = choose_span_rules(curves, rules, density);
    ASSERT_TRUE(chosen.is_ok()) << chosen.message();
    ASSERT_EQ(chosen->size(), 4u);
    // Loss and densities of a choice, computed here from the curves' definition.
    auto evaluate = [&](const std::vector<SpanRule>& pick, double& loss, double& worst) {
      loss = 0.0;
      worst = 0.0;
      for (size_t l = 0; l < lengths.size(); ++l) {
        const double n = lengths[l];
        double sum = 0.0;
        for (size_t h = 0; h < 4; ++h) {
          const double span = std::min(n, pick[h].alpha + pick[h].beta * n);
          const size_t w = static_cast<size_t>(std::max(1.0, std::ceil(span / 64)));
          const std::vector<double>& kept = curves[h][l].kept;
          loss += 1.0 - kept[std::min(w, kept.size() - 1)];
          sum += span / n;
        }
        worst = std::max(worst, sum / 4);
      }
    };
    double loss = 0.0, worst = 0.0;
    evaluate(*chosen, loss, worst);
    EXPECT_LE(worst, density + 1e-9);
    // Every combination of rules for the four heads.
    double best_loss = INFINITY;
    std::vector<SpanRule> pick(4);
    const size_t n = rules.size();
    for (size_t i = 0; i < n * n * n * n; ++i) {
      for (size_t h = 0, rest = i; h < 4; ++h, rest /= n) pick[h] = rules[rest % n];
      double l = 0.0, w = 0.0;
      evaluate(pick, l, w);
      if (w <= density + 1e-9) best_loss = std::min(best_loss, l);
    }
    EXPECT_NEAR(loss, best_loss, 1e-9) << "the choice loses more than the exhaustive best";
    // The sink-only head never pays for a span.
    EXPECT_EQ((*chosen)[0].alpha, 0.0);
    EXPECT_EQ((*chosen)[0].beta, 0.0);
  }
}

// SmolLM2's first layer, with every token embedding row the first one's, W_q's rows of head h those of W_k's KV
// head h / group, and the attention norm's gain multiplied by kSharpness (q and k scale with it, scores with its
// square).
constexpr float kSharpness = 6.0f;

class NeighbourModel : public longhaul::testing::CutModel {
 public:
  NeighbourModel(const std::string& source, const std::vector<uint8_t>& attn_k, int32_t n_head, int32_t n_head_kv,
                 int32_t n_vocab)
      : CutModel(source, 1, [&](const std::string& name, std::vector<uint8_t>& bytes) {
          if (name == "token_embd.weight") {
            const size_t row = bytes.size() / static_cast<size_t>(n_vocab);
            for (size_t r = 1; r < static_cast<size_t>(n_vocab); ++r)
              std::copy(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(row),
                        bytes.begin() + static_cast<std::ptrdiff_t>(r * row));
          } else if (name == "blk.0.attn_q.weight") {
            ASSERT_EQ(bytes.size() * static_cast<size_t>(n_head_kv), attn_k.size() * static_cast<size_t>(n_head));
            const size_t head_bytes = attn_k.size() / static_cast<size_t>(n_head_kv);
            for (int32_t h = 0; h < n_head; ++h)
              std::copy(attn_k.begin() + static_cast<std::ptrdiff_t>((h / (n_head / n_head_kv)) * head_bytes),
                        attn_k.begin() + static_cast<std::ptrdiff_t>((h / (n_head / n_head_kv) + 1) * head_bytes),
                        bytes.begin() + static_cast<std::ptrdiff_t>(h * head_bytes));
          } else if (name == "blk.0.attn_norm.weight") {
            for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
              float x;
              std::memcpy(&x, bytes.data() + i, 4);
              x *= kSharpness;
              std::memcpy(bytes.data() + i, &x, 4);
            }
          }
        }) {}
};

TEST(PrefillCalibration, FindsAShapeHeadsOnANeighbourModel) {
  const std::string path = longhaul::testing::smollm2_path();
  if (!longhaul::testing::file_exists(path)) GTEST_SKIP() << "SmolLM2 not installed";
  Result<gguf::GgufFile> file = gguf::GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.message();
  std::vector<uint8_t> attn_k;
  int32_t n_vocab = 0;
  for (const gguf::TensorInfo& t : file->tensors()) {
    if (t.name == "blk.0.attn_k.weight") attn_k.assign(t.data, t.data + t.size_bytes);
    if (t.name == "token_embd.weight") n_vocab = static_cast<int32_t>(t.dims[1]);
  }
  ASSERT_FALSE(attn_k.empty());
  const NeighbourModel crafted(path, attn_k, 9, 3, n_vocab);
  ASSERT_NE(crafted.get(), nullptr);
  const model::Model& m = *crafted.get();
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf(m.file());
  ASSERT_TRUE(tok.is_ok()) << tok.message();
  PrefillCalibrationOptions o;
  o.lengths = {768, 1536};
  o.budget = 256;
  o.n_spread_blocks = 4;
  o.density = 0.25f;
  o.n_threads = 2;
  std::vector<std::string> lines;
  Result<kv::HeadProfile> p = calibrate_prefill(m, *tok, o, [&](const std::string& line) { lines.push_back(line); });
  ASSERT_TRUE(p.is_ok()) << p.message();
  // A line per prompt, a line per analysis, and one for MoA's choice.
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_NE(lines[0].find("passkey prompt of"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("(1/2)"), std::string::npos) << lines[0];
  EXPECT_EQ(p->n_layer, 1);
  EXPECT_EQ(p->n_head, 9);
  EXPECT_EQ(p->prefill_budget, 256);
  EXPECT_FLOAT_EQ(p->prefill_density, 0.25f);
  for (int32_t h = 0; h < 9; ++h) {
    const kv::HeadPrefill& e = p->prefill_at(0, h);
    SCOPED_TRACE(h);
    EXPECT_TRUE(e.listed);
    EXPECT_EQ(e.pattern, PrefillPattern::kAShape) << kv::prefill_pattern_name(e.pattern) << " " << e.recall;
    EXPECT_GT(e.recall, 0.95f);
    // A neighbour head keeps its mass within a block or two at every length: no rule grows with N.
    EXPECT_LE(e.moa_alpha + e.moa_beta * 1536, 256.0f) << e.moa_alpha << " " << e.moa_beta;
  }
  // The profile survives its text form.
  Result<kv::HeadProfile> q = kv::parse_head_profile(kv::format_head_profile(*p));
  ASSERT_TRUE(q.is_ok()) << q.message();
  EXPECT_EQ(q->prefill_at(0, 4).pattern, PrefillPattern::kAShape);
}

}  // namespace
}  // namespace longhaul::eval
