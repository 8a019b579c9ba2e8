// Hostile and broken files: each must give a one-line error naming the problem,
// never a crash or an out-of-bounds read. Buffers are copied to exact-size heap
// allocations so that the ASan build catches any read past the end.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "gguf/gguf_file.h"
#include "gguf_corpus.h"

namespace longhaul::gguf {
namespace {

using ::testing::HasSubstr;

// Parses a private exact-size copy of `bytes[0, n)`.
Result<GgufFile> parse_exact(const std::vector<uint8_t>& bytes, size_t n, std::unique_ptr<uint8_t[]>& storage) {
  storage.reset(n > 0 ? new uint8_t[n] : nullptr);
  if (n > 0) std::memcpy(storage.get(), bytes.data(), n);
  return GgufFile::parse(storage.get(), n);
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("longhaul_gguf_test_" + name)).string();
}

TEST(GgufCorruption, EachCorpusCaseGivesItsError) {
  const std::vector<corpus::CorpusCase> cases = corpus::make_corpus();
  ASSERT_GT(cases.size(), 40u);
  for (const corpus::CorpusCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::unique_ptr<uint8_t[]> storage;
    Result<GgufFile> file = parse_exact(c.bytes, c.bytes.size(), storage);
    if (c.expected_error.empty()) {
      EXPECT_TRUE(file.is_ok()) << file.message();
    } else {
      ASSERT_FALSE(file.is_ok());
      EXPECT_THAT(file.message(), HasSubstr(c.expected_error));
      EXPECT_EQ(file.message().find('\n'), std::string::npos) << "errors are one line";
    }
  }
}

TEST(GgufCorruption, EveryProperPrefixIsAnError) {
  const std::vector<uint8_t> valid = corpus::small_valid_file();
  std::unique_ptr<uint8_t[]> storage;
  ASSERT_TRUE(parse_exact(valid, valid.size(), storage).is_ok());
  for (size_t n = 0; n < valid.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
    Result<GgufFile> file = parse_exact(valid, n, storage);
    ASSERT_FALSE(file.is_ok());
    const std::string& m = file.message();
    EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("is not a GGUF file") != std::string::npos ||
                m.find("past the end") != std::string::npos)
        << m;
  }
}

// Flipping any byte must either parse (with every tensor inside the buffer) or fail cleanly.
TEST(GgufCorruption, EveryByteFlipParsesInBoundsOrFails) {
  const std::vector<uint8_t> valid = corpus::small_valid_file();
  size_t n_failed = 0;
  for (size_t i = 0; i < valid.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::vector<uint8_t> b = valid;
      b[i] ^= mask;
      std::unique_ptr<uint8_t[]> storage;
      Result<GgufFile> file = parse_exact(b, b.size(), storage);
      if (!file.is_ok()) {
        ++n_failed;
        continue;
      }
      for (const TensorInfo& t : file->tensors()) {
        ASSERT_GE(t.data, storage.get());
        ASSERT_LE(t.data + t.size_bytes, storage.get() + b.size()) << t.name;
        ASSERT_EQ((t.data - storage.get()) % static_cast<ptrdiff_t>(file->alignment()), 0) << t.name;
      }
    }
  }
  // Flips in the header, counts and type tags must be caught; only payload flips may pass.
  EXPECT_GT(n_failed, valid.size() / 4);
}

TEST(GgufCorruption, ErrorsFromOpenNameThePath) {
  const std::string path = temp_path("version99.gguf");
  GgufLayout layout;
  std::vector<uint8_t> b = corpus::small_valid_file(&layout);
  corpus::put_u32(b, 4, 99);
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(b.data(), 1, b.size(), f), b.size());
    std::fclose(f);
  }
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_FALSE(file.is_ok());
  EXPECT_EQ(file.message(), path + ": unsupported GGUF version 99 (longhaul reads v2 and v3)");

  corpus::put_u32(b, 0, 0x464c457f);  // an ELF binary
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(b.data(), 1, b.size(), f), b.size());
    std::fclose(f);
  }
  file = GgufFile::open(path);
  ASSERT_FALSE(file.is_ok());
  EXPECT_EQ(file.message(), "'" + path + "' is not a GGUF file (magic 0x464c457f, expected 0x46554747 \"GGUF\")");
  std::filesystem::remove(path);

  file = GgufFile::open(path);
  ASSERT_FALSE(file.is_ok());
  EXPECT_THAT(file.message(), HasSubstr("cannot open '" + path + "'"));
}

TEST(GgufCorruption, TruncationMessageNamesItemOffsetAndSize) {
  GgufLayout layout;
  const std::vector<uint8_t> valid = corpus::small_valid_file(&layout);
  // Cut in the middle of tensor 1's u64 data offset.
  const size_t cut = layout.tensor_offset_offsets[1] + 3;
  std::unique_ptr<uint8_t[]> storage;
  Result<GgufFile> file = parse_exact(valid, cut, storage);
  ASSERT_FALSE(file.is_ok());
  EXPECT_EQ(file.message(), "truncated: reading tensor info 1 of 2 ('w.f32') needs 8 bytes at offset " +
                                std::to_string(layout.tensor_offset_offsets[1]) + ", file has " + std::to_string(cut));
}

TEST(GgufCorruption, LimitsAreHonoured) {
  const std::vector<uint8_t> valid = corpus::small_valid_file();
  ParseLimits limits;
  limits.max_tensors = 1;
  Result<GgufFile> file = GgufFile::parse(valid.data(), valid.size(), limits);
  ASSERT_FALSE(file.is_ok());
  EXPECT_THAT(file.message(), HasSubstr("tensor count 2 exceeds the limit of 1"));
  limits = {};
  limits.max_array_elements = 2;
  file = GgufFile::parse(valid.data(), valid.size(), limits);
  ASSERT_FALSE(file.is_ok());
  EXPECT_THAT(file.message(), HasSubstr("'a.arr': array of 3 elements at offset"));
  limits = {};
  limits.max_string_bytes = 3;
  file = GgufFile::parse(valid.data(), valid.size(), limits);
  ASSERT_FALSE(file.is_ok());
  EXPECT_THAT(file.message(), HasSubstr("reading metadata key 0 of 6: string length 20 at offset 24"));
}

// Replays tests/testdata/gguf_corpus: files named valid_* must parse; any other file
// (fuzzer finds kept as regressions) must fail cleanly.
TEST(GgufCorruption, ReplaysTestdataCorpus) {
  const std::filesystem::path dir = std::filesystem::path(LONGHAUL_TESTDATA_DIR) / "gguf_corpus";
  size_t n_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() == ".md") continue;
    ++n_files;
    SCOPED_TRACE(entry.path().string());
    Result<GgufFile> file = GgufFile::open(entry.path().string());
    if (entry.path().filename().string().rfind("valid_", 0) == 0) {
      EXPECT_TRUE(file.is_ok()) << file.message();
    } else {
      ASSERT_FALSE(file.is_ok());
      EXPECT_THAT(file.message(), HasSubstr(entry.path().string()));
    }
  }
  EXPECT_GE(n_files, 1u);
}

}  // namespace
}  // namespace longhaul::gguf
