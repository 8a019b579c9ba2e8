#include "sampling/sampling_options.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

namespace longhaul::sampling {
namespace {

std::string error_of(const std::function<void(SamplingOptions&)>& change) {
  SamplingOptions o;
  change(o);
  const Status s = validate(o);
  return s.is_ok() ? "ok" : s.message();
}

TEST(SamplingOptions, DefaultsAreLlamaCppDefaults) {
  const SamplingOptions o;
  EXPECT_FLOAT_EQ(o.temperature, 0.8f);
  EXPECT_EQ(o.top_k, 40);
  EXPECT_FLOAT_EQ(o.top_p, 0.95f);
  EXPECT_FLOAT_EQ(o.min_p, 0.05f);
  EXPECT_FLOAT_EQ(o.repeat_penalty, 1.0f);
  EXPECT_EQ(o.penalty_last_n, 64);
  EXPECT_EQ(o.seed, 0xFFFFFFFFu);
  EXPECT_TRUE(validate(o).is_ok());
}

TEST(SamplingOptions, AcceptsBoundaryValues) {
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.temperature = -2.0f; }), "ok");  // greedy
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.top_k = 0; }), "ok");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.top_p = 1.0f; }), "ok");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.min_p = 0.0f; }), "ok");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.min_p = 1.0f; }), "ok");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.penalty_last_n = -1; }), "ok");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.frequency_penalty = -0.5f; }), "ok");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.min_keep = 0; }), "ok");
}

TEST(SamplingOptions, RejectionsNameFieldValueAndRange) {
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.temperature = NAN; }),
            "temperature = nan: must be a finite number (<= 0 = greedy)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.top_k = -1; }), "top_k = -1: must be >= 0 (0 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.top_p = 0.0f; }), "top_p = 0: must be in (0, 1] (1 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.top_p = 1.5f; }), "top_p = 1.5: must be in (0, 1] (1 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.min_p = -0.25f; }),
            "min_p = -0.25: must be in [0, 1] (0 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.min_p = 2.0f; }), "min_p = 2: must be in [0, 1] (0 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.repeat_penalty = 0.0f; }),
            "repeat_penalty = 0: must be a finite number > 0 (1 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.presence_penalty = INFINITY; }),
            "presence_penalty = inf: must be a finite number (0 = off)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.penalty_last_n = -2; }),
            "penalty_last_n = -2: must be >= -1 (0 = off, -1 = whole context)");
  EXPECT_EQ(error_of([](SamplingOptions& o) { o.min_keep = -1; }), "min_keep = -1: must be >= 0");
}

TEST(SamplingOptions, ResolveSeed) {
  EXPECT_EQ(resolve_seed(1234u), 1234u);
  EXPECT_EQ(resolve_seed(0u), 0u);
  const uint32_t a = resolve_seed(kRandomSeed);
  const uint32_t b = resolve_seed(kRandomSeed);
  EXPECT_NE(a, kRandomSeed);
  // Two resolutions in a row differ through the per-process counter even within one clock tick.
  // (A collision of two 32-bit hashes is possible in principle; at 2^-32 it is not a flake risk.)
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace longhaul::sampling
