// The longhaul binary: parses the command line and hands over to a subcommand.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "base/heap_huge_pages.h"
#include "commands.h"
#include "common.h"
#include "kernels/isa.h"

int main(int argc, char** argv) {
  // First, before any thread or input: the heap on huge pages (base/heap_huge_pages.h), which re-executes once.
  longhaul::reexec_with_heap_huge_pages(argv);
  using namespace longhaul::cli;
  CLI::App app{"longhaul: long-context LLM inference on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);
  // As in llama.cpp, a flag given twice takes its last value (a script's default overridden on the command line).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::map<std::string, Runner> runners;
  runners["run"] = add_run_command(app);
  runners["chat"] = add_chat_command(app);
  runners["batch"] = add_batch_command(app);
  runners["serve"] = add_serve_command(app);
  runners["tokenize"] = add_tokenize_command(app);
  runners["inspect"] = add_inspect_command(app);
  runners["bench"] = add_bench_command(app);
  runners["eval"] = add_eval_command(app);
  runners["calibrate-heads"] = add_calibrate_command(app);
  runners["calibrate-sublayers"] = add_calibrate_sublayers_command(app);
  runners["calibrate-prefill"] = add_calibrate_prefill_command(app);
  std::vector<std::string> args;
  try {
    args = translate_llama_cpp_flags(std::vector<std::string>(argv, argv + argc));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "longhaul: error: %s\n", e.what());
    return kExitUsage;
  }
  std::vector<const char*> arg_ptrs;
  for (const std::string& a : args) arg_ptrs.push_back(a.c_str());
  argc = static_cast<int>(arg_ptrs.size());
  const char* const* const translated = arg_ptrs.data();
  // CLI11 reports an unknown first word only as "a subcommand is required"; name it.
  if (argc > 1 && translated[1][0] != '-' && runners.count(translated[1]) == 0) {
    std::string names;
    for (const auto& [name, runner] : runners) names += (names.empty() ? "" : ", ") + name;
    std::fprintf(stderr, "longhaul: error: unknown subcommand '%s' (one of: %s)\n", translated[1], names.c_str());
    return kExitUsage;
  }
  try {
    app.parse(argc, translated);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "longhaul: error: %s\nRun 'longhaul --help' or 'longhaul SUBCOMMAND --help' for usage.\n",
                 e.what());
    return kExitUsage;
  }
  // The kernels' ISA is chosen on first use, which may be late (after a table header) or never (tokenize): check
  // a forced one here, once, so that a typo in LONGHAUL_ISA fails before any work whatever the command.
  if (longhaul::Result<longhaul::kernels::Isa> isa = longhaul::kernels::resolve_isa(std::getenv("LONGHAUL_ISA")); !isa)
    return report_error(isa.message());
  // The one place that turns errors into exit codes: a command-line error found after parsing (UsageError) exits 2
  // like CLI11's own, a runtime error is what the runner returns (1).
  int code = kExitUsage;
  try {
    for (CLI::App* sub : app.get_subcommands()) {
      code = runners.at(sub->get_name())();
      break;
    }
  } catch (const UsageError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "longhaul: error: %s\n", e.what());
    return kExitUsage;
  }
  // Output that could not be written (a full disk, a closed pipe) is a failed run, not a success.
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
    const int saved = errno;
    std::fprintf(stderr, "longhaul: error: cannot write to standard output%s%s\n", saved != 0 ? ": " : "",
                 saved != 0 ? std::strerror(saved) : "");
    return code == 0 ? kExitError : code;
  }
  return code;
}
