// llama.cpp's command-line habits, translated before CLI11 parses. CLI11 groups single-dash letters, so without
// this `-ngl 0` reads as -n gl and `-c=64` as a value "=64"; users who come from llama-cli and llama-bench type
// those by reflex. What longhaul has is mapped to its own flag, what a CPU engine has no use for is accepted with a
// one-line note, and what would silently mean something else is refused.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "base/strings.h"
#include "common.h"

namespace longhaul::cli {
namespace {

// llama.cpp's KV cache types that longhaul's cell storage matches, as the KV policy's bits= values. llama.cpp's q8_0/q4_0 store
// blocks of 32 values with one scale; longhaul's 8/4-bit cells are KIVI's (per-channel keys, per-token values),
// the closest it has.
const std::map<std::string, std::string> kCacheTypeBits = {{"f16", "16"}, {"q8_0", "8"}, {"q4_0", "4"}};

void note(const std::string& message) { std::fprintf(stderr, "longhaul: note: %s\n", message.c_str()); }

bool is_value(const std::vector<std::string>& args, size_t i) { return i < args.size(); }

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
  std::string cache_k, cache_v;
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
  if (!cache_k.empty() || !cache_v.empty()) {
    // longhaul quantizes keys and values of a cell alike.
    if (!cache_k.empty() && !cache_v.empty() && cache_k != cache_v)
      throw UsageError("-ctk " + cache_k + " -ctv " + cache_v +
                       ": longhaul stores keys and values with the same type; give one type");
    // The cell storage is a parameter of every KV policy: bits=N goes onto each policy given (eval's list has
    // several), or onto the default policy.
    const std::string bits = ":bits=" + kCacheTypeBits.at(cache_k.empty() ? cache_v : cache_k);
    auto with_bits = [&bits](const std::string& list) {
      std::string withb;
      for (const std::string& spec : split(list, ',')) withb += (withb.empty() ? "" : ",") + spec + bits;
      return withb;
    };
    bool has_policy = false;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] == "--kv-policy" && i + 1 < out.size()) {
        out[i + 1] = with_bits(out[i + 1]);
        has_policy = true;
      } else if (out[i].rfind("--kv-policy=", 0) == 0) {
        out[i] = "--kv-policy=" + with_bits(out[i].substr(12));
        has_policy = true;
      }
    }
    if (!has_policy) {
      out.push_back("--kv-policy");
      out.push_back("full" + bits);
    }
  }
  return out;
}

}  // namespace longhaul::cli
