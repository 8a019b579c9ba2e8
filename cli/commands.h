// Each subcommand registers its flags on `app` and returns the function that runs it
// after parsing; the function returns the process exit code.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace longhaul::cli {

using Runner = std::function<int()>;

Runner add_run_command(CLI::App& app);
Runner add_chat_command(CLI::App& app);
Runner add_tokenize_command(CLI::App& app);
Runner add_inspect_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_calibrate_command(CLI::App& app);
Runner add_calibrate_sublayers_command(CLI::App& app);
Runner add_calibrate_prefill_command(CLI::App& app);
Runner add_batch_command(CLI::App& app);
Runner add_serve_command(CLI::App& app);

}  // namespace longhaul::cli
