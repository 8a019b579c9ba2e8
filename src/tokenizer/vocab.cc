// Loading a vocabulary from GGUF metadata, including the attribute fixes llama.cpp applies
// at load time (end-of-turn texts forced to control, "unused" control tokens, the
// end-of-generation set). The fixes matter for exactness: a control token is not matched in
// user text, and "</s>" in Gemma 3's vocabulary is user-defined in the file but control in
// the reference because its text is on the end-of-generation list.
#include "tokenizer/vocab.h"

#include <algorithm>
#include <span>

#include "tokenizer/unicode.h"

namespace longhaul::tokenizer {
namespace {

using TextList = std::span<const std::string_view>;

// Texts by which the reference recognizes special tokens the GGUF keys did not name.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>",        "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>",   "<EOT>",      "_<EOT>",  "[EOT]",         "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "<end_of_utterance>"};
constexpr std::string_view kEomTexts[] = {"<|eom_id|>"};
constexpr std::string_view kFimPreTexts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",    "<\uff5cfim\u2581begin\uff5c>",
    "<PRE>",          "\u2581<PRE>",  "<|code_prefix|>", "<|prefix|>"};
constexpr std::string_view kFimSufTexts[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",    "<\uff5cfim\u2581hole\uff5c>",
    "<SUF>",          "\u2581<SUF>",  "<|code_suffix|>", "<|suffix|>"};
constexpr std::string_view kFimMidTexts[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>",    "<\uff5cfim\u2581end\uff5c>",
    "<MID>",          "\u2581<MID>",  "<|code_middle|>", "<|middle|>"};
constexpr std::string_view kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::string_view kFimRepTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepTexts[] = {"<|file_sep|>"};
// clang-format off
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~["};
// clang-format on
// gpt-oss renders these even though they are control tokens in its file.
constexpr std::string_view kAlwaysRenderedTexts[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};

uint16_t attr_of_type(TokenAttr type) {
  switch (type) {
    case TokenAttr::kNormal: return kAttrNormal;
    case TokenAttr::kUnknown: return kAttrUnknown;
    case TokenAttr::kControl: return kAttrControl;
    case TokenAttr::kUserDefined: return kAttrUserDefined;
    case TokenAttr::kUnused: return kAttrUnused;
    case TokenAttr::kByte: return kAttrByte;
  }
  return 0;
}

// Reads an optional special-token id; present but outside the vocabulary is an error.
Status read_special_id(const gguf::GgufFile& file, std::string_view key, int32_t n_vocab, int32_t& id) {
  const gguf::Value* v = file.find(key);
  if (v == nullptr) return Status::ok();
  const std::optional<int64_t> value = v->as_int();
  if (!value) return Status::error("metadata '" + std::string(key) + "' is not an integer");
  if (*value < 0 || *value >= n_vocab)
    return Status::error("metadata '" + std::string(key) + "' = " + std::to_string(*value) +
                         " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
  id = static_cast<int32_t>(*value);
  return Status::ok();
}

// Ids the reference finds by text when no key named them; it takes whichever its hash map
// yields first, we take the lowest id. The token is forced to control.
void detect_by_text(Vocab& v, TextList texts, int32_t& id) {
  if (id >= 0) return;
  for (std::string_view t : texts) {
    const int32_t found = v.find(t);
    if (found >= 0 && (id < 0 || found < id)) id = found;
  }
  if (id >= 0) v.attrs[id] |= kAttrControl;
}

Status load_tokens(const gguf::GgufFile& file, Vocab& v) {
  LH_ASSIGN_OR_RETURN(v.texts, file.get_string_array("tokenizer.ggml.tokens"));
  const size_t n = v.texts.size();
  if (n == 0) return Status::error("metadata 'tokenizer.ggml.tokens' is empty");
  if (n > static_cast<size_t>(INT32_MAX)) return Status::error("vocabulary of " + std::to_string(n) + " tokens");

  v.scores.assign(n, 0.0f);
  if (file.find("tokenizer.ggml.scores") != nullptr) {
    LH_ASSIGN_OR_RETURN(std::vector<float> scores, file.get_float_array("tokenizer.ggml.scores"));
    if (scores.size() < n)
      return Status::error("metadata 'tokenizer.ggml.scores' has " + std::to_string(scores.size()) +
                           " entries, fewer than the " + std::to_string(n) + " tokens");
    std::copy_n(scores.begin(), n, v.scores.begin());
  }
  v.types.assign(n, TokenAttr::kNormal);
  if (file.find("tokenizer.ggml.token_type") != nullptr) {
    LH_ASSIGN_OR_RETURN(std::vector<int32_t> types, file.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() < n)
      return Status::error("metadata 'tokenizer.ggml.token_type' has " + std::to_string(types.size()) +
                           " entries, fewer than the " + std::to_string(n) + " tokens");
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 1 || types[i] > 6)
        return Status::error("token " + std::to_string(i) + " has token_type " + std::to_string(types[i]) +
                             ", outside 1..6");
      v.types[i] = static_cast<TokenAttr>(types[i]);
    }
  }
  v.attrs.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (v.texts[i].empty()) v.texts[i] = "[EMPTY_" + std::to_string(i) + "]";  // as the reference names them
    v.attrs[i] = attr_of_type(v.types[i]);
  }
  if (const int32_t dup = v.text_to_id.build(v.texts); dup >= 0)
    return Status::error("duplicate token text '" + v.texts[dup] + "' at ids " +
                         std::to_string(v.text_to_id.find(v.texts[dup])) + " and " + std::to_string(dup));
  return Status::ok();
}

Status load_merges(const gguf::GgufFile& file, Vocab& v) {
  if (file.find("tokenizer.ggml.merges") == nullptr)
    return Status::error("BPE vocabulary without 'tokenizer.ggml.merges'");
  LH_ASSIGN_OR_RETURN(std::vector<std::string> merges, file.get_string_array("tokenizer.ggml.merges"));
  v.merge_ranks.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    // The reference splits at the first space after position 0; a merge without one can never
    // match a pair, so its key is left as an impossible " ".
    const bool has_space = merges[i].find(' ', 1) != std::string::npos;
    v.merge_ranks.try_emplace(has_space ? std::move(merges[i]) : std::string(" "), static_cast<int32_t>(i));
  }
  return Status::ok();
}

// The end-of-generation set and the attribute fixes that go with it, in the reference's order.
void build_eog(Vocab& v, int32_t fim_pad, int32_t fim_rep, int32_t fim_sep) {
  std::vector<int32_t> eog;
  for (int32_t id : {fim_pad, fim_rep, fim_sep})
    if (id >= 0) eog.push_back(id);
  for (std::string_view text : kEogTexts) {
    if (const int32_t id = v.find(text); id >= 0) {
      eog.push_back(id);
      v.attrs[id] |= kAttrControl;
    }
  }
  for (std::string_view text : kAlwaysRenderedTexts)
    if (const int32_t id = v.find(text); id >= 0) v.attrs[id] = kAttrUserDefined;
  for (int32_t id : {v.eos, v.eot, v.eom})
    if (id >= 0) eog.push_back(id);
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());

  auto eog_with_text = [&](std::string_view text) -> int32_t {
    for (int32_t id : eog)
      if (v.texts[id] == text) return id;
    return -1;
  };
  // gpt-oss / solar-open end a message with <|end|> but keep generating: not an EOG there.
  const bool has_return = eog_with_text("<|return|>") >= 0;
  const bool has_call = eog_with_text("<|call|>") >= 0 || eog_with_text("<|calls|>") >= 0;
  const bool has_flush = eog_with_text("<|flush|>") >= 0;
  if (const int32_t end_id = eog_with_text("<|end|>"); end_id >= 0 && has_call && (has_return || has_flush)) {
    eog.erase(std::find(eog.begin(), eog.end(), end_id));
    v.attrs[end_id] = kAttrUserDefined;
  }
  // Gemma 4 uses </s> as ordinary text when it has <|tool_response>.
  if (const int32_t s_id = eog_with_text("</s>"); s_id >= 0 && eog_with_text("<|tool_response>") >= 0) {
    eog.erase(std::find(eog.begin(), eog.end(), s_id));
    v.attrs[s_id] = kAttrNormal;
  }
  v.eog_ids = std::move(eog);
}

}  // namespace

int32_t TextIndex::build(const std::vector<std::string>& texts) {
  texts_ = &texts;
  size_t capacity = 16;
  while (capacity < 2 * texts.size()) capacity *= 2;
  slots_.assign(capacity, -1);
  mask_ = capacity - 1;
  for (size_t i = 0; i < texts.size(); ++i) {
    size_t slot = std::hash<std::string_view>{}(texts[i]) & mask_;
    while (slots_[slot] >= 0) {
      if (texts[slots_[slot]] == texts[i]) return static_cast<int32_t>(i);
      slot = (slot + 1) & mask_;
    }
    slots_[slot] = static_cast<int32_t>(i);
  }
  return -1;
}

int32_t TextIndex::find(std::string_view text) const {
  if (slots_.empty()) return -1;
  const size_t hash = std::hash<std::string_view>{}(text);
  for (size_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
    const int32_t id = slots_[slot];
    if (id < 0 || (*texts_)[id] == text) return id;
  }
}

Result<std::unique_ptr<const Vocab>> load_vocab(const gguf::GgufFile& file) {
  auto v = std::make_unique<Vocab>();
  const std::optional<std::string> model = file.get_string("tokenizer.ggml.model");
  if (!model) return Status::error("metadata 'tokenizer.ggml.model' is missing");
  v->model_name = *model;
  v->pre_name = file.get_string("tokenizer.ggml.pre").value_or("");
  if (v->pre_name.empty()) v->pre_name = "default";

  // Defaults per model family; the GGUF keys read below override them.
  if (*model == "llama") {
    v->kind = VocabKind::kSpm;
    v->bos = 1;
    v->eos = 2;
    v->unk = 0;
    v->add_space_prefix = true;
    v->add_bos = true;
  } else if (*model == "gpt2") {
    v->kind = VocabKind::kBpe;
    v->bos = 11;
    v->eos = 11;
    LH_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::create(v->pre_name));
    const PreTokenizerTraits& traits = pre.traits();
    v->clean_spaces = traits.clean_spaces;
    v->ignore_merges = traits.ignore_merges;
    v->add_bos = traits.force_add_bos;
    if (traits.no_bos) v->bos = -1;
    v->pre_tokenizer.emplace(std::move(pre));
    codepoint_flags(0);  // builds the Unicode table now rather than in the first encode()
  } else {
    return Status::error("unknown tokenizer.ggml.model '" + *model + "' (longhaul supports 'gpt2' and 'llama')");
  }
  if (const std::optional<bool> b = file.get_bool("tokenizer.ggml.add_space_prefix")) v->add_space_prefix = *b;

  LH_RETURN_IF_ERROR(load_tokens(file, *v));
  if (v->kind == VocabKind::kBpe) LH_RETURN_IF_ERROR(load_merges(file, *v));

  const int32_t n = v->n_vocab();
  for (int32_t* id : {&v->bos, &v->eos, &v->unk})
    if (*id >= n) *id = -1;  // a family default the vocabulary is too small for
  int32_t sep = -1, mask = -1;
  int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
  const std::pair<std::string_view, int32_t*> keys[] = {
      {"tokenizer.ggml.bos_token_id", &v->bos},      {"tokenizer.ggml.eos_token_id", &v->eos},
      {"tokenizer.ggml.eot_token_id", &v->eot},      {"tokenizer.ggml.eom_token_id", &v->eom},
      {"tokenizer.ggml.unknown_token_id", &v->unk},  {"tokenizer.ggml.seperator_token_id", &sep},
      {"tokenizer.ggml.padding_token_id", &v->pad},  {"tokenizer.ggml.mask_token_id", &mask},
      {"tokenizer.ggml.fim_pre_token_id", &fim_pre}, {"tokenizer.ggml.fim_suf_token_id", &fim_suf},
      {"tokenizer.ggml.fim_mid_token_id", &fim_mid}, {"tokenizer.ggml.fim_pad_token_id", &fim_pad},
      {"tokenizer.ggml.fim_rep_token_id", &fim_rep}, {"tokenizer.ggml.fim_sep_token_id", &fim_sep},
      {"tokenizer.ggml.prefix_token_id", &fim_pre},  {"tokenizer.ggml.suffix_token_id", &fim_suf},
      {"tokenizer.ggml.middle_token_id", &fim_mid},
  };
  for (const auto& [key, id] : keys) LH_RETURN_IF_ERROR(read_special_id(file, key, n, *id));

  if (const std::optional<bool> b = file.get_bool("tokenizer.ggml.add_bos_token")) v->add_bos = *b;
  if (const std::optional<bool> b = file.get_bool("tokenizer.ggml.add_eos_token")) v->add_eos = *b;
  if (v->add_bos && v->bos < 0)
    return Status::error("tokenizer.ggml.add_bos_token is true but the vocabulary has no BOS token");
  if (v->add_eos && v->eos < 0)
    return Status::error("tokenizer.ggml.add_eos_token is true but the vocabulary has no EOS token");

  detect_by_text(*v, kEotTexts, v->eot);
  detect_by_text(*v, kEomTexts, v->eom);
  detect_by_text(*v, kFimPreTexts, fim_pre);
  detect_by_text(*v, kFimSufTexts, fim_suf);
  detect_by_text(*v, kFimMidTexts, fim_mid);
  detect_by_text(*v, kFimPadTexts, fim_pad);
  detect_by_text(*v, kFimRepTexts, fim_rep);
  detect_by_text(*v, kFimSepTexts, fim_sep);
  for (int32_t id = 0; id < n; ++id)
    if ((v->attrs[id] & kAttrControl) && v->texts[id].find("unused") != std::string::npos) v->attrs[id] |= kAttrUnused;
  build_eog(*v, fim_pad, fim_rep, fim_sep);

  // Special texts are split out longest first. std::sort is not stable; sorting the same
  // ascending id list with the same comparator reproduces the reference's order among
  // equal lengths too (with the same standard library).
  for (int32_t id = 0; id < n; ++id)
    if (v->attrs[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) v->special_tokens.push_back(id);
  std::sort(v->special_tokens.begin(), v->special_tokens.end(),
            [&](int32_t a, int32_t b) { return v->texts[a].size() > v->texts[b].size(); });
  v->special_trie.emplace_back();
  for (size_t rank = 0; rank < v->special_tokens.size(); ++rank) {
    int32_t node = 0;
    for (char c : v->texts[v->special_tokens[rank]]) {
      const auto [it, inserted] = v->special_trie[node].children.try_emplace(
          static_cast<uint8_t>(c), static_cast<int32_t>(v->special_trie.size()));
      node = it->second;
      if (inserted) v->special_trie.emplace_back();
    }
    v->special_trie[node].rank = static_cast<int32_t>(rank);
  }
  return std::unique_ptr<const Vocab>(std::move(v));
}

}  // namespace longhaul::tokenizer
