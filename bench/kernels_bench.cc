// Kernel micro-benchmarks at the shapes of the two default models: quantized matrix products, the thread pool's
// dispatch cost, and flash attention.
//
//   longhaul_bench_kernels --benchmark_filter=Gemv
//
// Every case runs on each ISA this CPU supports, so the scalar twin is the peer measured in the same run: compare
// the avx2 / avx512 / amx rows with the generic row of the same shape. Bytes/s counts weight bytes (decode is bound by
// streaming them). Shapes are [n_out x n_in] as the forward pass uses them:
//   SmolLM2-135M (Q4_1 layers, Q8_0 tied output): q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536,
//     output 49152x576.
//   Gemma 3 270M (Q4_K_M): q 1024x640 Q5_0, k/v 256x640 Q5_0/Q8_0, o 640x1024 Q4_K, gate/up 2048x640 Q5_0,
//     down 640x2048 Q4_K/Q6_K, output 262144x640 Q8_0.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/isa_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "tensor/half.h"

namespace longhaul::kernels {
namespace {

using tensor::DType;

// Random weights with realistic scales: quantized from floats where we can quantize the type, otherwise random
// quant bytes with every block's f16 scales overwritten (their offsets are the same for every block of a type).
std::vector<uint8_t> random_weights(DType type, int64_t n_rows, int64_t n_cols) {
  const int64_t row_bytes = tensor::row_size_bytes(type, n_cols);
  std::vector<uint8_t> w(n_rows * row_bytes);
  std::mt19937 rng(1234);
  if (can_quantize(type)) {
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> row(n_cols);
    for (int64_t r = 0; r < n_rows; ++r) {
      for (auto& v : row) v = normal(rng);
      ref::quantize_row(type, row.data(), w.data() + r * row_bytes, n_cols);
    }
    return w;
  }
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  std::vector<int> scale_offsets;
  switch (type) {
    case DType::Q2_K: scale_offsets = {80, 82}; break;
    case DType::Q3_K: scale_offsets = {108}; break;
    case DType::Q4_K:
    case DType::Q5_K: scale_offsets = {0, 2}; break;
    case DType::Q6_K: scale_offsets = {208}; break;
    default: break;
  }
  const tensor::DTypeInfo& ti = tensor::info(type);
  const uint16_t scale = tensor::f32_to_f16(0.001f);
  for (size_t off = 0; off < w.size(); off += ti.type_size_bytes) {
    for (int s : scale_offsets) std::memcpy(w.data() + off + s, &scale, 2);
  }
  return w;
}

std::vector<float> random_activations(int64_t n) {
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  return x;
}

ThreadPool& pool_of(int n_threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[n_threads];
  if (!p) p = std::make_unique<ThreadPool>(n_threads);
  return *p;
}

// Weights are shared between the ISA variants of a shape so the large ones are built once.
const std::vector<uint8_t>& cached_weights(DType type, int64_t n_out, int64_t n_in) {
  static std::map<std::tuple<DType, int64_t, int64_t>, std::vector<uint8_t>> cache;
  auto key = std::make_tuple(type, n_out, n_in);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, random_weights(type, n_out, n_in)).first;
  return it->second;
}

// Interleaved copies (kernels/interleave.h) of the cached weights, as a model stores them at load.
const std::vector<uint8_t>& cached_interleaved(DType type, int64_t n_out, int64_t n_in) {
  static std::map<std::tuple<DType, int64_t, int64_t>, std::vector<uint8_t>> cache;
  auto key = std::make_tuple(type, n_out, n_in);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const std::vector<uint8_t>& w = cached_weights(type, n_out, n_in);
    std::vector<uint8_t> wi(w.size());
    interleave_rows(type, w.data(), n_out, n_in, wi.data());
    it = cache.emplace(key, std::move(wi)).first;
  }
  return it->second;
}

// args: isa, type, n_out, n_in, n_tokens, n_threads, layout (0 rows, 1 interleaved)
void BM_Matmul(benchmark::State& state) {
  const auto isa = static_cast<Isa>(state.range(0));
  const auto type = static_cast<DType>(state.range(1));
  const int64_t n_out = state.range(2), n_in = state.range(3), n_tokens = state.range(4);
  const int n_threads = static_cast<int>(state.range(5));
  const auto layout = state.range(6) == 1 ? WeightLayout::kInterleaved16 : WeightLayout::kRows;
  const std::vector<uint8_t>& w = layout == WeightLayout::kRows ? cached_weights(type, n_out, n_in)
                                                                : cached_interleaved(type, n_out, n_in);
  const std::vector<float> x = random_activations(n_tokens * n_in);
  std::vector<float> y(n_tokens * n_out);
  MatmulScratch scratch;
  ThreadPool& pool = pool_of(n_threads);
  const MatmulTarget target{type, w.data(), n_out, y.data(), n_out, layout};
  // Prefill sizes are prompt rows (the amx ISA's AMX-BF16 kernels over interleaved matrices); 1 and 8 tokens are
  // decode and batched decode.
  const MatmulRows rows = n_tokens >= 32 ? MatmulRows::kPrompt : MatmulRows::kGenerated;
  for (auto _ : state) {
    matmul_fused(isa, &target, 1, n_in, x.data(), n_tokens, pool, scratch, rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w.size()));
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(n_out * n_in * n_tokens),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(isa)) + " " + tensor::dtype_name(type) +
                 (layout == WeightLayout::kRows ? "" : " interleaved") + " " + std::to_string(n_out) + "x" +
                 std::to_string(n_in) + " t=" + std::to_string(n_tokens) + " threads=" + std::to_string(n_threads));
}

struct Shape {
  DType type;
  int64_t n_out, n_in;
};

const Shape kShapes[] = {
    // SmolLM2-135M (Q4_1 file; the Q8_0 file has the same shapes in Q8_0)
    {DType::Q4_1, 576, 576}, {DType::Q4_1, 1536, 576}, {DType::Q4_1, 576, 1536}, {DType::Q8_0, 49152, 576},
    {DType::Q8_0, 576, 576}, {DType::Q8_0, 1536, 576}, {DType::Q8_0, 576, 1536},
    // Gemma 3 270M
    {DType::Q5_0, 1024, 640}, {DType::Q5_0, 2048, 640}, {DType::Q8_0, 256, 640}, {DType::Q4_K, 640, 1024},
    {DType::Q4_K, 640, 2048}, {DType::Q6_K, 640, 2048}, {DType::Q8_0, 262144, 640},
    // The remaining types at a common shape.
    {DType::Q4_0, 2048, 2048}, {DType::Q5_1, 2048, 2048}, {DType::Q2_K, 2048, 2048}, {DType::Q3_K, 2048, 2048},
    {DType::Q5_K, 2048, 2048}, {DType::F16, 2048, 2048}, {DType::F32, 2048, 2048}, {DType::BF16, 2048, 2048},
};

void register_all() {
  for (Isa isa : supported_isas()) {
    for (const Shape& s : kShapes) {
      const bool huge = s.n_out * s.n_in > 100'000'000;
      // The row layout everywhere, and the interleaved one where a model would store the matrix so (the
      // benchmark names end in X16).
      for (int layout : {0, 1}) {
        if (layout == 1 && !prefers_interleaved(isa, s.type, s.n_out)) continue;
        const std::string suffix = layout == 1 ? "X16" : "";
        for (int n_threads : {1, 2}) {
          // Decode: one token.
          benchmark::RegisterBenchmark(("Gemv" + suffix).c_str(), BM_Matmul)
              ->Args({static_cast<int64_t>(isa), static_cast<int64_t>(s.type), s.n_out, s.n_in, 1, n_threads, layout})
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
          // Batched decode (8 sequences, one token each) and prefill: 32-, 64- and 512-token batches (prefill sizes
          // skipped for the vocabulary-sized output heads, which prefill runs on 1 row). 512 is a whole pp512
          // prompt step, 32 the smallest batch that takes the long-batch kernels (kLargeMinTokens): the repacked
          // 8-row tiles of gemm_avx2.cc on avx2. 32 tokens and more run as prompt rows: on amx, the AMX-BF16 tiles.
          for (int64_t n_tokens : {8, 32, 64, 512}) {
            if (n_tokens > 8 && (s.n_out >= 10'000 || huge)) continue;
            {
              const std::string name = "Gemm" + std::to_string(n_tokens) + suffix;
              benchmark::RegisterBenchmark(name.c_str(), BM_Matmul)
                  ->Args({static_cast<int64_t>(isa), static_cast<int64_t>(s.type), s.n_out, s.n_in, n_tokens, n_threads,
                          layout})
                  ->Unit(benchmark::kMicrosecond)
                  ->UseRealTime();
            }
          }
        }
      }
    }
  }
}

// args: isa, type
void BM_QuantizeActivations(benchmark::State& state) {
  const auto isa = static_cast<Isa>(state.range(0));
  const auto type = static_cast<DType>(state.range(1));
  const int64_t n = 4096;
  const std::vector<float> x = random_activations(n);
  std::vector<uint8_t> out(tensor::row_size_bytes(type, n));
  for (auto _ : state) {
    quantize_row(isa, type, x.data(), out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(isa_name(isa)) + " " + tensor::dtype_name(type));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * n);
}

// The packing of a step's activations for the interleaved matrix kernels: 8 tokens of n_in elements, as the
// kernels of `type` read them (the first part of every matmul of a prompt or batched step). args: isa, type, n_in
void BM_PackActivations(benchmark::State& state) {
  const auto isa = static_cast<Isa>(state.range(0));
  const auto type = static_cast<DType>(state.range(1));
  const int64_t n_in = state.range(2), n_tokens = 8;
  const detail::GemmKernel& kernel = detail::kernels_for(isa).gemm_interleaved[detail::slot(type)];
  if (kernel.pack == nullptr) {
    state.SkipWithError("no interleaved kernel for this type on this ISA");
    return;
  }
  const std::vector<float> x = random_activations(n_tokens * n_in);  // [n_tokens, n_in]
  const int64_t row_bytes = kernel.packed_row_bytes(n_in);
  std::vector<uint8_t> buffer(static_cast<size_t>(n_tokens * row_bytes + 64));  // packed rows, 64-byte aligned
  uint8_t* out = buffer.data() + (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) % 64;
  for (auto _ : state) {
    for (int64_t t = 0; t < n_tokens; ++t) kernel.pack(x.data() + t * n_in, n_in, out + t * row_bytes);
    benchmark::DoNotOptimize(out);
  }
  state.SetLabel(std::string(isa_name(isa)) + " " + tensor::dtype_name(type) + " n_in=" + std::to_string(n_in));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * n_tokens * n_in);
}

void register_quantize() {
  for (Isa isa : supported_isas()) {
    for (DType t : {DType::Q8_0, DType::Q8_1, DType::Q8_K}) {
      benchmark::RegisterBenchmark("QuantizeActivations", BM_QuantizeActivations)
          ->Args({static_cast<int64_t>(isa), static_cast<int64_t>(t)});
    }
    // SmolLM2's Q4_1 layers (576 and 1536 inputs) and its Q8_0 output head; Gemma 3's Q4_K layers (1024, 2048).
    for (const auto& [type, n_in] : {std::pair<DType, int64_t>{DType::Q4_1, 576}, {DType::Q4_1, 1536},
                                     {DType::Q8_0, 576}, {DType::Q4_K, 1024}, {DType::Q4_K, 2048}})
      benchmark::RegisterBenchmark("PackActivations", BM_PackActivations)
          ->Args({static_cast<int64_t>(isa), static_cast<int64_t>(type), n_in});
  }
}

// The cost of one parallel region with next to no work in it: what every matmul of a decode step pays on top of
// its arithmetic. args: n_threads, n_chunks
void BM_PoolDispatch(benchmark::State& state) {
  ThreadPool& pool = pool_of(static_cast<int>(state.range(0)));
  const int64_t n_chunks = state.range(1);
  std::vector<int64_t> sink(static_cast<size_t>(n_chunks), 0);
  for (auto _ : state) {
    pool.for_each_chunk(n_chunks, [&](int64_t c, int) { sink[static_cast<size_t>(c)] += 1; });
    benchmark::ClobberMemory();
  }
  state.SetLabel("threads=" + std::to_string(state.range(0)) + " chunks=" + std::to_string(n_chunks));
}

// Flash attention: one attention_update call for the queries of one KV head over a run of n_k cached keys at
// positions 0 .. n_k-1, at the head sizes of SmolLM2 (64, 3 query heads per KV head) and Gemma 3 270M (256, 4).
//   decode:  one token's `group` queries at position n_k over 4096 keys (every key visible).
//   prefill: a 16-token block's 16 * group queries at position n_k over a 512-cell page (every key visible).
//   diag:    the prefill block on the causal diagonal: tokens at n_k-16 .. n_k-1, so the last key block is mixed.
//   window:  decode on a sliding-window layer (Gemma 3 local layers: 512), most key blocks skipped unconverted.
//   span:    decode on a head narrowed to 4 sinks + a 512 window (DuoAttention's streaming heads): the same plus the
//            sink block.
// args: isa, head_dim, n_q, n_k, window, diagonal (0/1), n_sink
void BM_FlashAttention(benchmark::State& state) {
  const auto isa = static_cast<Isa>(state.range(0));
  const auto d = static_cast<int32_t>(state.range(1));
  const auto n_q = static_cast<int32_t>(state.range(2)), n_k = static_cast<int32_t>(state.range(3));
  const auto window = static_cast<int32_t>(state.range(4));
  const bool diagonal = state.range(5) != 0;
  const auto n_sink = static_cast<int32_t>(state.range(6));
  const std::vector<float> q = random_activations(static_cast<int64_t>(n_q) * d);  // [n_q, d]
  std::vector<uint16_t> kv(static_cast<size_t>(n_k) * d);                          // [n_k, d] keys, also the values
  const std::vector<float> kvf = random_activations(static_cast<int64_t>(n_k) * d);
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = tensor::f32_to_f16(kvf[i]);
  std::vector<int32_t> q_pos(static_cast<size_t>(n_q), n_k), k_pos(static_cast<size_t>(n_k));  // [n_q], [n_k]
  // Prefill queries are token-major: 16 tokens of n_q / 16 heads each.
  if (diagonal) {
    for (int32_t i = 0; i < n_q; ++i) q_pos[static_cast<size_t>(i)] = n_k - 16 + i / (n_q / 16);
  }
  for (int32_t j = 0; j < n_k; ++j) k_pos[static_cast<size_t>(j)] = j;
  std::vector<float> m(static_cast<size_t>(n_q)), l(static_cast<size_t>(n_q)), o(static_cast<size_t>(n_q) * d);
  AttentionMask mask;
  mask.q_pos = q_pos.data();
  mask.k_pos = k_pos.data();
  mask.window = window;
  mask.n_sink = n_sink;
  const FloatOps& ops = float_ops(isa);
  for (auto _ : state) {
    std::fill(m.begin(), m.end(), -INFINITY);
    std::fill(l.begin(), l.end(), 0.0f);
    std::fill(o.begin(), o.end(), 0.0f);
    ops.attention_update(q.data(), d, n_q, kv.data(), d, kv.data(), d, n_k, mask, d, d, m.data(), l.data(), o.data(),
                         d);
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["MAC/s"] = benchmark::Counter(2.0 * n_q * n_k * d, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(isa)) + " d=" + std::to_string(d) + " queries=" + std::to_string(n_q) +
                 " keys=" + std::to_string(n_k) + (window > 0 ? " window=" + std::to_string(window) : "") +
                 (n_sink > 0 ? " sinks=" + std::to_string(n_sink) : "") +
                 (diagonal ? " diagonal" : ""));
}

// Decode attention over stored cells as a KV page holds them: separate keys and values, f16 (bits 16:
// attention_update) or KIVI codes in key groups of 32 cells (bits 8 / 4: attention_update_quantized, read in place),
// one token's `group` queries at position n_k, every key visible. 4096 keys of SmolLM2's head stay in the L2 cache
// (what the arithmetic costs); 65536 do not (what reading the cells from memory costs).
// args: isa, head_dim, n_q, n_k, bits
void BM_AttentionStorage(benchmark::State& state) {
  const auto isa = static_cast<Isa>(state.range(0));
  const auto d = static_cast<int32_t>(state.range(1));
  const auto n_q = static_cast<int32_t>(state.range(2)), n_k = static_cast<int32_t>(state.range(3));
  const auto bits = static_cast<int32_t>(state.range(4));
  constexpr int32_t kGroup = 32;
  const std::vector<float> q = random_activations(static_cast<int64_t>(n_q) * d);  // [n_q, d]
  const int64_t n = static_cast<int64_t>(n_k) * d;
  const std::vector<float> kf = random_activations(n), vf = random_activations(n);
  std::vector<uint16_t> k16(static_cast<size_t>(n)), v16(static_cast<size_t>(n));  // [n_k, d] f16
  std::vector<uint8_t> k_codes, v_codes;                                             // [n_k, d * bits / 8]
  std::vector<uint16_t> k_params, v_params;  // [n_k / 32, 2, d], [n_k, d / 32, 2]
  std::vector<int32_t> group_end;            // [n_k / 32]
  QuantizedRows rows;
  if (bits == 16) {
    for (int64_t i = 0; i < n; ++i) {
      k16[static_cast<size_t>(i)] = tensor::f32_to_f16(kf[static_cast<size_t>(i)]);
      v16[static_cast<size_t>(i)] = tensor::f32_to_f16(vf[static_cast<size_t>(i)]);
    }
  } else {  // codes from the activations' bit patterns: any byte will do for speed
    k_codes.resize(static_cast<size_t>(n * bits / 8));
    v_codes.resize(k_codes.size());
    for (size_t i = 0; i < k_codes.size(); ++i) {
      k_codes[i] = static_cast<uint8_t>(kf[i % kf.size()] * 37.0f);
      v_codes[i] = static_cast<uint8_t>(vf[i % vf.size()] * 37.0f);
    }
    k_params.assign(static_cast<size_t>(n_k / kGroup) * 2 * d, tensor::f32_to_f16(0.01f));
    v_params.assign(static_cast<size_t>(n_k) * (d / kQuantizedValueGroup) * 2, tensor::f32_to_f16(0.01f));
    for (int32_t g = 1; g <= n_k / kGroup; ++g) group_end.push_back(g * kGroup);
    rows = {bits, k_codes.data(), k_params.data(), group_end.data(), static_cast<int32_t>(group_end.size()),
            v_codes.data(), v_params.data()};
  }
  std::vector<int32_t> q_pos(static_cast<size_t>(n_q), n_k), k_pos(static_cast<size_t>(n_k));  // [n_q], [n_k]
  for (int32_t j = 0; j < n_k; ++j) k_pos[static_cast<size_t>(j)] = j;
  std::vector<float> m(static_cast<size_t>(n_q)), l(static_cast<size_t>(n_q)), o(static_cast<size_t>(n_q) * d);
  AttentionMask mask;
  mask.q_pos = q_pos.data();
  mask.k_pos = k_pos.data();
  const FloatOps& ops = float_ops(isa);
  for (auto _ : state) {
    std::fill(m.begin(), m.end(), -INFINITY);
    std::fill(l.begin(), l.end(), 0.0f);
    std::fill(o.begin(), o.end(), 0.0f);
    if (bits == 16) {
      ops.attention_update(q.data(), d, n_q, k16.data(), d, v16.data(), d, n_k, mask, d, d, m.data(), l.data(),
                           o.data(), d);
    } else {
      ops.attention_update_quantized(q.data(), d, n_q, rows, n_k, mask, d, d, m.data(), l.data(), o.data(), d);
    }
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["keys/s"] = benchmark::Counter(n_k, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(isa)) + " d=" + std::to_string(d) + " queries=" + std::to_string(n_q) +
                 " keys=" + std::to_string(n_k) + " bits=" + std::to_string(bits));
}

// Quest's page bound (key_bounds_f16_blocked) as a selecting policy scores a 16384-token cache of 64-token pages, one
// KV head's `group` queries: 256 pages of `sub` summaries (quest: 1; lserve: 4 logical pages of 16 tokens), in
// blocks of 16 logical pages.
// args: isa, head_dim, group, sub
void BM_KeyBound(benchmark::State& state) {
  const auto isa = static_cast<Isa>(state.range(0));
  const auto d = static_cast<int32_t>(state.range(1)), n_q = static_cast<int32_t>(state.range(2));
  const auto kSub = static_cast<int32_t>(state.range(3));
  constexpr int32_t kPages = 256;
  const std::vector<float> q = random_activations(static_cast<int64_t>(n_q) * d);  // [n_q, d]
  const std::vector<float> lo = random_activations(static_cast<int64_t>(kPages) * kSub * d);
  const int64_t n_blocks = (int64_t{kPages} * kSub + 15) / 16;
  std::vector<uint16_t> blocks(static_cast<size_t>(n_blocks * 2 * d * 16));  // [n_blocks, 2, d, 16]
  for (int64_t slot = 0; slot < int64_t{kPages} * kSub; ++slot)
    for (int32_t c = 0; c < d; ++c) {
      const int64_t at = (slot / 16 * 2 * d + c) * 16 + slot % 16;
      const float x = lo[static_cast<size_t>(slot * d + c)];
      blocks[static_cast<size_t>(at)] = tensor::f32_to_f16(x);
      blocks[static_cast<size_t>(at + int64_t{d} * 16)] = tensor::f32_to_f16(x + 0.5f);
    }
  std::vector<float> bounds(static_cast<size_t>(n_blocks) * 16);
  const FloatOps& ops = float_ops(isa);
  for (auto _ : state) {
    ops.key_bounds_f16_blocked(q.data(), n_q, d, blocks.data(), n_blocks, bounds.data());
    float best = bounds[0];  // the page maxima, as the policy takes them
    for (int32_t p = 0; p < kPages; ++p)
      best = std::max(best, *std::max_element(bounds.begin() + p * kSub, bounds.begin() + (p + 1) * kSub));
    benchmark::DoNotOptimize(best);
  }
  state.counters["pages/s"] = benchmark::Counter(kPages, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(isa)) + " d=" + std::to_string(d) + " queries=" + std::to_string(n_q) +
                 " summaries per page=" + std::to_string(kSub));
}

void register_threads_and_attention() {
  for (int n_threads : {1, 2}) {
    for (int64_t n_chunks : {1, 8, 64})
      benchmark::RegisterBenchmark("PoolDispatch", BM_PoolDispatch)->Args({n_threads, n_chunks});
  }
  for (Isa isa : supported_isas()) {
    const auto i = static_cast<int64_t>(isa);
    for (const auto& [d, group] : {std::pair<int64_t, int64_t>{64, 3}, {256, 4}}) {
      benchmark::RegisterBenchmark("FlashAttentionDecode", BM_FlashAttention)
          ->Args({i, d, group, 4096, 0, 0, 0})
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("FlashAttentionPrefill", BM_FlashAttention)
          ->Args({i, d, 16 * group, 512, 0, 0, 0})
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("FlashAttentionPrefillDiagonal", BM_FlashAttention)
          ->Args({i, d, 16 * group, 512, 0, 1, 0})
          ->Unit(benchmark::kMicrosecond);
    }
    for (const auto& [d, group] : {std::pair<int64_t, int64_t>{64, 3}, {256, 4}})
      for (int64_t n_k : {4096, 65536})
        for (int64_t bits : {16, 8, 4})
          benchmark::RegisterBenchmark("AttentionStorage", BM_AttentionStorage)
              ->Args({i, d, group, n_k, bits})
              ->Unit(benchmark::kMicrosecond);
    for (const auto& [d, group] : {std::pair<int64_t, int64_t>{64, 3}, {128, 2}, {256, 4}})
      for (int64_t sub : {1, 4})
        benchmark::RegisterBenchmark("KeyBound", BM_KeyBound)->Args({i, d, group, sub})->Unit(benchmark::kMicrosecond);
    // Verification steps of 2, 4, 6, 8 and 16 tokens on SmolLM2's heads (3 query heads per KV head).
    for (int64_t n_q : {6, 12, 18, 24, 48})
      benchmark::RegisterBenchmark("FlashAttentionVerify", BM_FlashAttention)
          ->Args({i, 64, n_q, 4096, 0, 0, 0})
          ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("FlashAttentionDecodeWindow", BM_FlashAttention)
        ->Args({i, 256, 4, 4096, 512, 0, 0})
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("FlashAttentionDecodeHeadSpan", BM_FlashAttention)
        ->Args({i, 256, 4, 4096, 512, 0, 4})
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace longhaul::kernels

int main(int argc, char** argv) {
  longhaul::kernels::register_all();
  longhaul::kernels::register_threads_and_attention();
  longhaul::kernels::register_quantize();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
