// A fixed pool of worker threads for data-parallel loops over one forward step.
//
// Thread-safety: the dispatching calls (run_on_all, parallel_for, for_each_chunk) are made from one thread at a time
// (the thread that owns the pool); workers only run the function those calls hand them. Workers spin briefly
// before sleeping so that the many short loops of a decode step do not pay a futex wake-up each.
//
// Two kinds of job:
//   run_on_all      every thread runs fn(i_thread) exactly once; the call waits for all of them.
//   for_each_chunk  chunks are claimed from a shared counter by whichever threads are running; the call returns as
//   parallel_for    soon as every chunk is done. A worker that the OS has descheduled (the machine is shared) costs
//                   only the chunk it holds: the calling thread takes the rest and does not wait for a worker that
//                   has not started. Use these for all work that does not need one call per thread.
// The callables are passed by reference and type-erased through a function pointer: no std::function, no
// allocation per call.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
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

  // Runs fn(i_chunk, i_thread) once for every i_chunk in [0, n_chunks), on whichever threads claim the chunks;
  // i_thread (in [0, n_threads)) names the thread running the call, for per-thread scratch. Chunks are claimed in
  // increasing order. Waits until all chunks are done.
  template <class Fn>
  void for_each_chunk(int64_t n_chunks, Fn&& fn) {
    using F = std::remove_reference_t<Fn>;
    if (n_chunks <= 0) return;
    if (n_threads_ == 1 || n_chunks == 1) {
      for (int64_t c = 0; c < n_chunks; ++c) fn(c, 0);
      return;
    }
    share_chunks(n_chunks, [](void* ctx, int64_t c, int i_thread) { (*static_cast<F*>(ctx))(c, i_thread); },
                 const_cast<void*>(static_cast<const void*>(&fn)));
  }

  // Splits [0, n) into chunks of `grain` indices (the last may be shorter) and runs fn(begin, end) on each, on
  // whichever threads claim them; waits for all. A grain below 1 counts as 1.
  template <class Fn>
  void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    const int64_t n_chunks = (n + grain - 1) / grain;
    for_each_chunk(n_chunks, [&](int64_t c, int) { fn(c * grain, std::min(n, (c + 1) * grain)); });
  }

 private:
  using ChunkFn = void (*)(void* ctx, int64_t i_chunk, int i_thread);

  // The job workers pick up. Written by the owning thread before the generation bump that publishes it.
  struct Job {
    ChunkFn chunk_fn = nullptr;                    // shared-chunk job
    void* ctx = nullptr;
    int64_t n_chunks = 0;
    const std::function<void(int)>* each = nullptr;  // run_on_all job
  };

  void share_chunks(int64_t n_chunks, ChunkFn fn, void* ctx);
  void publish();
  void run_chunks(int i_thread);
  void worker_loop(int i_thread);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  Job job_;
  // Bit 0: the current job is open for workers to join; bits 1..: its generation, bumped once per job.
  alignas(64) std::atomic<uint64_t> state_{0};
  alignas(64) std::atomic<int64_t> next_chunk_{0};  // next unclaimed chunk of a shared-chunk job
  alignas(64) std::atomic<int> n_active_{0};        // workers inside the current job
  alignas(64) std::atomic<int> n_sleeping_{0};      // workers waiting on wake_
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// One poll of a spin-wait: tells the core (and a sibling hyper-thread) that this thread is only waiting.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until done() is true: polls, then yields the core after kSpinWaitPollsBeforeYield polls, since on a machine
// shared with other processes the thread waited for may be the one that needs the core. For the short waits inside
// a job (the other threads' last chunks), where sleeping would cost more than the wait.
constexpr int kSpinWaitPollsBeforeYield = 2000;
template <class Done>
void spin_wait(Done&& done) {
  for (int poll = 0; !done(); ++poll) {
    if (poll >= kSpinWaitPollsBeforeYield) {
      std::this_thread::yield();
    } else {
      cpu_relax();
    }
  }
}

// Threads to use when the user does not say: the cores this process may run on.
int default_thread_count();

}  // namespace longhaul
