// The longhaul binary under the rough edges of issue 10: exit codes (2 for every command-line error, 1 for every
// runtime error), checks that run before any work, output order and write errors, input from standard input,
// llama.cpp's flags, and the chat template's control tokens kept out of reach of user text. Every model run here is a
// tiny prompt with a few tokens, so the whole file takes seconds.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>
#include <tuple>
#include <fcntl.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "testing/model_paths.h"

namespace longhaul {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("longhaul_hardening_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int wait_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// Runs `[env] longhaul ARGS` through the shell with `input` on stdin (a file, so stdin is not a terminal).
CliRun run_cli(const std::string& args, const std::string& input = "", const std::string& env = "") {
  const std::string in = temp_path("stdin"), out = temp_path("stdout"), err = temp_path("stderr");
  std::ofstream(in, std::ios::binary) << input;
  const std::string cmd =
      env + " " + std::string(LONGHAUL_BINARY) + " " + args + " <" + in + " >" + out + " 2>" + err;
  CliRun r;
  r.exit_code = wait_code(std::system(cmd.c_str()));
  r.out = read_all(out);
  r.err = read_all(err);
  return r;
}

// stdout and stderr into one file, as `cmd >log 2>&1` gives them.
CliRun run_cli_merged(const std::string& args) {
  const std::string log = temp_path("merged");
  const std::string cmd = std::string(LONGHAUL_BINARY) + " " + args + " </dev/null >" + log + " 2>&1";
  CliRun r;
  r.exit_code = wait_code(std::system(cmd.c_str()));
  r.out = read_all(log);
  return r;
}

void expect_error(const CliRun& r, int code, const std::string& needle) {
  EXPECT_EQ(r.exit_code, code) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(r.err.find("internal check failed"), std::string::npos) << r.err;
}

bool have_smollm2() { return testing::file_exists(testing::smollm2_path()); }
bool have_gemma3() { return testing::file_exists(testing::gemma3_path()); }

// Command-line errors exit 2 wherever they are found: while parsing, in a value check before the model loads, or
// in a check that needs the model (a KV policy, an eval length). None of these runs the model.
TEST(CliExitCodes, CommandLineErrorsExit2) {
  if (!have_smollm2()) GTEST_SKIP();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"run -m smollm2-135m -p hi --top-p 2", "top_p"},
      {"run -m smollm2-135m -p hi --temp nan", "temperature"},
      {"run -m smollm2-135m -p hi --kv-policy bogus", "unknown KV policy 'bogus'"},
      {"run -m smollm2-135m", "no prompt"},
      {"run -m smollm2-135m -p hi -f x.txt", "not both"},
      {"run -m smollm2-135m -p hi --system terse", "--system needs --chat"},
      {"eval -m smollm2-135m --lengths 0", "length '0'"},
      {"eval -m smollm2-135m --depths 2", "depth '2'"},
      {"eval -m smollm2-135m --kv-policy streaming:window=-5", "window=-5"},
      {"eval -m smollm2-135m --kv-policy duo:retrieval=2", "retrieval=2"},
      {"eval -m smollm2-135m --kv-policy full,bogus", "unknown KV policy 'bogus'"},
      {"run -m smollm2-135m -p hi --kv-policy full,streaming", "names 2 policies; this command runs one"},
      {"bench -m smollm2-135m -p 8 -n 0 --kv-policy full,h2o", "names 2 policies; this command runs one"},
      {"eval -m smollm2-135m --task bogus", "unknown eval task 'bogus'"},
      {"bench -m smollm2-135m -t 5000", "5000"},
      {"bench -m smollm2-135m -p 0 -n 0", "no tests"},
      {"run -m smollm2-135m -p hi -cnv", "longhaul chat"},
      {"run -m smollm2-135m -p hi -ctk q8_0 -ctv f16", "same type"},
      {"run -m smollm2-135m -p hi -ctk q5_1", "q5_1"},
      // --kv-bits takes the storage's bit widths, and must agree with a cache type also given.
      {"run -m smollm2-135m -p hi --kv-bits 3", "--kv-bits 3: must be 16 (f16), 8 or 4"},
      {"run -m smollm2-135m -p hi --kv-bits", "--kv-bits needs a value"},
      {"run -m smollm2-135m -p hi --kv-bits 8 -ctk q4_0", "--kv-bits 8 and the cache type q4_0 (4 bits) disagree"},
      {"run -m smollm2-135m -p hi --kv-policy quest:bits=4 --kv-bits 8", "'bits' is given twice"},
      // --kv-budget needs policies that read a budget, each of them; the value is the policy's to check.
      {"run -m smollm2-135m -p hi --kv-budget 512", "needs a --kv-policy that takes a token budget"},
      {"eval -m smollm2-135m --kv-policy h2o,full --kv-budget 512", "KV policy 'full' takes no budget"},
      {"run -m smollm2-135m -p hi --kv-policy quest --kv-budget 0", "'budget=0' in 'quest:budget=0' must be >= 1"},
      {"run -m smollm2-135m -p hi --kv-policy h2o --kv-budget=x", "budget=x"},
      // --kv-top-p needs policies that select pages, each of them, and a share in (0, 1].
      {"run -m smollm2-135m -p hi --kv-top-p 0.9", "needs a --kv-policy that selects pages"},
      {"chat -m smollm2-135m --kv-policy h2o --kv-top-p 0.9", "KV policy 'h2o' does not select pages"},
      {"eval -m smollm2-135m --kv-policy quest,streaming --kv-top-p 0.9", "KV policy 'streaming' does not select"},
      {"bench -m smollm2-135m --kv-policy kv-quant --kv-top-p=0.5", "KV policy 'kv-quant' does not select"},
      {"batch -m smollm2-135m -f x.jsonl --kv-policy full --kv-top-p 0.5", "KV policy 'full' does not select"},
      {"serve -m smollm2-135m --port 0 --kv-policy snapkv --kv-top-p 0.5", "KV policy 'snapkv' does not select"},
      {"run -m smollm2-135m -p hi --kv-policy quest --kv-top-p 0", "--kv-top-p 0: must be a number in (0, 1]"},
      {"run -m smollm2-135m -p hi --kv-policy hip --kv-top-p 1.5", "--kv-top-p 1.5"},
      {"run -m smollm2-135m -p hi --kv-policy hip --kv-top-p x", "--kv-top-p x"},
      // serve checks its speculative flags as run does, before it listens or loads the model.
      {"serve -m smollm2-135m --port 0 --draft-skip 3", "--draft-skip is read by --spec-type self only"},
      {"serve -m smollm2-135m --port 0 --spec-type draft", "--spec-type draft needs a draft model"},
      {"serve -m smollm2-135m --port 0 --spec-type eagle", "eagle"},
      {"serve -m smollm2-135m --port 0 --spec-type ngram --draft-max 4 --draft-min 5", "--draft-min 5"},
  };
  for (const auto& [args, needle] : cases) {
    SCOPED_TRACE(args);
    const CliRun r = run_cli(args);
    expect_error(r, 2, needle);
    EXPECT_EQ(r.out, "");
  }
}

TEST(CliExitCodes, RuntimeErrorsExit1) {
  expect_error(run_cli("run -m /nonexistent/model.gguf -p hi"), 1, "/nonexistent/model.gguf");
  if (!have_smollm2()) GTEST_SKIP();
  const std::string dir = std::filesystem::temp_directory_path().string();
  expect_error(run_cli("tokenize -m smollm2-135m -f " + dir), 1, "is a directory, not a regular file");
  expect_error(run_cli("run -m smollm2-135m -f " + dir), 1, "is a directory, not a regular file");
  expect_error(run_cli("run -m smollm2-135m -f /nonexistent/prompt.txt"), 1, "/nonexistent/prompt.txt");
  // A draft source that cannot be made is found once the model has loaded: the server exits 1 instead of serving.
  expect_error(run_cli("serve -m smollm2-135m --port 0 -c 256 --spec-type retrieval --spec-corpus /nonexistent/corpus.txt"),
               1, "--spec-corpus '/nonexistent/corpus.txt': cannot read");
  // An unknown forced ISA fails at start-up, before any output, whatever the command.
  for (const char* args : {"inspect -m smollm2-135m", "tokenize -m smollm2-135m hi"}) {
    const CliRun r = run_cli(args, "", "LONGHAUL_ISA=bogus");
    expect_error(r, 1, "LONGHAUL_ISA='bogus'");
    EXPECT_EQ(r.out, "") << args;
  }
}

// Output that cannot be written is a failure (exit 1 naming standard output), not a silent success.
TEST(CliExitCodes, WriteErrorsExit1) {
  if (!have_smollm2() || !std::filesystem::exists("/dev/full")) GTEST_SKIP();
  for (const char* args : {"tokenize -m smollm2-135m hi", "inspect -m smollm2-135m",
                           "run -m smollm2-135m -p hi -n 2 --temp 0", "run -m smollm2-135m -p hi -n 2 --json"}) {
    SCOPED_TRACE(args);
    const std::string err = temp_path("full_err");
    const int code = wait_code(std::system(
        (std::string(LONGHAUL_BINARY) + " " + args + " </dev/null >/dev/full 2>" + err).c_str()));
    EXPECT_EQ(code, 1);
    EXPECT_NE(read_all(err).find("cannot write to standard output"), std::string::npos) << read_all(err);
  }
}

// Arguments and output paths are checked before the work they would otherwise fail after.
TEST(CliChecksBeforeWork, OutputPathsPoliciesAndLengths) {
  if (!have_smollm2()) GTEST_SKIP();
  CliRun r = run_cli("eval -m smollm2-135m --task passkey --lengths 128 --depths 0.5 --plot /nonexistent/x.png");
  expect_error(r, 2, "/nonexistent");
  EXPECT_EQ(r.out, "");  // no table: the sweep did not run
  r = run_cli("eval -m smollm2-135m --task passkey --lengths 128 --depths 0.5 --csv /nonexistent/x.csv");
  expect_error(r, 2, "/nonexistent");
  r = run_cli("calibrate-heads -m smollm2-135m -o /nonexistent/x.heads");
  expect_error(r, 2, "/nonexistent");
  r = run_cli("bench -m smollm2-135m -p 0 -n 1 -r 1 --kv-policy bogus");
  expect_error(r, 2, "unknown KV policy 'bogus'");
  EXPECT_EQ(r.out, "");  // no table header
  // Lengths a task cannot build are refused rather than reported as if they had been used.
  r = run_cli("eval -m smollm2-135m --task passkey --lengths 1,10 --depths 0.5");
  expect_error(r, 2, "length 1 is shorter than the task's fixed text");
  EXPECT_EQ(r.out, "");
  r = run_cli("eval -m smollm2-135m --task niah --lengths 16 --depths 0.5");
  expect_error(r, 2, "length 16 is shorter than the task's fixed text");
  r = run_cli("eval -m smollm2-135m --task ppl --lengths 1");
  expect_error(r, 2, "ppl: length 1");
  EXPECT_EQ(r.out, "");
}

// eval in a log: a few progress lines, not one per chunk; each row's peak RSS is its point's own (named so).
TEST(CliEval, ProgressInALogAndPointPeakRss) {
  if (!have_smollm2()) GTEST_SKIP();
  const CliRun r = run_cli("eval -m smollm2-135m --task ppl --lengths 64,128 --chunk 8 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t n_progress = 0;
  for (size_t at = r.err.find("ppl "); at != std::string::npos; at = r.err.find("ppl ", at + 1)) ++n_progress;
  EXPECT_LE(n_progress, 5u) << r.err;  // 16 chunks: one line, plus one per 10 s on a slow (sanitizer) build
  EXPECT_NE(r.out.find("| point peak RSS MiB |"), std::string::npos) << r.out;
}

// -t above the cores this process may use is capped with a warning; above 1024 it is refused.
TEST(CliThreads, CappedAtTheAvailableCoresWithAWarning) {
  if (!have_smollm2()) GTEST_SKIP();
  const CliRun r = run_cli("run -m smollm2-135m -p hi -n 1 --temp 0 -t 1000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: -t 1000 is more threads than the"), std::string::npos) << r.err;
  expect_error(run_cli("run -m smollm2-135m -p hi -t 5000"), 2, "5000");
}

// With stdout and stderr in one file, the completion (or the JSON object) is whole and ends its line before the
// statistics start.
TEST(CliOutput, StatisticsFollowTheCompletedOutput) {
  if (!have_smollm2()) GTEST_SKIP();
  CliRun r = run_cli_merged("run -m smollm2-135m -p hi -n 4 --temp 0 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  size_t stats = r.out.find("prompt: ");
  ASSERT_NE(stats, std::string::npos) << r.out;
  EXPECT_GT(stats, 0u);
  EXPECT_EQ(r.out[stats - 1], '\n') << r.out;
  r = run_cli_merged("run -m smollm2-135m -p hi -n 4 --temp 0 -t 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  stats = r.out.find("prompt: ");
  ASSERT_NE(stats, std::string::npos) << r.out;
  EXPECT_TRUE(nlohmann::json::accept(r.out.substr(0, stats))) << r.out;
}

// tokenize reads standard input when no text is given, and -f - does too.
TEST(CliInput, TokenizeReadsStandardInput) {
  if (!have_smollm2()) GTEST_SKIP();
  const CliRun arg = run_cli("tokenize -m smollm2-135m 'hi there'");
  ASSERT_EQ(arg.exit_code, 0) << arg.err;
  const CliRun piped = run_cli("tokenize -m smollm2-135m", "hi there");
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_EQ(piped.out, arg.out);
  const CliRun dash = run_cli("tokenize -m smollm2-135m -f -", "hi there");
  ASSERT_EQ(dash.exit_code, 0) << dash.err;
  EXPECT_EQ(dash.out, arg.out);
  expect_error(run_cli("tokenize -m smollm2-135m"), 2, "no text");
}

// llama.cpp's flags: -ngl and -fa are accepted with a note, -c=N is a value, the last repeated flag wins,
// --seed -1 is a random seed, --version answers.
TEST(CliFlags, LlamaCppHabits) {
  if (!have_smollm2()) GTEST_SKIP();
  const CliRun r = run_cli("run -m smollm2-135m -p hi -ngl 99 -fa -c=64 -n 1 -n 2 --seed -1 --json -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("-ngl 99 ignored: longhaul runs on the CPU"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("-fa ignored"), std::string::npos) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"].size(), 2u);  // -n 2, the last of -n 1 -n 2
  EXPECT_NE(j["seed"].get<uint32_t>(), 4294967295u);  // resolved to a random seed
  const CliRun tb = run_cli("run -m smollm2-135m -p hi -n 1 -tb 1 -ctk q8_0 -ctv q8_0 --temp 0 -v");
  ASSERT_EQ(tb.exit_code, 0) << tb.err;
  EXPECT_NE(tb.err.find("threads: 1,"), std::string::npos) << tb.err;
  EXPECT_NE(tb.err.find("int8"), std::string::npos) << tb.err;
  // -ctk gives the policy's bits= (any policy stores its cells so).
  const CliRun ctk = run_cli("run -m smollm2-135m -p hi -n 1 --kv-policy streaming:window=60 -ctk q4_0 --temp 0 -v");
  ASSERT_EQ(ctk.exit_code, 0) << ctk.err;
  EXPECT_NE(ctk.err.find("streaming(sink=4, window=60)+int4"), std::string::npos) << ctk.err;
  // --kv-top-p is each selecting policy's top_p=, -ctk's bits= beside it.
  const CliRun top_p =
      run_cli("run -m smollm2-135m -p hi -n 1 --kv-policy hip:budget=64 --kv-top-p 0.9 -ctk q8_0 --temp 0 -v");
  ASSERT_EQ(top_p.exit_code, 0) << top_p.err;
  EXPECT_NE(top_p.err.find("hip(budget=64, page=32, sink=4, window=32, dense=2, top_p=0.9)+int8"), std::string::npos)
      << top_p.err;
  // --kv-bits is the same bits= on each policy of the list, -ctk of the same width beside it changes nothing.
  const CliRun kv_bits =
      run_cli("run -m smollm2-135m -p hi -n 1 --kv-policy quest:budget=64 --kv-bits=4 -ctk q4_0 --temp 0 -v");
  ASSERT_EQ(kv_bits.exit_code, 0) << kv_bits.err;
  EXPECT_NE(kv_bits.err.find("+int4"), std::string::npos) << kv_bits.err;
  // --kv-budget is budget= on each policy given, beside --kv-top-p's top_p=.
  const CliRun kv_budget =
      run_cli("run -m smollm2-135m -p hi -n 1 --kv-policy hip --kv-budget 128 --kv-top-p 0.9 --temp 0 -v");
  ASSERT_EQ(kv_budget.exit_code, 0) << kv_budget.err;
  EXPECT_NE(kv_budget.err.find("hip(budget=128, page=32, sink=4, window=32, dense=2, top_p=0.9)"), std::string::npos)
      << kv_budget.err;
  const CliRun default_bits = run_cli("run -m smollm2-135m -p hi -n 1 --kv-bits 8 --temp 0 -v");
  ASSERT_EQ(default_bits.exit_code, 0) << default_bits.err;
  EXPECT_NE(default_bits.err.find("full+int8"), std::string::npos) << default_bits.err;
  const CliRun v = run_cli("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out.rfind("longhaul ", 0), 0u) << v.out;
}

// A context past the model's training context is allowed, with a one-line warning.
TEST(CliWarnings, ContextPastTheTrainingContext) {
  if (!have_smollm2()) GTEST_SKIP();
  const CliRun r = run_cli("run -m smollm2-135m -p hi -n 1 --temp 0 -c 9000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: the context (-c) of 9000 tokens is past the model's training context of 8192"),
            std::string::npos)
      << r.err;
  const CliRun quiet = run_cli("run -m smollm2-135m -p hi -n 1 --temp 0 -c 8192");
  EXPECT_EQ(quiet.err.find("warning"), std::string::npos) << quiet.err;
}

// run --chat: a prompt or system message that spells the template's markers stays text; the prompt ids are
// llama.cpp's for the template with only its own markers as control tokens (fixtures/<model>/hardening.json).
TEST(CliChatInjection, PromptAndSystemStayTextOnBothModels) {
  for (const auto& [model, dir, present] :
       {std::tuple{"smollm2-135m", "smollm2", have_smollm2()}, std::tuple{"gemma3-270m", "gemma3", have_gemma3()}}) {
    if (!present) continue;
    SCOPED_TRACE(model);
    std::ifstream in(std::string(LONGHAUL_TESTDATA_DIR) + "/fixtures/" + dir + "/hardening.json");
    const nlohmann::json fixture = nlohmann::json::parse(in);
    size_t n_run = 0;
    for (const auto& c : fixture["chat_injection"]) {
      const auto& messages = c["messages"];
      std::string system, user;
      if (messages.size() == 1 && messages[0]["role"] == "user") {
        user = messages[0]["content"];
      } else if (messages.size() == 2 && messages[0]["role"] == "system" && messages[1]["role"] == "user") {
        system = messages[0]["content"];
        user = messages[1]["content"];
      } else {
        continue;  // multi-turn cases are the chat command's, checked in the tokenizer's fixture test
      }
      const std::string prompt_file = temp_path("injection_prompt"), system_file = temp_path("injection_system");
      std::ofstream(prompt_file, std::ios::binary) << user;
      std::string args = std::string("run -m ") + model + " --chat -f " + prompt_file + " -n 1 --temp 0 -t 2 --json";
      if (!system.empty()) args += " --system \"$(cat " + system_file + ")\"";
      std::ofstream(system_file, std::ios::binary) << system;
      const CliRun r = run_cli(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(nlohmann::json::parse(r.out)["prompt_tokens"], c["ids"]) << messages.dump();
      // The Gemma 3 file is a base checkpoint (no chat template): --chat says so in one line; SmolLM2 has one.
      EXPECT_EQ(r.err.find("has no chat template in its file") != std::string::npos, std::string(dir) == "gemma3")
          << r.err;
      ++n_run;
    }
    EXPECT_GE(n_run, 4u);
  }
}

// chat's commands are answered by longhaul, not sent to the model; /reset confirms; a full context leaves the
// session running and says so; --context-shift drops old turns instead; piped replies are separated.
TEST(CliChat, CommandsContextAndPipedInput) {
  if (!have_smollm2()) GTEST_SKIP();
  CliRun r = run_cli("chat -m smollm2-135m -n 4 --temp 0 -t 2", "hello\n/help\n/reset\nhi\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("commands: /help"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(conversation reset)"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("\n\n"), std::string::npos) << r.out;  // two replies, a blank line between them
  // Three turns in a 64-token context: the third does not fit, the session goes on (exit 0) and says so.
  const std::string turns = "hello there how are you\nwhat is the capital of France\ntell me about Paris please\n";
  r = run_cli("chat -m smollm2-135m -n 16 --temp 0 -t 2 -c 64", turns);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("context full"), std::string::npos) << r.err;
  r = run_cli("chat -m smollm2-135m -n 16 --temp 0 -t 2 -c 64 --context-shift", turns);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("context shift: dropped the 2 oldest messages"), std::string::npos) << r.err;
}

// Ctrl-C during a reply stops it and returns to the prompt (the next command is answered); a second Ctrl-C while no
// reply runs leaves with 130, as a shell reports SIGINT.
TEST(CliChat, CtrlCStopsTheReplyThenLeaves) {
  if (!have_smollm2()) GTEST_SKIP();
  int in_pipe[2];
  ASSERT_EQ(::pipe(in_pipe), 0);
  const std::string out = temp_path("chat_out"), err = temp_path("chat_err");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_addclose(&actions, in_pipe[1]);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args = {LONGHAUL_BINARY, "chat", "-m", "smollm2-135m", "-n", "4000", "--temp", "0", "-t", "2"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, LONGHAUL_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in_pipe[0]);
  auto send = [&](const std::string& text) { ASSERT_EQ(::write(in_pipe[1], text.data(), text.size()), static_cast<ssize_t>(text.size())); };
  auto wait_for = [](const std::function<bool()>& done) {
    for (int i = 0; i < 1200 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return done();
  };
  send("Write a very long story about a dragon, in many chapters.\n");
  EXPECT_TRUE(wait_for([&] { return read_all(out).size() > 20; })) << "no reply started";
  ::kill(pid, SIGINT);
  EXPECT_TRUE(wait_for([&] { return read_all(err).find("(reply stopped)") != std::string::npos; })) << read_all(err);
  send("/help\n");
  EXPECT_TRUE(wait_for([&] { return read_all(err).find("commands: /help") != std::string::npos; })) << read_all(err);
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(in_pipe[1]);
  EXPECT_EQ(wait_code(status), 130);
}

}  // namespace
}  // namespace longhaul
