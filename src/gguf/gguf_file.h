// GGUF reader: header v2/v3, typed metadata (every value type, nested arrays),
// tensor infos, alignment, and byte-exact bounds checks. Knows nothing about models.
//
// Format (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
// n_kv x {string key, u32 value_type, value}, n_tensors x {string name, u32 n_dims,
// n_dims x u64 ne, u32 ggml_type, u64 offset}, padding to `general.alignment`
// (default 32), then the tensor data section. Strings are u64 length + bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/mapped_file.h"
#include "base/status.h"
#include "tensor/dtype.h"

namespace longhaul::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* value_type_name(ValueType type);

// One metadata value. Scalars are widened to int64/uint64/double on read; the
// original type is kept in `type`. An array keeps its element type and elements
// (which may themselves be arrays).
struct Value {
  struct Array {
    ValueType element_type = ValueType::UINT8;
    std::vector<Value> elements;
  };
  ValueType type = ValueType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> data;

  std::optional<int64_t> as_int() const;     // any integer type or bool; nullopt otherwise or if a u64 overflows
  std::optional<double> as_float() const;    // float or integer types
  std::optional<bool> as_bool() const;       // bool only
  const std::string* as_string() const;      // string only
  const Array* as_array() const;             // array only
  // Short human-readable rendering, arrays cut after max_elements: `[1, 2, 3, ... (49152 total)]`.
  // Strings are quoted, escaped (\n, \x01) and cut after 160 bytes: `"abc"... (10234 bytes)`.
  std::string to_display_string(size_t max_elements = 8) const;
};

struct MetadataEntry {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne[0] first: ne[0] is the row length (innermost), as GGUF stores it
  tensor::DType type = tensor::DType::F32;
  uint64_t offset = 0;        // relative to the start of the data section
  int64_t n_elements = 0;
  int64_t size_bytes = 0;
  const uint8_t* data = nullptr;  // points into the mapped file; valid while the GgufFile lives

  int64_t n_rows() const { return dims.empty() ? 0 : n_elements / dims[0]; }
};

// Limits that keep a hostile file from making us allocate or loop without bound.
struct ParseLimits {
  uint64_t max_string_bytes = 64ull << 20;  // one string (the chat template is the largest seen: ~10 KB)
  uint64_t max_array_elements = 64ull << 20;  // one array (vocabularies: ~262K)
  uint32_t max_array_depth = 8;             // nesting of arrays inside arrays
  uint64_t max_tensors = 1u << 20;
  uint64_t max_kv = 1u << 20;
  uint32_t max_dims = 4;                    // GGML_MAX_DIMS
};

// Immutable once parsed: the const methods may be called from several threads at once.
class GgufFile {
 public:
  // Maps `path` and parses it. Errors name the path and the problem: missing file,
  // not a GGUF file (bad magic), unsupported version, truncated header or data,
  // absurd counts/dimensions/offsets, overlapping or misaligned tensors, tensor
  // types longhaul does not support.
  static Result<GgufFile> open(const std::string& path, const ParseLimits& limits = {});
  // Parses bytes the caller keeps alive for the object's lifetime (fuzzing, tests).
  static Result<GgufFile> parse(const uint8_t* data, size_t size_bytes, const ParseLimits& limits = {});

  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  size_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }  // file offset of the data section
  size_t file_size_bytes() const { return size_bytes_; }

  const std::vector<MetadataEntry>& metadata() const { return metadata_; }
  const Value* find(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // Typed arrays; an error names the key and the type found when it is missing or of another type.
  Result<std::vector<std::string>> get_string_array(std::string_view key) const;
  Result<std::vector<float>> get_float_array(std::string_view key) const;
  Result<std::vector<int32_t>> get_int_array(std::string_view key) const;

  // MappedFile::release_pages on the file's mapping (nothing when parsing caller-owned bytes).
  void release_pages(const void* p, size_t n_bytes) const {
    if (mapping_) mapping_->release_pages(p, n_bytes);
  }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> mapping_;  // null when parsing caller-owned bytes
  std::string path_;
  const uint8_t* bytes_ = nullptr;
  size_t size_bytes_ = 0;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<MetadataEntry> metadata_;
  std::vector<TensorInfo> tensors_;

  friend class Parser;
};

}  // namespace longhaul::gguf
