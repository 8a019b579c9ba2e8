// Helpers shared by the tokenizer tests: tiny vocabularies written as GGUF bytes (so the
// tests need no model file), and the default models opened once per test binary.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "testing/model_paths.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::tokenizer::testing {

// GGUF bytes kept alive next to the file parsed from them.
struct ParsedGguf {
  std::vector<uint8_t> bytes;
  std::unique_ptr<gguf::GgufFile> file;
};

inline ParsedGguf parse_gguf(const gguf::GgufWriter& w) {
  ParsedGguf p;
  p.bytes = w.to_bytes();
  Result<gguf::GgufFile> file = gguf::GgufFile::parse(p.bytes.data(), p.bytes.size());
  LH_CHECK_MSG(file.is_ok(), file.message());
  p.file = std::make_unique<gguf::GgufFile>(std::move(file).value());
  return p;
}

struct TokenSpec {
  std::string text;
  int32_t type = 1;  // GGUF token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  float score = 0.0f;
};

// A SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, then `pieces`.
inline std::vector<TokenSpec> spm_tokens(const std::vector<TokenSpec>& pieces) {
  std::vector<TokenSpec> tokens = {{"<unk>", 2}, {"<s>", 3}, {"</s>", 3}};
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) tokens.push_back({std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", 6});
  tokens.insert(tokens.end(), pieces.begin(), pieces.end());
  return tokens;
}

inline gguf::GgufWriter vocab_writer(const std::string& model, const std::vector<TokenSpec>& tokens) {
  gguf::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("tokenizer.ggml.model", model);
  std::vector<std::string> texts;
  std::vector<int32_t> types;
  std::vector<float> scores;
  for (const TokenSpec& t : tokens) {
    texts.push_back(t.text);
    types.push_back(t.type);
    scores.push_back(t.score);
  }
  w.add("tokenizer.ggml.tokens", gguf::make_string_array(texts));
  w.add("tokenizer.ggml.token_type", gguf::make_i32_array(types));
  w.add("tokenizer.ggml.scores", gguf::make_f32_array(scores));
  return w;
}

inline Tokenizer make_tokenizer(const gguf::GgufWriter& w) {
  ParsedGguf p = parse_gguf(w);
  Result<Tokenizer> t = Tokenizer::from_gguf(*p.file);
  LH_CHECK_MSG(t.is_ok(), t.message());
  return std::move(t).value();
}

inline int32_t id_of(const Tokenizer& t, const std::string& text) {
  const std::optional<int32_t> id = t.find_token(text);
  LH_CHECK_MSG(id.has_value(), "no token '" + text + "'");
  return *id;
}

// The default models, opened once per process; nullptr when the file is missing.
struct LoadedModel {
  std::unique_ptr<gguf::GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
};

inline const LoadedModel* load_model(const std::string& path) {
  static std::map<std::string, std::unique_ptr<LoadedModel>> cache;
  auto it = cache.find(path);
  if (it != cache.end()) return it->second.get();
  std::unique_ptr<LoadedModel> loaded;
  if (longhaul::testing::file_exists(path)) {
    Result<gguf::GgufFile> file = gguf::GgufFile::open(path);
    LH_CHECK_MSG(file.is_ok(), file.message());
    loaded = std::make_unique<LoadedModel>();
    loaded->file = std::make_unique<gguf::GgufFile>(std::move(file).value());
    Result<Tokenizer> t = Tokenizer::from_gguf(*loaded->file);
    LH_CHECK_MSG(t.is_ok(), t.message());
    loaded->tokenizer = std::make_unique<Tokenizer>(std::move(t).value());
  }
  return cache.emplace(path, std::move(loaded)).first->second.get();
}

}  // namespace longhaul::tokenizer::testing
