#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
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
        EXPECT_LE(e - b, 4);
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

// Every chunk runs exactly once, on a thread index inside the pool, and its writes are visible when the call
// returns; thousands of back-to-back jobs of different kinds exercise the join / close handshake.
TEST(ThreadPool, ForEachChunkRunsEveryChunkOnceAcrossManyJobs) {
  for (int n_threads : {2, 3}) {
    ThreadPool pool(n_threads);
    std::vector<int> hits(64);
    for (int rep = 0; rep < 5000; ++rep) {
      const int64_t n_chunks = 1 + rep % 64;
      std::fill(hits.begin(), hits.end(), 0);
      std::atomic<int> bad_thread{0};
      pool.for_each_chunk(n_chunks, [&](int64_t c, int i_thread) {
        if (i_thread < 0 || i_thread >= n_threads) bad_thread.fetch_add(1);
        hits[static_cast<size_t>(c)] += 1;
      });
      ASSERT_EQ(bad_thread.load(), 0);
      for (int64_t c = 0; c < 64; ++c) ASSERT_EQ(hits[static_cast<size_t>(c)], c < n_chunks ? 1 : 0) << "rep " << rep;
      if (rep % 7 == 0) {
        std::vector<int> each(static_cast<size_t>(n_threads), 0);
        pool.run_on_all([&](int t) { each[static_cast<size_t>(t)] += 1; });
        for (int e : each) ASSERT_EQ(e, 1);
      }
    }
  }
}

// Workers that went to sleep between jobs are woken by the next one.
TEST(ThreadPool, WakesSleepingWorkers) {
  ThreadPool pool(2);
  for (int rep = 0; rep < 3; ++rep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // longer than the spin phase
    std::vector<int> each(2, 0);
    pool.run_on_all([&](int t) { each[static_cast<size_t>(t)] += 1; });
    EXPECT_EQ(each[0], 1);
    EXPECT_EQ(each[1], 1);
  }
}

}  // namespace
}  // namespace longhaul
