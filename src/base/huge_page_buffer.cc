#include "base/huge_page_buffer.h"

#include <sys/mman.h>

#include <string>
#include <utility>

namespace longhaul {

Result<HugePageBuffer> HugePageBuffer::allocate(size_t n_bytes) {
  HugePageBuffer b;
  if (n_bytes == 0) return b;
  // Over-allocate by one huge page so that the data can start on a huge-page boundary.
  const size_t rounded = (n_bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  if (rounded < n_bytes || rounded > SIZE_MAX - kHugePageBytes)
    return Status::error("cannot map a buffer of " + std::to_string(n_bytes) + " bytes");
  const size_t mapping_bytes = rounded + kHugePageBytes;
  void* p = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Status::error("cannot map a buffer of " + std::to_string(n_bytes) + " bytes");
  b.mapping_ = p;
  b.mapping_bytes_ = mapping_bytes;
  const auto base = reinterpret_cast<uintptr_t>(p);
  b.data_ = reinterpret_cast<uint8_t*>((base + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes);
  b.size_bytes_ = n_bytes;
  // Advice only: a kernel without transparent huge pages refuses it and the buffer keeps 4 KiB pages.
  madvise(b.data_, rounded, MADV_HUGEPAGE);
  return b;
}

HugePageBuffer::HugePageBuffer(HugePageBuffer&& other) noexcept { *this = std::move(other); }

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& other) noexcept {
  if (this != &other) {
    release();
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

HugePageBuffer::~HugePageBuffer() { release(); }

void HugePageBuffer::release() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
  mapping_ = nullptr;
  data_ = nullptr;
  size_bytes_ = 0;
}

}  // namespace longhaul
