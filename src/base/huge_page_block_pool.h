// Equal-sized blocks carved out of 2 MiB transparent-huge-page chunks (HugePageBuffer), for the KV cache's pages.
//
// Why: a KV page of one head is a small buffer (64 cells x 128 f16 = 16 KiB for a sparse-decode page), and a long
// context holds tens of thousands of them. From the ordinary heap they sit on 4 KiB pages, which Debian's default
// "madvise" setting never merges into huge pages, so decode attention takes a TLB miss and a restart of the hardware
// prefetcher every 4 KiB of every page it reads. Quest and LServe read pages scattered over the whole cache, which
// makes that cost per page rather than per run (docs/benchmarks.md, "The heap and the KV pages on huge pages").
//
// Blocks of one chunk are handed out in address order, so consecutive allocations lie back to back (the KV cache
// allocates a head's pages of a prompt chunk one after the other and decode reads them as one stream). A chunk whose
// blocks are all free is unmapped, except one kept for the next allocation, so a cache that shrinks gives memory
// back. With AddressSanitizer the free blocks are poisoned, so a use after release is still reported.
//
// Thread-safety: allocate and release may be called from any thread (one mutex). A block keeps its pool alive.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "base/huge_page_buffer.h"

namespace longhaul {

class HugePageBlockPool : public std::enable_shared_from_this<HugePageBlockPool> {
 public:
  // A pool of blocks of block_bytes (> 0) bytes, each aligned to 64 bytes.
  static std::shared_ptr<HugePageBlockPool> create(size_t block_bytes);

  // A zeroed block seen as block_bytes() / sizeof(T) elements of T; releasing the last reference returns it to the
  // pool. Throws std::bad_alloc when no memory can be mapped, as std::make_shared does.
  template <typename T>
  std::shared_ptr<T[]> allocate() {
    static_assert(alignof(T) <= 64);
    return std::shared_ptr<T[]>(reinterpret_cast<T*>(take()), Releaser{shared_from_this()});
  }

  size_t block_bytes() const { return block_bytes_; }
  // The block size a pool created for `requested` bytes has: rounded up to the 64-byte alignment.
  static size_t block_bytes_for(size_t requested) { return (std::max<size_t>(requested, 1) + 63) / 64 * 64; }
  size_t blocks_per_chunk() const { return blocks_per_chunk_; }
  // Bytes of chunks mapped now, and blocks handed out and not yet released.
  size_t mapped_bytes() const;
  size_t blocks_in_use() const;

  ~HugePageBlockPool();
  HugePageBlockPool(const HugePageBlockPool&) = delete;
  HugePageBlockPool& operator=(const HugePageBlockPool&) = delete;

 private:
  explicit HugePageBlockPool(size_t block_bytes);

  struct Releaser {
    std::shared_ptr<HugePageBlockPool> pool;
    void operator()(void* block) const { pool->give_back(static_cast<uint8_t*>(block)); }
  };
  struct Chunk {
    HugePageBuffer memory;
    std::vector<uint32_t> free_slots;  // released slots, reused last in, first out
    uint32_t n_untouched_from = 0;     // slots [n_untouched_from, blocks_per_chunk) were never handed out
    uint32_t n_in_use = 0;
  };

  uint8_t* take();
  void give_back(uint8_t* block);
  bool has_free_slot(const Chunk& chunk) const {
    return !chunk.free_slots.empty() || chunk.n_untouched_from < blocks_per_chunk_;
  }

  size_t block_bytes_;       // rounded up to 64
  size_t chunk_bytes_;       // a whole number of 2 MiB pages holding at least one block
  size_t blocks_per_chunk_;  // chunk_bytes_ / block_bytes_
  mutable std::mutex mutex_;
  std::map<uintptr_t, Chunk> chunks_;  // by start address, so a released block finds its chunk
  std::set<uintptr_t> chunks_with_free_slots_;  // the lowest is filled first
  size_t n_in_use_ = 0;
  size_t n_empty_chunks_ = 0;
};

}  // namespace longhaul
