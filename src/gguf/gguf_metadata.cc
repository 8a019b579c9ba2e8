// Metadata values and the GgufFile lookups: typed access and display rendering.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "gguf/gguf_file.h"

namespace longhaul::gguf {

namespace {

// Strings longer than this are cut in display output (chat templates run to ~10 KB).
constexpr size_t kMaxDisplayStringBytes = 160;

// Shortest text that reads back to the same value. Whole numbers below 1e15 are written
// without an exponent ("100000", not "1e+05") because rope bases and such read better so.
template <typename F>
std::string shortest(F v) {
  char buf[64];
  const bool whole = std::isfinite(v) && std::fabs(v) < F(1e15) && v == std::trunc(v);
  auto [end, ec] = whole ? std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed)
                         : std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "?";
  return std::string(buf, end);
}

void append_quoted(std::string& out, const std::string& s) {
  size_t n = s.size();
  if (n > kMaxDisplayStringBytes) {
    n = kMaxDisplayStringBytes;
    // Do not split a UTF-8 sequence: back up over continuation bytes.
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  }
  out += '"';
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  if (n < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
}

// "uint32", or "array of string" for arrays, for error messages.
std::string describe_type(const Value& v) {
  if (const Value::Array* a = v.as_array()) return std::string("array of ") + value_type_name(a->element_type);
  return value_type_name(v.type);
}

}  // namespace

const char* value_type_name(ValueType type) {
  switch (type) {
    case ValueType::UINT8: return "uint8";
    case ValueType::INT8: return "int8";
    case ValueType::UINT16: return "uint16";
    case ValueType::INT16: return "int16";
    case ValueType::UINT32: return "uint32";
    case ValueType::INT32: return "int32";
    case ValueType::FLOAT32: return "float32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "uint64";
    case ValueType::INT64: return "int64";
    case ValueType::FLOAT64: return "float64";
  }
  return "unknown";
}

std::optional<int64_t> Value::as_int() const {
  if (const auto* u = std::get_if<uint64_t>(&data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&data)) return *i;
  if (const auto* b = std::get_if<bool>(&data)) return *b ? 1 : 0;
  return std::nullopt;
}

std::optional<double> Value::as_float() const {
  if (const auto* d = std::get_if<double>(&data)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&data)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&data)) return static_cast<double>(*i);
  return std::nullopt;
}

std::optional<bool> Value::as_bool() const {
  if (const auto* b = std::get_if<bool>(&data)) return *b;
  return std::nullopt;
}

const std::string* Value::as_string() const { return std::get_if<std::string>(&data); }

const Value::Array* Value::as_array() const { return std::get_if<Array>(&data); }

std::string Value::to_display_string(size_t max_elements) const {
  std::string out;
  if (const auto* u = std::get_if<uint64_t>(&data)) return std::to_string(*u);
  if (const auto* i = std::get_if<int64_t>(&data)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&data))
    return type == ValueType::FLOAT32 ? shortest(static_cast<float>(*d)) : shortest(*d);
  if (const auto* b = std::get_if<bool>(&data)) return *b ? "true" : "false";
  if (const auto* s = std::get_if<std::string>(&data)) {
    append_quoted(out, *s);
    return out;
  }
  const Array& a = std::get<Array>(data);
  out += '[';
  const size_t n_shown = std::min(a.elements.size(), max_elements);
  for (size_t i = 0; i < n_shown; ++i) {
    if (i > 0) out += ", ";
    out += a.elements[i].to_display_string(max_elements);
  }
  if (n_shown < a.elements.size()) {
    if (n_shown > 0) out += ", ";
    out += "... (" + std::to_string(a.elements.size()) + " total)";
  }
  out += ']';
  return out;
}

const Value* GgufFile::find(std::string_view key) const {
  // Linear: files carry tens of keys, and callers look each up once at load time.
  for (const MetadataEntry& e : metadata_)
    if (e.key == key) return &e.value;
  return nullptr;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const Value* v = find(key);
  return v != nullptr ? v->as_int() : std::nullopt;
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const Value* v = find(key);
  return v != nullptr ? v->as_float() : std::nullopt;
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const Value* v = find(key);
  return v != nullptr ? v->as_bool() : std::nullopt;
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr || v->as_string() == nullptr) return std::nullopt;
  return *v->as_string();
}

namespace {

// The array under `key` if it exists and its elements pass `accept`, else an error naming what was found.
template <typename Accept>
Result<const Value::Array*> typed_array(const GgufFile& file, std::string_view key, const char* expected,
                                        Accept accept) {
  const Value* v = file.find(key);
  if (v == nullptr) return Status::error("metadata key '" + std::string(key) + "' not found");
  const Value::Array* a = v->as_array();
  if (a == nullptr || !accept(a->element_type))
    return Status::error("metadata '" + std::string(key) + "' is " + describe_type(*v) + ", expected " + expected);
  return a;
}

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

}  // namespace

Result<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  LH_ASSIGN_OR_RETURN(const Value::Array* a, typed_array(*this, key, "array of string",
                                                         [](ValueType t) { return t == ValueType::STRING; }));
  std::vector<std::string> out;
  out.reserve(a->elements.size());
  for (const Value& e : a->elements) out.push_back(*e.as_string());
  return out;
}

Result<std::vector<float>> GgufFile::get_float_array(std::string_view key) const {
  LH_ASSIGN_OR_RETURN(const Value::Array* a,
                      typed_array(*this, key, "array of float32", [](ValueType t) {
                        return t == ValueType::FLOAT32 || t == ValueType::FLOAT64 || is_integer_type(t);
                      }));
  std::vector<float> out;
  out.reserve(a->elements.size());
  for (const Value& e : a->elements) out.push_back(static_cast<float>(*e.as_float()));
  return out;
}

Result<std::vector<int32_t>> GgufFile::get_int_array(std::string_view key) const {
  LH_ASSIGN_OR_RETURN(const Value::Array* a, typed_array(*this, key, "array of int32", is_integer_type));
  std::vector<int32_t> out;
  out.reserve(a->elements.size());
  for (size_t i = 0; i < a->elements.size(); ++i) {
    const std::optional<int64_t> v = a->elements[i].as_int();
    if (!v || *v < std::numeric_limits<int32_t>::min() || *v > std::numeric_limits<int32_t>::max())
      return Status::error("metadata '" + std::string(key) + "' element " + std::to_string(i) + " (" +
                           a->elements[i].to_display_string() + ") does not fit in int32");
    out.push_back(static_cast<int32_t>(*v));
  }
  return out;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace longhaul::gguf
