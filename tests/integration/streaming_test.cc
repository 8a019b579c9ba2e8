// StreamingLLM end to end: SmolLM2 reads a long text through `longhaul eval --task ppl
// --kv-policy streaming`. The KV cache must stay the same size in every position
// bucket after the window fills, and every bucket's perplexity must be finite and sane.
//
// Runtime gate: the issue's ~20K tokens with the default 1024-cell cache took 5 min 13 s on
// the loaded 2-core development VM, over the 3-minute budget, so by default the test runs
// 4K tokens with a 256-cell window (15 window turnovers; 57-65 s there) and
// LONGHAUL_LONG_TESTS=1 runs the 20K version.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "testing/model_paths.h"

namespace longhaul {
namespace {

std::string unique_temp(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("longhaul_streaming_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::string cur;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        fields.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    fields.push_back(cur);
    rows.push_back(fields);
  }
  return rows;
}

TEST(StreamingIntegration, KvSizeIsFlatAndPerplexityFinite) {
  if (!testing::file_exists(testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 not installed";
  if (!std::filesystem::exists("/usr/share/common-licenses/GPL-3")) GTEST_SKIP() << "no default eval text";
  const bool long_run = std::getenv("LONGHAUL_LONG_TESTS") != nullptr;
  const std::string lengths = long_run ? "2k,4k,8k,12k,16k,20k" : "1k,2k,3k,4k";
  const std::string policy = long_run ? "streaming" : "streaming:sink=4:window=252";
  const std::string csv = unique_temp("ppl.csv"), out = unique_temp("stdout"), err = unique_temp("stderr");
  const std::string cmd = std::string(LONGHAUL_BINARY) + " eval -m " + testing::smollm2_path() +
                          " --task ppl --chunk 16 --lengths " + lengths + " --kv-policy " + policy + " --csv " + csv +
                          " </dev/null >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;

  const auto rows = read_csv(csv);
  ASSERT_GE(rows.size(), 5u);
  EXPECT_EQ(rows[0][0], "policy");
  ASSERT_EQ(rows[0].size(), 10u);
  EXPECT_EQ(rows[0][9], "keys_read");
  const int64_t cells = long_run ? 1024 : 256;
  // SmolLM2-135M: 30 layers, 3 KV heads, 64 + 64 dims, f16.
  const int64_t want_bytes = cells * 30 * 3 * (64 + 64) * 2;
  for (size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 10u);
    const double ppl = std::stod(rows[i][4]);
    EXPECT_TRUE(std::isfinite(ppl)) << rows[i][1];
    // A 135M model on English licence text: far better than chance, far from a broken cache (>> 100).
    EXPECT_GT(ppl, 1.5) << rows[i][1];
    EXPECT_LT(ppl, 60.0) << rows[i][1];
    EXPECT_EQ(std::stoll(rows[i][5]), want_bytes) << "KV bytes at " << rows[i][1];
  }
  std::filesystem::remove(csv);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
}

}  // namespace
}  // namespace longhaul
