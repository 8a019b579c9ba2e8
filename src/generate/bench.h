// Throughput measurement in the manner of llama.cpp's llama-bench, so that the two
// engines can be compared test for test:
//   pp<P>      prompt processing: P seeded random token ids fed in one feed()
//              (steps of min(P, n_batch) tokens, logits of the last token only);
//   tg<N>      text generation: N tokens fed one step at a time, each step
//              computing the logits of its token (no sampling: the ids are
//              random, as llama-bench does, so the figure is the forward pass alone);
//   ...@d<D>   either of them after D tokens are already in the cache.
// Each test runs n_warmup unmeasured times, then n_reps measured times; the
// result is the mean and sample standard deviation of the per-repetition
// tokens per second (llama-bench's avg_ts / stddev_ts). The depth prefill is done
// once per test and each repetition rewinds the cache to it, which leaves the
// cache exactly as a fresh prefill would (the cells of positions < D are kept).
//
// Thread-safety: run_bench() creates its own Session; several may run on one
// shared Model from different threads, though timings would then disturb each other.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "generate/generator.h"
#include "kv/kv_policy.h"
#include "model/model.h"
#include "model/sparse_prefill.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {

struct BenchTest {
  int32_t n_prompt = 0;  // tokens of a prompt-processing test (0 = this is a generation test)
  int32_t n_gen = 0;     // tokens of a generation test (0 = this is a prompt test); exactly one of the two is > 0
  int32_t n_depth = 0;   // tokens in the cache before the measured part (0 = empty cache)

  bool is_prompt() const { return n_prompt > 0; }
  // "pp512", "tg128", "tg32@d4096".
  std::string name() const;
};

// The tests of comma lists, in llama-bench's order: for each depth, the prompt
// tests then the generation tests. Zeros in n_prompt / n_gen are skipped
// (llama-bench's "-p 0" turns prompt tests off).
std::vector<BenchTest> expand_bench_tests(const std::vector<int32_t>& n_prompt, const std::vector<int32_t>& n_gen,
                                          const std::vector<int32_t>& n_depth);

struct BenchOptions {
  int32_t n_threads = 0;   // worker threads including the caller (0 = all cores this process may use)
  int32_t n_reps = 5;      // measured repetitions (>= 1)
  int32_t n_warmup = 1;    // unmeasured repetitions before them (0 = none)
  int32_t n_batch = 512;   // most prompt tokens per forward step; a pp test uses min(n_prompt, n_batch)
  uint32_t seed = 1234;    // seeds the random token ids (same seed, same ids)
  std::string kv_policy = "full";  // KV policy of every test's session (kv/policy_registry.h)
  std::shared_ptr<const kv::HeadProfile> head_profile;  // the model's, for duo (null = none given)
  model::PrefillAttentionOptions prefill_attn;  // how prompt chunks attend (--prefill-attn); default dense
  model::SublayerSkip skip;  // sub-layers every step leaves out (--prune-sublayers); empty = the whole model
};

struct BenchResult {
  BenchTest test;
  int32_t n_threads = 0;     // threads actually used
  int32_t n_ctx = 0;         // context size the session was created with
  std::string kv_policy;     // the session's policy and cell storage, e.g. "streaming(sink=4, window=1020)"
  std::string prefill_attn;  // the session's prefill attention, e.g. "dense", "minference(budget=2048, ...)"
  std::vector<double> tokens_per_s_samples;  // [n_reps] one per measured repetition
  double tokens_per_s = 0;   // mean of the samples
  double stddev = 0;         // sample standard deviation (0 for a single repetition)
  // Tokens per second of process CPU time, one per repetition. With one thread on
  // an idle machine it equals the wall-clock figure; on a machine shared with
  // other jobs it leaves out the time this process waited for a core, so
  // single-thread results stay comparable under load. Meaningless with several
  // threads (waiting workers spin and count as CPU time).
  std::vector<double> cpu_tokens_per_s_samples;  // [n_reps]
  // Bytes of weight matrices read per token: the model's per-step bytes times
  // the steps the test takes, divided by its tokens (a pp512 step reads the
  // weights once for 512 tokens).
  int64_t weight_bytes_per_token = 0;
  // Bytes of keys and values one token's attention reads, averaged over the
  // test's tokens (token i attends to every cell before it and itself, capped at
  // the window on sliding-window layers).
  int64_t kv_bytes_per_token = 0;
  int64_t kv_cache_bytes = 0;  // K/V bytes the cache held at the end of the last repetition
  // tg tests: the share of the cached key cells a generated token's attention read, over layers and KV heads
  // (Engine::keys_read): 1 for full attention, below for a policy that selects pages or bounds heads by a window
  // (Gemma 3's local layers read their window); -1 for pp tests.
  double keys_read = -1;
  int64_t peak_rss_bytes = 0;  // of the whole process after this test (VmHWM), 0 if unknown

  // Bytes read per second implied by the throughput: (weights + KV) per token times tokens per second.
  double bytes_per_s() const {
    return static_cast<double>(weight_bytes_per_token + kv_bytes_per_token) * tokens_per_s;
  }
};

// Called with what is being done ("depth prefill", "warm-up", "rep 2/5") and a
// count of tokens done / total for it.
using BenchProgressFn = std::function<void(std::string_view stage, int64_t done, int64_t total)>;

// Runs one test on a fresh session. Fails for a malformed test (both or neither
// of n_prompt / n_gen set, negative counts), bad options, or a forward error.
Result<BenchResult> run_bench(const model::Model& model, const BenchTest& test, const BenchOptions& options,
                              const BenchProgressFn& progress = nullptr);

// Speculative decoding, measured as a user sees it (the tg tests above feed random ids, which no draft source can
// guess): n_gen tokens decoded greedily after a real prompt, past any end of generation, each repetition on a fresh
// session with a fresh draft source (Token Recycling's matrix and ADED's table learn within a run, as they do in
// one `longhaul run`). The figure is decode tokens per second (Timings::generate_tokens_per_s: from the first
// generated token, which the prefill yields, to the last): speculation changes it, not the prefill. Run once with
// a null draft source for plain decoding, in the same process, to give a draft source's speed-up.
struct SpeculativeBenchResult {
  int32_t n_threads = 0;
  std::string kv_policy;                     // the session's, as BenchResult::kv_policy
  std::vector<double> tokens_per_s_samples;  // [n_reps] decode tokens per second, one per measured repetition
  double tokens_per_s = 0;                   // mean of the samples
  double stddev = 0;                         // sample standard deviation (0 for a single repetition)
  // Generated tokens per second from the prompt's start to the last token, prefill included (what a user waits
  // for), one per measured repetition, and their mean.
  std::vector<double> end_to_end_samples;
  double end_to_end_tokens_per_s = 0;
  SpeculativeStats stats;                    // of the last measured repetition (plain decoding: its steps only)
  std::vector<int32_t> tokens;               // the last measured repetition's output
};

// A repetition's draft source, made for its session (the pool a draft model shares, the context of its
// sequences); a null source is plain decoding.
using DraftSourceFactory =
    std::function<Result<std::shared_ptr<speculative::DraftSource>>(ThreadPool& pool, int32_t n_ctx)>;

// Runs one speculative test. `decode` carries the draft limits (draft_max, draft_min, draft_adaptive); its
// n_predict, ignore_eos and draft are set here. Fails for an empty prompt, n_gen < 2 (one token is the prefill's),
// bad options, or a forward or draft error.
Result<SpeculativeBenchResult> run_speculative_bench(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                                     std::span<const int32_t> prompt, int32_t n_gen,
                                                     const BenchOptions& options, const GenerateOptions& decode,
                                                     const DraftSourceFactory& make_draft,
                                                     const BenchProgressFn& progress = nullptr);

// The mean and sample standard deviation (0 for fewer than two) of a test's per-repetition figures.
struct SampleSummary {
  double mean = 0;
  double stddev = 0;
};
SampleSummary summarize_samples(const std::vector<double>& samples);

// Mean KV bytes per token attended over a run that grows the cache from
// n_cells_before to n_cells_after cells, as BenchResult::kv_bytes_per_token describes.
int64_t kv_bytes_attended_per_token(const model::ModelConfig& config, int64_t bytes_per_cell, int64_t n_cells_before,
                                    int64_t n_cells_after);

struct MachineInfo {
  std::string cpu;  // "model name" of /proc/cpuinfo ("unknown" when absent)
  std::string isa;  // the kernels' ISA in use: generic, avx2, avx512
  int32_t n_cores = 0;  // cores this process may run on
};
MachineInfo machine_info();

}  // namespace longhaul::generate
