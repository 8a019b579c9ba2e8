#include "eval/report.h"

#include <gtest/gtest.h>

namespace longhaul::eval {
namespace {

TEST(Report, CsvHeaderIsTheAgreedColumns) {
  EXPECT_EQ(csv_header(), "policy,length,depth,accuracy,ppl,kv_bytes,point_peak_rss_bytes,prefill_tps,decode_tps,keys_read");
}

TEST(Report, CsvLeavesMissingFiguresEmptyAndQuotesCommas) {
  EvalRow r;
  r.policy = "streaming(sink=4, window=1020)";
  r.length = 2048;
  r.ppl = 12.5;
  r.kv_bytes = 100;
  r.peak_rss_bytes = 200;
  r.prefill_tps = 99.94;
  EXPECT_EQ(csv_line(r), "\"streaming(sink=4, window=1020)\",2048,,,12.5000,100,200,99.9,,");
  EvalRow p;
  p.policy = "full";
  p.length = 1024;
  p.depth = 0.25;
  p.accuracy = 1;
  p.keys_read = 0.25;
  EXPECT_EQ(csv_line(p), "full,1024,0.25,1,,0,0,,,0.2500");
}

TEST(Report, MarkdownHasOneLinePerRowAfterHeader) {
  EvalRow r;
  r.policy = "full";
  r.length = 1;
  const std::string md = markdown_table({r, r});
  EXPECT_EQ(std::count(md.begin(), md.end(), '\n'), 4);
  EXPECT_EQ(md.rfind("| full | 1 |", 0), std::string::npos);  // first line is the header
  EXPECT_NE(md.find("\n| full | 1 |"), std::string::npos);
}

TEST(Report, ParsesLengthsWithK) {
  Result<std::vector<int32_t>> l = parse_lengths("1k,2K,4096");
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(*l, (std::vector<int32_t>{1024, 2048, 4096}));
  EXPECT_FALSE(parse_lengths("").is_ok());
  EXPECT_FALSE(parse_lengths("0").is_ok());
  EXPECT_FALSE(parse_lengths("4kb").is_ok());
  EXPECT_FALSE(parse_lengths("1,,2").is_ok());
  EXPECT_FALSE(parse_lengths("16385k").is_ok());
}

TEST(Report, ParsesDepthsInUnitInterval) {
  Result<std::vector<double>> d = parse_depths("0,0.25,1");
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(*d, (std::vector<double>{0, 0.25, 1}));
  EXPECT_FALSE(parse_depths("1.5").is_ok());
  EXPECT_FALSE(parse_depths("-0.1").is_ok());
  EXPECT_FALSE(parse_depths("x").is_ok());
}

// The specs pass through as written (each policy reads its own keys when it is built); budget=P% is eval's own and
// becomes a budget in cells for each length.
TEST(Report, PolicySpecsKeepTheirKeysAndResolveBudgetShares) {
  Result<std::vector<PolicySpec>> l = parse_policy_list("full,streaming:sink=0:window=1024,h2o:budget=25%:recent=64");
  ASSERT_TRUE(l.is_ok()) << l.message();
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[0].name, "full");
  EXPECT_EQ((*l)[0].spec_for(4096), "full");
  EXPECT_EQ((*l)[1].name, "streaming");
  EXPECT_EQ((*l)[1].spec, "streaming:sink=0:window=1024");
  EXPECT_EQ((*l)[1].budget_fraction, 0.0);
  EXPECT_EQ((*l)[1].spec_for(4096), "streaming:sink=0:window=1024");
  EXPECT_EQ((*l)[2].name, "h2o");
  EXPECT_EQ((*l)[2].spec, "h2o:recent=64");
  EXPECT_DOUBLE_EQ((*l)[2].budget_fraction, 0.25);
  EXPECT_EQ((*l)[2].spec_for(1000), "h2o:recent=64:budget=250");
  EXPECT_EQ((*l)[2].spec_for(1001), "h2o:recent=64:budget=251");  // rounded up
  EXPECT_EQ(parse_policy_spec("tova:budget=0.01%")->spec_for(10), "tova:budget=1");  // at least one cell
  EXPECT_EQ(parse_policy_spec("tova:budget=300")->spec_for(10), "tova:budget=300");  // a count stays as written

  // The form is checked here (a key's value by the policy that reads it, when it is built).
  EXPECT_FALSE(parse_policy_spec("streaming:sink").is_ok());
  EXPECT_FALSE(parse_policy_spec(":sink=1").is_ok());
  EXPECT_FALSE(parse_policy_spec("streaming:sink=1:sink=2").is_ok());
  EXPECT_FALSE(parse_policy_spec("h2o:budget=0%").is_ok());
  EXPECT_FALSE(parse_policy_spec("h2o:budget=101%").is_ok());
  EXPECT_FALSE(parse_policy_spec("h2o:budget=x%").is_ok());
  EXPECT_NE(parse_policy_spec("h2o:budget=0%").message().find("is not budget=P% with P in (0, 100]"), std::string::npos);
  EXPECT_FALSE(parse_policy_list("").is_ok());
}

}  // namespace
}  // namespace longhaul::eval
