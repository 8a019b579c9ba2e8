#include "eval/plot.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace longhaul::eval {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// gnuplot strings are double-quoted; policy descriptions hold no quotes, but escape them anyway.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Policies in order of first appearance, each with its rows.
std::vector<std::pair<std::string, std::vector<const EvalRow*>>> by_policy(const std::vector<EvalRow>& rows) {
  std::vector<std::pair<std::string, std::vector<const EvalRow*>>> groups;
  for (const EvalRow& r : rows) {
    auto it = groups.begin();
    while (it != groups.end() && it->first != r.policy) ++it;
    if (it == groups.end()) {
      groups.emplace_back(r.policy, std::vector<const EvalRow*>{});
      it = groups.end() - 1;
    }
    it->second.push_back(&r);
  }
  return groups;
}

}  // namespace

PlotInput plot_input(const std::vector<EvalRow>& rows, const std::string& png_path, const std::string& data_path) {
  bool has_accuracy = false, has_keys_read = false;
  for (const EvalRow& r : rows) {
    has_accuracy = has_accuracy || r.accuracy.has_value();
    has_keys_read = has_keys_read || (r.accuracy.has_value() && r.keys_read.has_value());
  }
  const auto groups = by_policy(rows);
  std::ostringstream data, script;
  // Data: per policy, columns "x1 y1 x2 y2 [x3 y3]" where the panels read different columns.
  for (size_t g = 0; g < groups.size(); ++g) {
    if (g > 0) data << "\n\n";
    data << "# " << groups[g].first << "\n";
    if (has_accuracy) {
      // Panel 1: one point per row (KV MiB, accuracy). Panel 2: mean accuracy over depths per length.
      std::map<int64_t, std::pair<double, int>> per_length;
      for (const EvalRow* r : groups[g].second) {
        if (!r->accuracy) continue;
        auto& [sum, n] = per_length[r->length];
        sum += *r->accuracy;
        ++n;
      }
      auto length_it = per_length.begin();
      const size_t n_lines = std::max(groups[g].second.size(), per_length.size());
      for (size_t i = 0; i < n_lines; ++i) {
        if (i < groups[g].second.size() && groups[g].second[i]->accuracy) {
          const EvalRow& r = *groups[g].second[i];
          data << static_cast<double>(r.kv_bytes) / kMiB << ' ' << *r.accuracy;
        } else {
          data << "NaN NaN";
        }
        if (length_it != per_length.end()) {
          data << ' ' << length_it->first << ' ' << length_it->second.first / length_it->second.second;
          ++length_it;
        } else {
          data << " NaN NaN";
        }
        // Panel 3: one point per row (share of keys read, accuracy).
        if (has_keys_read) {
          const EvalRow* r = i < groups[g].second.size() ? groups[g].second[i] : nullptr;
          if (r != nullptr && r->accuracy && r->keys_read)
            data << ' ' << *r->keys_read << ' ' << *r->accuracy;
          else
            data << " NaN NaN";
        }
        data << '\n';
      }
    } else {
      for (const EvalRow* r : groups[g].second) {
        if (!r->ppl) continue;
        data << r->length << ' ' << *r->ppl << ' ' << r->length << ' ' << static_cast<double>(r->kv_bytes) / kMiB
             << '\n';
      }
    }
  }
  // The legend sits right of the data, outside both panels, so it never covers points or the x-axis labels.
  // Series whose points coincide (two policies that keep everything at a short length) would hide each other, so
  // each series draws open rings that grow with its index, one inside another where they coincide, and its own
  // dash pattern.
  const bool three_panels = has_accuracy && has_keys_read;
  script << "set terminal pngcairo size 1400," << (three_panels ? 1300 : 900) << " noenhanced font \"sans,10\"\n"
         << "set output " << quoted(png_path) << "\n"
         << "set datafile missing \"NaN\"\n"
         << "set key outside right top vertical Left reverse spacing 1.3 width 2\n"
         << "set grid\n"
         << "set multiplot layout " << (three_panels ? 3 : 2) << ",1\n";
  const size_t n_series = groups.size();
  auto plot_all = [&](int x_col, int y_col, const char* style) {
    script << "plot ";
    for (size_t g = 0; g < n_series; ++g) {
      const double point_size = 1.0 + 0.7 * static_cast<double>(n_series - 1 - g);
      script << (g ? ", \\\n     " : "") << quoted(data_path) << " index " << g << " using " << x_col << ':' << y_col
             << " with " << style << " pointtype 6 pointsize " << point_size << " dashtype " << (g % 5) + 1
             << " linewidth 1.5 title " << quoted(groups[g].first);
    }
    script << "\n";
  };
  if (has_accuracy) {
    script << "set title \"accuracy against KV memory (one point per length and depth)\"\n"
           << "set xlabel \"KV cache MiB\"\nset ylabel \"accuracy\"\nset yrange [-0.05:1.05]\n";
    plot_all(1, 2, "points");
    script << "set title \"mean accuracy over depths against prompt length\"\n"
           << "set xlabel \"prompt tokens\"\nset logscale x 2\n";
    plot_all(3, 4, "linespoints");
    if (three_panels) {
      // Sparse decode policies keep every cell (the first panel cannot tell them apart) but read a share of them.
      script << "unset logscale x\nset title \"accuracy against the share of cached keys a decode token reads\"\n"
             << "set xlabel \"keys read per decode token / keys cached\"\nset xrange [0:*]\n";
      plot_all(5, 6, "points");
    }
  } else {
    script << "set title \"perplexity against position\"\n"
           << "set xlabel \"position (end of bucket, tokens)\"\nset ylabel \"perplexity\"\nset logscale y\n";
    plot_all(1, 2, "linespoints");
    script << "unset logscale y\nset title \"KV cache against position\"\nset ylabel \"KV cache MiB\"\n"
           << "set yrange [0:*]\n";
    plot_all(3, 4, "linespoints");
  }
  script << "unset multiplot\n";
  return {script.str(), data.str()};
}

Status check_plotting() {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return Status::error("--plot needs gnuplot, which is not installed (apt-get install gnuplot-nox)");
  return Status::ok();
}

Status write_plot(const std::vector<EvalRow>& rows, const std::string& png_path) {
  if (rows.empty()) return Status::error("nothing to plot: the evaluation produced no rows");
  LH_RETURN_IF_ERROR(check_plotting());
  char data_path[] = "/tmp/longhaul_plot_XXXXXX";
  const int fd = mkstemp(data_path);
  if (fd < 0) return Status::error("cannot create a temporary file for the plot data");
  close(fd);
  const std::string script_path = std::string(data_path) + ".gp";
  const PlotInput input = plot_input(rows, png_path, data_path);
  {
    std::ofstream(data_path) << input.data;
    std::ofstream(script_path) << input.script;
  }
  const std::string command = "gnuplot " + script_path + " 2>&1";
  std::string output;
  if (std::FILE* p = popen(command.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p) != nullptr) output += buf;
    const int rc = pclose(p);
    std::remove(data_path);
    std::remove(script_path.c_str());
    // gnuplot's message spans lines (the script line, a caret, the error): keep its last non-empty line.
    if (rc != 0) {
      while (!output.empty() && output.back() == '\n') output.pop_back();
      const size_t last = output.find_last_of('\n');
      return Status::error("gnuplot failed writing '" + png_path + "': " +
                           (last == std::string::npos ? output : output.substr(last + 1)));
    }
  } else {
    return Status::error("cannot run gnuplot");
  }
  std::ifstream png(png_path, std::ios::binary);
  if (!png || png.peek() == std::ifstream::traits_type::eof())
    return Status::error("gnuplot wrote no image to '" + png_path + "'");
  return Status::ok();
}

}  // namespace longhaul::eval
