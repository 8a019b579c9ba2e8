// Writer -> reader round trips over every value type and every tensor type, plus
// the typed lookups and display rendering.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"

namespace longhaul::gguf {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using tensor::DType;

// Keeps the bytes alive next to the parsed file.
struct Parsed {
  std::vector<uint8_t> bytes;
  GgufFile file;
};

Parsed write_and_parse(const GgufWriter& w) {
  std::vector<uint8_t> bytes = w.to_bytes();
  Result<GgufFile> file = GgufFile::parse(bytes.data(), bytes.size());
  LH_CHECK_MSG(file.is_ok(), file.message());
  return Parsed{std::move(bytes), std::move(file).value()};
}

TEST(GgufRoundTrip, EveryScalarType) {
  GgufWriter w;
  w.add("u8", make_u8(250));
  w.add("i8", make_i8(-128));
  w.add("u16", make_u16(65535));
  w.add("i16", make_i16(-32768));
  w.add("u32", make_u32(4294967295u));
  w.add("i32", make_i32(std::numeric_limits<int32_t>::min()));
  w.add("u64", make_u64(std::numeric_limits<uint64_t>::max()));
  w.add("i64", make_i64(std::numeric_limits<int64_t>::min()));
  w.add("f32", make_f32(-0.1f));
  w.add("f64", make_f64(1e-300));
  w.add("bool", make_bool(true));
  w.add("str", make_string(std::string("a\0b\xc3\xa9", 5)));
  w.add("empty_str", make_string(""));
  Parsed p = write_and_parse(w);
  const GgufFile& f = p.file;
  ASSERT_EQ(f.metadata().size(), 13u);
  EXPECT_EQ(f.version(), 3u);

  EXPECT_EQ(f.find("u8")->type, ValueType::UINT8);
  EXPECT_EQ(f.get_int("u8"), 250);
  EXPECT_EQ(f.find("i8")->type, ValueType::INT8);
  EXPECT_EQ(f.get_int("i8"), -128);
  EXPECT_EQ(f.get_int("u16"), 65535);
  EXPECT_EQ(f.find("i16")->type, ValueType::INT16);
  EXPECT_EQ(f.get_int("i16"), -32768);
  EXPECT_EQ(f.get_int("u32"), 4294967295ll);
  EXPECT_EQ(f.get_int("i32"), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(f.find("u64")->type, ValueType::UINT64);
  EXPECT_EQ(f.get_int("u64"), std::nullopt) << "u64 above INT64_MAX does not fit as_int";
  EXPECT_EQ(std::get<uint64_t>(f.find("u64")->data), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.get_int("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.find("f32")->type, ValueType::FLOAT32);
  EXPECT_EQ(f.get_float("f32"), static_cast<double>(-0.1f));
  EXPECT_EQ(f.get_float("f64"), 1e-300);
  EXPECT_EQ(f.get_float("u8"), 250.0);
  EXPECT_EQ(f.get_bool("bool"), true);
  EXPECT_EQ(f.get_int("bool"), 1);
  EXPECT_EQ(f.get_bool("u8"), std::nullopt);
  EXPECT_EQ(f.get_string("str"), std::string("a\0b\xc3\xa9", 5));
  EXPECT_EQ(f.get_string("empty_str"), "");
  EXPECT_EQ(f.get_string("u8"), std::nullopt);
  EXPECT_EQ(f.get_int("str"), std::nullopt);
  EXPECT_EQ(f.get_int("missing"), std::nullopt);
  EXPECT_EQ(f.find("missing"), nullptr);
  // Insertion order is kept.
  EXPECT_EQ(f.metadata().front().key, "u8");
  EXPECT_EQ(f.metadata().back().key, "empty_str");
}

TEST(GgufRoundTrip, ArraysOfEveryTypeAndNested) {
  GgufWriter w;
  w.add("a.u8", make_array(ValueType::UINT8, {make_u8(1), make_u8(255)}));
  w.add("a.i16", make_array(ValueType::INT16, {make_i16(-5)}));
  w.add("a.u64", make_array(ValueType::UINT64, {make_u64(1ull << 40)}));
  w.add("a.f64", make_array(ValueType::FLOAT64, {make_f64(0.25)}));
  w.add("a.bool", make_array(ValueType::BOOL, {make_bool(false), make_bool(true)}));
  w.add("a.str", make_string_array({"x", "", "zz"}));
  w.add("a.f32", make_f32_array({1.5f, -2.0f}));
  w.add("a.i32", make_i32_array({7, -8}));
  w.add("a.empty", make_array(ValueType::INT32, {}));
  w.add("a.nested", make_array(ValueType::ARRAY, {make_string_array({"p", "q"}), make_string_array({})}));
  w.add("a.nested3", make_array(ValueType::ARRAY, {make_array(ValueType::ARRAY, {make_i32_array({1, 2})})}));
  Parsed p = write_and_parse(w);
  const GgufFile& f = p.file;

  const Value::Array* u8 = f.find("a.u8")->as_array();
  ASSERT_NE(u8, nullptr);
  EXPECT_EQ(u8->element_type, ValueType::UINT8);
  EXPECT_EQ(u8->elements[1].as_int(), 255);
  EXPECT_EQ(f.find("a.i16")->as_array()->elements[0].as_int(), -5);
  EXPECT_EQ(f.find("a.u64")->as_array()->elements[0].as_int(), 1ll << 40);
  EXPECT_EQ(f.find("a.f64")->as_array()->elements[0].as_float(), 0.25);
  EXPECT_EQ(f.find("a.bool")->as_array()->elements[1].as_bool(), true);
  EXPECT_THAT(f.get_string_array("a.str").value(), ElementsAre("x", "", "zz"));
  EXPECT_THAT(f.get_float_array("a.f32").value(), ElementsAre(1.5f, -2.0f));
  EXPECT_THAT(f.get_int_array("a.i32").value(), ElementsAre(7, -8));
  EXPECT_TRUE(f.get_int_array("a.empty").value().empty());

  const Value::Array* nested = f.find("a.nested")->as_array();
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->element_type, ValueType::ARRAY);
  ASSERT_EQ(nested->elements.size(), 2u);
  EXPECT_EQ(nested->elements[0].as_array()->element_type, ValueType::STRING);
  EXPECT_EQ(*nested->elements[0].as_array()->elements[1].as_string(), "q");
  EXPECT_TRUE(nested->elements[1].as_array()->elements.empty());
  const Value& deepest = f.find("a.nested3")->as_array()->elements[0].as_array()->elements[0];
  EXPECT_EQ(deepest.as_array()->elements[1].as_int(), 2);
  EXPECT_EQ(f.find("a.nested3")->to_display_string(), "[[[1, 2]]]");
}

TEST(GgufRoundTrip, TypedArrayErrorsNameKeyAndType) {
  GgufWriter w;
  w.add("a.i32", make_i32_array({1}));
  w.add("a.u64", make_array(ValueType::UINT64, {make_u64(1ull << 40)}));
  w.add("scalar", make_u32(3));
  Parsed p = write_and_parse(w);
  const GgufFile& f = p.file;
  EXPECT_EQ(f.get_string_array("missing").message(), "metadata key 'missing' not found");
  EXPECT_EQ(f.get_string_array("a.i32").message(), "metadata 'a.i32' is array of int32, expected array of string");
  EXPECT_EQ(f.get_int_array("scalar").message(), "metadata 'scalar' is uint32, expected array of int32");
  EXPECT_EQ(f.get_int_array("a.u64").message(), "metadata 'a.u64' element 0 (1099511627776) does not fit in int32");
  EXPECT_THAT(f.get_float_array("a.i32").value(), ElementsAre(1.0f));
}

TEST(GgufRoundTrip, DisplayStrings) {
  EXPECT_EQ(make_u32(49152).to_display_string(), "49152");
  EXPECT_EQ(make_i8(-3).to_display_string(), "-3");
  EXPECT_EQ(make_f32(1e-5f).to_display_string(), "1e-05");
  EXPECT_EQ(make_f32(0.15625f).to_display_string(), "0.15625");
  EXPECT_EQ(make_f32(100000.0f).to_display_string(), "100000");
  EXPECT_EQ(make_f32(-0.0f).to_display_string(), "-0");
  EXPECT_EQ(make_f64(1e300).to_display_string(), "1e+300");
  EXPECT_EQ(make_f64(0.1).to_display_string(), "0.1");
  EXPECT_EQ(make_bool(false).to_display_string(), "false");
  EXPECT_EQ(make_string("a\"b\n\x01").to_display_string(), "\"a\\\"b\\n\\x01\"");
  EXPECT_EQ(make_i32_array({1, 2, 3}).to_display_string(), "[1, 2, 3]");
  EXPECT_EQ(make_i32_array({1, 2, 3, 4, 5}).to_display_string(3), "[1, 2, 3, ... (5 total)]");
  EXPECT_EQ(make_i32_array({1, 2}).to_display_string(0), "[... (2 total)]");
  EXPECT_EQ(make_string_array({"a", "b"}).to_display_string(), "[\"a\", \"b\"]");
  EXPECT_EQ(make_array(ValueType::INT32, {}).to_display_string(), "[]");
  const std::string long_string(1000, 'x');
  EXPECT_EQ(make_string(long_string).to_display_string(),
            std::string("\"") + std::string(160, 'x') + "\"... (1000 bytes)");
  // A cut never splits a UTF-8 sequence: 159 ASCII bytes then a 2-byte character straddling byte 160.
  const std::string utf8 = std::string(159, 'x') + "\xc3\xa9" + "tail";
  EXPECT_EQ(make_string(utf8).to_display_string(),
            std::string("\"") + std::string(159, 'x') + "\"... (165 bytes)");
}

// Block layouts as GGML defines them (elements per block, bytes per block).
struct TypeCase {
  DType type;
  int64_t block_size;
  int64_t block_bytes;
};
constexpr TypeCase kTypes[] = {
    {DType::F32, 1, 4},      {DType::F16, 1, 2},      {DType::BF16, 1, 2},     {DType::Q8_0, 32, 34},
    {DType::Q4_0, 32, 18},   {DType::Q4_1, 32, 20},   {DType::Q5_0, 32, 22},   {DType::Q5_1, 32, 24},
    {DType::Q2_K, 256, 84},  {DType::Q3_K, 256, 110}, {DType::Q4_K, 256, 144}, {DType::Q5_K, 256, 176},
    {DType::Q6_K, 256, 210},
};

TEST(GgufRoundTrip, EveryTensorTypeAndAlignment) {
  for (size_t alignment : {32u, 64u, 4096u}) {
    SCOPED_TRACE("alignment " + std::to_string(alignment));
    GgufWriter w;
    if (alignment != 32) w.add_u32("general.alignment", static_cast<uint32_t>(alignment));
    std::vector<std::vector<uint8_t>> payloads;
    for (size_t i = 0; i < std::size(kTypes); ++i) {
      const TypeCase& c = kTypes[i];
      const int64_t ne0 = 3 * c.block_size, ne1 = 2, ne2 = 2;  // 3 blocks per row, 4 rows
      std::vector<uint8_t> bytes(static_cast<size_t>(3 * c.block_bytes * ne1 * ne2));
      for (size_t j = 0; j < bytes.size(); ++j) bytes[j] = static_cast<uint8_t>(i * 31 + j * 7);
      payloads.push_back(bytes);
      w.add_tensor(std::string("t") + std::to_string(i), {ne0, ne1, ne2}, c.type, bytes);
    }
    Parsed p = write_and_parse(w);
    const GgufFile& f = p.file;
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    ASSERT_EQ(f.tensors().size(), std::size(kTypes));
    for (size_t i = 0; i < std::size(kTypes); ++i) {
      const TypeCase& c = kTypes[i];
      const TensorInfo* t = f.find_tensor(std::string("t") + std::to_string(i));
      ASSERT_NE(t, nullptr);
      SCOPED_TRACE(t->name);
      EXPECT_EQ(t->type, c.type);
      EXPECT_THAT(t->dims, ElementsAre(3 * c.block_size, 2, 2));
      EXPECT_EQ(t->n_elements, 12 * c.block_size);
      EXPECT_EQ(t->n_rows(), 4);
      EXPECT_EQ(t->size_bytes, 12 * c.block_bytes);
      EXPECT_EQ(t->offset % alignment, 0u);
      EXPECT_EQ(static_cast<size_t>(t->data - p.bytes.data()), f.data_offset() + t->offset);
      ASSERT_EQ(std::memcmp(t->data, payloads[i].data(), payloads[i].size()), 0);
    }
  }
}

TEST(GgufRoundTrip, Version2AndNoTensors) {
  GgufWriter w;
  w.set_version(2);
  w.add_string("general.architecture", "x");
  Parsed p = write_and_parse(w);
  EXPECT_EQ(p.file.version(), 2u);
  EXPECT_TRUE(p.file.tensors().empty());
  EXPECT_EQ(p.file.get_string("general.architecture"), "x");
}

TEST(GgufRoundTrip, WriteFileThenOpenMapsIt) {
  const std::string path = (std::filesystem::temp_directory_path() / "longhaul_gguf_roundtrip.gguf").string();
  GgufWriter w;
  w.add_u32("n", 5);
  w.add_tensor("w", {4, 2}, DType::F32, std::vector<uint8_t>(32, 0x3f));
  GgufLayout layout;
  ASSERT_TRUE(w.write_file(path, &layout).is_ok());
  Result<GgufFile> f = GgufFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.message();
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->file_size_bytes(), std::filesystem::file_size(path));
  EXPECT_EQ(f->data_offset(), layout.data_offset);
  EXPECT_EQ(f->get_int("n"), 5);
  // The mapping moves with the object: data stays valid after a move.
  GgufFile moved = std::move(f).value();
  ASSERT_EQ(moved.tensors().size(), 1u);
  EXPECT_EQ(moved.tensors()[0].data[31], 0x3f);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace longhaul::gguf
