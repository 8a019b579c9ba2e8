#include "base/status.h"

#include <gtest/gtest.h>

#include "base/mapped_file.h"

namespace longhaul {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return Status::error("value " + std::to_string(v) + " is not positive");
  return v;
}

Result<int> doubled(int v) {
  LH_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return 2 * x;
}

TEST(Status, ResultCarriesValueOrError) {
  EXPECT_EQ(*doubled(4), 8);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.message(), "value -1 is not positive");
}

TEST(MappedFile, MissingFileNamesPath) {
  auto f = MappedFile::open("/nonexistent/longhaul.gguf");
  ASSERT_FALSE(f.is_ok());
  EXPECT_NE(f.message().find("/nonexistent/longhaul.gguf"), std::string::npos);
}

TEST(MappedFile, DirectoryIsRejected) {
  auto f = MappedFile::open("/tmp");
  ASSERT_FALSE(f.is_ok());
  EXPECT_NE(f.message().find("not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace longhaul
