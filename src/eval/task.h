// Long-context evaluation tasks (passkey retrieval, perplexity, ...) run through a
// KV policy. A task turns an EvalSpec into rows of an EvalRow table; the report
// (report.h) prints the rows as CSV and Markdown.
//
// Adding a task: one file tasks/<name>.cc defining a factory, plus one line in
// task_registry.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "generate/session.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

// One row of the results: a (policy, length, depth) point. Optional fields are
// printed empty where the task has no such figure.
struct EvalRow {
  std::string policy;                 // the policy's describe(), e.g. "streaming(sink=4, window=1020)"
  int64_t length = 0;                 // tokens: prompt length (passkey) or end of the position bucket (ppl)
  std::optional<double> depth;        // passkey, niah: where the key (needles) sits, 0 = start, 1 = end
  std::optional<double> accuracy;     // passkey: fraction answered correctly; niah: mean fraction of values recalled
  std::optional<double> ppl;          // ppl: perplexity of the bucket's tokens
  int64_t kv_bytes = 0;               // KV bytes in use at the end of the point
  // Share of the cached key cells a decode token's attention read (over layers and KV heads; Engine::keys_read):
  // 1 for full attention, below for a policy that selects pages or bounds heads by a window.
  std::optional<double> keys_read;
  int64_t peak_rss_bytes = 0;         // peak resident set while this point ran (the CLI's PeakRssMeter; else the process's so far)
  std::optional<double> prefill_tps;  // tokens/s of multi-token steps
  std::optional<double> decode_tps;   // tokens/s of one-token steps
};

// The grid a task evaluates, and its knobs.
struct EvalSpec {
  std::vector<int32_t> lengths = {1024, 2048, 4096};    // tokens; ppl: bucket ends of one streamed pass
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};  // passkey, niah
  int32_t samples = 1;         // passkey, niah: keys tried per (length, depth)
  uint64_t seed = 1234;        // passkey, niah: seeds the keys
  std::string text;            // ppl: the text to score (see default_text.h)
  int32_t chunk = 64;          // ppl: tokens per step; 1 = token by token (exact for every policy)
  int32_t max_new_tokens = 8;  // passkey: greedy answer length; niah: at least this (raised per variant)
};

// Everything a task run needs. `session` names the policy; the task creates its sessions.
struct TaskContext {
  const model::Model& model;
  const tokenizer::Tokenizer& tokenizer;
  generate::SessionOptions session;
  const EvalSpec& spec;
  std::function<void(const std::string&)> progress;  // one status line (may be null)
  std::function<void(const EvalRow&)> emit;          // each row as soon as it is complete
};

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  // Whether the task can build every point of `spec` as it says: an error naming the first length (or other
  // value) it cannot honour, such as a prompt length shorter than the task's fixed text. Called once before any
  // run, so that a sweep never reports a length it did not use; cheap (tokenizes, runs no model).
  virtual Status check(const tokenizer::Tokenizer& tokenizer, const EvalSpec& spec) {
    (void)tokenizer;
    (void)spec;
    return Status::ok();
  }
  // Runs the spec's grid for the context's policy, emitting one row per point.
  virtual Status run(const TaskContext& context) = 0;
};

// Builds the task called `name`; unknown names fail, listing the known ones.
Result<std::unique_ptr<Task>> make_task(const std::string& name);
std::vector<std::string> task_names();

// The factories, one per task file.
std::unique_ptr<Task> make_passkey_task();
std::unique_ptr<Task> make_ppl_task();
// niah variants (tasks/niah.cc), one factory per registered name.
std::unique_ptr<Task> make_niah_task();
std::unique_ptr<Task> make_niah_uuid_task();
std::unique_ptr<Task> make_niah_multikey_task();
std::unique_ptr<Task> make_niah_multivalue_task();
std::unique_ptr<Task> make_niah_multiquery_task();

}  // namespace longhaul::eval
