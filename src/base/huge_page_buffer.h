// A large, zero-initialised, writable anonymous buffer that asks the kernel for transparent huge pages
// (madvise MADV_HUGEPAGE, which Debian's default "madvise" setting requires). Decode streams every weight matrix
// once per token: with 2 MiB pages a 170 MB matrix needs 85 TLB entries instead of 43,000 4 KiB ones, so the page
// walks that interrupt the hardware prefetcher mostly disappear. Where huge pages are unavailable the buffer is an
// ordinary one. Move-only: the mapping is released once.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace longhaul {

class HugePageBuffer {
 public:
  // The x86-64 transparent huge page: what data() is aligned to and mappings are rounded to.
  static constexpr size_t kHugePageBytes = size_t{2} << 20;

  // Fails with a message naming the size when the memory cannot be mapped.
  static Result<HugePageBuffer> allocate(size_t n_bytes);

  HugePageBuffer() = default;
  HugePageBuffer(HugePageBuffer&& other) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& other) noexcept;
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;
  ~HugePageBuffer();

  // 2 MiB aligned (the start of a huge page).
  uint8_t* data() const { return data_; }
  size_t size_bytes() const { return size_bytes_; }

 private:
  void release();
  void* mapping_ = nullptr;  // what mmap returned (data_ rounded up from it)
  size_t mapping_bytes_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_bytes_ = 0;
};

}  // namespace longhaul
