#include "sampling/sampling_options.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <string>

#include "sampling/format_number.h"

namespace longhaul::sampling {
namespace {

Status field_error(const char* field, double value, const char* allowed) {
  return Status::error(std::string(field) + " = " + format_number(value) + ": " + allowed);
}

}  // namespace

Status validate(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature)) {
    return field_error("temperature", o.temperature, "must be a finite number (<= 0 = greedy)");
  }
  if (o.top_k < 0) return field_error("top_k", o.top_k, "must be >= 0 (0 = off)");
  // Written as !(inside) so that NaN is rejected too.
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) {
    return field_error("top_p", o.top_p, "must be in (0, 1] (1 = off)");
  }
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) {
    return field_error("min_p", o.min_p, "must be in [0, 1] (0 = off)");
  }
  if (!(o.repeat_penalty > 0.0f) || !std::isfinite(o.repeat_penalty)) {
    return field_error("repeat_penalty", o.repeat_penalty, "must be a finite number > 0 (1 = off)");
  }
  if (!std::isfinite(o.frequency_penalty)) {
    return field_error("frequency_penalty", o.frequency_penalty, "must be a finite number (0 = off)");
  }
  if (!std::isfinite(o.presence_penalty)) {
    return field_error("presence_penalty", o.presence_penalty, "must be a finite number (0 = off)");
  }
  if (o.penalty_last_n < -1) {
    return field_error("penalty_last_n", o.penalty_last_n, "must be >= -1 (0 = off, -1 = whole context)");
  }
  if (o.min_keep < 0) return field_error("min_keep", o.min_keep, "must be >= 0");
  return Status::ok();
}

uint32_t resolve_seed(uint32_t requested) {
  if (requested != kRandomSeed) return requested;
  static std::atomic<uint64_t> n_resolved{0};
  uint64_t x = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  x += 0x9E3779B97F4A7C15ull * (n_resolved.fetch_add(1) + 1);
  // splitmix64 finaliser (Steele et al., 2014): spreads the low-entropy clock bits over all 64.
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  const uint32_t seed = static_cast<uint32_t>(x ^ (x >> 32));
  return seed == kRandomSeed ? seed - 1 : seed;
}

}  // namespace longhaul::sampling
