#include "gguf/gguf_writer.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace longhaul::gguf {

namespace {

// Larger alignments (tests of absurd values) are written with the default padding instead.
constexpr int64_t kMaxWriterAlignment = 1 << 20;

Value scalar(ValueType type, decltype(Value::data) data) {
  Value v;
  v.type = type;
  v.data = std::move(data);
  return v;
}

class ByteSink {
 public:
  template <typename T>
  void put(T v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void put_bytes(const std::vector<uint8_t>& b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  void pad_to(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
  }
  size_t size() const { return bytes_.size(); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

uint64_t as_u64(const Value& v) {
  if (auto i = v.as_int()) return static_cast<uint64_t>(*i);
  if (const auto* u = std::get_if<uint64_t>(&v.data)) return *u;
  if (auto f = v.as_float()) return static_cast<uint64_t>(*f);
  return 0;
}

double as_f64(const Value& v) { return v.as_float().value_or(0.0); }

// Writes the payload of `v` encoded as `type` (no type tag; the caller wrote it).
void put_value(ByteSink& out, ValueType type, const Value& v) {
  switch (type) {
    case ValueType::UINT8: out.put<uint8_t>(static_cast<uint8_t>(as_u64(v))); return;
    case ValueType::INT8: out.put<int8_t>(static_cast<int8_t>(as_u64(v))); return;
    case ValueType::UINT16: out.put<uint16_t>(static_cast<uint16_t>(as_u64(v))); return;
    case ValueType::INT16: out.put<int16_t>(static_cast<int16_t>(as_u64(v))); return;
    case ValueType::UINT32: out.put<uint32_t>(static_cast<uint32_t>(as_u64(v))); return;
    case ValueType::INT32: out.put<int32_t>(static_cast<int32_t>(as_u64(v))); return;
    case ValueType::UINT64: out.put<uint64_t>(as_u64(v)); return;
    case ValueType::INT64: out.put<int64_t>(static_cast<int64_t>(as_u64(v))); return;
    case ValueType::FLOAT32: out.put<float>(static_cast<float>(as_f64(v))); return;
    case ValueType::FLOAT64: out.put<double>(as_f64(v)); return;
    case ValueType::BOOL: out.put<uint8_t>(v.as_bool().value_or(as_u64(v) != 0) ? 1 : 0); return;
    case ValueType::STRING: out.put_string(v.as_string() != nullptr ? *v.as_string() : std::string()); return;
    case ValueType::ARRAY: {
      static const Value::Array kEmpty;
      const Value::Array* a = v.as_array() != nullptr ? v.as_array() : &kEmpty;
      out.put<uint32_t>(static_cast<uint32_t>(a->element_type));
      out.put<uint64_t>(a->elements.size());
      for (const Value& e : a->elements) put_value(out, a->element_type, e);
      return;
    }
  }
}

}  // namespace

Value make_u8(uint8_t v) { return scalar(ValueType::UINT8, uint64_t{v}); }
Value make_i8(int8_t v) { return scalar(ValueType::INT8, int64_t{v}); }
Value make_u16(uint16_t v) { return scalar(ValueType::UINT16, uint64_t{v}); }
Value make_i16(int16_t v) { return scalar(ValueType::INT16, int64_t{v}); }
Value make_u32(uint32_t v) { return scalar(ValueType::UINT32, uint64_t{v}); }
Value make_i32(int32_t v) { return scalar(ValueType::INT32, int64_t{v}); }
Value make_u64(uint64_t v) { return scalar(ValueType::UINT64, v); }
Value make_i64(int64_t v) { return scalar(ValueType::INT64, v); }
Value make_f32(float v) { return scalar(ValueType::FLOAT32, double{v}); }
Value make_f64(double v) { return scalar(ValueType::FLOAT64, v); }
Value make_bool(bool v) { return scalar(ValueType::BOOL, v); }
Value make_string(std::string v) { return scalar(ValueType::STRING, std::move(v)); }

Value make_array(ValueType element_type, std::vector<Value> elements) {
  Value::Array a;
  a.element_type = element_type;
  a.elements = std::move(elements);
  return scalar(ValueType::ARRAY, std::move(a));
}

Value make_string_array(const std::vector<std::string>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (const std::string& s : v) e.push_back(make_string(s));
  return make_array(ValueType::STRING, std::move(e));
}

Value make_f32_array(const std::vector<float>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (float x : v) e.push_back(make_f32(x));
  return make_array(ValueType::FLOAT32, std::move(e));
}

Value make_i32_array(const std::vector<int32_t>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (int32_t x : v) e.push_back(make_i32(x));
  return make_array(ValueType::INT32, std::move(e));
}

void GgufWriter::add(std::string key, Value value) { metadata_.push_back({std::move(key), std::move(value)}); }

void GgufWriter::add_tensor(std::string name, std::vector<int64_t> dims, tensor::DType type,
                            std::vector<uint8_t> bytes) {
  std::vector<uint64_t> udims(dims.begin(), dims.end());
  add_tensor_raw(std::move(name), std::move(udims), static_cast<uint32_t>(type), std::move(bytes));
}

void GgufWriter::add_tensor_raw(std::string name, std::vector<uint64_t> dims, uint32_t type_id,
                                std::vector<uint8_t> bytes) {
  tensors_.push_back({std::move(name), std::move(dims), type_id, std::move(bytes)});
}

size_t GgufWriter::alignment() const {
  for (const MetadataEntry& e : metadata_) {
    if (e.key != "general.alignment") continue;
    const std::optional<int64_t> a = e.value.as_int();
    if (a && *a > 0 && *a <= kMaxWriterAlignment && std::has_single_bit(static_cast<uint64_t>(*a)))
      return static_cast<size_t>(*a);
  }
  return 32;
}

std::vector<uint8_t> GgufWriter::to_bytes(GgufLayout* layout) const {
  GgufLayout l;
  ByteSink out;
  const size_t align = alignment();
  out.put<uint32_t>(0x46554747);  // "GGUF"
  out.put<uint32_t>(version_);
  l.n_tensors_offset = out.size();
  out.put<uint64_t>(tensors_.size());
  l.n_kv_offset = out.size();
  out.put<uint64_t>(metadata_.size());
  for (const MetadataEntry& e : metadata_) {
    l.kv_offsets.push_back(out.size());
    out.put_string(e.key);
    l.kv_value_offsets.push_back(out.size());
    out.put<uint32_t>(static_cast<uint32_t>(e.value.type));
    put_value(out, e.value.type, e.value);
  }
  // Tensor data offsets: each tensor starts aligned, relative to the data section.
  std::vector<uint64_t> rel_offsets;
  uint64_t next = 0;
  for (const PendingTensor& t : tensors_) {
    rel_offsets.push_back(next);
    next += (t.bytes.size() + align - 1) / align * align;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PendingTensor& t = tensors_[i];
    l.tensor_info_offsets.push_back(out.size());
    out.put_string(t.name);
    l.tensor_n_dims_offsets.push_back(out.size());
    out.put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) out.put<uint64_t>(d);
    l.tensor_type_offsets.push_back(out.size());
    out.put<uint32_t>(t.type_id);
    l.tensor_offset_offsets.push_back(out.size());
    out.put<uint64_t>(rel_offsets[i]);
  }
  l.tensor_infos_end = out.size();
  out.pad_to(align);
  l.data_offset = out.size();
  for (const PendingTensor& t : tensors_) {
    l.tensor_data_offsets.push_back(out.size());
    out.put_bytes(t.bytes);
    out.pad_to(align);
  }
  if (layout != nullptr) *layout = std::move(l);
  return std::move(out.bytes());
}

Status GgufWriter::write_file(const std::string& path, GgufLayout* layout) const {
  const std::vector<uint8_t> bytes = to_bytes(layout);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Status::error("cannot create '" + path + "': " + std::strerror(errno));
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool closed = std::fclose(f) == 0;
  if (written != bytes.size() || !closed) return Status::error("cannot write '" + path + "': " + std::strerror(errno));
  return Status::ok();
}

}  // namespace longhaul::gguf
