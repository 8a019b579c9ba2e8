#include "base/huge_page_block_pool.h"

#include <cstring>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define LH_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define LH_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define LH_POISON(p, n) ((void)(p), (void)(n))
#define LH_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace longhaul {

std::shared_ptr<HugePageBlockPool> HugePageBlockPool::create(size_t block_bytes) {
  return std::shared_ptr<HugePageBlockPool>(new HugePageBlockPool(block_bytes));
}

HugePageBlockPool::HugePageBlockPool(size_t block_bytes)
    : block_bytes_(block_bytes_for(block_bytes)),
      chunk_bytes_((block_bytes_ + HugePageBuffer::kHugePageBytes - 1) / HugePageBuffer::kHugePageBytes *
                   HugePageBuffer::kHugePageBytes),
      blocks_per_chunk_(chunk_bytes_ / block_bytes_) {}

HugePageBlockPool::~HugePageBlockPool() {
  // The chunks are unmapped now; a later mapping at the same addresses must not inherit their poisoned blocks.
  for (auto& entry : chunks_) LH_UNPOISON(entry.second.memory.data(), chunk_bytes_);
}

size_t HugePageBlockPool::mapped_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return chunks_.size() * chunk_bytes_;
}

size_t HugePageBlockPool::blocks_in_use() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_in_use_;
}

uint8_t* HugePageBlockPool::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (chunks_with_free_slots_.empty()) {
    Result<HugePageBuffer> memory = HugePageBuffer::allocate(chunk_bytes_);
    if (!memory.is_ok()) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(memory->data());
    LH_POISON(memory->data(), chunk_bytes_);
    chunks_[start].memory = std::move(*memory);
    chunks_with_free_slots_.insert(start);
    ++n_empty_chunks_;
  }
  const uintptr_t start = *chunks_with_free_slots_.begin();
  Chunk& chunk = chunks_.at(start);
  if (chunk.n_in_use == 0) --n_empty_chunks_;
  uint8_t* block = nullptr;
  if (!chunk.free_slots.empty()) {
    block = chunk.memory.data() + size_t{chunk.free_slots.back()} * block_bytes_;
    chunk.free_slots.pop_back();
    LH_UNPOISON(block, block_bytes_);
    std::memset(block, 0, block_bytes_);
  } else {
    // Never handed out: still the zeros the kernel mapped.
    block = chunk.memory.data() + size_t{chunk.n_untouched_from++} * block_bytes_;
    LH_UNPOISON(block, block_bytes_);
  }
  ++chunk.n_in_use;
  ++n_in_use_;
  if (!has_free_slot(chunk)) chunks_with_free_slots_.erase(start);
  return block;
}

void HugePageBlockPool::give_back(uint8_t* block) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = chunks_.upper_bound(reinterpret_cast<uintptr_t>(block));
  --it;  // the chunk starting at or before the block: every block came from one
  Chunk& chunk = it->second;
  const size_t slot = static_cast<size_t>(block - chunk.memory.data()) / block_bytes_;
  LH_POISON(block, block_bytes_);
  chunk.free_slots.push_back(static_cast<uint32_t>(slot));
  chunks_with_free_slots_.insert(it->first);
  --chunk.n_in_use;
  --n_in_use_;
  if (chunk.n_in_use > 0) return;
  if (n_empty_chunks_ == 0) {
    ++n_empty_chunks_;  // kept for the next allocation
    return;
  }
  LH_UNPOISON(chunk.memory.data(), chunk_bytes_);
  chunks_with_free_slots_.erase(it->first);
  chunks_.erase(it);
}

}  // namespace longhaul
