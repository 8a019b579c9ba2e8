#include "generate/batch.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>

#include "base/sys_info.h"
#include "kv/policy_registry.h"
#include "sampling/sampler_chain.h"

namespace longhaul::generate {

namespace {

using json = nlohmann::json;

Status line_error(int32_t line, const std::string& problem) {
  return Status::error("line " + std::to_string(line) + ": " + problem);
}

// The fields a line may have, each read by one function that checks its type and range.
Status read_field(BatchLine& out, const std::string& key, const json& v) {
  auto want = [&](bool ok, const char* what) {
    return ok ? Status::ok() : Status::error("\"" + key + "\" must be " + what + ", not " + v.dump());
  };
  if (key == "prompt") {
    LH_RETURN_IF_ERROR(want(v.is_string(), "a string"));
    out.prompt = v.get<std::string>();
  } else if (key == "messages") {
    LH_RETURN_IF_ERROR(want(v.is_array() && !v.empty(), "a non-empty list of {\"role\", \"content\"} objects"));
    for (const json& m : v) {
      if (!m.is_object() || m.size() != 2 || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
          !m["content"].is_string())
        return Status::error("each message must be {\"role\": string, \"content\": string}, not " + m.dump());
      out.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
  } else if (key == "max_tokens") {
    LH_RETURN_IF_ERROR(want(v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= (1 << 24),
                            "an integer in [1, 16777216]"));
    out.max_tokens = static_cast<int32_t>(v.get<int64_t>());
  } else if (key == "temperature") {
    LH_RETURN_IF_ERROR(want(v.is_number() && v.get<double>() >= 0 && v.get<double>() <= 100, "a number in [0, 100]"));
    out.temperature = v.get<float>();
  } else if (key == "top_p") {
    LH_RETURN_IF_ERROR(want(v.is_number() && v.get<double>() > 0 && v.get<double>() <= 1, "a number in (0, 1]"));
    out.top_p = v.get<float>();
  } else if (key == "seed") {
    LH_RETURN_IF_ERROR(want(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < 0xffffffffLL,
                            "an integer in [0, 4294967294]"));
    out.seed = static_cast<uint32_t>(v.get<int64_t>());
  } else if (key == "stop") {
    if (v.is_string()) {
      out.stop.push_back(v.get<std::string>());
    } else {
      LH_RETURN_IF_ERROR(want(v.is_array(), "a string or a list of strings"));
      for (const json& s : v) {
        LH_RETURN_IF_ERROR(want(s.is_string(), "a string or a list of strings"));
        out.stop.push_back(s.get<std::string>());
      }
    }
    for (const std::string& s : out.stop)
      if (s.empty()) return Status::error("\"stop\" strings must not be empty");
  } else if (key == "kv_policy") {
    LH_RETURN_IF_ERROR(want(v.is_string(), "a string such as \"h2o:budget=512\""));
    out.kv_policy = v.get<std::string>();
  } else if (key == "spec_type") {
    LH_RETURN_IF_ERROR(want(v.is_string(), "a string such as \"ngram\""));
    out.spec_type = v.get<std::string>();
  } else {
    return Status::error("unknown field \"" + key +
                         "\" (known: prompt, messages, max_tokens, temperature, top_p, seed, stop, kv_policy, "
                         "spec_type)");
  }
  return Status::ok();
}

const char* finish_reason(StopReason stop) {
  switch (stop) {
    case StopReason::kEndOfGeneration:
    case StopReason::kStopString:
    case StopReason::kCallback: return "stop";
    case StopReason::kLength:
    case StopReason::kContextFull: return "length";
  }
  return "length";
}

}  // namespace

Result<std::vector<BatchLine>> parse_batch_lines(std::string_view text) {
  std::vector<BatchLine> lines;
  int32_t line_no = 0;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    ++line_no;
    std::string_view raw = text.substr(begin, end - begin);
    begin = end + 1;
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    if (raw.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank line
    json obj = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded()) return line_error(line_no, "not valid JSON");
    if (!obj.is_object()) return line_error(line_no, "expected a JSON object, got " + obj.dump());
    BatchLine line;
    line.line = line_no;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      const Status st = read_field(line, it.key(), it.value());
      if (!st.is_ok()) return line_error(line_no, st.message());
    }
    if (line.prompt.has_value() == !line.messages.empty())
      return line_error(line_no, "give exactly one of \"prompt\" and \"messages\"");
    lines.push_back(std::move(line));
  }
  if (lines.empty()) return Status::error("the batch file holds no request");
  return lines;
}

Result<std::vector<BatchJob>> prepare_batch(const std::vector<BatchLine>& lines, const model::Model& model,
                                            const tokenizer::Tokenizer& tokenizer, tokenizer::ChatFormat chat_format,
                                            const BatchDefaults& defaults) {
  const kv::KvPolicyContext context = kv_policy_context(model, defaults.head_profile);
  // Each distinct policy spec is built once: that checks the name and its parameters for this model.
  std::map<std::string, Result<int32_t>> max_cells_of;  // spec -> the policy's memory bound (0 = none), or its error
  // One draft source per type, shared by the jobs that name it (a source reads each request's text when it
  // proposes; Token Recycling's matrix learns from all of them).
  std::map<std::string, std::shared_ptr<speculative::DraftSource>> draft_of;
  std::vector<BatchJob> jobs;
  jobs.reserve(lines.size());
  for (const BatchLine& l : lines) {
    BatchJob job;
    job.line = l.line;
    // Sampling: the command line's, with the line's fields over them.
    job.sampling = defaults.sampling;
    if (l.temperature) job.sampling.temperature = *l.temperature;
    if (l.top_p) job.sampling.top_p = *l.top_p;
    if (l.seed) job.sampling.seed = *l.seed;
    if (Status st = sampling::validate(job.sampling); !st.is_ok()) return line_error(l.line, st.message());
    job.options.n_predict = l.max_tokens ? *l.max_tokens : defaults.n_predict;
    job.options.ignore_eos = defaults.ignore_eos;
    job.options.stop = l.stop;
    // Speculative decoding.
    speculative::SpeculativeOptions spec_options = defaults.speculative;
    if (l.spec_type) spec_options.type = *l.spec_type;
    if (Status st = speculative::validate(spec_options); !st.is_ok()) return line_error(l.line, st.message());
    auto source = draft_of.find(spec_options.type);
    if (source == draft_of.end()) {
      speculative::DraftSourceInputs inputs = defaults.draft_inputs;
      inputs.n_vocab = model.config().n_vocab;
      inputs.tokenizer = &tokenizer;
      Result<std::unique_ptr<speculative::DraftSource>> made = speculative::make_draft_source(spec_options, inputs);
      if (!made) return line_error(l.line, "--spec-type " + spec_options.type + ": " + made.message());
      source = draft_of.emplace(spec_options.type, std::move(made).value()).first;
    }
    job.spec_type = spec_options.type;
    job.options.draft = source->second;
    job.options.draft_max = spec_options.draft_max;
    job.options.draft_min = spec_options.draft_min;
    job.options.draft_adaptive = spec_options.adaptive;
    // KV policy.
    const std::string spec = l.kv_policy ? *l.kv_policy : defaults.kv_policy;
    auto built = max_cells_of.find(spec);
    if (built == max_cells_of.end()) {
      Result<kv::BuiltKvPolicy> policy = kv::make_kv_policy(spec, context);
      Result<int32_t> bound = policy.is_ok() ? Result<int32_t>(policy->policy->max_cells()) : policy.status();
      built = max_cells_of.emplace(spec, std::move(bound)).first;
    }
    if (!built->second.is_ok()) return line_error(l.line, "KV policy '" + spec + "': " + built->second.message());
    // The engine parses the spec itself when it adds the sequence.
    job.sequence.kv_policy = spec;
    job.sequence.head_profile = defaults.head_profile;
    job.sequence.prefill_attn = defaults.prefill_attn;
    job.sequence.n_ctx = defaults.n_ctx;
    // Prompt ids: user text is never parsed for control tokens; chat messages go through the model's format.
    if (l.prompt) {
      job.prompt_ids = tokenizer.encode(*l.prompt, true, false);
    } else {
      job.prompt_ids = tokenizer::encode_chat(tokenizer, chat_format, l.messages, true);
    }
    if (job.prompt_ids.empty()) return line_error(l.line, "the prompt is empty (no tokens)");
    const auto n_prompt = static_cast<int64_t>(job.prompt_ids.size());
    // A policy without a memory bound must fit the prompt and one generated token in the context.
    if (*built->second == 0 && n_prompt >= defaults.n_ctx)
      return line_error(l.line, "the prompt has " + std::to_string(n_prompt) + " tokens, which leaves no room in the context of " +
                                    std::to_string(defaults.n_ctx) + " (raise -c/--ctx-size)");
    jobs.push_back(std::move(job));
  }
  return jobs;
}

std::string speculative_stats_json(const std::string& type, const SpeculativeStats& stats) {
  const json j = {{"type", type},
                  {"steps", stats.n_steps},
                  {"drafted", stats.n_drafted},
                  {"accepted", stats.n_accepted},
                  {"mean_accepted_length", std::round(stats.mean_accepted_length() * 1000) / 1000},
                  {"acceptance_rate", std::round(stats.acceptance_rate() * 1000) / 1000}};
  return j.dump();
}

Status run_batch(Engine& engine, const tokenizer::Tokenizer& tokenizer, const std::vector<BatchJob>& jobs,
                 int32_t parallel, const std::function<Status(const std::string&)>& write,
                 const BatchProgressFn& progress, PrefixCache* prefix_cache) {
  Generator generator(engine, tokenizer, parallel);
  generator.set_prefix_cache(prefix_cache);
  for (const BatchJob& job : jobs) {
    Request req;
    req.prompt = job.prompt_ids;
    LH_ASSIGN_OR_RETURN(sampling::SamplerChain chain, sampling::SamplerChain::create(job.sampling));
    req.sampler = std::make_shared<sampling::SamplerChain>(std::move(chain));
    req.options = job.options;
    req.sequence = job.sequence;
    req.use_prefix_cache = prefix_cache != nullptr;
    generator.submit(std::move(req));
  }
  // Lines go out in input order: a finished request waits for the ones before it.
  std::vector<std::string> done(jobs.size());
  std::vector<bool> ready(jobs.size(), false);
  size_t next_out = 0;
  Status write_status = Status::ok();
  const double t0 = now_seconds();
  auto on_done = [&](size_t i, const Result<GenerateResult>& r) {
    json out;
    out["id"] = jobs[i].line;
    if (r.is_ok()) {
      const GenerateResult& g = *r;
      out["text"] = g.text;
      out["tokens"] = g.tokens;
      out["finish_reason"] = finish_reason(g.stop);
      out["prompt_tokens"] = g.timings.n_prompt;
      out["completion_tokens"] = g.timings.n_generated;
      out["time_to_first_token_s"] = std::round((g.queued_seconds + g.timings.prompt_seconds) * 1e4) / 1e4;
      out["tokens_per_s"] = std::round(g.timings.generate_tokens_per_s() * 100) / 100;
      if (prefix_cache != nullptr) out["cached_tokens"] = g.timings.n_cached;
      if (jobs[i].options.draft) out["speculative"] = json::parse(speculative_stats_json(jobs[i].spec_type, g.speculative));
    } else {
      out["error"] = r.message();
    }
    // Invalid UTF-8 in the text (a byte-level token cut mid-character at the end) is replaced, not thrown on.
    done[i] = out.dump(-1, ' ', false, json::error_handler_t::replace);
    ready[i] = true;
    while (next_out < jobs.size() && ready[next_out] && write_status.is_ok()) {
      write_status = write(done[next_out]);
      done[next_out].clear();
      ++next_out;
    }
  };
  auto on_step = [&](size_t n_done, int64_t generated) {
    if (progress) progress(n_done, jobs.size(), generated, now_seconds() - t0);
  };
  LH_RETURN_IF_ERROR(generator.run(on_done, on_step));
  return write_status;
}

}  // namespace longhaul::generate
