#include "eval/report.h"

#include <gtest/gtest.h>

namespace longhaul::eval {
namespace {

TEST(Report, CsvHeaderIsTheAgreedColumns) {
  EXPECT_EQ(csv_header(), "policy,length,depth,accuracy,ppl,kv_bytes,point_peak_rss_bytes,prefill_tps,decode_tps");
}

TEST(Report, CsvLeavesMissingFiguresEmptyAndQuotesCommas) {
  EvalRow r;
  r.policy = "streaming(sink=4, window=1020)";
  r.length = 2048;
  r.ppl = 12.5;
  r.kv_bytes = 100;
  r.peak_rss_bytes = 200;
  r.prefill_tps = 99.94;
  EXPECT_EQ(csv_line(r), "\"streaming(sink=4, window=1020)\",2048,,,12.5000,100,200,99.9,");
  EvalRow p;
  p.policy = "full";
  p.length = 1024;
  p.depth = 0.25;
  p.accuracy = 1;
  EXPECT_EQ(csv_line(p), "full,1024,0.25,1,,0,0,,");
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

TEST(Report, PolicySpecOverridesOnlyNamedKeys) {
  kv::KvPolicyOptions base;
  base.window = 500;
  base.budget = 64;
  Result<std::vector<PolicySpec>> l = parse_policy_list("full,streaming:sink=0:window=1024,h2o", base);
  ASSERT_TRUE(l.is_ok());
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[0].name, "full");
  EXPECT_EQ((*l)[1].name, "streaming");
  EXPECT_EQ((*l)[1].options.sink_tokens, 0);
  EXPECT_EQ((*l)[1].options.window, 1024);
  EXPECT_EQ((*l)[1].options.budget, 64);
  EXPECT_EQ((*l)[2].options.window, 500);
  EXPECT_FALSE(parse_policy_spec("streaming:size=3", base).is_ok());
  EXPECT_FALSE(parse_policy_spec("streaming:sink", base).is_ok());
  EXPECT_FALSE(parse_policy_spec("streaming:sink=-1", base).is_ok());
  EXPECT_FALSE(parse_policy_spec(":sink=1", base).is_ok());
  Result<PolicySpec> a2sf = parse_policy_spec("a2sf:forget=0.25", base);
  ASSERT_TRUE(a2sf.is_ok()) << a2sf.message();
  EXPECT_FLOAT_EQ(a2sf->options.forgetting_factor, 0.25f);
  EXPECT_FALSE(parse_policy_spec("a2sf:forget=2", base).is_ok());
  EXPECT_FALSE(parse_policy_spec("a2sf:forget=", base).is_ok());
}

}  // namespace
}  // namespace longhaul::eval
