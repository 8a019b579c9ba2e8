// GGUF parser. Every read goes through Parser::need(), which checks the byte range
// against the buffer size before touching memory, so a hostile or truncated file
// yields a one-line error instead of a crash. Counts and sizes are checked with
// overflow-safe arithmetic before anything is allocated.
#include "gguf/gguf_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <utility>

namespace longhaul::gguf {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr size_t kDefaultAlignment = 32;

// Smallest encoding of one value of each type, used to reject element counts the
// remaining bytes cannot possibly hold before reserving memory for them.
uint64_t min_encoded_bytes(ValueType type) {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL:
      return 1;
    case ValueType::UINT16:
    case ValueType::INT16:
      return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32:
      return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING:  // u64 length
      return 8;
    case ValueType::ARRAY:  // u32 element type + u64 count
      return 12;
  }
  return 1;
}

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

// Reads one GGUF byte buffer into a GgufFile. Holds the read cursor and a
// description of what is being read, which every error message names.
class Parser {
 public:
  Parser(const uint8_t* data, size_t size_bytes, const ParseLimits& limits, std::string path)
      : data_(data), size_(size_bytes), limits_(limits), path_(std::move(path)) {}

  Status run(GgufFile& out);

 private:
  // What is being read when an error happens; formatted only on failure.
  enum class Section { kHeader, kKey, kValue, kTensorInfo };

  Status fail(const std::string& message) const {
    return Status::error(path_.empty() ? message : path_ + ": " + message);
  }
  std::string where() const;

  Status need(uint64_t n_bytes) const {
    if (n_bytes <= size_ - pos_) return Status::ok();
    return fail("truncated: " + where() + " needs " + std::to_string(n_bytes) + " bytes at offset " +
                std::to_string(pos_) + ", file has " + std::to_string(size_));
  }
  template <typename T>
  Status read(T& out) {
    LH_RETURN_IF_ERROR(need(sizeof(T)));
    std::memcpy(&out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }
  Status read_string(std::string& out);
  Status read_value(ValueType type, uint32_t depth, Value& out);
  Status read_array(uint32_t depth, Value& out);
  Status read_header(GgufFile& out, uint64_t& n_tensors, uint64_t& n_kv);
  Status read_metadata(GgufFile& out, uint64_t n_kv);
  Status read_tensor_info(TensorInfo& info);
  Status read_alignment(GgufFile& out);
  Status place_tensors(GgufFile& out);

  const uint8_t* data_;
  size_t size_;
  ParseLimits limits_;
  std::string path_;
  size_t pos_ = 0;

  Section section_ = Section::kHeader;
  uint64_t index_ = 0;     // key or tensor index within its section
  uint64_t count_ = 0;     // number of keys or tensors in the section
  std::string item_name_;  // key or tensor name once read
  bool in_array_ = false;  // innermost array element being read, if any
  uint64_t element_index_ = 0;
  uint64_t element_count_ = 0;
};

std::string Parser::where() const {
  std::string s;
  switch (section_) {
    case Section::kHeader:
      return "reading the header";
    case Section::kKey:
      return "reading metadata key " + std::to_string(index_) + " of " + std::to_string(count_);
    case Section::kValue:
      s = "reading the value of metadata '" + item_name_ + "'";
      break;
    case Section::kTensorInfo:
      s = "reading tensor info " + std::to_string(index_) + " of " + std::to_string(count_);
      if (!item_name_.empty()) s += " ('" + item_name_ + "')";
      return s;
  }
  if (in_array_)
    s += " (array element " + std::to_string(element_index_) + " of " + std::to_string(element_count_) + ")";
  return s;
}

Status Parser::read_string(std::string& out) {
  uint64_t n = 0;
  LH_RETURN_IF_ERROR(read(n));
  if (n > limits_.max_string_bytes)
    return fail(where() + ": string length " + std::to_string(n) + " at offset " + std::to_string(pos_ - 8) +
                " exceeds the limit of " + std::to_string(limits_.max_string_bytes) + " bytes");
  LH_RETURN_IF_ERROR(need(n));
  out.assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
  pos_ += n;
  return Status::ok();
}

Status Parser::read_value(ValueType type, uint32_t depth, Value& out) {
  out.type = type;
  switch (type) {
    case ValueType::UINT8: {
      uint8_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = uint64_t{v};
      return Status::ok();
    }
    case ValueType::INT8: {
      int8_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = int64_t{v};
      return Status::ok();
    }
    case ValueType::UINT16: {
      uint16_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = uint64_t{v};
      return Status::ok();
    }
    case ValueType::INT16: {
      int16_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = int64_t{v};
      return Status::ok();
    }
    case ValueType::UINT32: {
      uint32_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = uint64_t{v};
      return Status::ok();
    }
    case ValueType::INT32: {
      int32_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = int64_t{v};
      return Status::ok();
    }
    case ValueType::UINT64: {
      uint64_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = v;
      return Status::ok();
    }
    case ValueType::INT64: {
      int64_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = v;
      return Status::ok();
    }
    case ValueType::FLOAT32: {
      float v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = double{v};
      return Status::ok();
    }
    case ValueType::FLOAT64: {
      double v = 0;
      LH_RETURN_IF_ERROR(read(v));
      out.data = v;
      return Status::ok();
    }
    case ValueType::BOOL: {
      uint8_t v = 0;
      LH_RETURN_IF_ERROR(read(v));
      // A bool byte other than 0/1 means the reader is out of step with the writer.
      if (v > 1) return fail(where() + ": bool byte at offset " + std::to_string(pos_ - 1) + " is " +
                             std::to_string(v) + ", expected 0 or 1");
      out.data = v == 1;
      return Status::ok();
    }
    case ValueType::STRING: {
      std::string s;
      LH_RETURN_IF_ERROR(read_string(s));
      out.data = std::move(s);
      return Status::ok();
    }
    case ValueType::ARRAY:
      return read_array(depth, out);
  }
  return fail(where() + ": unknown value type " + std::to_string(static_cast<uint32_t>(type)));
}

Status Parser::read_array(uint32_t depth, Value& out) {
  if (depth >= limits_.max_array_depth)
    return fail(where() + ": arrays nested deeper than the limit of " + std::to_string(limits_.max_array_depth));
  uint32_t element_type = 0;
  uint64_t n = 0;
  LH_RETURN_IF_ERROR(read(element_type));
  if (!is_known_value_type(element_type))
    return fail(where() + ": unknown array element type " + std::to_string(element_type) + " at offset " +
                std::to_string(pos_ - 4));
  LH_RETURN_IF_ERROR(read(n));
  if (n > limits_.max_array_elements)
    return fail(where() + ": array of " + std::to_string(n) + " elements at offset " + std::to_string(pos_ - 8) +
                " exceeds the limit of " + std::to_string(limits_.max_array_elements));
  const ValueType etype = static_cast<ValueType>(element_type);
  // n <= max_array_elements (< 2^32 by default) so the product cannot overflow for sane
  // limits; still compare by division to stay correct for any limit.
  const uint64_t min_bytes = min_encoded_bytes(etype);
  if (n > (size_ - pos_) / min_bytes) {
    uint64_t needed = 0;
    if (__builtin_mul_overflow(n, min_bytes, &needed)) needed = std::numeric_limits<uint64_t>::max();
    return need(needed);  // reports truncation with the element count's minimum size
  }
  Value::Array array;
  array.element_type = etype;
  array.elements.resize(static_cast<size_t>(n));
  const bool saved_in_array = in_array_;
  const uint64_t saved_index = element_index_, saved_count = element_count_;
  for (uint64_t i = 0; i < n; ++i) {
    in_array_ = true;
    element_index_ = i;
    element_count_ = n;
    LH_RETURN_IF_ERROR(read_value(etype, depth + 1, array.elements[i]));
  }
  in_array_ = saved_in_array;
  element_index_ = saved_index;
  element_count_ = saved_count;
  out.data = std::move(array);
  return Status::ok();
}

Status Parser::read_header(GgufFile& out, uint64_t& n_tensors, uint64_t& n_kv) {
  section_ = Section::kHeader;
  const std::string quoted = path_.empty() ? std::string("input") : "'" + path_ + "'";
  if (size_ < 4)
    return Status::error(quoted + " is not a GGUF file (" + std::to_string(size_) +
                         " bytes, too short to hold the magic)");
  uint32_t magic = 0;
  LH_RETURN_IF_ERROR(read(magic));
  if (magic != kMagic)
    return Status::error(quoted + " is not a GGUF file (magic " + hex32(magic) + ", expected " + hex32(kMagic) +
                         " \"GGUF\")");
  uint32_t version = 0;
  LH_RETURN_IF_ERROR(read(version));
  if (version == 1)
    return fail("GGUF version 1 is not supported (longhaul reads v2 and v3; re-convert the model with a current "
                "llama.cpp)");
  if (version != 2 && version != 3) {
    // A byte-swapped small version means the file was written big-endian.
    if (__builtin_bswap32(version) >= 1 && __builtin_bswap32(version) <= 3)
      return fail("big-endian GGUF files are not supported (version field " + hex32(version) + ")");
    return fail("unsupported GGUF version " + std::to_string(version) + " (longhaul reads v2 and v3)");
  }
  out.version_ = version;
  LH_RETURN_IF_ERROR(read(n_tensors));
  LH_RETURN_IF_ERROR(read(n_kv));
  if (n_tensors > limits_.max_tensors)
    return fail("tensor count " + std::to_string(n_tensors) + " exceeds the limit of " +
                std::to_string(limits_.max_tensors));
  if (n_kv > limits_.max_kv)
    return fail("metadata count " + std::to_string(n_kv) + " exceeds the limit of " + std::to_string(limits_.max_kv));
  return Status::ok();
}

Status Parser::read_metadata(GgufFile& out, uint64_t n_kv) {
  std::unordered_set<std::string> seen;
  out.metadata_.reserve(static_cast<size_t>(std::min<uint64_t>(n_kv, (size_ - pos_) / 13 + 1)));
  count_ = n_kv;
  for (uint64_t i = 0; i < n_kv; ++i) {
    section_ = Section::kKey;
    index_ = i;
    MetadataEntry entry;
    LH_RETURN_IF_ERROR(read_string(entry.key));
    if (!seen.insert(entry.key).second) return fail("duplicate metadata key '" + entry.key + "'");
    item_name_ = entry.key;
    section_ = Section::kValue;
    uint32_t type = 0;
    LH_RETURN_IF_ERROR(read(type));
    if (!is_known_value_type(type))
      return fail("metadata '" + entry.key + "' has unknown value type " + std::to_string(type) + " at offset " +
                  std::to_string(pos_ - 4));
    LH_RETURN_IF_ERROR(read_value(static_cast<ValueType>(type), 0, entry.value));
    out.metadata_.push_back(std::move(entry));
  }
  item_name_.clear();
  return Status::ok();
}

Status Parser::read_tensor_info(TensorInfo& info) {
  LH_RETURN_IF_ERROR(read_string(info.name));
  item_name_ = info.name;
  const std::string label = "tensor '" + info.name + "'";
  uint32_t n_dims = 0;
  LH_RETURN_IF_ERROR(read(n_dims));
  if (n_dims == 0 || n_dims > limits_.max_dims)
    return fail(label + " has " + std::to_string(n_dims) + " dimensions, expected 1 to " +
                std::to_string(limits_.max_dims));
  info.dims.resize(n_dims);
  int64_t n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t ne = 0;
    LH_RETURN_IF_ERROR(read(ne));
    // Zero-sized dimensions are rejected: no model tensor is empty and n_rows() divides by ne[0].
    if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return fail(label + " has dimension " + std::to_string(d) + " = " + std::to_string(ne) +
                  ", expected 1 to 2^63-1");
    info.dims[d] = static_cast<int64_t>(ne);
    if (__builtin_mul_overflow(n_elements, info.dims[d], &n_elements))
      return fail(label + ": the product of its dimensions overflows 64 bits");
  }
  info.n_elements = n_elements;
  uint32_t type_id = 0;
  LH_RETURN_IF_ERROR(read(type_id));
  const auto dtype = tensor::dtype_info(type_id);
  // Q8_1 and Q8_K only exist as intermediate activation formats; no weight file uses them.
  if (!dtype || dtype->type == tensor::DType::Q8_1 || dtype->type == tensor::DType::Q8_K) {
    const std::string name = tensor::gguf_type_name(type_id);
    const std::string what = name.rfind("type ", 0) == 0 ? "unknown type " + std::to_string(type_id)
                                                         : "type " + name + " (" + std::to_string(type_id) + ")";
    return fail(label + " has " + what + ", which longhaul does not support");
  }
  info.type = dtype->type;
  if (info.dims[0] % dtype->block_size != 0)
    return fail(label + " of type " + dtype->name + " has row length " + std::to_string(info.dims[0]) +
                ", not a multiple of the block size " + std::to_string(dtype->block_size));
  if (__builtin_mul_overflow(n_elements / dtype->block_size, dtype->type_size_bytes, &info.size_bytes))
    return fail(label + ": its size in bytes overflows 64 bits (" + std::to_string(n_elements) + " elements)");
  LH_RETURN_IF_ERROR(read(info.offset));
  return Status::ok();
}

Status Parser::read_alignment(GgufFile& out) {
  out.alignment_ = kDefaultAlignment;
  const Value* v = out.find("general.alignment");
  if (v == nullptr) return Status::ok();
  // The spec says uint32; any integer type is accepted since the value is what matters.
  const uint64_t* as_u = std::get_if<uint64_t>(&v->data);
  const int64_t* as_i = std::get_if<int64_t>(&v->data);
  if (as_u == nullptr && as_i == nullptr)
    return fail("general.alignment has type " + std::string(value_type_name(v->type)) + ", expected uint32");
  if (as_i != nullptr && *as_i <= 0)
    return fail("general.alignment is " + std::to_string(*as_i) + ", expected a nonzero power of two");
  const uint64_t a = as_u != nullptr ? *as_u : static_cast<uint64_t>(*as_i);
  if (!std::has_single_bit(a))
    return fail("general.alignment is " + std::to_string(a) + ", expected a nonzero power of two");
  out.alignment_ = static_cast<size_t>(a);
  return Status::ok();
}

Status Parser::place_tensors(GgufFile& out) {
  // The data section starts at the first aligned offset after the tensor infos.
  const uint64_t align = out.alignment_;
  uint64_t data_offset = 0;
  if (__builtin_add_overflow(static_cast<uint64_t>(pos_), align - 1, &data_offset))
    return fail("data section offset overflows 64 bits (alignment " + std::to_string(align) + ")");
  data_offset &= ~(align - 1);
  out.data_offset_ = static_cast<size_t>(data_offset);
  if (out.tensors_.empty()) return Status::ok();
  if (data_offset > size_)
    return fail("truncated: the data section starts at offset " + std::to_string(data_offset) + " (aligned to " +
                std::to_string(align) + "), file has " + std::to_string(size_));
  const uint64_t data_size = size_ - data_offset;
  for (TensorInfo& t : out.tensors_) {
    const std::string label = "tensor '" + t.name + "'";
    if (t.offset % align != 0)
      return fail(label + " has offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
                  std::to_string(align));
    const uint64_t size = static_cast<uint64_t>(t.size_bytes);
    if (t.offset > data_size || size > data_size - t.offset)
      return fail(label + ": offset " + std::to_string(t.offset) + " + " + std::to_string(size) +
                  " bytes is past the end of the data section (" + std::to_string(data_size) + " bytes at offset " +
                  std::to_string(data_offset) + ", file has " + std::to_string(size_) + ")");
    t.data = data_ + data_offset + t.offset;
  }
  // Overlapping tensors would alias weights; only a broken writer produces them.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(out.tensors_.size());
  for (const TensorInfo& t : out.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& cur = *by_offset[i];
    if (prev.offset + static_cast<uint64_t>(prev.size_bytes) > cur.offset)
      return fail("tensors '" + prev.name + "' (offset " + std::to_string(prev.offset) + ", " +
                  std::to_string(prev.size_bytes) + " bytes) and '" + cur.name + "' (offset " +
                  std::to_string(cur.offset) + ") overlap");
  }
  return Status::ok();
}

Status Parser::run(GgufFile& out) {
  out.bytes_ = data_;
  out.size_bytes_ = size_;
  out.path_ = path_;
  uint64_t n_tensors = 0, n_kv = 0;
  LH_RETURN_IF_ERROR(read_header(out, n_tensors, n_kv));
  LH_RETURN_IF_ERROR(read_metadata(out, n_kv));
  LH_RETURN_IF_ERROR(read_alignment(out));

  section_ = Section::kTensorInfo;
  count_ = n_tensors;
  // Each tensor info takes at least 32 bytes; do not reserve more than the file can hold.
  out.tensors_.reserve(static_cast<size_t>(std::min<uint64_t>(n_tensors, (size_ - pos_) / 32 + 1)));
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    index_ = i;
    item_name_.clear();
    TensorInfo info;
    LH_RETURN_IF_ERROR(read_tensor_info(info));
    if (!names.insert(info.name).second) return fail("duplicate tensor name '" + info.name + "'");
    out.tensors_.push_back(std::move(info));
  }
  return place_tensors(out);
}

Result<GgufFile> GgufFile::parse(const uint8_t* data, size_t size_bytes, const ParseLimits& limits) {
  GgufFile file;
  Parser parser(data, data == nullptr ? 0 : size_bytes, limits, "");
  LH_RETURN_IF_ERROR(parser.run(file));
  return file;
}

Result<GgufFile> GgufFile::open(const std::string& path, const ParseLimits& limits) {
  LH_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  GgufFile file;
  file.mapping_ = std::make_unique<MappedFile>(std::move(mapped));
  Parser parser(file.mapping_->data(), file.mapping_->size_bytes(), limits, path);
  LH_RETURN_IF_ERROR(parser.run(file));
  return file;
}

}  // namespace longhaul::gguf
