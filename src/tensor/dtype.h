// Element types of tensors, numbered as GGUF numbers them, with their block layout.
// A quantized row of n elements is n / block_size blocks of type_size_bytes each.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace longhaul::tensor {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,  // activations only (pairs with Q4_1 / Q5_1 weights)
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,  // activations only (pairs with the K-quants)
  BF16 = 30,
};

struct DTypeInfo {
  DType type;
  const char* name;        // as llama.cpp prints it: "q4_K", "f32"
  int64_t block_size;      // elements per block
  int64_t type_size_bytes;  // bytes per block
  bool is_quantized;
};

// Info for a GGUF type id, or nullopt for ids we do not support (the caller names the id).
std::optional<DTypeInfo> dtype_info(uint32_t gguf_type_id);
const DTypeInfo& info(DType type);
inline const char* dtype_name(DType type) { return info(type).name; }

// Bytes of a row of n_elements; n_elements must be a multiple of the block size.
inline int64_t row_size_bytes(DType type, int64_t n_elements) {
  const DTypeInfo& i = info(type);
  return n_elements / i.block_size * i.type_size_bytes;
}

// Name of any GGUF type id, including ones we do not support ("iq2_xxs", "type 99").
std::string gguf_type_name(uint32_t gguf_type_id);

}  // namespace longhaul::tensor
