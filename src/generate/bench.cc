#include "generate/bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>

#include "base/sys_info.h"
#include "base/thread_pool.h"
#include "generate/session.h"
#include "kernels/quant.h"

namespace longhaul::generate {

std::string BenchTest::name() const {
  std::string s = is_prompt() ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen);
  if (n_depth > 0) s += "@d" + std::to_string(n_depth);
  return s;
}

std::vector<BenchTest> expand_bench_tests(const std::vector<int32_t>& n_prompt, const std::vector<int32_t>& n_gen,
                                          const std::vector<int32_t>& n_depth) {
  std::vector<BenchTest> tests;
  const std::vector<int32_t> depths = n_depth.empty() ? std::vector<int32_t>{0} : n_depth;
  for (int32_t d : depths) {
    for (int32_t p : n_prompt)
      if (p != 0) tests.push_back({p, 0, d});
    for (int32_t n : n_gen)
      if (n != 0) tests.push_back({0, n, d});
  }
  return tests;
}

SampleSummary summarize_samples(const std::vector<double>& samples) {
  SampleSummary out;
  if (samples.empty()) return out;
  double sum = 0;
  for (double s : samples) sum += s;
  out.mean = sum / static_cast<double>(samples.size());
  if (samples.size() > 1) {
    double sq = 0;
    for (double s : samples) sq += (s - out.mean) * (s - out.mean);
    out.stddev = std::sqrt(sq / static_cast<double>(samples.size() - 1));
  }
  return out;
}

int64_t kv_bytes_attended_per_token(const model::ModelConfig& config, int64_t bytes_per_cell, int64_t n_cells_before,
                                    int64_t n_cells_after) {
  if (n_cells_after <= n_cells_before || config.n_layer <= 0) return 0;
  // Every layer's cell has the same size (KvShape is uniform over layers).
  const double layer_cell_bytes = static_cast<double>(bytes_per_cell) / config.n_layer;
  double total = 0;
  for (int64_t cells = n_cells_before + 1; cells <= n_cells_after; ++cells) {
    int64_t layer_cells = 0;  // cells attended, summed over layers
    for (int32_t il = 0; il < config.n_layer; ++il)
      layer_cells += config.is_local(il) && config.sliding_window > 0
                         ? std::min<int64_t>(cells, config.sliding_window)
                         : cells;
    total += static_cast<double>(layer_cells) * layer_cell_bytes;
  }
  return static_cast<int64_t>(std::llround(total / static_cast<double>(n_cells_after - n_cells_before)));
}

namespace {

Status validate(const BenchTest& test, const BenchOptions& options) {
  if (test.n_prompt < 0 || test.n_gen < 0 || test.n_depth < 0)
    return Status::error("bench test " + test.name() + " has a negative token count");
  if ((test.n_prompt > 0) == (test.n_gen > 0))
    return Status::error("a bench test is either prompt processing or generation: got n_prompt " +
                         std::to_string(test.n_prompt) + " and n_gen " + std::to_string(test.n_gen));
  if (options.n_reps < 1) return Status::error("repetitions " + std::to_string(options.n_reps) + " must be >= 1");
  if (options.n_warmup < 0) return Status::error("warm-up runs " + std::to_string(options.n_warmup) + " must be >= 0");
  if (options.n_batch < 1) return Status::error("batch size " + std::to_string(options.n_batch) + " must be >= 1");
  return Status::ok();
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::vector<int32_t> random_tokens(std::mt19937& rng, int32_t n_vocab, int64_t n) {
  std::uniform_int_distribution<int32_t> dist(0, n_vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = dist(rng);
  return ids;
}

}  // namespace

Result<BenchResult> run_bench(const model::Model& model, const BenchTest& test, const BenchOptions& options,
                              const BenchProgressFn& progress) {
  LH_RETURN_IF_ERROR(validate(test, options));
  const model::ModelConfig& config = model.config();
  const int32_t n_measured = test.is_prompt() ? test.n_prompt : test.n_gen;

  // A few spare cells beyond what the test fills; the cache grows page by page,
  // so the context size costs no memory until it is used.
  constexpr int32_t kContextSlack = 16;
  SessionOptions so;
  so.n_ctx = test.n_depth + n_measured + kContextSlack;
  so.n_batch = test.is_prompt() ? std::min(test.n_prompt, options.n_batch) : options.n_batch;
  so.n_threads = options.n_threads;
  so.skip = options.skip;
  so.kv_policy = options.kv_policy;
  so.head_profile = options.head_profile;
  so.prefill_attn = options.prefill_attn;
  LH_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::create(model, so));

  BenchResult result;
  result.test = test;
  result.n_threads = session->n_threads();
  result.n_ctx = session->n_ctx();
  result.kv_policy = session->describe_kv();
  result.prefill_attn = model::describe_prefill_attention(options.prefill_attn);

  std::mt19937 rng(options.seed);
  if (test.n_depth > 0) {
    const std::vector<int32_t> depth_ids = random_tokens(rng, config.n_vocab, test.n_depth);
    ProgressFn depth_progress = nullptr;
    if (progress) depth_progress = [&progress](int64_t done, int64_t total) {
      progress("depth prefill", done, total);
      return true;
    };
    LH_RETURN_IF_ERROR(session->feed(depth_ids, depth_progress));
  }

  const int64_t bytes_per_cell = session->cache().bytes_per_cell();
  int64_t cells_before = 0;
  int64_t cells_after = 0;
  for (int32_t rep = -options.n_warmup; rep < options.n_reps; ++rep) {
    const std::string stage =
        rep < 0 ? std::string("warm-up") : "rep " + std::to_string(rep + 1) + "/" + std::to_string(options.n_reps);
    if (progress) progress(stage, 0, n_measured);
    session->truncate(test.n_depth);
    const std::vector<int32_t> ids = random_tokens(rng, config.n_vocab, n_measured);
    cells_before = session->n_cells();
    const model::AttentionPlan::KeysRead keys_before = session->keys_read();

    const double t0 = now_seconds();
    const double cpu0 = process_cpu_seconds();
    if (test.is_prompt()) {
      LH_RETURN_IF_ERROR(session->feed(ids));
    } else {
      for (int32_t id : ids) LH_RETURN_IF_ERROR(session->feed(std::span<const int32_t>(&id, 1)));
    }
    const double seconds = now_seconds() - t0;
    const double cpu_seconds = process_cpu_seconds() - cpu0;

    cells_after = session->n_cells();
    const model::AttentionPlan::KeysRead keys_after = session->keys_read();
    if (!test.is_prompt() && keys_after.held > keys_before.held)
      result.keys_read = static_cast<double>(keys_after.read - keys_before.read) /
                         static_cast<double>(keys_after.held - keys_before.held);
    if (progress) progress(stage, n_measured, n_measured);
    if (rep >= 0) {
      result.tokens_per_s_samples.push_back(n_measured / std::max(seconds, 1e-12));
      result.cpu_tokens_per_s_samples.push_back(n_measured / std::max(cpu_seconds, 1e-12));
    }
  }

  const SampleSummary summary = summarize_samples(result.tokens_per_s_samples);
  result.tokens_per_s = summary.mean;
  result.stddev = summary.stddev;

  const int64_t n_steps = test.is_prompt() ? (n_measured + so.n_batch - 1) / so.n_batch : n_measured;
  result.weight_bytes_per_token = model.weight_bytes_per_token(options.skip) * n_steps / n_measured;
  result.kv_bytes_per_token = kv_bytes_attended_per_token(config, bytes_per_cell, cells_before, cells_after);
  result.kv_cache_bytes = session->cache().used_bytes();
  result.peak_rss_bytes = peak_rss_bytes();
  return result;
}

MachineInfo machine_info() {
  MachineInfo info;
  info.cpu = "unknown";
  if (std::FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[512];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::strncmp(line, "model name", 10) != 0) continue;
      const char* colon = std::strchr(line, ':');
      if (colon == nullptr) continue;
      std::string name(colon + 1);
      const size_t first = name.find_first_not_of(" \t");
      const size_t last = name.find_last_not_of(" \t\r\n");
      if (first != std::string::npos) info.cpu = name.substr(first, last - first + 1);
      break;
    }
    std::fclose(f);
  }
  info.isa = kernels::isa_name(kernels::active_isa());
  info.n_cores = default_thread_count();
  return info;
}

}  // namespace longhaul::generate
