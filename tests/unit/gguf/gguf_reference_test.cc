// Files written or read by an independent implementation (gguf-py): a fixture that
// gguf-py's GGUFWriter wrote (tools/make_gguf_corpus.py), and the real models, whose
// expected numbers were printed by gguf.GGUFReader.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "gguf/gguf_file.h"
#include "testing/model_paths.h"

namespace longhaul::gguf {
namespace {

using ::testing::ElementsAre;
using tensor::DType;

const std::string kFixture = std::string(LONGHAUL_TESTDATA_DIR) + "/gguf_corpus/valid_gguf_py_all_types.gguf";

int64_t int_at(const Value& v, size_t i) { return *v.as_array()->elements[i].as_int(); }

TEST(GgufReference, ReadsMetadataWrittenByGgufPy) {
  Result<GgufFile> r = GgufFile::open(kFixture);
  ASSERT_TRUE(r.is_ok()) << r.message();
  const GgufFile& f = *r;
  EXPECT_EQ(f.version(), 3u);
  ASSERT_EQ(f.metadata().size(), 23u);
  EXPECT_EQ(f.get_string("general.architecture"), "test");
  EXPECT_EQ(f.find("general.alignment")->type, ValueType::UINT32);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.find("v.u8")->type, ValueType::UINT8);
  EXPECT_EQ(f.get_int("v.u8"), 200);
  EXPECT_EQ(f.get_int("v.i8"), -100);
  EXPECT_EQ(f.get_int("v.u16"), 60000);
  EXPECT_EQ(f.get_int("v.i16"), -30000);
  EXPECT_EQ(f.get_int("v.u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("v.i32"), -2000000000);
  EXPECT_EQ(f.get_float("v.f32"), 0.15625);
  EXPECT_EQ(std::get<uint64_t>(f.find("v.u64")->data), 18000000000000000000ull);
  EXPECT_EQ(f.get_int("v.i64"), -9000000000000000000ll);
  EXPECT_EQ(f.find("v.f64")->type, ValueType::FLOAT64);
  EXPECT_EQ(f.get_float("v.f64"), -2.5e-300);
  EXPECT_EQ(f.get_bool("v.bool_true"), true);
  EXPECT_EQ(f.get_bool("v.bool_false"), false);
  EXPECT_EQ(f.get_string("v.str"), "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c\n");
  EXPECT_THAT(f.get_int_array("v.arr_i32").value(), ElementsAre(1, -2, 3));
  EXPECT_THAT(f.get_float_array("v.arr_f32").value(), ElementsAre(0.5f, -1.25f));
  EXPECT_THAT(f.get_string_array("v.arr_str").value(), ElementsAre("a", "", "ccc"));
  EXPECT_EQ(f.find("v.arr_bool")->to_display_string(), "[true, false, true]");
  EXPECT_EQ(f.find("v.arr_u8")->as_array()->element_type, ValueType::UINT8);
  EXPECT_THAT(f.get_int_array("v.arr_u8").value(), ElementsAre(1, 2, 255));

  const Value& nested = *f.find("v.arr_nested");  // [[1, 2], [3]]
  EXPECT_EQ(nested.as_array()->element_type, ValueType::ARRAY);
  EXPECT_EQ(int_at(nested.as_array()->elements[0], 1), 2);
  EXPECT_EQ(int_at(nested.as_array()->elements[1], 0), 3);
  EXPECT_EQ(f.find("v.arr_nested3")->to_display_string(), "[[[1, 2], [3]], [[4]]]");
  EXPECT_EQ(f.find("v.arr_nested_str")->to_display_string(), "[[\"x\", \"y\"], [\"z\"]]");
}

TEST(GgufReference, ReadsTensorsWrittenByGgufPy) {
  Result<GgufFile> r = GgufFile::open(kFixture);
  ASSERT_TRUE(r.is_ok()) << r.message();
  const GgufFile& f = *r;
  // name, type, ne0, absolute data offset and bytes, as gguf.GGUFReader reports them.
  struct Expected {
    const char* name;
    DType type;
    int64_t ne0;
    size_t file_offset;
    int64_t n_bytes;
  };
  const Expected expected[] = {
      {"t.f32", DType::F32, 2, 1536, 24},       {"t.f16", DType::F16, 2, 1600, 12},
      {"t.bf16", DType::BF16, 2, 1664, 12},     {"t.q8_0", DType::Q8_0, 64, 1728, 204},
      {"t.q4_0", DType::Q4_0, 64, 1984, 108},   {"t.q4_1", DType::Q4_1, 64, 2112, 120},
      {"t.q5_0", DType::Q5_0, 64, 2240, 132},   {"t.q5_1", DType::Q5_1, 64, 2432, 144},
      {"t.q2_k", DType::Q2_K, 512, 2624, 504},  {"t.q3_k", DType::Q3_K, 512, 3136, 660},
      {"t.q4_k", DType::Q4_K, 512, 3840, 864},  {"t.q5_k", DType::Q5_K, 512, 4736, 1056},
      {"t.q6_k", DType::Q6_K, 512, 5824, 1260},
  };
  ASSERT_EQ(f.tensors().size(), std::size(expected));
  EXPECT_EQ(f.data_offset(), 1536u);
  EXPECT_EQ(f.file_size_bytes(), 7104u);
  for (size_t i = 0; i < std::size(expected); ++i) {
    const Expected& e = expected[i];
    const TensorInfo& t = f.tensors()[i];
    SCOPED_TRACE(e.name);
    EXPECT_EQ(t.name, e.name);
    EXPECT_EQ(t.type, e.type);
    EXPECT_THAT(t.dims, ElementsAre(e.ne0, 3));
    EXPECT_EQ(f.data_offset() + t.offset, e.file_offset);
    EXPECT_EQ(t.size_bytes, e.n_bytes);
    // The script fills byte j of tensor i with (7 j + 13 i + 1) mod 251.
    for (int64_t j = 0; j < t.size_bytes; ++j)
      ASSERT_EQ(t.data[j], static_cast<uint8_t>((7 * j + 13 * static_cast<int64_t>(i) + 1) % 251)) << "byte " << j;
  }
}

std::map<DType, int> count_types(const GgufFile& f) {
  std::map<DType, int> counts;
  for (const TensorInfo& t : f.tensors()) ++counts[t.type];
  return counts;
}

TEST(GgufModels, SmolLM2MatchesGgufPy) {
  const std::string path = longhaul::testing::smollm2_path();
  if (!longhaul::testing::file_exists(path)) GTEST_SKIP() << path << " not installed";
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.is_ok()) << r.message();
  const GgufFile& f = *r;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.metadata().size(), 33u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), 1785664u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(f.get_float("llama.attention.layer_norm_rms_epsilon"), 9.999999747378752e-06);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(count_types(f), (std::map<DType, int>{{DType::F32, 61}, {DType::Q4_1, 210}, {DType::Q8_0, 1}}));

  const TensorInfo* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, DType::Q8_0);
  EXPECT_THAT(emb->dims, ElementsAre(576, 49152));
  EXPECT_EQ(emb->size_bytes, 30081024);
  EXPECT_EQ(f.data_offset() + emb->offset, 1785664u);
  const TensorInfo* norm = f.find_tensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(f.data_offset() + norm->offset, 98360128u);
  EXPECT_EQ(norm->size_bytes, 2304);

  Result<std::vector<std::string>> tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.is_ok()) << tokens.message();
  ASSERT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[0], "<|endoftext|>");
  EXPECT_EQ((*tokens)[2], "<|im_end|>");
  EXPECT_EQ((*tokens)[1000], "()");
  EXPECT_EQ(tokens->back(), "ectable");
  Result<std::vector<int32_t>> types = f.get_int_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.is_ok());
  EXPECT_EQ((*types)[0], 3);
  EXPECT_EQ((*types)[1000], 1);
}

TEST(GgufModels, Gemma3MatchesGgufPy) {
  const std::string path = longhaul::testing::gemma3_path();
  if (!longhaul::testing::file_exists(path)) GTEST_SKIP() << path << " not installed";
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.is_ok()) << r.message();
  const GgufFile& f = *r;
  EXPECT_EQ(f.tensors().size(), 236u);
  EXPECT_EQ(f.metadata().size(), 33u);
  EXPECT_EQ(f.data_offset(), 6525120u);
  EXPECT_EQ(f.get_string("general.architecture"), "gemma3");
  EXPECT_EQ(f.get_int("gemma3.block_count"), 18);
  EXPECT_EQ(f.get_int("gemma3.embedding_length"), 640);
  EXPECT_EQ(f.get_int("gemma3.attention.sliding_window"), 512);
  EXPECT_EQ(f.get_float("gemma3.rope.freq_base"), 1000000.0);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(count_types(f), (std::map<DType, int>{{DType::F32, 109},
                                                  {DType::Q5_0, 81},
                                                  {DType::Q4_K, 27},
                                                  {DType::Q8_0, 10},
                                                  {DType::Q6_K, 9}}));
  const TensorInfo* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, DType::Q8_0);
  EXPECT_THAT(emb->dims, ElementsAre(640, 262144));
  EXPECT_EQ(f.data_offset() + emb->offset, 6527680u);
  EXPECT_EQ(emb->size_bytes, 178257920);
  EXPECT_EQ(f.tensors().back().name, "blk.17.post_ffw_norm.weight");
  EXPECT_EQ(f.data_offset() + f.tensors().back().offset, 253110464u);

  Result<std::vector<std::string>> tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.is_ok());
  ASSERT_EQ(tokens->size(), 262144u);
  EXPECT_EQ((*tokens)[1], "<eos>");
  EXPECT_EQ((*tokens)[1000], "put");
  EXPECT_EQ(tokens->back(), "<unused6241>");
  Result<std::vector<float>> scores = f.get_float_array("tokenizer.ggml.scores");
  ASSERT_TRUE(scores.is_ok());
  EXPECT_EQ((*scores)[1000], -506.0f);
  EXPECT_EQ(scores->back(), -1000.0f);
}

}  // namespace
}  // namespace longhaul::gguf
