#include "base/thread_pool.h"

#include <sched.h>

namespace longhaul {

namespace {
// A worker spins this many polls (about a millisecond) for the next job before sleeping on the condition variable.
constexpr int kSpinPolls = 20000;

constexpr uint64_t kOpen = 1;
inline uint64_t generation_of(uint64_t state) { return state >> 1; }
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.fetch_add(2);  // a new generation, closed: workers wake, see stop_ and leave
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker_loop(int i_thread) {
  uint64_t seen = 0;  // generation of the last job this worker looked at
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (int spin = 0; generation_of(s) == seen && spin < kSpinPolls; ++spin) {
      cpu_relax();
      s = state_.load(std::memory_order_acquire);
    }
    if (generation_of(s) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      n_sleeping_.fetch_add(1);
      wake_.wait(lock, [&] { return generation_of(state_.load()) != seen; });
      n_sleeping_.fetch_sub(1);
      s = state_.load();
    }
    if (stop_.load()) return;
    seen = generation_of(s);
    if ((s & kOpen) == 0) continue;  // the owner finished that job without us
    // Join, then check the job is still the open one: either the owner sees us in n_active_ before it returns, or
    // we see that it closed the job and touch nothing of it (sequentially consistent order of the two atomics).
    n_active_.fetch_add(1);
    if (state_.load() != s) {
      n_active_.fetch_sub(1);
      continue;
    }
    if (job_.each != nullptr) {
      (*job_.each)(i_thread);
    } else {
      run_chunks(i_thread);
    }
    n_active_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::publish() {
  // The generation moves on and the job opens in one store; the job fields written before it are visible to a
  // worker that loads this state.
  state_.store(((generation_of(state_.load(std::memory_order_relaxed)) + 1) << 1) | kOpen);
  if (n_sleeping_.load() > 0) {
    // Taking the lock waits until a worker that counted itself as sleeping is inside wait(), so the notify reaches it.
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
  }
}

void ThreadPool::run_chunks(int i_thread) {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= job_.n_chunks) return;
    job_.chunk_fn(job_.ctx, c, i_thread);
  }
}

void ThreadPool::share_chunks(int64_t n_chunks, ChunkFn fn, void* ctx) {
  job_ = Job{fn, ctx, n_chunks, nullptr};
  next_chunk_.store(0, std::memory_order_relaxed);
  publish();
  run_chunks(0);
  // Every chunk is claimed: close the job, then wait only for the workers that joined it.
  state_.store(state_.load(std::memory_order_relaxed) & ~kOpen);
  spin_wait([&] { return n_active_.load(std::memory_order_acquire) == 0; });
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  // Every worker runs fn once; the call returns when all have counted themselves done.
  std::atomic<int> n_done{0};
  const std::function<void(int)> counted = [&](int i_thread) {
    fn(i_thread);
    n_done.fetch_add(1, std::memory_order_release);
  };
  job_ = Job{nullptr, nullptr, 0, &counted};
  publish();
  fn(0);
  spin_wait([&] { return n_done.load(std::memory_order_acquire) == n_threads_ - 1; });
  state_.store(state_.load(std::memory_order_relaxed) & ~kOpen);
  while (n_active_.load(std::memory_order_acquire) != 0) cpu_relax();
}

int default_thread_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace longhaul
