#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace longhaul {
namespace {

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int n_threads : {1, 2, 3}) {
    ThreadPool pool(n_threads);
    for (int64_t n : {0, 1, 5, 64, 1000}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      pool.parallel_for(n, 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)] += 1;
      });
      for (int h : hits) ASSERT_EQ(h, 1) << "threads=" << n_threads << " n=" << n;
    }
  }
}

TEST(ThreadPool, ManyShortJobs) {
  ThreadPool pool(2);
  std::vector<int64_t> sums(2, 0);
  for (int rep = 0; rep < 20000; ++rep) pool.run_on_all([&](int t) { sums[static_cast<size_t>(t)] += 1; });
  EXPECT_EQ(sums[0], 20000);
  EXPECT_EQ(sums[1], 20000);
}

}  // namespace
}  // namespace longhaul
