// longhaul chat: an interactive conversation with the model's chat format.
// Each turn re-formats the whole conversation and feeds only the tokens the KV
// cache does not already hold, so a turn costs its own tokens, not the history.
#include <signal.h>
#include <unistd.h>

#include <csignal>
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
  PrefillFlags prefill;  // --prefill-attn
  SpeculativeFlags speculative;
  PruneFlags prune;  // --prune-sublayers
  std::string system;
  int32_t n_predict = 512;  // per reply; -1 = until end of turn
  int32_t n_ctx = 4096;
  int32_t n_threads = 0;
  int32_t n_threads_batch = -1;  // llama.cpp's -tb: the thread count when -t is not given (-1 = not given)
  bool context_shift = false;    // drop the oldest turns when the context is full (else: say so, offer /reset)
};

constexpr const char* kHelp =
    "commands: /help this list, /reset start a new conversation (keeps the system message), /exit or /quit leave "
    "(Ctrl-D too); Ctrl-C stops a reply, a second Ctrl-C leaves";

// Ctrl-C stops the reply being generated and returns to the prompt; a Ctrl-C while no reply runs, or a second one
// during a reply, leaves. The handler only touches these flags (and _exit), which is all a signal handler may do.
volatile sig_atomic_t g_generating = 0;
volatile sig_atomic_t g_interrupted = 0;

void on_sigint(int) {
  if (g_generating == 0 || g_interrupted != 0) {
    const char newline = '\n';
    (void)!::write(STDERR_FILENO, &newline, 1);
    ::_exit(130);  // 128 + SIGINT, as a shell reports a process that Ctrl-C ended
  }
  g_interrupted = 1;
}

// Length of the common prefix of two token sequences.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

int run(const ChatFlags& f) {
  require_valid(sampling::validate(f.sampling.options));
  require_valid_speculative(f.speculative);
  const int32_t n_threads = threads_to_use(f.n_threads, f.n_threads_batch);
  Result<GenerationModel> generation = load_generation_model(f.model.model, f.kv.policy, f.n_ctx, "the context (-c)");
  if (!generation) return report_error(generation.message());
  const LoadedModel* loaded = &generation->loaded;
  const tokenizer::Tokenizer& tok = *loaded->tokenizer;
  const tokenizer::ChatFormat format = tokenizer::detect_chat_format(loaded->model->file());
  check_prune(*loaded->model, f.prune);
  Result<model::PrefillAttentionOptions> prepared =
      prepare_prefill_attention(*loaded->model, f.prefill, f.kv.head_profile, n_threads);
  if (!prepared) return report_error(prepared.message());
  const model::PrefillAttentionOptions prefill = std::move(prepared).value();

  generate::SessionOptions so;
  so.n_ctx = generation->n_ctx;
  so.n_threads = n_threads;
  so.kv_policy = f.kv.policy;
  so.prefill_attn = prefill;
  Result<std::shared_ptr<const kv::HeadProfile>> head_profile =
      prepare_head_profile(*loaded->model, f.kv.policy, f.kv.head_profile, n_threads,
                           f.prune.n_pruned > 0 || speculative_needs_sublayers(f.speculative));
  if (!head_profile) return report_error(head_profile.message());
  so.head_profile = *head_profile;
  Result<model::SublayerSkip> pruned = pruned_sublayers(*loaded->model, f.prune, *head_profile);
  if (!pruned) return report_error(pruned.message());
  so.skip = std::move(pruned).value();
  Result<std::unique_ptr<generate::Session>> session = generate::Session::create(*loaded->model, so);
  if (!session) return report_error(session.message());
  Result<sampling::SamplerChain> sampler = sampling::SamplerChain::create(f.sampling.options);
  if (!sampler) return report_error(sampler.message());
  const int32_t n_ctx = (*session)->n_ctx();
  // Under a policy that does not bound memory the conversation must fit in the context (the engine's context_full
  // rule); a bounded one evicts to make room.
  const bool keeps_every_cell = (*session)->policy().max_cells() == 0;
  // One draft source for the whole conversation: Token Recycling's matrix keeps learning across replies.
  LoadedModel draft;  // outlives the draft source in reply_options
  if (Status st = load_draft_model(f.speculative, draft); !st) return report_error(st.message());
  generate::GenerateOptions reply_options;
  reply_options.n_predict = f.n_predict;
  if (Status st = set_draft_source(f.speculative, draft_source_inputs(*loaded, draft, &(*session)->engine().pool(), n_ctx, *head_profile),
                                   reply_options);
      !st)
    return report_error(st.message());

  const bool interactive = isatty(STDIN_FILENO) != 0;
  if (interactive) {
    std::fprintf(stderr, "longhaul chat with %s (%s format). /help lists the commands.\n",
                 loaded->model->config().name.c_str(), tokenizer::chat_format_name(format));
  }
  note_if_not_instruction_tuned(*loaded->model);
  struct sigaction action {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);

  std::vector<tokenizer::ChatMessage> messages;
  if (!f.system.empty()) messages.push_back({"system", f.system});
  const size_t n_fixed = messages.size();  // messages a shift or /reset keeps
  std::vector<int32_t> cached;  // tokens the session's KV cache holds, in order
  std::string line;
  bool first_reply = true;
  for (;;) {
    if (interactive) std::fprintf(stderr, "\n> ");
    if (!std::getline(std::cin, line)) {
      if (interactive) std::fprintf(stderr, "\n");  // Ctrl-D: leave the shell's prompt on a line of its own
      break;
    }
    if (line == "/exit" || line == "/quit") break;
    if (line == "/help" || line == "/?") {
      std::fprintf(stderr, "%s\n", kHelp);
      continue;
    }
    if (line == "/reset") {
      messages.resize(n_fixed);
      (*session)->reset();
      cached.clear();
      std::fprintf(stderr, "(conversation reset%s)\n", n_fixed > 0 ? "; the system message is kept" : "");
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    // The user's line is user text: encode_chat never turns "<|im_end|>" in it into the control token.
    std::vector<int32_t> all = tokenizer::encode_chat(tok, format, messages, true);
    if (f.context_shift && keeps_every_cell) {
      // llama.cpp's context shift, by whole turns: keep the system message, drop the oldest exchanges until the
      // conversation leaves room for a reply.
      const int32_t reply_room = std::min(f.n_predict > 0 ? f.n_predict : n_ctx / 4, n_ctx / 2);
      size_t n_dropped = 0;
      while (static_cast<int64_t>(all.size()) + reply_room > n_ctx && messages.size() > n_fixed + 1) {
        messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(n_fixed));
        ++n_dropped;
        all = tokenizer::encode_chat(tok, format, messages, true);
      }
      if (n_dropped > 0) std::fprintf(stderr, "(context shift: dropped the %zu oldest messages)\n", n_dropped);
    }
    if (keeps_every_cell && static_cast<int64_t>(all.size()) >= n_ctx) {
      messages.pop_back();
      std::fprintf(stderr,
                   "(context full: this turn needs %zu tokens of the %d the context holds; /reset to start over%s)\n",
                   all.size(), n_ctx, f.context_shift ? "" : ", or run with --context-shift to drop old turns");
      continue;
    }
    const size_t keep = common_prefix(cached, all);
    // Always feed at least one token so the logits belong to the end of the prompt.
    const size_t feed_from = keep == all.size() ? all.size() - 1 : keep;
    (*session)->truncate(static_cast<int32_t>(feed_from));
    std::vector<int32_t> fresh(all.begin() + static_cast<std::ptrdiff_t>(feed_from), all.end());

    generate::GenerateOptions go = reply_options;
    go.draft_context.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(feed_from));  // prompt lookup reads earlier turns
    sampler->reset();
    if (!interactive && !first_reply) std::printf("\n");  // piped: a blank line between replies
    first_reply = false;
    g_interrupted = 0;
    g_generating = 1;
    Result<generate::GenerateResult> reply =
        generate::generate(**session, tok, *sampler, fresh, go, [](std::string_view piece) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
          return g_interrupted == 0;
        });
    g_generating = 0;
    if (!reply) {
      // The cache may hold part of this turn: start the next one from a clean cache, and stay in the session.
      messages.pop_back();
      (*session)->reset();
      cached.clear();
      report_error(reply.message());
      continue;
    }
    std::printf("\n");
    std::fflush(stdout);
    if (g_interrupted != 0) std::fprintf(stderr, "(reply stopped)\n");
    cached.assign(all.begin(), all.end());
    // The cache also holds the reply's tokens except the last one sampled (never fed).
    cached.insert(cached.end(), reply->tokens.begin(), reply->tokens.end());
    if (!cached.empty()) cached.pop_back();
    messages.push_back({"assistant", reply->text});
    if (reply->stop == generate::StopReason::kContextFull) {
      std::fprintf(stderr, "(context full: %s)\n",
                   f.context_shift ? "the next turn drops the oldest messages" : "/reset to start a new conversation");
    }
  }
  return 0;
}

}  // namespace

Runner add_chat_command(CLI::App& app) {
  auto flags = std::make_shared<ChatFlags>();
  CLI::App* cmd = app.add_subcommand("chat", "Interactive chat using the model's chat format (/help lists the commands)");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("--system", flags->system, "system message");
  cmd->add_option("-n,--n-predict", flags->n_predict, "maximum tokens per reply (-1: until end of turn)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->n_ctx, "context size in tokens")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  add_threads_flag(*cmd, flags->n_threads);
  add_threads_batch_flag(*cmd, flags->n_threads_batch);
  cmd->add_flag("--context-shift", flags->context_shift,
                "when the context is full, drop the oldest turns (the system message stays) instead of stopping");
  add_sampling_flags(*cmd, flags->sampling);
  add_kv_policy_flags(*cmd, flags->kv);
  add_prefill_flags(*cmd, flags->prefill);
  add_speculative_flags(*cmd, flags->speculative);
  add_prune_flags(*cmd, flags->prune);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
