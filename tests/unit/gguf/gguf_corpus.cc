#include "gguf_corpus.h"

#include <cstring>
#include <utility>

namespace longhaul::gguf::corpus {

namespace {

std::vector<uint8_t> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 7 * i);
  return b;
}

// `depth` arrays nested inside each other around a single int32.
Value nested_array(int depth) {
  Value v = make_i32_array({42});
  for (int i = 1; i < depth; ++i) v = make_array(ValueType::ARRAY, {std::move(v)});
  return v;
}

// A writer with one tensor, for cases that need odd tensor infos.
std::vector<uint8_t> one_tensor_file(std::vector<uint64_t> dims, uint32_t type_id, size_t n_bytes) {
  GgufWriter w;
  w.add_string("general.architecture", "test");
  w.add_tensor_raw("w", std::move(dims), type_id, pattern_bytes(n_bytes, 1));
  return w.to_bytes();
}

}  // namespace

void put_u32(std::vector<uint8_t>& bytes, size_t offset, uint32_t v) { std::memcpy(bytes.data() + offset, &v, 4); }
void put_u64(std::vector<uint8_t>& bytes, size_t offset, uint64_t v) { std::memcpy(bytes.data() + offset, &v, 8); }

GgufWriter small_valid_writer() {
  GgufWriter w;
  w.add_string("general.architecture", "test");  // kv 0
  w.add_u32("a.u32", 7);                          // kv 1
  w.add_bool("a.bool", true);                     // kv 2
  w.add("a.arr", make_i32_array({1, 2, 3}));      // kv 3
  w.add_string("a.str", "xy");                    // kv 4
  w.add("a.nested", make_array(ValueType::ARRAY, {make_i32_array({1}), make_i32_array({2, 3})}));  // kv 5
  w.add_tensor("w.q8", {32, 2}, tensor::DType::Q8_0, pattern_bytes(2 * 34, 3));  // 68 bytes, padded to 96
  w.add_tensor("w.f32", {8}, tensor::DType::F32, pattern_bytes(32, 5));         // exactly one alignment unit
  return w;
}

std::vector<uint8_t> small_valid_file(GgufLayout* layout) { return small_valid_writer().to_bytes(layout); }

std::vector<CorpusCase> make_corpus() {
  GgufLayout l;
  const std::vector<uint8_t> valid = small_valid_file(&l);
  std::vector<CorpusCase> cases;
  // Adds a copy of the valid file with `patch` applied.
  auto patched = [&](std::string name, std::string expected, auto patch) {
    std::vector<uint8_t> b = valid;
    patch(b);
    cases.push_back({std::move(name), std::move(b), std::move(expected)});
  };
  auto written = [&](std::string name, std::string expected, const GgufWriter& w) {
    cases.push_back({std::move(name), w.to_bytes(), std::move(expected)});
  };

  cases.push_back({"valid_small", valid, ""});

  // Header.
  cases.push_back({"empty", {}, "too short to hold the magic"});
  cases.push_back({"three_bytes", {'G', 'G', 'U'}, "too short to hold the magic"});
  patched("bad_magic", "is not a GGUF file (magic 0x46554758", [](auto& b) { b[0] = 'X'; });
  patched("elf_magic", "is not a GGUF file (magic 0x464c457f", [](auto& b) { put_u32(b, 0, 0x464c457f); });
  patched("version_1", "GGUF version 1 is not supported", [](auto& b) { put_u32(b, 4, 1); });
  patched("version_99", "unsupported GGUF version 99", [](auto& b) { put_u32(b, 4, 99); });
  patched("version_big_endian", "big-endian GGUF files are not supported", [](auto& b) { put_u32(b, 4, 0x03000000); });
  patched("version_2", "", [](auto& b) { put_u32(b, 4, 2); });
  patched("n_tensors_huge", "tensor count 1099511627776 exceeds the limit",
          [&](auto& b) { put_u64(b, l.n_tensors_offset, 1ull << 40); });
  patched("n_kv_huge", "metadata count 18446744073709551615 exceeds the limit",
          [&](auto& b) { put_u64(b, l.n_kv_offset, ~0ull); });
  patched("n_tensors_past_end", "truncated: reading tensor info 2 of 1000 needs 8 bytes at offset", [&](auto& b) {
    put_u64(b, l.n_tensors_offset, 1000);
    b.resize(l.tensor_infos_end);
  });

  // Metadata.
  patched("key_length_huge", "string length 18446744073709551615 at offset 24 exceeds the limit",
          [&](auto& b) { put_u64(b, l.kv_offsets[0], ~0ull); });
  patched("key_length_past_end", "truncated: reading metadata key 0 of 6 needs 1048576 bytes at offset 32",
          [&](auto& b) { put_u64(b, l.kv_offsets[0], 1ull << 20); });
  patched("string_value_huge", "reading the value of metadata 'a.str': string length 1099511627776",
          [&](auto& b) { put_u64(b, l.kv_value_offsets[4] + 4, 1ull << 40); });
  patched("array_count_huge", "array of 1152921504606846976 elements",
          [&](auto& b) { put_u64(b, l.kv_value_offsets[3] + 8, 1ull << 60); });
  patched("array_count_past_end", "truncated: reading the value of metadata 'a.arr' needs 4194304 bytes",
          [&](auto& b) { put_u64(b, l.kv_value_offsets[3] + 8, 1ull << 20); });
  patched("nested_array_count_past_end", "(array element 1 of 2) needs 4000000 bytes",
          [&](auto& b) { put_u64(b, l.kv_value_offsets[5] + 36, 1000000); });
  patched("value_type_unknown", "metadata 'a.u32' has unknown value type 13",
          [&](auto& b) { put_u32(b, l.kv_value_offsets[1], 13); });
  patched("array_element_type_unknown", "unknown array element type 99",
          [&](auto& b) { put_u32(b, l.kv_value_offsets[3] + 4, 99); });
  patched("bool_byte_2", "is 2, expected 0 or 1", [&](auto& b) { b[l.kv_value_offsets[2] + 4] = 2; });
  {
    GgufWriter w;
    w.add("deep", nested_array(8));
    written("arrays_depth_8", "", w);
    GgufWriter w9;
    w9.add("deep", nested_array(9));
    written("arrays_depth_9", "arrays nested deeper than the limit of 8", w9);
  }
  {
    GgufWriter w = small_valid_writer();
    w.add_u32("a.u32", 8);
    written("duplicate_key", "duplicate metadata key 'a.u32'", w);
  }

  // Alignment.
  for (auto [name, value, expected] : {std::tuple<const char*, uint64_t, const char*>{
                                           "alignment_0", 0, "general.alignment is 0, expected a nonzero power of two"},
                                       {"alignment_3", 3, "general.alignment is 3, expected a nonzero power of two"},
                                       {"alignment_64", 64, ""},
                                       {"alignment_2_63", 1ull << 63, "truncated: the data section starts at offset"}}) {
    GgufWriter w = small_valid_writer();
    w.add("general.alignment", value > 0xffffffffu ? make_u64(value) : make_u32(static_cast<uint32_t>(value)));
    written(name, expected, w);
  }
  {
    GgufWriter w = small_valid_writer();
    w.add_string("general.alignment", "32");
    written("alignment_string", "general.alignment has type string, expected uint32", w);
  }

  // Tensor infos.
  patched("n_dims_5", "tensor 'w.q8' has 5 dimensions, expected 1 to 4",
          [&](auto& b) { put_u32(b, l.tensor_n_dims_offsets[0], 5); });
  patched("n_dims_0", "tensor 'w.q8' has 0 dimensions", [&](auto& b) { put_u32(b, l.tensor_n_dims_offsets[0], 0); });
  patched("dim_zero", "tensor 'w.q8' has dimension 1 = 0",
          [&](auto& b) { put_u64(b, l.tensor_n_dims_offsets[0] + 4 + 8, 0); });
  patched("dim_sign_bit", "has dimension 0 = 9223372036854775808",
          [&](auto& b) { put_u64(b, l.tensor_n_dims_offsets[0] + 4, 1ull << 63); });
  cases.push_back({"dims_product_overflow", one_tensor_file({1ull << 32, 1ull << 32}, 0, 32),
                   "tensor 'w': the product of its dimensions overflows"});
  cases.push_back({"size_bytes_overflow", one_tensor_file({1ull << 62, 1}, 0, 32),
                   "tensor 'w': its size in bytes overflows"});
  cases.push_back({"dims_huge_past_end", one_tensor_file({1ull << 40, 4}, 0, 32), "is past the end"});
  cases.push_back({"row_not_block_multiple", one_tensor_file({31, 2}, 8, 68),
                   "tensor 'w' of type q8_0 has row length 31, not a multiple of the block size 32"});
  cases.push_back({"n_dims_4", one_tensor_file({32, 1, 1, 2}, 8, 68), ""});
  patched("type_iq2_xxs", "tensor 'w.q8' has type iq2_xxs (16), which longhaul does not support",
          [&](auto& b) { put_u32(b, l.tensor_type_offsets[0], 16); });
  patched("type_q8_k", "has type q8_K (15), which longhaul does not support",
          [&](auto& b) { put_u32(b, l.tensor_type_offsets[0], 15); });
  patched("type_q8_1", "has type q8_1 (9), which longhaul does not support",
          [&](auto& b) { put_u32(b, l.tensor_type_offsets[0], 9); });
  patched("type_unknown_99", "has unknown type 99, which longhaul does not support",
          [&](auto& b) { put_u32(b, l.tensor_type_offsets[0], 99); });
  {
    GgufWriter w = small_valid_writer();
    w.add_tensor("w.f32", {8}, tensor::DType::F32, pattern_bytes(32, 9));
    written("duplicate_tensor", "duplicate tensor name 'w.f32'", w);
  }

  // Tensor data placement.
  patched("offset_misaligned", "tensor 'w.f32' has offset 100, not a multiple of the alignment 32",
          [&](auto& b) { put_u64(b, l.tensor_offset_offsets[1], 100); });
  patched("offset_past_end", "tensor 'w.f32': offset 1099511627776 + 32 bytes is past the end",
          [&](auto& b) { put_u64(b, l.tensor_offset_offsets[1], 1ull << 40); });
  patched("offset_wraps", "is past the end", [&](auto& b) { put_u64(b, l.tensor_offset_offsets[1], ~31ull); });
  patched("tensors_overlap", "overlap", [&](auto& b) { put_u64(b, l.tensor_offset_offsets[1], 64); });
  {
    std::vector<uint8_t> b(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(l.data_offset + 100));
    cases.push_back({"data_truncated", std::move(b), "tensor 'w.f32': offset 96 + 32 bytes is past the end"});
  }
  {
    GgufWriter w;
    w.add_string("general.architecture", "test");
    GgufLayout lw;
    std::vector<uint8_t> b = w.to_bytes(&lw);
    b.resize(lw.tensor_infos_end);  // no tensors, so no data section and no padding needed
    cases.push_back({"no_tensors_unpadded", std::move(b), ""});
  }
  return cases;
}

}  // namespace longhaul::gguf::corpus
