// Process-level measurements: wall clock and memory.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace longhaul {

inline double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Peak resident set size of this process in bytes (VmHWM), 0 if unknown.
int64_t peak_rss_bytes();
// Current resident set size in bytes (VmRSS), 0 if unknown.
int64_t current_rss_bytes();
// Resets the peak (VmHWM) to the current resident set by writing "5" to /proc/self/clear_refs (Linux 4.0+);
// false where that is not allowed.
bool reset_peak_rss();

// The peak resident set of a stretch of work (one eval point) rather than of the process so far, whose
// high-water mark would report the largest earlier point's memory for every later one. Each restart() resets
// VmHWM; where the kernel does not allow that, a thread samples VmRSS every 5 ms and the peak is the largest
// sample (a spike shorter than that can be missed). restart() and peak_bytes() are called from one thread; the
// sampler thread only writes an atomic.
class PeakRssMeter {
 public:
  // Starts measuring; `force_sampling` uses the sampler even where VmHWM can be reset (tests both ways).
  explicit PeakRssMeter(bool force_sampling = false);
  ~PeakRssMeter();
  PeakRssMeter(const PeakRssMeter&) = delete;
  PeakRssMeter& operator=(const PeakRssMeter&) = delete;

  void restart();
  int64_t peak_bytes() const;  // since construction or the last restart()
  bool sampled() const { return !use_hwm_; }

 private:
  bool use_hwm_ = false;
  std::atomic<int64_t> sampled_peak_{0};
  std::atomic<bool> stop_{false};
  std::thread sampler_;
};

}  // namespace longhaul
