#include "server/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "base/sys_info.h"

namespace longhaul::server {

void Channel::push(ChoiceEvent event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_one();
}

bool Channel::pop(ChoiceEvent& event, double seconds) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!ready_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return !events_.empty(); })) return false;
  event = std::move(events_.front());
  events_.pop_front();
  return true;
}

Scheduler::Scheduler(generate::Engine& engine, const tokenizer::Tokenizer& tokenizer, const SchedulerOptions& options)
    : engine_(engine),
      prefix_cache_(options.prefix_cache ? std::make_unique<generate::PrefixCache>(engine) : nullptr),
      generator_(engine, tokenizer, options.max_parallel),
      options_(options) {
  generator_.set_kv_budget(options.kv_budget_bytes);
  generator_.set_prefix_cache(prefix_cache_.get());
  // Results are handed to each request's on_end; the loop keeps none, so memory stays flat.
  generator_.set_on_done([](size_t, const Result<generate::GenerateResult>&) {});
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

Scheduler::Admission Scheduler::submit(std::vector<generate::Request> requests, const std::shared_ptr<Channel>& channel,
                                       std::vector<size_t>& indices) {
  indices.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return Admission::kStopping;
  if (in_flight_.size() + requests.size() > static_cast<size_t>(options_.max_parallel + options_.max_queue))
    return Admission::kQueueFull;
  for (size_t i = 0; i < requests.size(); ++i) {
    generate::Request& req = requests[i];
    req.use_prefix_cache = prefix_cache_ != nullptr;
    const auto choice = static_cast<int32_t>(i);
    req.on_token = [channel, choice](const generate::TokenEvent& t) {
      ChoiceEvent e;
      e.choice = choice;
      e.token = t.token;
      e.text = std::string(t.text);
      if (t.logprob != nullptr) e.logprob = *t.logprob;
      e.at = now_seconds();
      channel->push(std::move(e));
      return true;
    };
    // Runs on the engine thread, which takes mutex_ here: submit holds mutex_ only while it calls
    // Generator::submit, which never waits for the engine thread.
    auto index = std::make_shared<size_t>(0);
    req.on_end = [this, channel, choice, index](const Result<generate::GenerateResult>& result) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        in_flight_.erase(*index);
      }
      ChoiceEvent e;
      e.choice = choice;
      e.end = result;
      e.at = now_seconds();
      channel->push(std::move(e));
    };
    // The index is known only after submit; the engine thread cannot end the request before this thread releases
    // mutex_ (on_end takes it), so it reads the index set below.
    // fork_of names an earlier choice of this submission; the loop wants its index.
    if (req.fork_of >= 0) {
      LH_CHECK(static_cast<size_t>(req.fork_of) < i);
      req.fork_of = static_cast<int64_t>(indices[static_cast<size_t>(req.fork_of)]);
    }
    *index = generator_.submit(std::move(req));
    in_flight_.insert(*index);
    indices.push_back(*index);
  }
  return Admission::kAccepted;
}

void Scheduler::cancel(std::span<const size_t> indices) {
  for (size_t i : indices) generator_.cancel(i);
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.running = running_;
  s.queued = queued_;
  s.kv_used_bytes = kv_used_;
  s.kv_allocated_bytes = kv_allocated_;
  s.kv_capacity_bytes = options_.kv_budget_bytes;
  s.n_steps = n_steps_;
  s.n_step_tokens = n_step_tokens_;
  s.last_step_tokens = last_step_tokens_;
  {
    // Submitted but not yet taken by the loop count as queued too.
    std::lock_guard<std::mutex> lock(mutex_);
    s.queued = std::max<int32_t>(s.queued, static_cast<int32_t>(in_flight_.size()) - s.running);
  }
  return s;
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_.exchange(true)) {
      // Already stopping: only the first caller joins.
      return;
    }
    for (size_t i : in_flight_) generator_.cancel(i);
  }
  generator_.wake();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::loop() {
  for (;;) {
    const bool work = generator_.wait_for_work(0.25);
    if (!work) {
      if (stopping_) break;
      continue;
    }
    if (Status st = generator_.step(); !st) std::fprintf(stderr, "longhaul serve: step failed: %s\n", st.message().c_str());
    // Cached prefixes give way when the KV memory in use passes the admission budget.
    if (prefix_cache_ != nullptr && options_.kv_budget_bytes > 0) prefix_cache_->trim(options_.kv_budget_bytes);
    running_ = generator_.n_live();
    queued_ = generator_.n_waiting();
    last_step_tokens_ = generator_.last_step_tokens();
    if (generator_.last_step_tokens() > 0) {
      ++n_steps_;
      n_step_tokens_ += generator_.last_step_tokens();
    }
    kv_used_ = engine_.cache().used_bytes();
    kv_allocated_ = engine_.cache().allocated_bytes();
  }
}

}  // namespace longhaul::server
