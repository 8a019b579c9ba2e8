// longhaul tokenize: text in, token ids (a JSON array) out.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"

namespace longhaul::cli {
namespace {

struct TokenizeFlags {
  ModelFlags model;
  std::string text;
  std::string file;
  bool no_bos = false;
  bool special = false;
  bool pieces = false;
};

int run(const TokenizeFlags& f) {
  if (!f.text.empty() && !f.file.empty()) throw UsageError("give the text as an argument or with -f, not both");
  std::string text = f.text;
  if (!f.file.empty()) {
    Result<std::string> content = read_input_file(f.file);
    if (!content) return report_error(content.message());
    text = std::move(content).value();
  } else if (f.text.empty()) {
    // No text argument: read standard input when something is piped in (as `echo hi | longhaul tokenize`).
    if (isatty(STDIN_FILENO) != 0) throw UsageError("no text: give it as an argument, with -f FILE, or on standard input");
    Result<std::string> content = read_stdin();
    if (!content) return report_error(content.message());
    if (content->empty()) throw UsageError("no text: standard input was empty (give the text as an argument or with -f FILE)");
    text = std::move(content).value();
  }
  Result<LoadedModel> loaded = load_tokenizer(f.model.model);
  if (!loaded) return report_error(loaded.message());
  const std::vector<int32_t> ids = loaded->tokenizer->encode(text, !f.no_bos, f.special);
  if (f.pieces) {
    nlohmann::json j = nlohmann::json::array();
    for (int32_t id : ids) j.push_back({{"id", id}, {"piece", loaded->tokenizer->token_to_piece(id, true)}});
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("%s\n", nlohmann::json(ids).dump().c_str());
  }
  return 0;
}

}  // namespace

Runner add_tokenize_command(CLI::App& app) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("text", flags->text, "text to tokenize (none: standard input)");
  cmd->add_option("-f,--file", flags->file, "read the text from a file (-: standard input)");
  cmd->add_flag("--no-bos", flags->no_bos, "do not add BOS/EOS even where the model asks for them");
  cmd->add_flag("--special", flags->special, "parse control-token text as control tokens");
  cmd->add_flag("--pieces", flags->pieces, "print [{\"id\", \"piece\"}] instead of bare ids");
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
