#include "server/metrics.h"

#include <cstdio>

namespace longhaul::server {

namespace {

std::string number(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

void metric(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// A metric of one unlabelled sample.
void sample(std::string& out, const char* name, const char* type, const char* help, int64_t value) {
  metric(out, name, type, help);
  out += std::string(name) + " " + std::to_string(value) + "\n";
}

}  // namespace

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  ++counts_[i];
  sum_ += seconds;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  int64_t cumulative = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(kBounds[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_[kBounds.size()];
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

void Metrics::add_prefix_cache(int64_t hits, int64_t hit_tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  prefix_cache_hits_ += hits;
  prefix_cache_hit_tokens_ += hit_tokens;
}

void Metrics::add_draft_tokens(int64_t drafted, int64_t accepted) {
  std::lock_guard<std::mutex> lock(mutex_);
  draft_tokens_ += drafted;
  draft_accepted_tokens_ += accepted;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  time_to_first_token_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  inter_token_latency_.observe(seconds);
}

void Metrics::observe_request_duration(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  request_duration_.observe(seconds);
}

std::string Metrics::render(const SchedulerStats& s) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  metric(out, "longhaul_requests_total", "counter", "HTTP requests by endpoint and status code.");
  for (const auto& [key, n] : requests_)
    out += "longhaul_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  sample(out, "longhaul_prompt_tokens_total", "counter", "Prompt tokens of the requests served.", prompt_tokens_);
  sample(out, "longhaul_generated_tokens_total", "counter", "Tokens generated.", generated_tokens_);
  sample(out, "longhaul_running_sequences", "gauge", "Sequences in the generation loop.", s.running);
  sample(out, "longhaul_queued_requests", "gauge", "Requests waiting for a place in the loop.", s.queued);
  sample(out, "longhaul_kv_used_bytes", "gauge", "KV cache bytes held by live cells.", s.kv_used_bytes);
  sample(out, "longhaul_kv_allocated_bytes", "gauge", "KV cache bytes of allocated pages (reusable ones included).", s.kv_allocated_bytes);
  sample(out, "longhaul_kv_capacity_bytes", "gauge", "KV memory the running requests may reserve (admission budget).", s.kv_capacity_bytes);
  sample(out, "longhaul_steps_total", "counter", "Engine steps run.", s.n_steps);
  sample(out, "longhaul_step_tokens_total", "counter", "Tokens carried by the engine steps (decode and prefill).", s.n_step_tokens);
  sample(out, "longhaul_last_step_tokens", "gauge", "Tokens the last engine step carried.", s.last_step_tokens);
  sample(out, "longhaul_prefix_cache_hits_total", "counter", "Requests whose prompt reused cached KV pages.", prefix_cache_hits_);
  sample(out, "longhaul_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from cached KV pages.", prefix_cache_hit_tokens_);
  sample(out, "longhaul_draft_tokens_total", "counter", "Draft tokens fed for verification (speculative decoding).", draft_tokens_);
  sample(out, "longhaul_draft_accepted_tokens_total", "counter", "Draft tokens the model accepted.", draft_accepted_tokens_);
  metric(out, "longhaul_time_to_first_token_seconds", "histogram", "From request arrival to its first token.");
  time_to_first_token_.render("longhaul_time_to_first_token_seconds", out);
  metric(out, "longhaul_inter_token_latency_seconds", "histogram", "Between consecutive tokens of a request.");
  inter_token_latency_.render("longhaul_inter_token_latency_seconds", out);
  metric(out, "longhaul_request_duration_seconds", "histogram", "From request arrival to its last byte.");
  request_duration_.render("longhaul_request_duration_seconds", out);
  return out;
}

}  // namespace longhaul::server
