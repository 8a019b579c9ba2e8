// The server's scheduler: ONE engine thread drives one generate::Engine through the one generation loop,
// generate::Generator, open-ended (Generator::step); HTTP threads only submit requests, read their events and
// cancel them. Continuous batching, decode-first chunked prefill (SARATHI, Agrawal et al., 2023) and admission by
// KV memory are the Generator's; the scheduler adds the queue limit, the thread and the events.
//
// Thread-safety: submit, cancel, stats and stop may be called from any thread. A Channel is written by the engine
// thread and read by the one HTTP thread that owns the request.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "generate/engine.h"
#include "generate/generator.h"
#include "generate/prefix_cache.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::server {

// Something that happened to one choice of a request: a token (with its text and log-probability), or its end.
struct ChoiceEvent {
  int32_t choice = 0;
  int32_t token = -1;  // -1 for the end, or for text flushed at the end (an incomplete character)
  std::string text;
  std::optional<generate::TokenLogprob> logprob;
  std::optional<Result<generate::GenerateResult>> end;  // set on the choice's last event
  double at = 0.0;                                      // now_seconds() when it happened
};

// The events of one HTTP request's choices, in order.
class Channel {
 public:
  void push(ChoiceEvent event);
  // The next event, waiting up to `seconds`; false on timeout.
  bool pop(ChoiceEvent& event, double seconds);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<ChoiceEvent> events_;
};

struct SchedulerOptions {
  int32_t max_parallel = 4;    // sequences generating at once (--parallel)
  int32_t max_queue = 64;      // requests waiting beyond them; more are refused (429) (--max-queue)
  int64_t kv_budget_bytes = 0;  // KV memory the running requests may reserve (0 = no limit beyond max_parallel)
  // Requests start from cached prompt prefixes (generate/prefix_cache.h). Cached blocks are dropped, least
  // recently used first, when the KV memory in use passes kv_budget_bytes or a request needs a sequence.
  bool prefix_cache = true;
};

// A snapshot for /metrics.
struct SchedulerStats {
  int32_t running = 0;        // sequences live in the loop
  int32_t queued = 0;         // submitted, not yet started
  int64_t kv_used_bytes = 0;  // K/V bytes held by live cells
  int64_t kv_allocated_bytes = 0;
  int64_t kv_capacity_bytes = 0;  // the admission budget
  int64_t n_steps = 0;            // engine steps so far
  int64_t n_step_tokens = 0;      // tokens those steps carried
  int32_t last_step_tokens = 0;
};

class Scheduler {
 public:
  Scheduler(generate::Engine& engine, const tokenizer::Tokenizer& tokenizer, const SchedulerOptions& options);
  ~Scheduler();  // stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  enum class Admission { kAccepted, kQueueFull, kStopping };
  // Submits the choices of one HTTP request together (choice i is requests[i]), their events going to `channel`;
  // `indices` gets their loop indices (for cancel). All or none: a full queue refuses the whole request. A request's
  // fork_of, when set, is the position of an earlier one in `requests` (another choice of the same prompt).
  Admission submit(std::vector<generate::Request> requests, const std::shared_ptr<Channel>& channel,
                   std::vector<size_t>& indices);
  // Ends the requests at the next step (a client that went away); their pages are freed then.
  void cancel(std::span<const size_t> indices);
  SchedulerStats stats() const;
  // Cancels every request, waits for the engine thread to end them and stops it. Idempotent.
  void stop();

 private:
  void loop();

  generate::Engine& engine_;
  // Before generator_, which points to it: destroyed after it. Null without a prefix cache. Engine thread only.
  std::unique_ptr<generate::PrefixCache> prefix_cache_;
  generate::Generator generator_;
  SchedulerOptions options_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::set<size_t> in_flight_;  // submitted, not ended (guarded by mutex_)
  // Copied out by the engine thread after each step.
  std::atomic<int32_t> running_{0}, queued_{0}, last_step_tokens_{0};
  std::atomic<int64_t> kv_used_{0}, kv_allocated_{0}, n_steps_{0}, n_step_tokens_{0};
};

}  // namespace longhaul::server
