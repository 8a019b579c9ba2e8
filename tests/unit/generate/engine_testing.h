// Helpers shared by the Engine tests (engine_test.cc, engine_fork_test.cc, engine_rollback_test.cc, the sparse
// attention policies' *_engine_test.cc): the default models loaded once per test binary, token sequences, a duo head
// profile, one-step / comparison shorthands, a fixture run once per model.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "generate/engine.h"
#include "kv/head_profile.h"
#include "testing/model_paths.h"

namespace longhaul::generate::engine_testing {

// The model at `path`, loaded once for the whole binary; null when it is not installed.
inline const model::Model* shared_model(const std::string& path) {
  static std::map<std::string, std::unique_ptr<model::Model>> models;
  auto it = models.find(path);
  if (it == models.end()) {
    std::unique_ptr<model::Model> m;
    if (longhaul::testing::file_exists(path)) {
      Result<std::unique_ptr<model::Model>> loaded = model::Model::load(path);
      EXPECT_TRUE(loaded.is_ok()) << loaded.message();
      if (loaded.is_ok()) m = std::move(loaded).value();
    }
    it = models.emplace(path, std::move(m)).first;
  }
  return it->second.get();
}

// n ordinary token ids (inside both models' vocabularies); `seed` gives different sequences.
inline std::vector<int32_t> some_tokens(int32_t n, int32_t seed = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    t[static_cast<size_t>(i)] = 100 + static_cast<int32_t>((int64_t{i} * 7919 + int64_t{seed} * 104729) % 20000);
  return t;
}

inline std::span<const int32_t> slice(const std::vector<int32_t>& v, size_t begin, size_t n) {
  return std::span<const int32_t>(v).subspan(begin, n);
}

inline std::vector<int32_t> concat(const std::vector<int32_t>& a, std::span<const int32_t> b) {
  std::vector<int32_t> out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// A head profile of equal scores for `model` (which heads retrieve then depends only on the fraction: the first
// ones, in layer-major order); the engine gives it to duo (SequenceOptions::head_profile).
inline std::shared_ptr<const kv::HeadProfile> flat_profile(const model::Model& model) {
  auto p = std::make_shared<kv::HeadProfile>();
  p->n_layer = model.kv_shape().n_layer;
  p->n_head_kv = model.kv_shape().n_head_kv;
  p->heads.assign(static_cast<size_t>(p->n_layer * p->n_head_kv), kv::HeadScore{0.5f, 0.5f, 0.0f, 0.0f});
  return p;
}

inline std::unique_ptr<Engine> make_engine(const model::Model& model, ThreadPool& pool, int32_t n_ctx = 1024,
                                           int32_t n_batch = 256, int32_t page_tokens = 0) {
  EngineOptions o;
  o.n_ctx = n_ctx;
  o.n_batch = n_batch;
  o.n_threads = 2;
  o.page_tokens = page_tokens;
  Result<std::unique_ptr<Engine>> e = Engine::create(model, o, &pool);
  EXPECT_TRUE(e.is_ok()) << e.message();
  return e.is_ok() ? std::move(e).value() : nullptr;
}

// A sequence under the KV policy `policy` as written ("streaming:window=60"), with the model's head profile for duo.
inline kv::SeqId add_sequence(Engine& engine, const std::string& policy, int32_t n_ctx = 0,
                              std::shared_ptr<const kv::HeadProfile> head_profile = nullptr) {
  SequenceOptions so;
  so.kv_policy = policy;
  so.n_ctx = n_ctx;
  so.head_profile = std::move(head_profile);
  Result<kv::SeqId> seq = engine.add_sequence(so);
  EXPECT_TRUE(seq.is_ok()) << policy << ": " << seq.message();
  return seq.is_ok() ? *seq : -1;
}

// One ordinary (or tentative) step of one sequence; returns the last token's logits (empty on failure, which is
// reported).
inline std::vector<float> step_one(Engine& engine, kv::SeqId seq, std::span<const int32_t> tokens,
                                   bool tentative = false) {
  SequenceStep s;
  s.seq = seq;
  s.tokens = tokens;
  s.tentative = tentative;
  StepResult r;
  const Status st = engine.step({&s, 1}, r);
  EXPECT_TRUE(st.is_ok()) << st.message();
  if (!st.is_ok()) return {};
  const float* l = r.logits(0);
  return std::vector<float>(l, l + r.n_vocab);
}

// feed() in the sequence's own chunks; returns the last logits.
inline std::vector<float> feed(Engine& engine, kv::SeqId seq, std::span<const int32_t> tokens) {
  std::vector<float> logits;
  const Status st = engine.feed(seq, tokens, &logits);
  EXPECT_TRUE(st.is_ok()) << st.message();
  return logits;
}

// Decode steps of one token each, `tokens` in turn; returns each step's logits, concatenated [n_tokens, n_vocab].
inline std::vector<float> decode_each(Engine& engine, kv::SeqId seq, const std::vector<int32_t>& tokens) {
  std::vector<float> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::vector<float> l = step_one(engine, seq, slice(tokens, i, 1));
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

inline float max_abs_diff(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (!(d <= m)) m = d;  // NaN propagates as the maximum
  }
  return m;
}

inline bool bit_identical(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

inline int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Feeds `prompt` to seq, decodes the greedy token and then `more`, one step each, and returns the share of the
// cached keys those decode steps read (Engine::keys_read between them). Every decoded logit must be finite.
inline double decode_keys_share(Engine& engine, kv::SeqId seq, const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& more) {
  const std::vector<float> logits = feed(engine, seq, prompt);
  const model::AttentionPlan::KeysRead before = engine.keys_read(seq);
  std::vector<int32_t> tokens{argmax(logits)};
  tokens.insert(tokens.end(), more.begin(), more.end());
  for (float x : decode_each(engine, seq, tokens)) EXPECT_TRUE(std::isfinite(x));
  const model::AttentionPlan::KeysRead after = engine.keys_read(seq);
  return static_cast<double>(after.read - before.read) / static_cast<double>(after.held - before.held);
}

// Difference between the largest and the second largest logit.
inline float top2_gap(std::span<const float> logits) {
  float first = -INFINITY, second = -INFINITY;
  for (float v : logits) {
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return first - second;
}

// Largest |a - b| / max(1, |b|) over two policies' statistics (which must have the same length).
inline double statistics_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]) / std::max(1.0, std::fabs(b[i]));
    if (!(d <= m)) m = d;
  }
  return m;
}

// A test run once per default model: INSTANTIATE_TEST_SUITE_P(Models, X, ::testing::Values("SmolLM2", "Gemma3"),
// each_model_name) for a class X derived from it. Skipped where the model is not installed.
class EachModelTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const bool smollm = std::string(GetParam()) == "SmolLM2";
    model_ = shared_model(smollm ? longhaul::testing::smollm2_path() : longhaul::testing::gemma3_path());
    if (model_ == nullptr) GTEST_SKIP() << GetParam() << " is not installed";
  }
  const model::Model* model_ = nullptr;
  ThreadPool pool_{2};
};
inline std::string each_model_name(const ::testing::TestParamInfo<const char*>& info) { return info.param; }

// The logits of a 700-token prompt and of six decode steps after it (the prompt's greedy token, then fixed ones),
// concatenated, for a new sequence under `spec`, removed after.
inline std::vector<float> prompt_and_decode_logits(Engine& engine, const std::string& spec,
                                                   std::shared_ptr<const kv::HeadProfile> profile = nullptr) {
  const kv::SeqId seq = add_sequence(engine, spec, 0, std::move(profile));
  std::vector<float> out = feed(engine, seq, some_tokens(700, 3));
  const std::vector<float> decoded = decode_each(engine, seq, {argmax(out), 300, 4000, 50, 7000, 900});
  out.insert(out.end(), decoded.begin(), decoded.end());
  engine.remove(seq);
  return out;
}

// Each spec, with f16 cells and with KIVI int8 cells (":bits=16" / ":bits=8" appended), gives full's prompt and
// decode logits bit for bit. Every sequence uses pages of page_tokens cells: the flash pass sums page by page, so
// equal page boundaries make the sums equal bit for bit.
inline void expect_full_logits(const model::Model& model, ThreadPool& pool, const std::vector<std::string>& specs,
                               int32_t page_tokens, std::shared_ptr<const kv::HeadProfile> profile = nullptr) {
  for (const char* storage : {":bits=16", ":bits=8"}) {
    auto engine = make_engine(model, pool, 2048, 256, page_tokens);
    ASSERT_NE(engine, nullptr);
    const std::vector<float> want = prompt_and_decode_logits(*engine, std::string("full") + storage);
    for (const std::string& spec : specs) {
      const std::vector<float> got = prompt_and_decode_logits(*engine, spec + storage, profile);
      EXPECT_TRUE(bit_identical(want, got)) << spec << storage << ": " << max_abs_diff(want, got);
    }
  }
}

// The logits of the first decode step after the same n_prompt-token prompt under each policy spec (the token is
// the first spec's greedy choice), one sequence at a time, in pages of page_tokens cells.
inline std::vector<std::vector<float>> first_decode_logits(const model::Model& model, ThreadPool& pool,
                                                           const std::vector<std::string>& specs, int32_t n_prompt,
                                                           int32_t page_tokens) {
  auto engine = make_engine(model, pool, 2048, 256, page_tokens);
  std::vector<std::vector<float>> out;
  if (engine == nullptr) return out;
  const std::vector<int32_t> prompt = some_tokens(n_prompt, 12);
  std::vector<int32_t> next;
  for (const std::string& spec : specs) {
    const kv::SeqId seq = add_sequence(*engine, spec);
    const std::vector<float> first = feed(*engine, seq, prompt);
    if (next.empty()) next = {argmax(first)};
    out.push_back(step_one(*engine, seq, next));
    engine->remove(seq);
  }
  return out;
}

// A sequence under `spec` is fed a 600-token prompt and decodes n_before tokens; a fork of it then decodes the same
// four tokens as it: the same logits bit for bit, and the same policy statistics (sums of attention the threads
// add in their own order: to 1e-9).
inline void expect_fork_decodes_as_parent(const model::Model& model, ThreadPool& pool, const std::string& spec,
                                          int32_t n_before, std::shared_ptr<const kv::HeadProfile> profile = nullptr) {
  auto engine = make_engine(model, pool, 2048);
  ASSERT_NE(engine, nullptr);
  const kv::SeqId parent = add_sequence(*engine, spec, 0, std::move(profile));
  const std::vector<float> logits = feed(*engine, parent, some_tokens(600, 5));
  std::vector<int32_t> before = {argmax(logits)};
  for (int32_t i = 1; i < n_before; ++i) before.push_back(100 + 37 * i);
  if (n_before > 0) decode_each(*engine, parent, before);
  Result<kv::SeqId> child = engine->fork(parent);
  ASSERT_TRUE(child.is_ok()) << child.message();
  EXPECT_LE(statistics_diff(engine->policy(parent).statistics(), engine->policy(*child).statistics()), 1e-9);
  const std::vector<int32_t> next = {n_before > 0 ? 400 : argmax(logits), 500, 600, 700};
  const std::vector<float> a = decode_each(*engine, parent, next);
  const std::vector<float> b = decode_each(*engine, *child, next);
  EXPECT_TRUE(bit_identical(a, b)) << spec << ": " << max_abs_diff(a, b);
  EXPECT_LE(statistics_diff(engine->policy(parent).statistics(), engine->policy(*child).statistics()), 1e-9);
}

}  // namespace longhaul::generate::engine_testing
