// niah: RULER's needle-in-a-haystack family (Hsieh et al., 2024, "RULER: What's the Real
// Context Size of Your Long-Context Language Models?") by prompt length and needle depth
// through the policy. Scored as RULER scores niah: the fraction of expected values the
// greedy answer contains, averaged over samples.
//
// Following RULER (scripts/data/synthetic/niah.py): its needle sentence, instruction,
// question and answer prefix, with its singular wording when one value is asked for;
// "adjective-noun" keys; 7-digit or UUID values; shuffled needles inserted next to each
// other at the depth; distinct keys per sample; asked keys chosen at random among them.
// Deviations, all for a self-contained, deterministic build:
//   - the haystack is RULER's "noise" filler (niah_single_1's "The grass is green. ..."
//     sentences, the passkey task's filler) for every variant; RULER's multikey,
//     multivalue and multiquery configs use Paul Graham essays, which we do not ship;
//   - keys come from 32 x 32 built-in words, not the wonderwords lists;
//   - like passkey, no chat template: the prompt is plain text ending in the answer
//     prefix, which is how RULER prompts base models;
//   - the answer budget is niah_answer_tokens (RULER generates 128 tokens); decoding also
//     stops once every expected value has appeared, which a containment score cannot undo.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <random>

#include "base/sys_info.h"
#include "eval/greedy_answer.h"
#include "eval/niah.h"
#include "eval/task.h"

namespace longhaul::eval {

namespace {

constexpr const char* kFiller =
    "\nThe grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// Key words: RULER draws "adjective-noun" pairs from the wonderwords lists.
constexpr const char* kAdjectives[] = {
    "ancient", "brave",  "calm",   "clever", "curious", "daring", "eager",  "fancy",  "gentle", "golden", "happy",
    "hidden",  "humble", "jolly",  "kind",   "lively",  "lucky",  "mighty", "narrow", "noble",  "odd",    "proud",
    "quiet",   "rapid",  "silent", "silver", "smooth",  "tender", "upbeat", "vivid",  "wild",   "zesty"};
constexpr const char* kNouns[] = {
    "anchor", "badger", "canyon", "cellar", "comet",  "dolphin", "ember",  "falcon", "garden", "harbor", "island",
    "jacket", "kettle", "lantern", "meadow", "mirror", "nectar",  "orchid", "pepper", "pillow", "quartz", "river",
    "saddle", "teapot", "thunder", "tunnel", "valley", "violin",  "walnut", "willow", "window", "zephyr"};

std::string random_key(std::mt19937_64& rng) {
  const uint64_t r = rng();
  return std::string(kAdjectives[r % std::size(kAdjectives)]) + "-" +
         kNouns[(r / std::size(kAdjectives)) % std::size(kNouns)];
}

std::string random_value(std::mt19937_64& rng, NiahValueKind kind) {
  if (kind == NiahValueKind::kNumber) return std::to_string(1000000 + rng() % 9000000);  // 7 digits, as RULER
  // 128 random bits with the version (4) and variant (10xx) bits set, as Python's
  // uuid.UUID(int=random.getrandbits(128), version=4) in RULER.
  uint64_t hi = rng(), lo = rng();
  hi = (hi & ~0xF000ull) | 0x4000ull;
  lo = (lo & ~(0xC000ull << 48)) | (0x8000ull << 48);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xFFFF), static_cast<unsigned long long>(hi & 0xFFFF),
                static_cast<unsigned long long>(lo >> 48), static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFull));
  return buf;
}

// Draws until the result is not in `taken` (the pools are far larger than any sample).
template <typename Draw>
std::string draw_distinct(std::vector<std::string>& taken, Draw draw) {
  std::string s;
  do s = draw();
  while (std::find(taken.begin(), taken.end(), s) != taken.end());
  taken.push_back(s);
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<NiahConfig> niah_config(const std::string& task_name) {
  NiahConfig c;
  if (task_name == "niah") return c;
  if (task_name == "niah-uuid") {
    c.value_kind = NiahValueKind::kUuid;
    return c;
  }
  if (task_name == "niah-multikey") {  // RULER niah_multikey_1: num_needle_k = 4
    c.n_keys = 4;
    return c;
  }
  if (task_name == "niah-multivalue") {  // RULER niah_multivalue: num_needle_v = 4
    c.n_values = 4;
    return c;
  }
  if (task_name == "niah-multiquery") {  // RULER niah_multiquery: num_needle_q = 4 (so num_needle_k = 4)
    c.n_keys = 4;
    c.n_queries = 4;
    return c;
  }
  return Status::error("unknown niah variant '" + task_name +
                       "' (known: niah, niah-uuid, niah-multikey, niah-multivalue, niah-multiquery)");
}

NiahSample make_niah_sample(const NiahConfig& config, uint64_t seed) {
  LH_CHECK(config.n_keys >= 1 && config.n_values >= 1 && config.n_queries >= 1 && config.n_queries <= config.n_keys);
  std::mt19937_64 rng(seed);
  std::vector<std::string> keys, values;
  std::vector<std::vector<std::string>> values_of(static_cast<size_t>(config.n_keys));
  NiahSample s;
  for (int32_t k = 0; k < config.n_keys; ++k) {
    const std::string key = draw_distinct(keys, [&] { return random_key(rng); });
    for (int32_t v = 0; v < config.n_values; ++v) {
      values_of[static_cast<size_t>(k)].push_back(
          draw_distinct(values, [&] { return random_value(rng, config.value_kind); }));
      s.needles.push_back({key, values_of[static_cast<size_t>(k)].back()});
    }
  }
  // Fisher-Yates on the raw generator: the needles' order, then which keys are asked.
  for (size_t i = s.needles.size(); i > 1; --i) std::swap(s.needles[i - 1], s.needles[rng() % i]);
  std::vector<int32_t> order(static_cast<size_t>(config.n_keys));
  for (int32_t k = 0; k < config.n_keys; ++k) order[static_cast<size_t>(k)] = k;
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  for (int32_t q = 0; q < config.n_queries; ++q) {
    const auto k = static_cast<size_t>(order[static_cast<size_t>(q)]);
    s.queries.push_back(keys[k]);
    s.expected.insert(s.expected.end(), values_of[k].begin(), values_of[k].end());
  }
  return s;
}

NiahPrompt build_niah_prompt(const tokenizer::Tokenizer& tok, int32_t n_tokens, double depth, const NiahConfig& config,
                             const NiahSample& sample) {
  // RULER's template, made singular when a single value is asked for (its replace() rules).
  const bool one = config.n_queries * config.n_values == 1;
  const std::string plural = config.value_kind == NiahValueKind::kNumber ? "numbers" : "uuids";
  const std::string kind = one ? plural.substr(0, plural.size() - 1) : plural;
  std::string query;
  for (size_t i = 0; i < sample.queries.size(); ++i)
    query += (i == 0 ? "" : i + 1 == sample.queries.size() ? ", and " : ", ") + sample.queries[i];
  const std::string intro = std::string(one ? "A" : "Some") + " special magic " + kind + (one ? " is" : " are") +
                            " hidden within the following text. Make sure to memorize it. I will quiz you about the " +
                            kind + " afterwards.";
  const std::string question = std::string("\nWhat ") + (one ? "is" : "are all") + " the special magic " + kind +
                               " for " + query + " mentioned in the provided text? The special magic " + kind +
                               " for " + query + " mentioned in the provided text " + (one ? "is" : "are");

  const std::vector<int32_t> head = tok.encode(intro, true, false);
  const std::vector<int32_t> filler = tok.encode(kFiller, false, false);
  std::vector<int32_t> needles;
  for (const NiahNeedle& n : sample.needles) {
    const std::vector<int32_t> t =
        tok.encode("\nOne of the special magic " + plural + " for " + n.key + " is: " + n.value + ".", false, false);
    needles.insert(needles.end(), t.begin(), t.end());
  }
  const std::vector<int32_t> tail = tok.encode(question, false, false);
  const int64_t fixed = static_cast<int64_t>(head.size() + needles.size() + tail.size());
  const int64_t n_fill = std::max<int64_t>(0, (n_tokens - fixed) / static_cast<int64_t>(filler.size()));
  const int64_t n_before = std::llround(std::clamp(depth, 0.0, 1.0) * static_cast<double>(n_fill));
  NiahPrompt p;
  p.tokens = head;
  p.haystack_begin = static_cast<int32_t>(p.tokens.size());
  for (int64_t i = 0; i < n_before; ++i) p.tokens.insert(p.tokens.end(), filler.begin(), filler.end());
  p.needles_begin = static_cast<int32_t>(p.tokens.size());
  p.tokens.insert(p.tokens.end(), needles.begin(), needles.end());
  p.needles_end = static_cast<int32_t>(p.tokens.size());
  for (int64_t i = n_before; i < n_fill; ++i) p.tokens.insert(p.tokens.end(), filler.begin(), filler.end());
  p.haystack_end = static_cast<int32_t>(p.tokens.size());
  p.tokens.insert(p.tokens.end(), tail.begin(), tail.end());
  return p;
}

double niah_score(const std::string& answer, std::span<const std::string> expected) {
  if (expected.empty()) return 1.0;
  const std::string a = lower(answer);
  int32_t found = 0;
  for (const std::string& e : expected)
    if (a.find(lower(e)) != std::string::npos) ++found;
  return static_cast<double>(found) / static_cast<double>(expected.size());
}

int32_t niah_answer_tokens(const NiahConfig& config) {
  // Per value: a 7-digit number is at most 7 tokens, a UUID at most 36, plus separators.
  const int32_t per_value = config.value_kind == NiahValueKind::kNumber ? 12 : 40;
  return 8 + per_value * config.n_queries * config.n_values;
}

namespace {

// SplitMix64 (Steele et al., 2014): one well-mixed seed per sample from (seed, index).
uint64_t sample_seed(uint64_t seed, int64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class NiahTask final : public Task {
 public:
  NiahTask(std::string name, NiahConfig config) : name_(std::move(name)), config_(config) {}
  std::string name() const override { return name_; }

  // The samples differ in their keys and values, so every point's samples are built as run() builds them.
  Status check(const tokenizer::Tokenizer& tokenizer, const EvalSpec& spec) override {
    int64_t i_point = 0;
    for (int32_t length : spec.lengths) {
      for (double depth : spec.depths) {
        for (int32_t s = 0; s < spec.samples; ++s, ++i_point) {
          const NiahSample sample = make_niah_sample(config_, sample_seed(spec.seed, i_point));
          const size_t n = build_niah_prompt(tokenizer, length, depth, config_, sample).tokens.size();
          if (n > static_cast<size_t>(length))
            return Status::error(name_ + ": length " + std::to_string(length) + " is shorter than the task's fixed text (" +
                                 std::to_string(build_niah_prompt(tokenizer, 1, depth, config_, sample).tokens.size()) +
                                 " tokens for sample " + std::to_string(s + 1) + "); give longer lengths");
        }
      }
    }
    return Status::ok();
  }

  Status run(const TaskContext& ctx) override {
    const EvalSpec& spec = ctx.spec;
    const int32_t max_new = std::max(spec.max_new_tokens, niah_answer_tokens(config_));
    generate::SessionOptions so = ctx.session;
    const int32_t max_len = *std::max_element(spec.lengths.begin(), spec.lengths.end());
    so.n_ctx = std::max(so.n_ctx, max_len + max_new + 64);
    LH_ASSIGN_OR_RETURN(std::unique_ptr<generate::Session> session, generate::Session::create(ctx.model, so));
    const std::string policy = session->describe_kv();  // the policy and its cell storage
    const int64_t n_points = static_cast<int64_t>(spec.lengths.size() * spec.depths.size()) * spec.samples;
    int64_t i_point = 0;
    for (int32_t length : spec.lengths) {
      for (double depth : spec.depths) {
        RetrievalPoint point;
        for (int32_t s = 0; s < spec.samples; ++s, ++i_point) {
          // Every policy run sees the same samples: they depend on the seed and the point only.
          const NiahSample sample = make_niah_sample(config_, sample_seed(spec.seed, i_point));
          const NiahPrompt prompt = build_niah_prompt(ctx.tokenizer, length, depth, config_, sample);
          if (ctx.progress) {
            char line[200];
            std::snprintf(line, sizeof line, "%s %s: length %d depth %.2f sample %d/%d (%lld/%lld)", name_.c_str(),
                          policy.c_str(), length, depth, s + 1, spec.samples, static_cast<long long>(i_point + 1),
                          static_cast<long long>(n_points));
            ctx.progress(line);
          }
          // Stops as soon as every expected value has appeared.
          auto all_found = [&](const std::string& text) { return niah_score(text, sample.expected) == 1.0; };
          LH_ASSIGN_OR_RETURN(std::string answer,
                              answer_greedily(*session, ctx.tokenizer, prompt.tokens, max_new, all_found, point));
          point.score += niah_score(answer, sample.expected);
        }
        const EvalRow row = point.row(policy, length, depth, spec.samples);
        if (ctx.emit) ctx.emit(row);
      }
    }
    return Status::ok();
  }

 private:
  std::string name_;
  NiahConfig config_;
};

std::unique_ptr<Task> make_niah_variant(const std::string& name) {
  Result<NiahConfig> config = niah_config(name);
  LH_CHECK_MSG(config.is_ok(), config.message().c_str());
  return std::make_unique<NiahTask>(name, *config);
}

}  // namespace

std::unique_ptr<Task> make_niah_task() { return make_niah_variant("niah"); }
std::unique_ptr<Task> make_niah_uuid_task() { return make_niah_variant("niah-uuid"); }
std::unique_ptr<Task> make_niah_multikey_task() { return make_niah_variant("niah-multikey"); }
std::unique_ptr<Task> make_niah_multivalue_task() { return make_niah_variant("niah-multivalue"); }
std::unique_ptr<Task> make_niah_multiquery_task() { return make_niah_variant("niah-multiquery"); }

}  // namespace longhaul::eval
