// longhaul chat: an interactive conversation with the model's chat format.
// Each turn re-formats the whole conversation and feeds only the tokens the KV
// cache does not already hold, so a turn costs its own tokens, not the history.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "common.h"
#include "generate/generator.h"
#include "sampling/sampler_chain.h"

namespace longhaul::cli {
namespace {

struct ChatFlags {
  ModelFlags model;
  SamplingFlags sampling;
  KvPolicyFlags kv;
  std::string system;
  int32_t n_predict = 512;  // per reply; -1 = until end of turn
  int32_t n_ctx = 4096;
  int32_t n_threads = 0;
};

// Length of the common prefix of two token sequences.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

int run(const ChatFlags& f) {
  if (Status s = sampling::validate(f.sampling.options); !s) return report_error(s.message());
  Result<LoadedModel> loaded = load_model(f.model.model);
  if (!loaded) return report_error(loaded.message());
  const tokenizer::Tokenizer& tok = *loaded->tokenizer;
  const tokenizer::ChatFormat format = tokenizer::detect_chat_format(loaded->model->file());

  generate::SessionOptions so;
  so.n_ctx = f.n_ctx;
  so.n_threads = f.n_threads;
  so.kv_policy = f.kv.policy;
  so.kv_options = f.kv.options;
  if (Status s = prepare_head_profile(*loaded->model, so.kv_policy, so.kv_options, f.n_threads); !s) return report_error(s.message());
  Result<std::unique_ptr<generate::Session>> session = generate::Session::create(*loaded->model, so);
  if (!session) return report_error(session.message());
  Result<sampling::SamplerChain> sampler = sampling::SamplerChain::create(f.sampling.options);
  if (!sampler) return report_error(sampler.message());

  const bool interactive = isatty(STDIN_FILENO);
  if (interactive)
    std::fprintf(stderr, "longhaul chat with %s (%s format). Type /exit to leave, /reset to start over.\n",
                 loaded->model->config().name.c_str(), format == tokenizer::ChatFormat::kGemma ? "gemma" : "chatml");

  std::vector<tokenizer::ChatMessage> messages;
  if (!f.system.empty()) messages.push_back({"system", f.system});
  std::vector<int32_t> cached;  // tokens the session's KV cache holds, in order
  std::string line;
  for (;;) {
    if (interactive) std::fprintf(stderr, "\n> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.resize(f.system.empty() ? 0 : 1);
      (*session)->reset();
      cached.clear();
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    const std::vector<int32_t> all = tok.encode(tokenizer::format_chat(format, messages, true), true, true);
    const size_t keep = common_prefix(cached, all);
    // Always feed at least one token so the logits belong to the end of the prompt.
    const size_t feed_from = keep == all.size() ? all.size() - 1 : keep;
    (*session)->truncate(static_cast<int32_t>(feed_from));
    std::vector<int32_t> fresh(all.begin() + static_cast<std::ptrdiff_t>(feed_from), all.end());

    generate::GenerateOptions go;
    go.n_predict = f.n_predict;
    sampler->reset();
    Result<generate::GenerateResult> reply = generate::generate(
        **session, tok, *sampler, fresh, go, [](std::string_view piece) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
          return true;
        });
    if (!reply) return report_error(reply.message());
    std::printf("\n");
    std::fflush(stdout);
    cached.assign(all.begin(), all.end());
    // The cache also holds the reply's tokens except the last one sampled (never fed).
    cached.insert(cached.end(), reply->tokens.begin(), reply->tokens.end());
    if (!cached.empty()) cached.pop_back();
    messages.push_back({"assistant", reply->text});
    if (reply->stop == generate::StopReason::kContextFull) {
      std::fprintf(stderr, "(context full: /reset to start a new conversation)\n");
    }
  }
  return 0;
}

}  // namespace

Runner add_chat_command(CLI::App& app) {
  auto flags = std::make_shared<ChatFlags>();
  CLI::App* cmd = app.add_subcommand("chat", "Interactive chat using the model's chat format (/exit leaves)");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("--system", flags->system, "system message");
  cmd->add_option("-n,--n-predict", flags->n_predict, "maximum tokens per reply (-1: until end of turn)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->n_ctx, "context size in tokens")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-t,--threads", flags->n_threads, "threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  add_sampling_flags(*cmd, flags->sampling);
  add_kv_policy_flags(*cmd, flags->kv);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
