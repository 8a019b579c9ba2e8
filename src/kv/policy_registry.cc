#include "kv/policy_registry.h"

#include <algorithm>

#include "kv/head_profile.h"

namespace longhaul::kv {
namespace {

struct Entry {
  const char* name;
  KvPolicyFactory make;
  const char* description;  // one line, for --help
  bool head_profile = false;  // reads the model's head profile (KvPolicyContext::head_profile)
};

// One line per policy.
constexpr Entry kPolicies[] = {
    {"full", make_full_policy, "keeps every token (the baseline; the context size bounds memory)"},
    {"streaming", make_streaming_policy, "StreamingLLM: attention sinks plus a window of the last tokens"},
    {"lm-infinite", make_lm_infinite_policy, "LM-Infinite: sinks plus a window, distances capped at the window"},
    {"h2o", make_h2o_policy, "H2O: recent tokens plus the heaviest accumulated attention, in a budget"},
    {"a2sf", make_a2sf_policy, "A2SF: h2o with past attention decayed by a forgetting factor"},
    {"tova", make_tova_policy, "TOVA: drops the cell the last query attends to least, in a budget"},
    {"snapkv", make_snapkv_policy, "SnapKV: compresses each prompt once, by the votes of its last queries"},
    {"kv-quant", make_kv_quant_policy, "KIVI: keeps every token, stored int8 (or int4)"},
    {"duo", make_duo_policy, "DuoAttention: retrieval heads keep every cell, streaming heads sinks and a window", true},
    {"quest", make_quest_policy, "Quest: keeps every token; a decode query reads only the pages that can score highest"},
    {"recycled", make_recycled_policy, "Recycled Attention: a full step every S, between them the pages it attended to most"},
    {"hip", make_hip_policy, "HiP: keeps every token; a decode query reads the pages a hierarchical top-k tree search picks"},
    {"lserve", make_lserve_policy, "LServe: duo's streaming heads plus hierarchical, reused Quest selection on the rest", true},
    {"infllm", make_infllm_policy, "InfLLM: a local window plus the most relevant memory blocks, seen at the window's edge"},
    {"longheads", make_longheads_policy, "LongHeads: each head reads its own chunks, laid side by side within the span"},
    {"retrieval", make_retrieval_policy, "RetrievalAttention: sinks and a window, plus the keys an HNSW index returns per query"},
    {"actqkv", make_actqkv_policy, "ActQKV: pages an activation-weighted probe of recent queries ranks, cut off by score entropy"},
};

const Entry* find_entry(std::string_view name) {
  for (const Entry& e : kPolicies)
    if (name == e.name) return &e;
  return nullptr;
}

std::string known_names() {
  std::string known;
  for (const Entry& e : kPolicies) known += (known.empty() ? "" : ", ") + std::string(e.name);
  return known;
}

// A model for asking factories which parameters they read: one global layer of one KV head, and a head profile of
// that shape for the policies that need one.
KvPolicyContext doc_context() {
  KvPolicyContext c;
  c.shape.n_layer = 1;
  c.shape.n_head_kv = 1;
  c.shape.head_dim_k = 2;
  c.shape.head_dim_v = 2;
  c.rope.resize(1);
  c.layer_window = {0};
  c.head_profile = std::make_shared<HeadProfile>(blank_head_profile(1, 1));
  return c;
}

// The parameters a factory reads, asked with an empty spec ("name"); the storage's too when `storage`.
std::vector<ParamDoc> ask_parameters(const Entry& e, bool storage) {
  const KvPolicyContext context = doc_context();
  PolicyParams params = PolicyParams::parse(e.name).value();
  Result<std::unique_ptr<KvPolicy>> policy = e.make(context, params);
  LH_CHECK_MSG(policy.is_ok(), policy.message().c_str());  // every policy builds with its defaults
  if (storage) LH_CHECK(read_kv_storage(params, **policy, context.shape).is_ok());
  return params.asked();
}

}  // namespace

Result<KvQuantOptions> read_kv_storage(PolicyParams& params, const KvPolicy& policy, const KvShape& shape) {
  KvQuantOptions quant;
  quant.bits = std::stoi(params.get_word("bits", std::to_string(policy.default_kv_bits()), {"16", "8", "4"},
                                         "bits per KV cell past the residual (KIVI int8 / int4)"));
  quant.group = params.get_int("group", quant.group, 1, 4096, "cells whose keys share a scale per channel (KIVI G)");
  quant.residual =
      params.get_int("residual", quant.residual, 0, kMaxParamCount, "most recent cells kept f16 (KIVI R)");
  LH_RETURN_IF_ERROR(params.status());
  if (quant.bits == 4 && (shape.head_dim_k % 2 != 0 || shape.head_dim_v % 2 != 0))
    return Status::error("bits=4 (in '" + params.spec() + "') needs even head dims; this model has " +
                         std::to_string(shape.head_dim_k) + " and " + std::to_string(shape.head_dim_v));
  quant.f16_prefix = std::clamp(policy.f16_prefix_tokens(), 0, 1024);
  LH_RETURN_IF_ERROR(policy.check_storage(quant));
  return quant;
}

Result<BuiltKvPolicy> make_kv_policy(std::string_view spec, const KvPolicyContext& context) {
  LH_ASSIGN_OR_RETURN(PolicyParams params, PolicyParams::parse(spec));
  const Entry* e = find_entry(params.name());
  if (e == nullptr) return Status::error("unknown KV policy '" + params.name() + "' (known: " + known_names() + ")");
  Result<std::unique_ptr<KvPolicy>> policy = e->make(context, params);
  if (!policy) {
    // A refused value is the first thing to fix (the factory's checks saw its default instead). Keys nobody read
    // are checked once a policy builds: a factory may have stopped before asking for every key.
    LH_RETURN_IF_ERROR(params.refusal());
    return Status::error(policy.message());
  }
  BuiltKvPolicy built;
  built.policy = std::move(policy).value();
  LH_ASSIGN_OR_RETURN(built.storage, read_kv_storage(params, *built.policy, context.shape));
  return built;
}

bool kv_policy_uses_head_profile(std::string_view name) {
  const Entry* e = find_entry(name);
  return e != nullptr && e->head_profile;
}

bool kv_policy_takes_parameter(std::string_view name, std::string_view key) {
  for (const KvPolicyDoc& doc : kv_policy_docs())
    if (doc.name == name)
      return std::any_of(doc.params.begin(), doc.params.end(), [&](const ParamDoc& d) { return d.key == key; });
  return false;
}

bool kv_policy_takes_top_p(std::string_view name) { return kv_policy_takes_parameter(name, "top_p"); }

std::vector<std::string> kv_policy_names() {
  std::vector<std::string> names;
  for (const Entry& e : kPolicies) names.emplace_back(e.name);
  return names;
}

std::vector<KvPolicyDoc> kv_policy_docs() {
  std::vector<KvPolicyDoc> docs;
  for (const Entry& e : kPolicies) docs.push_back({e.name, e.description, ask_parameters(e, false)});
  return docs;
}

std::vector<ParamDoc> kv_storage_docs() {
  // The storage's parameters are the keys read after the policy's own.
  auto storage_of = [](const Entry& e) {
    std::vector<ParamDoc> all = ask_parameters(e, true);
    all.erase(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(ask_parameters(e, false).size()));
    return all;
  };
  const std::vector<ParamDoc> first = storage_of(kPolicies[0]);
  std::vector<ParamDoc> docs = first;
  // A policy whose default storage differs says so beside the first's default (kv-quant: bits 8).
  for (const Entry& e : kPolicies) {
    const std::vector<ParamDoc> own = storage_of(e);
    for (size_t i = 0; i < own.size() && i < first.size(); ++i)
      if (own[i].fallback != first[i].fallback) docs[i].fallback += "; " + std::string(e.name) + ": " + own[i].fallback;
  }
  return docs;
}

std::string kv_policy_help() {
  auto param_line = [](const ParamDoc& d) {
    std::string key = d.key + "=" + d.form;
    key.resize(std::max<size_t>(key.size() + 2, 18), ' ');
    return "      " + key + d.meaning + " (default " + d.fallback + (d.range.empty() ? "" : ", in " + d.range) + ")\n";
  };
  std::string out =
      "KV policies: --kv-policy NAME or NAME:KEY=VALUE:KEY=VALUE..., e.g. h2o:budget=512:recent=128:bits=8\n";
  for (const KvPolicyDoc& p : kv_policy_docs()) {
    std::string name = p.name;
    name.resize(std::max<size_t>(name.size() + 2, 14), ' ');
    out += "  " + name + p.description + "\n";
    for (const ParamDoc& d : p.params) out += param_line(d);
  }
  out += "  every policy's cell storage:\n";
  for (const ParamDoc& d : kv_storage_docs()) out += param_line(d);
  return out;
}

}  // namespace longhaul::kv
