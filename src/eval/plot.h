// Plots of eval results, drawn by gnuplot (Debian package gnuplot-nox, installed by scripts/setup.sh).
//
// Two or three panels, one above the other, in one PNG, with one legend to the right of the data:
//   retrieval tasks (rows with accuracy: passkey, niah*): accuracy against the KV bytes each point held (one
//     series per policy, a point per length and depth), mean accuracy over depths against prompt length, and,
//     when the rows have keys_read, accuracy against the share of the cached keys a decode token read (a third
//     panel: sparse decode policies keep every cell, so only this one tells them apart);
//   ppl (rows with ppl): perplexity against position (one line per policy, log scale), and KV bytes against
//     position, which shows whether a policy's memory stays flat.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "eval/task.h"

namespace longhaul::eval {

// The gnuplot input for `rows`: `data` holds one block per policy (separated by two blank lines, gnuplot's
// `index`), `script` reads it from `data_path` and writes `png_path`.
struct PlotInput {
  std::string script;
  std::string data;
};
PlotInput plot_input(const std::vector<EvalRow>& rows, const std::string& png_path, const std::string& data_path);

// Whether write_plot can work here (gnuplot installed); the CLI asks before a sweep, not after it.
Status check_plotting();

// Writes the plot of `rows` to png_path. Fails, naming the problem, when there is nothing to plot, gnuplot is
// not installed or it fails.
Status write_plot(const std::vector<EvalRow>& rows, const std::string& png_path);

}  // namespace longhaul::eval
