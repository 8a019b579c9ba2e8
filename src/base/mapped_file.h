// Read-only memory-mapped file. Move-only: the mapping is released once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace longhaul {

class MappedFile {
 public:
  // Fails with a message naming the path for a missing, unreadable, or non-regular file.
  static Result<MappedFile> open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size_bytes() const { return size_bytes_; }
  const std::string& path() const { return path_; }
  // Drops the whole pages inside [p, p + n_bytes) from this process's resident memory (madvise DONTNEED); a
  // later read faults them back in from the page cache. For data copied elsewhere that is rarely read again.
  // Ranges outside the mapping are ignored.
  void release_pages(const void* p, size_t n_bytes) const;

 private:
  void release();
  const uint8_t* data_ = nullptr;
  size_t size_bytes_ = 0;
  std::string path_;
};

// Whole file as a string (small text files: prompts, fixtures).
Result<std::string> read_text_file(const std::string& path);

}  // namespace longhaul
