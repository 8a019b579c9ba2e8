// `longhaul batch` as a user meets it: greedy results equal `longhaul run --temp 0` on the same prompts, one
// sequence at a time and eight at once (continuous batching), in input order; and a bad file is refused whole,
// naming the line, before anything is written.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "testing/model_paths.h"

namespace longhaul {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Paths carry the process id: ctest runs the tests of this binary as parallel processes.
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("longhaul_batch_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

CliRun run_cli(const std::string& args) {
  const std::string out = temp_path("stdout"), err = temp_path("stderr");
  const std::string cmd = std::string(LONGHAUL_BINARY) + " " + args + " </dev/null >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_all(out);
  r.err = read_all(err);
  return r;
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

// Prompts whose greedy continuations over 12 tokens have no near-tie on SmolLM2: batched steps round the
// activations of a different number of rows together, which moves logits by a few hundredths (as llama.cpp's
// batched and one-token evaluations differ), so only a near-tie could part the two runs.
const std::vector<std::string> kPrompts = {
    "Once upon a time",
    "def fibonacci(n):",
    "The three laws of thermodynamics are",
    "1, 2, 3, 4, 5,",
    "My favourite recipe for pancakes",
    "The quick brown fox",
    "Water boils at",
    "The largest planet in the solar system is",
};

class BatchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::file_exists(testing::smollm2_path())) GTEST_SKIP() << "SmolLM2 not installed (scripts/setup.sh)";
  }
};

TEST_F(BatchCli, GreedyResultsEqualRunAtParallelOneAndEight) {
  const int n = 12;
  std::string jsonl;
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& p : kPrompts) {
    jsonl += nlohmann::json{{"prompt", p}, {"max_tokens", n}, {"temperature", 0}}.dump() + "\n";
    const CliRun r = run_cli("run -m smollm2-135m -t 2 --temp 0 --json -n " + std::to_string(n) + " -p " + quote(p));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expected.push_back(nlohmann::json::parse(r.out)["tokens"].get<std::vector<int32_t>>());
  }
  const std::string input = temp_path("greedy.jsonl");
  write_file(input, jsonl);
  for (const int parallel : {1, 8}) {
    const std::string output = temp_path("greedy_out.jsonl");
    const CliRun r = run_cli("batch -m smollm2-135m -t 2 -f " + input + " -o " + output + " --parallel " +
                             std::to_string(parallel));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("8/8 done"), std::string::npos) << "progress line: " << r.err;
    std::istringstream lines(read_all(output));
    std::string line;
    size_t i = 0;
    for (; std::getline(lines, line); ++i) {
      ASSERT_LT(i, kPrompts.size());
      const nlohmann::json j = nlohmann::json::parse(line);
      EXPECT_EQ(j["id"].get<int>(), static_cast<int>(i + 1)) << "results come in input order";
      EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), expected[i]) << "parallel " << parallel << ": " << kPrompts[i];
      // An end-of-generation token ends a request early ("stop"); otherwise max_tokens does ("length").
      EXPECT_EQ(j["finish_reason"], static_cast<int>(expected[i].size()) == n ? "length" : "stop");
      EXPECT_EQ(j["completion_tokens"].get<size_t>(), expected[i].size());
      EXPECT_GT(j["prompt_tokens"].get<int>(), 0);
      EXPECT_GE(j["time_to_first_token_s"].get<double>(), 0.0);
    }
    EXPECT_EQ(i, kPrompts.size());
  }
}

// --prefix-cache: requests after the first reuse the KV pages of a shared few-shot preamble (whole 256-token
// pages) and generate what they generate without it. With -b 256 every prompt is fed in chunks that start at page
// boundaries either way, so the steps compute the same rows: the tokens must be equal.
TEST_F(BatchCli, PrefixCacheReusesASharedPreambleAndKeepsTheOutput) {
  std::string preamble;
  for (int i = 1; i <= 50; ++i)
    preamble += "Question: what is " + std::to_string(i) + " plus " + std::to_string(i) + "? Answer: " +
                std::to_string(2 * i) + ".\n";
  const std::vector<std::string> questions = {"what is 60 plus 60?", "what is 71 plus 71?", "what is 83 plus 83?"};
  std::string jsonl;
  for (const std::string& q : questions)
    jsonl += nlohmann::json{{"prompt", preamble + "Question: " + q + " Answer:"}, {"max_tokens", 10}, {"temperature", 0}}
                 .dump() + "\n";
  const std::string input = temp_path("prefix.jsonl");
  write_file(input, jsonl);
  auto run_batch = [&](const std::string& extra) {
    const std::string output = temp_path("prefix_out.jsonl");
    const CliRun r = run_cli("batch -m smollm2-135m -t 2 -b 256 --parallel 1 -f " + input + " -o " + output + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<nlohmann::json> lines;
    std::istringstream in(read_all(output));
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
    return std::make_pair(lines, r.err);
  };
  const auto [plain, plain_err] = run_batch("");
  const auto [cached, cached_err] = run_batch(" --prefix-cache");
  ASSERT_EQ(plain.size(), questions.size());
  ASSERT_EQ(cached.size(), questions.size());
  EXPECT_FALSE(plain[0].contains("cached_tokens"));
  EXPECT_EQ(cached[0]["cached_tokens"].get<int>(), 0);
  for (size_t i = 0; i < questions.size(); ++i) {
    EXPECT_EQ(cached[i]["tokens"], plain[i]["tokens"]) << questions[i];
    EXPECT_EQ(cached[i]["prompt_tokens"], plain[i]["prompt_tokens"]);
    if (i == 0) continue;
    // The preamble is over 512 tokens: at least two whole pages come from the cache, and never the whole prompt.
    const int n_cached = cached[i]["cached_tokens"].get<int>();
    EXPECT_GE(n_cached, 512) << questions[i];
    EXPECT_EQ(n_cached % 256, 0) << questions[i];
    EXPECT_LT(n_cached, cached[i]["prompt_tokens"].get<int>()) << questions[i];
  }
  EXPECT_NE(cached_err.find("prefix cache: 2 of 3 requests reused a cached prefix"), std::string::npos) << cached_err;
}

TEST_F(BatchCli, ChatMessagesStopAndPerLinePolicies) {
  // A chat request ends at the model's end-of-turn token ("stop"); a stop string cuts the text; a line's own KV
  // policy and max_tokens apply to it alone.
  const std::string input = temp_path("chat.jsonl");
  write_file(input,
             nlohmann::json{{"messages", {{{"role", "user"}, {"content", "What is 2+2?"}}}}, {"max_tokens", 40}, {"temperature", 0}}
                     .dump() +
                 "\n" +
                 nlohmann::json{{"prompt", "1, 2, 3, 4, 5,"}, {"max_tokens", 30}, {"temperature", 0}, {"stop", " 9"}}.dump() + "\n" +
                 nlohmann::json{{"prompt", "Once upon a time"}, {"max_tokens", 5}, {"temperature", 0}, {"kv_policy", "streaming:window=60"}}
                     .dump() +
                 "\n");
  const CliRun r = run_cli("batch -m smollm2-135m -t 2 -f " + input + " --parallel 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::vector<nlohmann::json> out;
  while (std::getline(lines, line)) out.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0]["finish_reason"], "stop");
  EXPECT_LT(out[0]["completion_tokens"].get<int>(), 40);
  EXPECT_NE(out[0]["text"].get<std::string>().find('4'), std::string::npos) << out[0]["text"];
  EXPECT_EQ(out[1]["finish_reason"], "stop");
  EXPECT_EQ(out[1]["text"].get<std::string>(), " 6, 7, 8,");
  EXPECT_EQ(out[2]["completion_tokens"].get<int>(), 5);
  EXPECT_EQ(out[2]["finish_reason"], "length");
}

void expect_refused(const std::string& content, const std::string& needle) {
  const std::string input = temp_path("bad.jsonl"), output = temp_path("bad_out.jsonl");
  std::filesystem::remove(output);
  write_file(input, content);
  const CliRun r = run_cli("batch -m smollm2-135m -t 1 -c 64 -f " + input + " -o " + output);
  EXPECT_EQ(r.exit_code, 1) << content << "\n" << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  // One line, no output written.
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(output)) << "output written for a refused file";
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST_F(BatchCli, BadFilesAreRefusedWholeNamingTheLine) {
  const std::string ok = R"({"prompt": "hello"})" "\n";
  expect_refused(ok + "{\"prompt\": \"hi\"\n", "line 2: not valid JSON");
  expect_refused(ok + ok + "[1, 2]\n", "line 3: expected a JSON object");
  expect_refused(ok + R"({"prompt": 5})" "\n", "line 2: \"prompt\" must be a string");
  expect_refused(R"({"prompt": "a", "max_tokens": "ten"})" "\n", "line 1: \"max_tokens\" must be an integer");
  expect_refused(R"({"prompt": "a", "temprature": 0.5})" "\n", "line 1: unknown field \"temprature\"");
  expect_refused(R"({"prompt": "a", "messages": [{"role": "user", "content": "b"}]})" "\n",
                 "line 1: give exactly one of \"prompt\" and \"messages\"");
  expect_refused(ok + "\n" + R"({"prompt": "a", "kv_policy": "bogus"})" "\n", "line 3: KV policy 'bogus'");
  expect_refused(R"({"prompt": "a", "top_p": 2})" "\n", "line 1: \"top_p\" must be a number in (0, 1]");
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "word ";
  expect_refused(ok + nlohmann::json{{"prompt", long_prompt}}.dump() + "\n", "line 2: the prompt has");
  expect_refused("\n\n", "holds no request");
}

}  // namespace
}  // namespace longhaul

namespace longhaul {
namespace {

// Every command reads the one KV policy syntax: what it validates is what it runs.
TEST_F(BatchCli, PolicyParametersWorkOnEveryCommand) {
  const CliRun bench = run_cli("bench -m smollm2-135m -t 1 -p 16 -n 4 -r 1 --kv-policy h2o:budget=128");
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_NE(bench.out.find("h2o(budget=128, recent=64)"), std::string::npos) << bench.out;
  const CliRun run = run_cli("run -m smollm2-135m -t 1 -p hello -n 3 --temp 0 --kv-policy streaming:sink=2:window=8");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  const CliRun wrong = run_cli("run -m smollm2-135m -t 1 -p hello -n 3 --kv-policy full:budget=10");
  EXPECT_EQ(wrong.exit_code, 2);
  EXPECT_NE(wrong.err.find("KV policy full has no parameter 'budget'"), std::string::npos) << wrong.err;
  const CliRun zero = run_cli("run -m smollm2-135m -t 1 -p hello -n 3 --kv-policy h2o:budget=0");
  EXPECT_EQ(zero.exit_code, 2);
  EXPECT_NE(zero.err.find("'budget=0' in 'h2o:budget=0' must be >= 2"), std::string::npos) << zero.err;
}

}  // namespace
}  // namespace longhaul
