#include "base/sys_info.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace longhaul {

namespace {
int64_t read_status_kib(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  int64_t kib = 0;
  const size_t key_len = std::strlen(key);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, key, key_len) == 0) {
      long long v = 0;
      if (std::sscanf(line + key_len, ": %lld", &v) == 1) kib = v;
      break;
    }
  }
  std::fclose(f);
  return kib;
}
}  // namespace

int64_t peak_rss_bytes() { return read_status_kib("VmHWM") * 1024; }
int64_t current_rss_bytes() { return read_status_kib("VmRSS") * 1024; }

bool reset_peak_rss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool written = std::fputs("5", f) >= 0;
  return (std::fclose(f) == 0) && written;
}

PeakRssMeter::PeakRssMeter(bool force_sampling) : use_hwm_(!force_sampling && reset_peak_rss()) {
  if (use_hwm_) return;
  sampled_peak_ = current_rss_bytes();
  sampler_ = std::thread([this] {
    while (!stop_.load(std::memory_order_relaxed)) {
      const int64_t rss = current_rss_bytes();
      int64_t seen = sampled_peak_.load(std::memory_order_relaxed);
      while (rss > seen && !sampled_peak_.compare_exchange_weak(seen, rss, std::memory_order_relaxed)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
}

PeakRssMeter::~PeakRssMeter() {
  stop_ = true;
  if (sampler_.joinable()) sampler_.join();
}

void PeakRssMeter::restart() {
  if (use_hwm_) {
    reset_peak_rss();
  } else {
    sampled_peak_ = current_rss_bytes();
  }
}

int64_t PeakRssMeter::peak_bytes() const {
  if (use_hwm_) return peak_rss_bytes();
  return std::max(sampled_peak_.load(), current_rss_bytes());
}

}  // namespace longhaul
