// longhaul_bandwidth_probe: how fast this machine streams memory into the cores.
//
// Token generation reads every weight once per token, so its ceiling is
// (bytes read per token) / (read bandwidth). This probe measures that bandwidth
// the way a decode step uses it: a read-only pass over a buffer, split into one
// contiguous slice per thread, summed so that the loads cannot be dropped. The
// default buffer (1 GiB) is larger than any last-level cache we run on; pass a
// smaller size (e.g. the size of a model's weights) to see the cache-resident rate.
//
//   longhaul_bandwidth_probe [--sizes-mib 1024,64] [--threads 1,2] [--passes 7] [--json]
//
// Prints, per (size, threads), the best and median GB/s (1 GB = 1e9 bytes) over the passes.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Sum of 64-bit words with eight independent accumulators, so that the adds never
// wait on each other and the loop is bound by the loads alone. target_clones lets
// the compiler emit AVX-512 / AVX2 versions picked at run time, like the kernels' dispatch.
__attribute__((target_clones("avx512f", "avx2", "default"))) uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] += p[i + static_cast<size_t>(j)];
  for (; i < n; ++i) a[0] += p[i];
  uint64_t s = 0;
  for (uint64_t v : a) s += v;
  return s;
}

std::vector<int> parse_list(const char* text) {
  std::vector<int> out;
  std::string s(text);
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(std::atoi(item.c_str()));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

struct Measurement {
  int64_t size_bytes = 0;
  int threads = 0;
  double best_gb_per_s = 0;
  double median_gb_per_s = 0;
};

// Times `passes` read passes over `words` (after one unmeasured pass) with n_threads threads.
// A pass sweeps a small buffer several times so that it lasts long enough (>= 512 MiB read)
// for the thread start-up not to count.
Measurement measure(const uint64_t* words, size_t n_words, int n_threads, int passes) {
  const size_t sweeps = std::max<size_t>(1, (size_t{512} << 20) / (n_words * sizeof(uint64_t)));
  std::vector<double> rates;
  std::atomic<uint64_t> sink{0};
  for (int pass = -1; pass < passes; ++pass) {
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> ends(static_cast<size_t>(n_threads), 0.0);
    const size_t chunk = (n_words + static_cast<size_t>(n_threads) - 1) / static_cast<size_t>(n_threads);
    for (int t = 0; t < n_threads; ++t) {
      threads.emplace_back([&, t] {
        const size_t begin = std::min(n_words, chunk * static_cast<size_t>(t));
        const size_t end = std::min(n_words, begin + chunk);
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) {
        }
        uint64_t sum = 0;
        for (size_t s = 0; s < sweeps; ++s) sum += sum_words(words + begin, end - begin);
        sink.fetch_add(sum, std::memory_order_relaxed);
        ends[static_cast<size_t>(t)] = now_seconds();
      });
    }
    while (ready.load() < n_threads) {
    }
    const double t0 = now_seconds();
    go.store(true, std::memory_order_release);
    for (auto& th : threads) th.join();
    const double seconds = *std::max_element(ends.begin(), ends.end()) - t0;
    if (pass >= 0) rates.push_back(static_cast<double>(sweeps * n_words * sizeof(uint64_t)) / seconds / 1e9);
  }
  if (sink.load() == 42) std::fprintf(stderr, " ");  // keeps the sums observable
  std::sort(rates.begin(), rates.end());
  Measurement m;
  m.size_bytes = static_cast<int64_t>(n_words * sizeof(uint64_t));
  m.threads = n_threads;
  m.best_gb_per_s = rates.back();
  m.median_gb_per_s = rates[rates.size() / 2];
  return m;
}

void usage() {
  std::fprintf(stderr,
               "usage: longhaul_bandwidth_probe [--sizes-mib 1024[,64...]] [--threads 1,2] [--passes 7] [--json]\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes_mib{1024};
  std::vector<int> thread_counts{1, 2};
  int passes = 7;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--sizes-mib" && has_value) {
      sizes_mib = parse_list(argv[++i]);
    } else if (arg == "--threads" && has_value) {
      thread_counts = parse_list(argv[++i]);
    } else if (arg == "--passes" && has_value) {
      passes = std::atoi(argv[++i]);
    } else if (arg == "--json") {
      json = true;
    } else {
      usage();
      return 2;
    }
  }
  if (passes < 1 || sizes_mib.empty() || thread_counts.empty()) {
    usage();
    return 2;
  }
  for (int v : sizes_mib)
    if (v < 1) return usage(), 2;
  for (int v : thread_counts)
    if (v < 1 || v > 1024) return usage(), 2;

  std::vector<Measurement> results;
  for (int mib : sizes_mib) {
    const size_t n_words = static_cast<size_t>(mib) * (1u << 20) / sizeof(uint64_t);
    std::unique_ptr<uint64_t[]> buffer(new uint64_t[n_words]);  // [n_words]
    // Writing every word faults the pages in before timing and gives the sums real data.
    for (size_t i = 0; i < n_words; ++i) buffer[i] = i;
    for (int t : thread_counts) {
      results.push_back(measure(buffer.get(), n_words, t, passes));
      const Measurement& m = results.back();
      if (!json)
        std::printf("read %5d MiB  threads %2d  best %7.2f GB/s  median %7.2f GB/s\n", mib, t, m.best_gb_per_s,
                    m.median_gb_per_s);
    }
  }
  if (json) {
    std::printf("{\"results\": [");
    for (size_t i = 0; i < results.size(); ++i) {
      const Measurement& m = results[i];
      std::printf("%s{\"size_bytes\": %lld, \"threads\": %d, \"best_gb_per_s\": %.3f, \"median_gb_per_s\": %.3f}",
                  i == 0 ? "" : ", ", static_cast<long long>(m.size_bytes), m.threads, m.best_gb_per_s,
                  m.median_gb_per_s);
    }
    std::printf("]}\n");
  }
  return 0;
}
