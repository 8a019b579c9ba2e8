// Small GGUF v3 writer, for tests: builds model files from random weights and
// valid files that tests then corrupt. It writes what it is given without
// validating it (a tensor may have 5 dims or an unknown type id) so that the
// reader's checks can be exercised; layout() reports where each field landed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "gguf/gguf_file.h"
#include "tensor/dtype.h"

namespace longhaul::gguf {

// Value constructors for the writer (the reader's Value is a plain struct).
Value make_u8(uint8_t v);
Value make_i8(int8_t v);
Value make_u16(uint16_t v);
Value make_i16(int16_t v);
Value make_u32(uint32_t v);
Value make_i32(int32_t v);
Value make_u64(uint64_t v);
Value make_i64(int64_t v);
Value make_f32(float v);
Value make_f64(double v);
Value make_bool(bool v);
Value make_string(std::string v);
// Elements are encoded as `element_type`, whatever their own `type` says.
Value make_array(ValueType element_type, std::vector<Value> elements);
Value make_string_array(const std::vector<std::string>& v);
Value make_f32_array(const std::vector<float>& v);
Value make_i32_array(const std::vector<int32_t>& v);

// File offsets of the fields of the last file written, so tests can patch them.
struct GgufLayout {
  size_t n_tensors_offset = 0;                 // u64 tensor count in the header
  size_t n_kv_offset = 0;                      // u64 key/value count in the header
  std::vector<size_t> kv_offsets;              // [n_kv] start of each entry (its key's u64 length)
  std::vector<size_t> kv_value_offsets;        // [n_kv] start of each entry's u32 value type
  std::vector<size_t> tensor_info_offsets;     // [n_tensors] start of each info (its name's u64 length)
  std::vector<size_t> tensor_n_dims_offsets;   // [n_tensors] u32 n_dims
  std::vector<size_t> tensor_type_offsets;     // [n_tensors] u32 ggml type
  std::vector<size_t> tensor_offset_offsets;   // [n_tensors] u64 data offset
  size_t tensor_infos_end = 0;                 // first byte after the last tensor info
  size_t data_offset = 0;                      // start of the data section
  std::vector<size_t> tensor_data_offsets;     // [n_tensors] file offset of each tensor's bytes
};

class GgufWriter {
 public:
  GgufWriter() = default;

  void set_version(uint32_t version) { version_ = version; }  // 3 unless a test wants another
  void add(std::string key, Value value);
  // Shorthands for the common scalar types.
  void add_u32(std::string key, uint32_t v) { add(std::move(key), make_u32(v)); }
  void add_f32(std::string key, float v) { add(std::move(key), make_f32(v)); }
  void add_bool(std::string key, bool v) { add(std::move(key), make_bool(v)); }
  void add_string(std::string key, std::string v) { add(std::move(key), make_string(std::move(v))); }

  // `bytes` is the tensor's data, row-major with dims[0] innermost; it should be
  // row_size_bytes(type, dims[0]) * rows long but the writer does not insist.
  void add_tensor(std::string name, std::vector<int64_t> dims, tensor::DType type, std::vector<uint8_t> bytes);
  // Raw form for corrupt files: any type id, any number of dims.
  void add_tensor_raw(std::string name, std::vector<uint64_t> dims, uint32_t type_id, std::vector<uint8_t> bytes);

  // Tensor data is padded to the alignment taken from a `general.alignment` entry
  // when it holds a nonzero power of two up to 1 MiB, else 32 (the GGUF default).
  size_t alignment() const;

  std::vector<uint8_t> to_bytes(GgufLayout* layout = nullptr) const;
  Status write_file(const std::string& path, GgufLayout* layout = nullptr) const;

 private:
  struct PendingTensor {
    std::string name;
    std::vector<uint64_t> dims;  // ne[0] first
    uint32_t type_id = 0;
    std::vector<uint8_t> bytes;
  };
  uint32_t version_ = 3;
  std::vector<MetadataEntry> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace longhaul::gguf
