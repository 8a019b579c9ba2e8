// PeakRssMeter reports the peak of the stretch since its last restart(), not the process's high-water mark: after
// a large buffer is freed, a restart forgets it. Checked both with the kernel's resettable VmHWM and with the
// sampling fallback.
#include "base/sys_info.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace longhaul {
namespace {

constexpr size_t kBuffer = size_t{96} << 20;

// Maps, touches, holds (so the sampler sees it) and unmaps kBuffer bytes: RSS rises by about kBuffer, then falls.
void touch_and_free() {
  void* p = mmap(nullptr, kBuffer, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 1, kBuffer);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  munmap(p, kBuffer);
}

void check_meter(bool force_sampling) {
  PeakRssMeter meter(force_sampling);
  const int64_t before = current_rss_bytes();
  touch_and_free();
  const int64_t with_buffer = meter.peak_bytes();
  EXPECT_GE(with_buffer, before + static_cast<int64_t>(kBuffer) * 3 / 4);
  meter.restart();
  const int64_t after_restart = meter.peak_bytes();
  EXPECT_LT(after_restart, with_buffer - static_cast<int64_t>(kBuffer) / 2);
  EXPECT_GT(after_restart, 0);
}

TEST(PeakRssMeter, RestartForgetsTheEarlierPeak) {
  if (!reset_peak_rss()) GTEST_SKIP() << "/proc/self/clear_refs is not writable here";
  check_meter(false);
}

TEST(PeakRssMeter, SamplingFallbackForgetsTheEarlierPeak) { check_meter(true); }

}  // namespace
}  // namespace longhaul
