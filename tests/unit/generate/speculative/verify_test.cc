// The verification rule of speculative sampling, checked for losslessness: tokens emitted through verification
// must follow the distribution the sampler chain draws from without speculation, for every sampler setting and for
// chains and trees of drafts. The reference is the plain path itself (SamplerChain::sample): two-sample chi-square
// tests between token frequencies with and without speculation, over fixed seeds, and, since the rule draws what
// plain sampling draws, the same tokens run by run under the same seed.
//
// Statistic: X^2 = sum_i (a_i - b_i)^2 / (a_i + b_i) over the cells with a_i + b_i >= 10 (equal sample sizes),
// chi-square with (cells - 1) degrees of freedom under "same distribution". Threshold: the p = 0.001 critical value
// (Wilson-Hilferty's approximation), so a correct rule fails one seed set in a thousand and the fixed seeds make
// the outcome deterministic. A wrong rule — accepting a draft token whenever it has any probability, say — moves
// X^2 into the thousands (checked below).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <map>
#include <vector>

#include "generate/speculative/aded.h"
#include "generate/speculative/draft_model.h"
#include "generate/speculative/retrieval.h"
#include "generate/speculative/verify.h"
#include "sampling/sampler_chain.h"
#include "table_draft_model.h"

namespace longhaul::generate::speculative {
namespace {

constexpr int32_t kVocab = 6;

// Critical value of chi-square with `df` degrees of freedom at p = 0.001 (z = 3.090), Wilson-Hilferty.
double chi_square_critical(int64_t df) {
  const double d = static_cast<double>(df);
  const double a = 2.0 / (9.0 * d);
  return d * std::pow(1.0 - a + 3.090 * std::sqrt(a), 3.0);
}

struct ChiSquare {
  double statistic = 0;
  int64_t df = 0;
};

ChiSquare two_sample(const std::map<std::vector<int32_t>, int64_t>& a, const std::map<std::vector<int32_t>, int64_t>& b) {
  std::map<std::vector<int32_t>, std::array<int64_t, 2>> cells;
  for (const auto& [k, n] : a) cells[k][0] += n;
  for (const auto& [k, n] : b) cells[k][1] += n;
  ChiSquare c;
  int64_t used = 0;
  for (const auto& [k, n] : cells) {
    const int64_t total = n[0] + n[1];
    if (total < 10) continue;
    const double d = static_cast<double>(n[0] - n[1]);
    c.statistic += d * d / static_cast<double>(total);
    ++used;
  }
  c.df = std::max<int64_t>(1, used - 1);
  return c;
}

sampling::SamplingOptions options(float temperature, int32_t top_k, float top_p, float min_p, float repeat,
                                  float presence) {
  sampling::SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.min_p = min_p;
  o.repeat_penalty = repeat;
  o.presence_penalty = presence;
  o.penalty_last_n = 64;
  return o;
}

// A tiny "model": the logits after a history depend on its last token (a fixed table), so that penalties and the
// path through a draft tree both matter.
std::vector<float> model_logits(const std::vector<int32_t>& history) {
  static const float kTable[kVocab][kVocab] = {
      {1.0f, 0.5f, 0.2f, -0.3f, 0.8f, 0.0f}, {0.1f, 1.2f, 0.9f, 0.0f, -0.5f, 0.4f}, {0.7f, 0.7f, 0.1f, 1.1f, 0.2f, -1.0f},
      {0.0f, 0.3f, 1.5f, 0.4f, 0.4f, 0.6f},  {1.3f, -0.2f, 0.5f, 0.5f, 0.0f, 0.9f}, {0.2f, 0.2f, 0.2f, 0.8f, 1.0f, 0.1f}};
  const int32_t last = history.empty() ? 0 : history.back();
  return std::vector<float>(kTable[last], kTable[last] + kVocab);
}

// `n` tokens after `prompt` by plain sampling, and by verifying `draft_of(history)` trees each step.
using DraftFn = std::function<void(const std::vector<int32_t>& history, std::vector<int32_t>& tokens,
                                   std::vector<int32_t>& parents)>;

std::vector<int32_t> plain(sampling::SamplerChain& chain, std::vector<int32_t> history, int32_t n) {
  std::vector<int32_t> out;
  while (static_cast<int32_t>(out.size()) < n) {
    const int32_t t = chain.sample(model_logits(history).data(), kVocab);
    chain.accept(t);
    history.push_back(t);
    out.push_back(t);
  }
  return out;
}

// With `source`, the draft is the source's proposal (at most kSourceDraftMax tokens) and the source observes every
// step as the generation loop shows it: the history up to the pending token, the logits of every node, the kept
// path. draft_of is then not used.
constexpr int32_t kSourceDraftMax = 6;

std::vector<int32_t> speculative(sampling::SamplerChain& chain, std::vector<int32_t> history, int32_t n,
                                 const DraftFn& draft_of, DraftSource* source = nullptr) {
  std::vector<int32_t> out;
  while (static_cast<int32_t>(out.size()) < n) {
    // Node 0 is the last token; the draft's nodes follow with parents in the step's numbering.
    std::vector<int32_t> tokens = {history.back()}, parents = {-1};
    if (source != nullptr) {
      Draft d;
      source->propose({0, history}, kSourceDraftMax, d);
      for (size_t i = 0; i < d.size(); ++i) {
        tokens.push_back(d.tokens[i]);
        parents.push_back(d.parents.empty() ? static_cast<int32_t>(i) : d.parents[i] + 1);
      }
    } else {
      draft_of(history, tokens, parents);
    }
    // The logits at a node: the model after the history plus the node's path.
    std::vector<std::vector<float>> node_logits(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::vector<int32_t> path;
      for (int32_t j = static_cast<int32_t>(i); j > 0; j = parents[static_cast<size_t>(j)]) path.insert(path.begin(), tokens[static_cast<size_t>(j)]);
      std::vector<int32_t> h = history;
      h.insert(h.end(), path.begin(), path.end());
      node_logits[i] = model_logits(h);
    }
    const std::vector<int32_t> before = history;
    const Verification v = verify_tree(
        tokens, parents, [&](int32_t node) { return node_logits[static_cast<size_t>(node)].data(); }, kVocab, chain,
        [&](int32_t token) {
          out.push_back(token);
          history.push_back(token);
          return static_cast<int32_t>(out.size()) < n;
        });
    if (source != nullptr) {
      std::vector<float> all;
      for (const auto& l : node_logits) all.insert(all.end(), l.begin(), l.end());
      VerifiedStep step;
      step.tokens = tokens;
      step.parents = parents;
      step.logits = all.data();
      step.n_vocab = kVocab;
      step.n_accepted = v.n_accepted;
      step.path = v.path;
      source->observe({0, before}, step);
    }
  }
  return out;
}

// source: one draft source for all runs (an adaptive one keeps learning across them), or null for draft_of.
// n_same: when given, the runs whose tokens with speculation are those without (the same seed in both arms).
ChiSquare compare(const sampling::SamplingOptions& o, const DraftFn& draft_of, int32_t n_tokens, int32_t n_runs,
                  DraftSource* source = nullptr, int32_t* n_same = nullptr) {
  std::map<std::vector<int32_t>, int64_t> with, without;
  if (n_same != nullptr) *n_same = 0;
  const std::vector<int32_t> prompt = {2, 3, 2};
  for (int32_t run = 0; run < n_runs; ++run) {
    sampling::SamplingOptions seeded = o;
    seeded.seed = static_cast<uint32_t>(1000 + run);
    sampling::SamplerChain a = std::move(sampling::SamplerChain::create(seeded)).value();
    sampling::SamplerChain b = std::move(sampling::SamplerChain::create(seeded)).value();
    for (int32_t t : prompt) {
      a.accept(t);
      b.accept(t);
    }
    const std::vector<int32_t> alone = plain(a, prompt, n_tokens);
    const std::vector<int32_t> verified = speculative(b, prompt, n_tokens, draft_of, source);
    ++without[alone];
    ++with[verified];
    if (n_same != nullptr && alone == verified) ++*n_same;
  }
  return two_sample(with, without);
}

// A chain of three guesses, the same whatever the history: 1 1 4.
void chain_draft(const std::vector<int32_t>&, std::vector<int32_t>& tokens, std::vector<int32_t>& parents) {
  for (int32_t t : {1, 1, 4}) {
    parents.push_back(static_cast<int32_t>(tokens.size()) - 1);
    tokens.push_back(t);
  }
}

// A tree: three alternatives at the root (2, 0, 3), two children under the first (3, 2), one under the second (5).
void tree_draft(const std::vector<int32_t>&, std::vector<int32_t>& tokens, std::vector<int32_t>& parents) {
  const int32_t add[][2] = {{2, 0}, {0, 0}, {3, 0}, {3, 1}, {2, 1}, {5, 2}};  // {token, parent node}
  for (const auto& a : add) {
    tokens.push_back(a[0]);
    parents.push_back(a[1]);
  }
}

// The draft is the history's last token repeated: guesses that follow the text (as prompt lookup's do).
void echo_draft(const std::vector<int32_t>& history, std::vector<int32_t>& tokens, std::vector<int32_t>& parents) {
  for (int i = 0; i < 2; ++i) {
    parents.push_back(static_cast<int32_t>(tokens.size()) - 1);
    tokens.push_back(history.back());
  }
}

struct Setting {
  const char* name;
  sampling::SamplingOptions options;
};

const std::vector<Setting>& settings() {
  static const std::vector<Setting> s = {
      {"temperature 1", options(1.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f)},
      {"temperature 0.7, top-k 4, top-p 0.9, min-p 0.1", options(0.7f, 4, 0.9f, 0.1f, 1.0f, 0.0f)},
      {"temperature 1.3, repeat 1.5, presence 0.4", options(1.3f, 0, 1.0f, 0.0f, 1.5f, 0.4f)},
      {"top-k 3 with penalties", options(0.9f, 3, 1.0f, 0.0f, 1.3f, 0.2f)},
  };
  return s;
}

constexpr int32_t kRuns = 6000;  // per arm; 3 tokens: 216 cells, about 28 samples per cell on average

TEST(SpeculativeSampling, ChainDraftsKeepTheDistribution) {
  for (const Setting& s : settings()) {
    const ChiSquare c = compare(s.options, chain_draft, 3, kRuns);
    EXPECT_LT(c.statistic, chi_square_critical(c.df)) << s.name << ": X^2 = " << c.statistic << ", df = " << c.df;
  }
}

TEST(SpeculativeSampling, TreeDraftsKeepTheDistribution) {
  for (const Setting& s : settings()) {
    const ChiSquare c = compare(s.options, tree_draft, 3, kRuns);
    EXPECT_LT(c.statistic, chi_square_critical(c.df)) << s.name << ": X^2 = " << c.statistic << ", df = " << c.df;
  }
}

TEST(SpeculativeSampling, HistoryDependentDraftsKeepTheDistribution) {
  for (const Setting& s : settings()) {
    const ChiSquare c = compare(s.options, echo_draft, 3, kRuns);
    EXPECT_LT(c.statistic, chi_square_critical(c.df)) << s.name << ": X^2 = " << c.statistic << ", df = " << c.df;
  }
}

// The draft sources themselves, adaptive ones learning from the toy model's logits as they go.
TEST(SpeculativeSampling, AdedDraftsKeepTheDistribution) {
  for (const Setting& s : settings()) {
    AdedSource source(kVocab, 3);
    const ChiSquare c = compare(s.options, nullptr, 3, kRuns, &source);
    EXPECT_LT(c.statistic, chi_square_critical(c.df)) << s.name << ": X^2 = " << c.statistic << ", df = " << c.df;
    EXPECT_EQ(source.row(AdedSource::kNoToken, 2).size(), 3u) << s.name << ": the table learnt nothing";
  }
}

TEST(SpeculativeSampling, RetrievalDraftsKeepTheDistribution) {
  for (const Setting& s : settings()) {
    RetrievalSource source({2, 3, 2, 1, 1, 4, 0, 2, 3, 5, 2, 3, 2, 4, 4, 1, 0, 0, 3, 2});
    const ChiSquare c = compare(s.options, nullptr, 3, kRuns, &source);
    EXPECT_LT(c.statistic, chi_square_critical(c.df)) << s.name << ": X^2 = " << c.statistic << ", df = " << c.df;
  }
}

TEST(SpeculativeSampling, DraftModelDraftsKeepTheDistribution) {
  // The draft model is a table close to the toy target's but not equal (each row is the next token's row), with
  // BiLD's fallback at 0.3: some drafts are right, some wrong, some cut short.
  std::vector<std::vector<float>> draft_table;
  for (int32_t t = 0; t < kVocab; ++t) draft_table.push_back(model_logits({(t + 1) % kVocab}));
  for (const Setting& s : settings()) {
    DraftModelSource source(std::make_unique<testing::TableDraftModel>(draft_table), 0.3f);
    const ChiSquare c = compare(s.options, nullptr, 3, kRuns, &source);
    EXPECT_LT(c.statistic, chi_square_critical(c.df)) << s.name << ": X^2 = " << c.statistic << ", df = " << c.df;
  }
}

// Verification draws what plain sampling draws, so a seeded run emits the same tokens with drafts as without:
// chains, trees, history-dependent guesses and an adaptive source, under every sampler setting.
TEST(SpeculativeSampling, SeededRunsEmitPlainSamplingsTokens) {
  constexpr int32_t kSeededRuns = 300;
  for (const Setting& s : settings()) {
    for (const auto& [name, draft] : {std::pair<const char*, DraftFn>{"chain", chain_draft}, {"tree", tree_draft},
                                      {"echo", echo_draft}}) {
      int32_t n_same = 0;
      compare(s.options, draft, 6, kSeededRuns, nullptr, &n_same);
      EXPECT_EQ(n_same, kSeededRuns) << s.name << ", " << name;
    }
    AdedSource source(kVocab, 3);
    int32_t n_same = 0;
    compare(s.options, nullptr, 6, kSeededRuns, &source, &n_same);
    EXPECT_EQ(n_same, kSeededRuns) << s.name << ", aded";
  }
}

TEST(SpeculativeSampling, TheTestSeesAWrongRule) {
  // Accepting every draft token the target can emit is not lossless: the same statistic must reject it.
  std::map<std::vector<int32_t>, int64_t> with, without;
  const sampling::SamplingOptions o = settings()[0].options;
  for (int32_t run = 0; run < kRuns; ++run) {
    sampling::SamplingOptions seeded = o;
    seeded.seed = static_cast<uint32_t>(1000 + run);
    sampling::SamplerChain a = std::move(sampling::SamplerChain::create(seeded)).value();
    ++without[plain(a, {2}, 1)];
    ++with[{1}];  // the draft "1" always accepted
  }
  const ChiSquare c = two_sample(with, without);
  EXPECT_GT(c.statistic, 10 * chi_square_critical(c.df));
}

TEST(ChooseToken, GreedyAcceptsExactlyTheArgmax) {
  sampling::SamplerChain chain = std::move(sampling::SamplerChain::create(options(0.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f))).value();
  const std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f, 0.0f, 0.5f};
  const std::vector<int32_t> wrong_then_right = {2, 1};
  const Choice c = choose_token(chain, logits.data(), kVocab, wrong_then_right);
  EXPECT_EQ(c.token, 1);
  EXPECT_EQ(c.child, 1);
  const std::vector<int32_t> wrong = {2};
  const Choice d = choose_token(chain, logits.data(), kVocab, wrong);
  EXPECT_EQ(d.token, 1);  // the target's own token at the mismatch
  EXPECT_EQ(d.child, -1);
}

TEST(ChooseToken, FilteredTokensAreNeverAccepted) {
  // top-k 2 leaves tokens 1 and 2: a draft of token 5 has probability 0 under the chain and is always rejected.
  sampling::SamplingOptions o = options(1.0f, 2, 1.0f, 0.0f, 1.0f, 0.0f);
  o.seed = 3;
  sampling::SamplerChain chain = std::move(sampling::SamplerChain::create(o)).value();
  const std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f, 0.0f, 1.5f};
  const std::vector<int32_t> children = {5};
  for (int i = 0; i < 200; ++i) {
    const Choice c = choose_token(chain, logits.data(), kVocab, children);
    EXPECT_EQ(c.child, -1);
    EXPECT_TRUE(c.token == 1 || c.token == 2) << c.token;
  }
}

TEST(ChooseToken, AcceptsTheChildThatEqualsPlainSamplingsDraw) {
  // Two chains with one seed: the verifying one's token is the plain one's at every draw, and the child accepted
  // is the one equal to it (the first of equal children), or none.
  sampling::SamplingOptions o = options(1.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f);
  o.seed = 11;
  sampling::SamplerChain plain_chain = std::move(sampling::SamplerChain::create(o)).value();
  sampling::SamplerChain verifying = std::move(sampling::SamplerChain::create(o)).value();
  const std::vector<float> logits = {0.1f, 1.0f, 0.9f, -1.0f, 0.0f, 0.8f};
  const std::vector<int32_t> children = {2, 5, 2};
  int32_t n_accepted = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t want = plain_chain.sample(logits.data(), kVocab);
    const Choice c = choose_token(verifying, logits.data(), kVocab, children);
    ASSERT_EQ(c.token, want) << "draw " << i;
    EXPECT_EQ(c.child, want == 2 ? 0 : want == 5 ? 1 : -1) << "draw " << i;
    n_accepted += c.child >= 0 ? 1 : 0;
  }
  EXPECT_GT(n_accepted, 0);
  EXPECT_LT(n_accepted, 200);
}

}  // namespace
}  // namespace longhaul::generate::speculative
