// Threaded quantized matrix multiply: quantize the activations once, then split the output rows across threads.
#include <algorithm>
#include <atomic>
#include <string>

#include "base/status.h"
#include "kernels/isa_kernels.h"
#include "kernels/quant.h"

namespace longhaul::kernels {

namespace {
using tensor::DType;

// Each thread walks its rows in blocks of about this many weight bytes and runs every token group over a block
// before moving on, so a block is read from memory once and then hit in L2 for the other token groups.
constexpr int64_t kRowBlockBytes = 128 * 1024;
// Fewer multiply-adds than this per thread are not worth waking the pool for.
constexpr int64_t kMinWorkPerThread = 32 * 1024;
// Output rows are handed out in chunks from a shared counter, about this many per thread, so a thread that the OS
// descheduled (or that started late) costs its chunks, not half the matrix.
constexpr int64_t kChunksPerThread = 8;

// Everything one matmul call shares with its threads. The parallel_for lambdas capture only a pointer to it, which
// fits std::function's small buffer: no heap allocation per call.
struct MatmulJob {
  const detail::IsaKernels* kernels;
  DType weight_type;
  DType act_type;
  const uint8_t* w;      // [n_out, w_row_bytes]
  int64_t w_row_bytes;
  int64_t n_out;
  int64_t n_in;
  const float* x;        // [n_tokens, n_in]
  const uint8_t* act;    // [n_tokens, act_row_bytes]
  uint8_t* act_out;      // the same buffer, writable, while quantizing
  int64_t act_row_bytes;
  int64_t n_tokens;
  float* y;              // [n_tokens, ldy]
  int64_t ldy;
  int64_t chunk_rows;    // rows per work item
  std::atomic<int64_t> next_chunk{0};
};

void quantize_tokens(const MatmulJob& job, int64_t t_begin, int64_t t_end) {
  const detail::QuantizeFn quantize = job.kernels->quantize[detail::slot(job.act_type)];
  for (int64_t t = t_begin; t < t_end; ++t) {
    quantize(job.x + t * job.n_in, job.act_out + t * job.act_row_bytes, job.n_in);
  }
}

void multiply_rows(const MatmulJob& job, int64_t r_begin, int64_t r_end) {
  const detail::DotRowsFn dot = job.kernels->dot_rows[detail::slot(job.weight_type)];
  const int64_t rows_per_block =
      job.n_tokens <= detail::kMaxActs ? r_end - r_begin : std::max<int64_t>(1, kRowBlockBytes / job.w_row_bytes);
  for (int64_t r0 = r_begin; r0 < r_end; r0 += rows_per_block) {
    const int64_t n_rows = std::min(rows_per_block, r_end - r0);
    for (int64_t t = 0; t < job.n_tokens; t += detail::kMaxActs) {
      const int n_act = static_cast<int>(std::min<int64_t>(detail::kMaxActs, job.n_tokens - t));
      dot(job.n_in, job.w + r0 * job.w_row_bytes, job.w_row_bytes, n_rows, job.act + t * job.act_row_bytes,
          job.act_row_bytes, n_act, job.y + t * job.ldy + r0, job.ldy);
    }
  }
}
}  // namespace

void matmul(Isa isa, DType weight_type, const void* w, int64_t n_out, int64_t n_in, const float* x, int64_t n_tokens,
            float* y, int64_t ldy, ThreadPool& pool, MatmulScratch& scratch) {
  LH_CHECK_MSG(cpu_supports(isa), std::string("matmul: this CPU cannot run ISA ") + isa_name(isa));
  LH_CHECK_MSG(ldy >= n_out, "matmul: ldy=" + std::to_string(ldy) + " is less than n_out=" + std::to_string(n_out));
  const DType act_type = vec_dot_type(weight_type);
  const int64_t block = std::max(tensor::info(weight_type).block_size, tensor::info(act_type).block_size);
  LH_CHECK_MSG(n_in % block == 0, std::string("matmul: n_in=") + std::to_string(n_in) + " is not a multiple of the " +
                                      tensor::dtype_name(weight_type) + " block size " + std::to_string(block));
  if (n_out <= 0 || n_tokens <= 0) return;

  MatmulJob job{};
  job.kernels = &detail::kernels_for(isa);
  job.weight_type = weight_type;
  job.act_type = act_type;
  job.w = static_cast<const uint8_t*>(w);
  job.w_row_bytes = tensor::row_size_bytes(weight_type, n_in);
  job.n_out = n_out;
  job.n_in = n_in;
  job.x = x;
  job.act_row_bytes = tensor::row_size_bytes(act_type, n_in);
  job.n_tokens = n_tokens;
  job.y = y;
  job.ldy = ldy;

  if (act_type == DType::F32) {
    job.act = reinterpret_cast<const uint8_t*>(x);  // f32 weights consume the activations as they are
  } else {
    const size_t needed = static_cast<size_t>(n_tokens * job.act_row_bytes);
    if (scratch.act.size() < needed) scratch.act.resize(needed);
    job.act_out = scratch.act.data();
    job.act = job.act_out;
    const MatmulJob* jp = &job;
    const int64_t token_grain = std::max<int64_t>(1, kMinWorkPerThread / (8 * n_in));
    if (n_tokens <= token_grain) {
      quantize_tokens(job, 0, n_tokens);  // not worth a pool round trip (always the case when decoding)
    } else {
      pool.parallel_for(n_tokens, token_grain, [jp](int64_t b, int64_t e) { quantize_tokens(*jp, b, e); });
    }
  }

  // Rows per chunk: a multiple of 4, about kChunksPerThread chunks per thread, and no chunk below the work floor.
  const int n_threads = pool.n_threads();
  const int64_t min_rows = std::max<int64_t>(1, kMinWorkPerThread / (n_in * n_tokens));
  int64_t chunk_rows = (n_out + n_threads * kChunksPerThread - 1) / (n_threads * kChunksPerThread);
  chunk_rows = std::max(chunk_rows, min_rows);
  chunk_rows = (chunk_rows + 3) / 4 * 4;
  job.chunk_rows = chunk_rows;
  if (n_threads == 1 || chunk_rows >= n_out) {
    multiply_rows(job, 0, n_out);
    return;
  }
  MatmulJob* jp = &job;
  pool.run_on_all([jp](int) {
    for (;;) {
      const int64_t begin = jp->next_chunk.fetch_add(1, std::memory_order_relaxed) * jp->chunk_rows;
      if (begin >= jp->n_out) return;
      multiply_rows(*jp, begin, std::min(begin + jp->chunk_rows, jp->n_out));
    }
  });
}

void matmul(DType weight_type, const void* w, int64_t n_out, int64_t n_in, const float* x, int64_t n_tokens,
            float* y, int64_t ldy, ThreadPool& pool, MatmulScratch& scratch) {
  matmul(active_isa(), weight_type, w, n_out, n_in, x, n_tokens, y, ldy, pool, scratch);
}

}  // namespace longhaul::kernels
