// The eval plot: the gnuplot input holds one data block per policy with the rows' values, and, where gnuplot is
// installed (scripts/setup.sh installs it), write_plot produces a PNG file.
#include "eval/plot.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace longhaul::eval {
namespace {

EvalRow accuracy_row(const std::string& policy, int64_t length, double depth, double accuracy, int64_t kv_bytes) {
  EvalRow r;
  r.policy = policy;
  r.length = length;
  r.depth = depth;
  r.accuracy = accuracy;
  r.kv_bytes = kv_bytes;
  return r;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(EvalPlot, RetrievalRowsGiveOneBlockPerPolicyWithTheirValues) {
  const std::vector<EvalRow> rows = {accuracy_row("full", 1024, 0.0, 1.0, 2 << 20), accuracy_row("full", 1024, 1.0, 0.5, 2 << 20),
                                     accuracy_row("h2o(budget=128)", 1024, 0.0, 0.0, 1 << 20)};
  const PlotInput in = plot_input(rows, "out.png", "data.txt");
  EXPECT_EQ(count(in.data, "\n\n\n"), 1u);  // two policies: one separator (two blank lines)
  EXPECT_NE(in.data.find("# full\n2 1 1024 0.75\n2 0.5 NaN NaN\n"), std::string::npos) << in.data;
  EXPECT_NE(in.data.find("# h2o(budget=128)\n1 0 1024 0\n"), std::string::npos) << in.data;
  EXPECT_NE(in.script.find("set output \"out.png\""), std::string::npos);
  EXPECT_EQ(count(in.script, "title \"h2o(budget=128)\""), 2u);  // in both panels
  EXPECT_NE(in.script.find("accuracy against KV memory"), std::string::npos);
  EXPECT_NE(in.script.find("set multiplot layout 2,1"), std::string::npos);  // no keys_read: two panels
  // The legend sits outside the data, and coinciding series stay visible: open rings of different sizes.
  EXPECT_NE(in.script.find("set key outside right"), std::string::npos) << in.script;
  EXPECT_NE(in.script.find("pointtype 6 pointsize 1.7 dashtype 1 linewidth 1.5 title \"full\""), std::string::npos)
      << in.script;
  EXPECT_NE(in.script.find("pointtype 6 pointsize 1 dashtype 2 linewidth 1.5 title \"h2o(budget=128)\""),
            std::string::npos)
      << in.script;
}

TEST(EvalPlot, RowsWithKeysReadAddAPanelOfAccuracyAgainstKeysRead) {
  std::vector<EvalRow> rows = {accuracy_row("full", 4096, 0.5, 1.0, 8 << 20),
                               accuracy_row("quest(budget=1024)", 4096, 0.5, 0.0, 8 << 20)};
  rows[0].keys_read = 1.0;
  rows[1].keys_read = 0.25;
  const PlotInput in = plot_input(rows, "k.png", "k.txt");
  EXPECT_NE(in.data.find("# full\n8 1 4096 1 1 1\n"), std::string::npos) << in.data;
  EXPECT_NE(in.data.find("# quest(budget=1024)\n8 0 4096 0 0.25 0\n"), std::string::npos) << in.data;
  EXPECT_NE(in.script.find("set multiplot layout 3,1"), std::string::npos) << in.script;
  EXPECT_NE(in.script.find("using 5:6 with points"), std::string::npos) << in.script;
  EXPECT_EQ(count(in.script, "title \"quest(budget=1024)\""), 3u);
}

TEST(EvalPlot, PerplexityRowsPlotAgainstPosition) {
  std::vector<EvalRow> rows;
  for (int64_t end : {1024, 2048}) {
    EvalRow r;
    r.policy = "streaming(sink=4, window=1020)";
    r.length = end;
    r.ppl = end == 1024 ? 12.5 : 13.0;
    r.kv_bytes = 1 << 20;
    rows.push_back(r);
  }
  const PlotInput in = plot_input(rows, "p.png", "d.txt");
  EXPECT_NE(in.data.find("1024 12.5 1024 1\n2048 13 2048 1\n"), std::string::npos) << in.data;
  EXPECT_NE(in.script.find("perplexity against position"), std::string::npos);
  EXPECT_NE(in.script.find("set logscale y"), std::string::npos);
}

TEST(EvalPlot, WritesAPngWhenGnuplotIsInstalled) {
  EXPECT_FALSE(write_plot({}, "/tmp/never.png").is_ok());
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot not installed";
  const std::string png = ::testing::TempDir() + "longhaul_plot_test.png";
  std::remove(png.c_str());
  const std::vector<EvalRow> rows = {accuracy_row("full", 1024, 0.5, 1.0, 4 << 20),
                                     accuracy_row("snapkv(budget=256)", 1024, 0.5, 0.0, 1 << 20)};
  const Status s = write_plot(rows, png);
  ASSERT_TRUE(s.is_ok()) << s.message();
  std::ifstream f(png, std::ios::binary);
  char magic[8] = {};
  f.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  std::remove(png.c_str());
}

}  // namespace
}  // namespace longhaul::eval
