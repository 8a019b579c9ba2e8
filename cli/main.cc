// The longhaul binary: parses the command line and hands over to a subcommand.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <string>

#include "commands.h"
#include "common.h"

int main(int argc, char** argv) {
  using namespace longhaul::cli;
  CLI::App app{"longhaul: long-context LLM inference on the CPU"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::map<std::string, Runner> runners;
  runners["run"] = add_run_command(app);
  runners["chat"] = add_chat_command(app);
  runners["tokenize"] = add_tokenize_command(app);
  runners["inspect"] = add_inspect_command(app);
  runners["bench"] = add_bench_command(app);
  runners["eval"] = add_eval_command(app);
  runners["calibrate-heads"] = add_calibrate_command(app);
  // CLI11 reports an unknown first word only as "a subcommand is required"; name it.
  if (argc > 1 && argv[1][0] != '-' && runners.count(argv[1]) == 0) {
    std::string names;
    for (const auto& [name, runner] : runners) names += (names.empty() ? "" : ", ") + name;
    std::fprintf(stderr, "longhaul: error: unknown subcommand '%s' (one of: %s)\n", argv[1], names.c_str());
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "longhaul: error: %s\nRun 'longhaul --help' or 'longhaul SUBCOMMAND --help' for usage.\n",
                 e.what());
    return kExitUsage;
  }
  for (CLI::App* sub : app.get_subcommands()) return runners.at(sub->get_name())();
  return kExitUsage;
}
