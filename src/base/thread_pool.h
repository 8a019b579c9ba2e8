// A fixed pool of worker threads for data-parallel loops over one forward step.
//
// Thread-safety: parallel_for() is called from one thread at a time (the thread
// that owns the pool); workers only run the function it hands them. Workers spin
// briefly before sleeping so that the many short loops of a decode step do not
// pay a futex wake-up each.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace longhaul {

class ThreadPool {
 public:
  // n_threads counts the calling thread: 1 = no workers, everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Runs fn(i_thread) on every thread (i_thread in [0, n_threads)) and waits for all.
  void run_on_all(const std::function<void(int)>& fn);

  // Splits [0, n) into n_threads contiguous chunks, each a multiple of `grain`
  // (except the last), and runs fn(begin, end) on each; waits for all.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int i_thread);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // bumped once per job
  std::atomic<int> n_pending_{0};        // workers still running the current job
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// Threads to use when the user does not say: the cores this process may run on.
int default_thread_count();

}  // namespace longhaul
