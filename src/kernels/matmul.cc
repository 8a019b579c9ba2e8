// Threaded quantized matrix multiply: quantize the activations once, then split the output rows (and, for long
// batches, the tokens) into chunks that the pool's threads claim.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include "base/status.h"
#include "kernels/isa_kernels.h"
#include "kernels/quant.h"

namespace longhaul::kernels {

namespace {
using tensor::DType;

constexpr int kMaxTargets = 8;
// dot_rows path: each thread walks its rows in blocks of about this many weight bytes and runs every token group
// over a block before moving on, so a block is read from memory once and then hit in L2 for the other groups.
constexpr int64_t kRowBlockBytes = 128 * 1024;
// Fewer multiply-adds than this per chunk are not worth a claim from the shared counter.
constexpr int64_t kMinChunkWork = 48 * 1024;
// Below this many multiply-adds in total the call runs on the calling thread alone: waking the pool costs more.
constexpr int64_t kMinParallelWork = 96 * 1024;
// About this many chunks per thread, so that a thread the OS descheduled (the machine may be shared) costs a
// few chunks, not half the work.
constexpr int64_t kChunksPerThread = 8;
// At most this many weight bytes per chunk: the threads of a decode step stream a large matrix (a vocabulary-sized
// output head is 30-180 MB) at memory speed, and the last chunk is what one of them waits for at the end.
constexpr int64_t kMaxChunkWeightBytes = 256 * 1024;
// Tokens per quantizing chunk of a call's job at most (enough to spread a prompt chunk over the threads in pieces
// that still amortize a claim).
constexpr int64_t kMaxTokensPerQuantizeGroup = 8;

// One activation format a call needs: the packed layout of a gemm kernel, or a vec_dot_type row.
struct ActFormat {
  const detail::GemmKernel* gemm = nullptr;  // packed; else quantize to act_type
  detail::QuantizeFn quantize = nullptr;
  int key = 0;                               // pack_id (> 0) or -(act_type) - 1
  int64_t row_bytes = 0;
  int64_t n_rows = 0;                        // n_tokens rounded up to the kernel's token_multiple
  uint8_t* data = nullptr;                   // [n_rows, row_bytes], or x itself for f32 activations
};

struct Part {
  const detail::GemmKernel* gemm = nullptr;
  detail::DotRowsFn dot = nullptr;
  const uint8_t* w = nullptr;  // [n_out, w_row_bytes]
  int64_t w_row_bytes = 0;
  int64_t n_out = 0;
  float* y = nullptr;          // [n_tokens, ldy]
  int64_t ldy = 0;
  int format = 0;              // index into the call's formats
  int64_t rows_per_chunk = 0;
  int64_t tokens_per_chunk = 0;
  int64_t n_row_chunks = 0;
  int64_t first_chunk = 0;     // index of this part's first chunk among all parts'
};

struct Call {
  int64_t n_in = 0;
  int64_t n_tokens = 0;
  const float* x = nullptr;  // [n_tokens, n_in]
  ActFormat formats[kMaxTargets];
  int n_formats = 0;
  Part parts[kMaxTargets];
  int n_parts = 0;
  int64_t n_chunks = 0;
  uint8_t* work = nullptr;   // [n_threads][work_stride] the tile kernels' working memory
  int64_t work_stride = 0;   // bytes, a multiple of 64
};

uint8_t* align64(uint8_t* p) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

void quantize_tokens(const Call& call, const ActFormat& f, int64_t t_begin, int64_t t_end) {
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* x = call.x + t * call.n_in;
    uint8_t* dst = f.data + t * f.row_bytes;
    if (f.gemm != nullptr) {
      f.gemm->pack(x, call.n_in, dst);
    } else {
      f.quantize(x, dst, call.n_in);
    }
  }
}

// The dot_rows path over rows [r_begin, r_end) and every token.
void dot_rows_part(const Call& call, const Part& p, const ActFormat& f, int64_t r_begin, int64_t r_end) {
  const int64_t rows_per_block = call.n_tokens <= detail::kMaxActs
                                     ? r_end - r_begin
                                     : std::max<int64_t>(1, kRowBlockBytes / p.w_row_bytes);
  for (int64_t r0 = r_begin; r0 < r_end; r0 += rows_per_block) {
    const int64_t n_rows = std::min(rows_per_block, r_end - r0);
    for (int64_t t = 0; t < call.n_tokens; t += detail::kMaxActs) {
      const int n_act = static_cast<int>(std::min<int64_t>(detail::kMaxActs, call.n_tokens - t));
      p.dot(call.n_in, p.w + r0 * p.w_row_bytes, p.w_row_bytes, n_rows, f.data + t * f.row_bytes, f.row_bytes,
            n_act, p.y + t * p.ldy + r0, p.ldy);
    }
  }
}

// work: the running thread's slice of MatmulScratch::work (nullptr when no kernel of the call needs one).
void run_chunk(const Call& call, int64_t chunk, uint8_t* work) {
  int i = 0;
  while (i + 1 < call.n_parts && call.parts[i + 1].first_chunk <= chunk) ++i;
  const Part& p = call.parts[i];
  const ActFormat& f = call.formats[p.format];
  const int64_t local = chunk - p.first_chunk;
  const int64_t r_begin = (local % p.n_row_chunks) * p.rows_per_chunk;
  const int64_t r_end = std::min(p.n_out, r_begin + p.rows_per_chunk);
  if (p.gemm == nullptr) {
    dot_rows_part(call, p, f, r_begin, r_end);
    return;
  }
  const int64_t t_begin = (local / p.n_row_chunks) * p.tokens_per_chunk;
  const int64_t t_end = std::min(call.n_tokens, t_begin + p.tokens_per_chunk);
  p.gemm->tile(call.n_in, p.w + r_begin * p.w_row_bytes, p.w_row_bytes, r_end - r_begin, f.data + t_begin * f.row_bytes,
               f.row_bytes, t_end - t_begin, p.y + t_begin * p.ldy + r_begin, p.ldy, work);
}

// Rows per chunk: about kChunksPerThread chunks per thread over the whole call, none below the work floor, none
// above kMaxChunkWeightBytes of weights, a multiple of `multiple` (the kernel's row tile).
int64_t rows_per_chunk(int64_t n_out, int64_t n_in, int64_t w_row_bytes, int64_t tokens, int64_t total_work,
                       int n_threads, int64_t multiple) {
  if (n_threads == 1) return n_out;
  const int64_t target_work = std::max(kMinChunkWork, total_work / (n_threads * kChunksPerThread));
  int64_t rows = std::max<int64_t>(1, target_work / std::max<int64_t>(1, n_in * tokens));
  rows = std::min(rows, std::max<int64_t>(1, kMaxChunkWeightBytes / w_row_bytes));
  rows = (rows + multiple - 1) / multiple * multiple;
  return std::min(rows, n_out);
}

// The kernel for a matrix stored interleaved: for prompt rows the ISA's prompt kernel where it has one (amx), else
// the ISA's kernel, else the scalar twin (an ISA the model did not interleave for, as tests run). Rows kept in the
// row layout still choose by the call's token count (gemm_large): on avx2 the K-quants, on amx a matrix whose rows
// are not whole 16-row groups.
const detail::GemmKernel& interleaved_kernel(const detail::IsaKernels& kernels, const MatmulTarget& t,
                                             MatmulRows rows) {
  const detail::GemmKernel* g = &kernels.gemm_interleaved[detail::slot(t.type)];
  const detail::GemmKernel& prompt = kernels.gemm_interleaved_prompt[detail::slot(t.type)];
  if (prompt.tile != nullptr && rows == MatmulRows::kPrompt) g = &prompt;
  if (g->tile == nullptr) g = &detail::generic_kernels().gemm_interleaved[detail::slot(t.type)];
  LH_CHECK_MSG(g->tile != nullptr, std::string("matmul: no kernel for interleaved ") + tensor::dtype_name(t.type));
  LH_CHECK_MSG(t.n_out % kInterleaveRows == 0,
               "matmul: interleaved n_out=" + std::to_string(t.n_out) + " is not a multiple of 16");
  return *g;
}

}  // namespace

void matmul_fused(Isa isa, const MatmulTarget* targets, int n_targets, int64_t n_in, const float* x,
                  int64_t n_tokens, ThreadPool& pool, MatmulScratch& scratch, MatmulRows rows) {
  LH_CHECK_MSG(cpu_supports(isa), std::string("matmul: this CPU cannot run ISA ") + isa_name(isa));
  LH_CHECK_MSG(n_targets >= 1 && n_targets <= kMaxTargets,
               "matmul_fused: n_targets=" + std::to_string(n_targets) + " is outside [1, 8]");
  if (n_tokens <= 0) return;
  const detail::IsaKernels& kernels = detail::kernels_for(isa);
  Call call;
  call.n_in = n_in;
  call.n_tokens = n_tokens;
  call.x = x;

  // Formats and parts.
  int64_t scratch_bytes = 0;
  int64_t total_work = 0;
  for (int i = 0; i < n_targets; ++i) {
    const MatmulTarget& t = targets[i];
    LH_CHECK_MSG(t.ldy >= t.n_out,
                 "matmul: ldy=" + std::to_string(t.ldy) + " is less than n_out=" + std::to_string(t.n_out));
    const DType act_type = vec_dot_type(t.type);
    const int64_t block = std::max(tensor::info(t.type).block_size, tensor::info(act_type).block_size);
    LH_CHECK_MSG(n_in % block == 0, std::string("matmul: n_in=") + std::to_string(n_in) +
                                        " is not a multiple of the " + tensor::dtype_name(t.type) + " block size " +
                                        std::to_string(block));
    if (t.n_out <= 0) continue;
    const detail::GemmKernel& g = t.layout == WeightLayout::kInterleaved16 ? interleaved_kernel(kernels, t, rows)
                                  : n_tokens >= detail::kLargeMinTokens &&
                                          kernels.gemm_large[detail::slot(t.type)].tile != nullptr
                                      ? kernels.gemm_large[detail::slot(t.type)]
                                      : kernels.gemm[detail::slot(t.type)];
    Part& p = call.parts[call.n_parts++];
    p.w = static_cast<const uint8_t*>(t.w);
    p.w_row_bytes = tensor::row_size_bytes(t.type, n_in);
    p.n_out = t.n_out;
    p.y = t.y;
    p.ldy = t.ldy;
    total_work += t.n_out * n_in * n_tokens;
    const int key = g.tile != nullptr ? g.pack_id : -static_cast<int>(act_type) - 1;
    if (g.tile != nullptr) {
      p.gemm = &g;
      if (g.tile_work_bytes != nullptr)
        call.work_stride = std::max(call.work_stride, (g.tile_work_bytes(n_in) + 63) / 64 * 64);
    } else {
      p.dot = kernels.dot_rows[detail::slot(t.type)];
    }
    int f = 0;
    while (f < call.n_formats && call.formats[f].key != key) ++f;
    if (f == call.n_formats) {
      ActFormat& af = call.formats[call.n_formats++];
      af.key = key;
      if (p.gemm != nullptr) {
        af.gemm = p.gemm;
        af.row_bytes = p.gemm->packed_row_bytes(n_in);
      } else if (act_type != DType::F32) {
        af.quantize = kernels.quantize[detail::slot(act_type)];
        af.row_bytes = (tensor::row_size_bytes(act_type, n_in) + 63) / 64 * 64;
      } else {
        af.row_bytes = n_in * static_cast<int64_t>(sizeof(float));
        af.data = const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(x));  // read as they are
      }
      af.n_rows = p.gemm != nullptr ? (n_tokens + p.gemm->token_multiple - 1) / p.gemm->token_multiple *
                                          p.gemm->token_multiple
                                    : n_tokens;
      if (af.data == nullptr) scratch_bytes += af.row_bytes * af.n_rows;
    }
    p.format = f;
  }
  if (call.n_parts == 0) return;

  // Quantize (or pack) the activations once per format.
  if (scratch.act.size() < static_cast<size_t>(scratch_bytes + 64)) scratch.act.resize(scratch_bytes + 64);
  uint8_t* next = align64(scratch.act.data());
  int n_to_quantize = 0;
  for (int f = 0; f < call.n_formats; ++f) {
    if (call.formats[f].data != nullptr) continue;
    ActFormat& af = call.formats[f];
    af.data = next;
    next += af.row_bytes * af.n_rows;
    // Padding rows (read by kernels that work on whole tiles of tokens) are zero.
    std::memset(af.data + af.row_bytes * n_tokens, 0, static_cast<size_t>(af.row_bytes * (af.n_rows - n_tokens)));
    ++n_to_quantize;
  }
  // Chunks.
  const int n_threads = total_work < kMinParallelWork ? 1 : pool.n_threads();
  if (call.work_stride > 0) {
    const auto need = static_cast<size_t>(call.work_stride * n_threads + 64);
    if (scratch.work.size() < need) scratch.work.resize(need);
    call.work = align64(scratch.work.data());
  }
  for (int i = 0; i < call.n_parts; ++i) {
    Part& p = call.parts[i];
    p.tokens_per_chunk = n_tokens;
    int64_t row_multiple = 4;
    if (p.gemm != nullptr) {
      if (p.gemm->chunk_tokens > 0) p.tokens_per_chunk = std::min(n_tokens, p.gemm->chunk_tokens);
      row_multiple = p.gemm->chunk_rows_multiple;
    }
    if (p.gemm != nullptr && p.gemm->split_tokens_from > 0 && n_threads > 1 &&
        n_tokens >= p.gemm->split_tokens_from * n_threads) {
      const int64_t multiple = p.gemm->token_multiple;
      p.tokens_per_chunk = ((n_tokens + n_threads - 1) / n_threads + multiple - 1) / multiple * multiple;
      p.rows_per_chunk = p.n_out;
    } else {
      p.rows_per_chunk =
          rows_per_chunk(p.n_out, n_in, p.w_row_bytes, p.tokens_per_chunk, total_work, n_threads, row_multiple);
    }
    p.n_row_chunks = (p.n_out + p.rows_per_chunk - 1) / p.rows_per_chunk;
    const int64_t n_token_chunks = (n_tokens + p.tokens_per_chunk - 1) / p.tokens_per_chunk;
    p.first_chunk = call.n_chunks;
    call.n_chunks += p.n_row_chunks * n_token_chunks;
  }
  // One job quantizes the activations and runs the products: its first chunks are groups of tokens to quantize
  // (per format), the rest the products, which start once every group is done. Chunks are claimed in order, so
  // a thread that reaches a product has only the other threads' last groups to wait for: one wait for the
  // threads per call instead of two (a separate quantizing job, then the products). A single token, or a call
  // that runs on one thread, is quantized here first.
  int64_t tokens_per_group = n_tokens;
  if (n_to_quantize > 0 && (n_threads == 1 || n_tokens == 1)) {
    for (int f = 0; f < call.n_formats; ++f) {
      if (call.formats[f].quantize != nullptr || call.formats[f].gemm != nullptr)
        quantize_tokens(call, call.formats[f], 0, n_tokens);
    }
    n_to_quantize = 0;
  } else if (n_to_quantize > 0) {
    tokens_per_group = std::min(kMaxTokensPerQuantizeGroup, (n_tokens + n_threads - 1) / n_threads);
  }
  if (n_threads == 1) {
    for (int64_t c = 0; c < call.n_chunks; ++c) run_chunk(call, c, call.work);
    return;
  }
  const int64_t groups_per_format = n_to_quantize > 0 ? (n_tokens + tokens_per_group - 1) / tokens_per_group : 0;
  const int64_t n_groups = groups_per_format * call.n_formats;
  std::atomic<int64_t> n_groups_done{0};
  pool.for_each_chunk(n_groups + call.n_chunks, [&](int64_t c, int i_thread) {
    if (c < n_groups) {
      const ActFormat& f = call.formats[c / groups_per_format];
      if (f.quantize != nullptr || f.gemm != nullptr) {
        const int64_t t0 = (c % groups_per_format) * tokens_per_group;
        quantize_tokens(call, f, t0, std::min(n_tokens, t0 + tokens_per_group));
      }
      n_groups_done.fetch_add(1, std::memory_order_release);
      return;
    }
    spin_wait([&] { return n_groups_done.load(std::memory_order_acquire) == n_groups; });
    run_chunk(call, c - n_groups, call.work == nullptr ? nullptr : call.work + i_thread * call.work_stride);
  });
}

void matmul_fused(const MatmulTarget* targets, int n_targets, int64_t n_in, const float* x, int64_t n_tokens,
                  ThreadPool& pool, MatmulScratch& scratch, MatmulRows rows) {
  matmul_fused(active_isa(), targets, n_targets, n_in, x, n_tokens, pool, scratch, rows);
}

void matmul(Isa isa, DType weight_type, const void* w, int64_t n_out, int64_t n_in, const float* x, int64_t n_tokens,
            float* y, int64_t ldy, ThreadPool& pool, MatmulScratch& scratch) {
  const MatmulTarget target{weight_type, w, n_out, y, ldy};
  matmul_fused(isa, &target, 1, n_in, x, n_tokens, pool, scratch);
}

void matmul(DType weight_type, const void* w, int64_t n_out, int64_t n_in, const float* x, int64_t n_tokens,
            float* y, int64_t ldy, ThreadPool& pool, MatmulScratch& scratch) {
  matmul(active_isa(), weight_type, w, n_out, n_in, x, n_tokens, y, ldy, pool, scratch);
}

}  // namespace longhaul::kernels
