// The server's counters and histograms, rendered in Prometheus' text exposition format for GET /metrics.
// Thread-safety: every method may be called from any thread (one mutex).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "server/scheduler.h"

namespace longhaul::server {

// A cumulative histogram with fixed bucket bounds in seconds.
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1.0,   2.5,  5.0,   10.0, 30.0, 60.0, 300.0};
  void observe(double seconds);
  // Lines "<name>_bucket{le=...} n", "<name>_sum", "<name>_count".
  void render(const std::string& name, std::string& out) const;

 private:
  std::array<int64_t, kBounds.size() + 1> counts_{};  // the last one is +Inf
  double sum_ = 0.0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int64_t prompt, int64_t generated);
  // Prefix-cache reuse of a request's prompt (0 until a prefix cache serves them).
  void add_prefix_cache(int64_t hits, int64_t hit_tokens);
  // Speculative decoding: draft tokens a request's steps fed for verification, and those the model accepted.
  void add_draft_tokens(int64_t drafted, int64_t accepted);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  void observe_request_duration(double seconds);
  std::string render(const SchedulerStats& scheduler) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;  // (endpoint, status) -> count
  int64_t prompt_tokens_ = 0;
  int64_t generated_tokens_ = 0;
  int64_t prefix_cache_hits_ = 0;
  int64_t prefix_cache_hit_tokens_ = 0;
  int64_t draft_tokens_ = 0;
  int64_t draft_accepted_tokens_ = 0;
  Histogram time_to_first_token_, inter_token_latency_, request_duration_;
};

}  // namespace longhaul::server
