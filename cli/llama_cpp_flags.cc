// llama.cpp's command-line habits, translated before CLI11 parses. CLI11 groups single-dash letters, so without
// this `-ngl 0` reads as -n gl and `-c=64` as a value "=64"; users who come from llama-cli and llama-bench type
// those by reflex. What longhaul has is mapped to its own flag, what a CPU engine has no use for is accepted with a
// one-line note, and what would silently mean something else is refused. longhaul's own --kv-bits, --kv-budget and
// --kv-top-p ride on the same rewrite as -ctk: a parameter appended to each KV policy spec given.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/strings.h"
#include "common.h"
#include "kv/policy_registry.h"

namespace longhaul::cli {
namespace {

// llama.cpp's KV cache types that longhaul's cell storage matches, as the KV policy's bits= values. llama.cpp's q8_0/q4_0 store
// blocks of 32 values with one scale; longhaul's 8/4-bit cells are KIVI's (per-channel keys, per-token values),
// the closest it has.
const std::map<std::string, std::string> kCacheTypeBits = {{"f16", "16"}, {"q8_0", "8"}, {"q4_0", "4"}};

void note(const std::string& message) { std::fprintf(stderr, "longhaul: note: %s\n", message.c_str()); }

bool is_value(const std::vector<std::string>& args, size_t i) { return i < args.size(); }

// When args[i] is the long flag `name`, as `name VALUE` or `name=VALUE`: its value into `value` (i moves past a
// separate one), true. A flag with no value left is a UsageError.
bool take_long_flag(const std::vector<std::string>& args, size_t& i, const std::string& name, std::string& value) {
  const std::string& a = args[i];
  if (a == name) {
    if (!is_value(args, i + 1)) throw UsageError(a + " needs a value");
    value = args[++i];
    return true;
  }
  if (a.rfind(name + "=", 0) != 0) return false;
  value = a.substr(name.size() + 1);
  return true;
}

// Calls `edit` on the value of each --kv-policy in args (a spec, or eval's comma list of specs); false when there
// is none.
bool edit_kv_policies(std::vector<std::string>& args, const std::function<std::string(const std::string&)>& edit) {
  bool has_policy = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--kv-policy" && i + 1 < args.size()) {
      args[i + 1] = edit(args[i + 1]);
      has_policy = true;
    } else if (args[i].rfind("--kv-policy=", 0) == 0) {
      args[i] = "--kv-policy=" + edit(args[i].substr(12));
      has_policy = true;
    }
  }
  return has_policy;
}

// `suffix` appended to each spec of a --kv-policy list.
std::string append_to_each(const std::string& list, const std::string& suffix) {
  std::string out;
  for (const std::string& spec : split(list, ',')) out += (out.empty() ? "" : ",") + spec + suffix;
  return out;
}

// The registered policies that read their parameter `key`, "quest, hip, ..." (registry order).
std::string policies_taking(const std::string& key) {
  std::string names;
  for (const std::string& name : kv::kv_policy_names())
    if (kv::kv_policy_takes_parameter(name, key)) names += (names.empty() ? "" : ", ") + name;
  return names;
}

// A flag that stands for one parameter of the KV policy (--kv-top-p P for top_p=P, --kv-budget N for budget=N).
// The words of its errors: which policies it needs, and what one that lacks the key does not do.
struct PolicyParameterFlag {
  const char* flag;     // "--kv-top-p"
  const char* key;      // "top_p"
  const char* needs;    // "selects pages per query": the policies that read the key
  const char* lacking;  // "does not select pages by a budget per query"
};

// key=value onto each policy given, each of which must read that key. The value itself is checked by the policy's
// own parameter reader, as if it had been written in the spec.
void apply_policy_parameter(std::vector<std::string>& args, const PolicyParameterFlag& f, const std::string& value) {
  auto with_parameter = [&](const std::string& list) {
    for (const std::string& spec : split(list, ',')) {
      const std::string name = spec.substr(0, spec.find(':'));
      if (!kv::kv_policy_takes_parameter(name, f.key))
        throw UsageError(std::string(f.flag) + " " + value + ": KV policy '" + name + "' " + f.lacking + " (" +
                         f.key + " applies to " + policies_taking(f.key) + ")");
    }
    return append_to_each(list, ":" + std::string(f.key) + "=" + value);
  };
  if (!edit_kv_policies(args, with_parameter))
    throw UsageError(std::string(f.flag) + " " + value + " needs a --kv-policy that " + f.needs + " (" +
                     policies_taking(f.key) + "); the default, full, keeps and reads every cell");
}

constexpr PolicyParameterFlag kKvTopP = {"--kv-top-p", "top_p", "selects pages per query",
                                         "does not select pages by a budget per query"};
constexpr PolicyParameterFlag kKvBudget = {"--kv-budget", "budget", "takes a token budget", "takes no budget"};

// --kv-top-p P (Twilight's top-p page budget) as top_p=P on each policy given, each of which must select pages.
void apply_kv_top_p(std::vector<std::string>& args, const std::string& top_p) {
  char* end = nullptr;
  const double p = std::strtod(top_p.c_str(), &end);
  if (top_p.empty() || *end != '\0' || !(p > 0.0 && p <= 1.0))
    throw UsageError("--kv-top-p " + top_p + ": must be a number in (0, 1] (the share of estimated attention read)");
  apply_policy_parameter(args, kKvTopP, top_p);
}

}  // namespace

std::vector<std::string> translate_llama_cpp_flags(const std::vector<std::string>& in) {
  // -x=value (llama.cpp accepts it for short flags too; CLI11 only for long ones) becomes -x value.
  std::vector<std::string> args;
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string& a = in[i];
    const size_t eq = a.find('=');
    if (i > 0 && a.size() > 2 && a[0] == '-' && a[1] != '-' && eq != std::string::npos && eq > 1) {
      args.push_back(a.substr(0, eq));
      args.push_back(a.substr(eq + 1));
    } else {
      args.push_back(a);
    }
  }
  std::vector<std::string> out;
  std::string cache_k, cache_v, kv_bits, top_p, budget;
  bool has_top_p = false, has_budget = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (i == 0 || a.empty() || a[0] != '-') {
      out.push_back(a);
      continue;
    }
    if (a == "--") {  // everything after is positional
      out.insert(out.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
      break;
    }
    if (a == "-ngl" || a == "--n-gpu-layers" || a == "--gpu-layers") {
      if (!is_value(args, i + 1)) throw UsageError(a + " needs a value");
      note(a + " " + args[i + 1] + " ignored: longhaul runs on the CPU");
      ++i;
      continue;
    }
    if (a == "-fa" || a == "--flash-attn") {
      // Recent llama.cpp takes on|off|auto, older versions nothing.
      const bool has_value = is_value(args, i + 1) &&
                             (args[i + 1] == "on" || args[i + 1] == "off" || args[i + 1] == "auto");
      note(a + " ignored: longhaul's attention is always fused (flash-attention style), there is nothing to switch");
      if (has_value) ++i;
      continue;
    }
    if (a == "-md") {  // llama.cpp's draft model flag; CLI11 would read it as -m d
      if (!is_value(args, i + 1)) throw UsageError(a + " needs a value");
      out.push_back("--model-draft");
      out.push_back(args[++i]);
      continue;
    }
    if (a == "-tb" || a == "--threads-batch") {
      if (!is_value(args, i + 1)) throw UsageError(a + " needs a value");
      out.push_back("--threads-batch");
      out.push_back(args[++i]);
      continue;
    }
    if (a == "-ctk" || a == "--cache-type-k" || a == "-ctv" || a == "--cache-type-v") {
      if (!is_value(args, i + 1)) throw UsageError(a + " needs a value");
      const std::string& type = args[++i];
      const auto it = kCacheTypeBits.find(type);
      if (it == kCacheTypeBits.end())
        throw UsageError(a + " " + type + ": longhaul stores KV cells as f16, q8_0 or q4_0 (KIVI int8/int4)");
      (a == "-ctk" || a == "--cache-type-k" ? cache_k : cache_v) = type;
      continue;
    }
    if (take_long_flag(args, i, "--kv-bits", kv_bits)) {
      if (kv_bits != "16" && kv_bits != "8" && kv_bits != "4")
        throw UsageError("--kv-bits " + kv_bits + ": must be 16 (f16), 8 or 4 (KIVI int8 / int4)");
      continue;
    }
    if (take_long_flag(args, i, "--kv-budget", budget)) {
      has_budget = true;
      continue;
    }
    if (take_long_flag(args, i, "--kv-top-p", top_p)) {
      has_top_p = true;
      continue;
    }
    if (a == "-cnv" || a == "--conversation" || a == "-i" || a == "--interactive") {
      throw UsageError(a + ": for a conversation use `longhaul chat`");
    }
    if ((a == "-s" || a == "--seed") && is_value(args, i + 1) && args[i + 1] == "-1") {
      out.push_back(a);
      out.push_back("4294967295");  // sampling::kRandomSeed: llama.cpp's -1, a random seed
      ++i;
      continue;
    }
    out.push_back(a);
  }
  if (!cache_k.empty() || !cache_v.empty() || !kv_bits.empty()) {
    // longhaul quantizes keys and values of a cell alike.
    if (!cache_k.empty() && !cache_v.empty() && cache_k != cache_v)
      throw UsageError("-ctk " + cache_k + " -ctv " + cache_v +
                       ": longhaul stores keys and values with the same type; give one type");
    const std::string cache_type = cache_k.empty() ? cache_v : cache_k;
    if (!kv_bits.empty() && !cache_type.empty() && kCacheTypeBits.at(cache_type) != kv_bits)
      throw UsageError("--kv-bits " + kv_bits + " and the cache type " + cache_type + " (" +
                       kCacheTypeBits.at(cache_type) + " bits) disagree; give one");
    // The cell storage is a parameter of every KV policy: bits=N goes onto each policy given (eval's list has
    // several), or onto the default policy.
    const std::string bits = ":bits=" + (kv_bits.empty() ? kCacheTypeBits.at(cache_type) : kv_bits);
    if (!edit_kv_policies(out, [&bits](const std::string& list) { return append_to_each(list, bits); })) {
      out.push_back("--kv-policy");
      out.push_back("full" + bits);
    }
  }
  if (has_top_p) apply_kv_top_p(out, top_p);
  if (has_budget) apply_policy_parameter(out, kKvBudget, budget);
  return out;
}

}  // namespace longhaul::cli
