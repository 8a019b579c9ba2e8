// The two merge loops: byte-level BPE (merge the adjacent pair with the lowest rank) and
// SentencePiece BPE (merge the adjacent pair whose union has the highest score). Both keep
// the symbols of one piece of text in a doubly linked list over the text's bytes and a heap
// of candidate pairs; a pair that went stale (one side merged elsewhere) is skipped when popped.
#include <queue>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace longhaul::tokenizer {
namespace {

struct Symbol {
  const char* text;  // start of the symbol inside the piece; never moves
  size_t n_bytes;    // 0 once merged into its left neighbour
  int prev;
  int next;  // -1 at either end
};

// One UTF-8 character per symbol, judged from the lead byte like the reference does.
std::vector<Symbol> split_chars(std::string_view text) {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  size_t offset = 0;
  while (offset < text.size()) {
    const size_t len = std::min(utf8_sequence_length(static_cast<uint8_t>(text[offset])), text.size() - offset);
    const int index = static_cast<int>(symbols.size());
    offset += len;
    symbols.push_back({text.data() + offset - len, len, index - 1, offset == text.size() ? -1 : index + 1});
  }
  return symbols;
}

// A candidate merge of symbols[left] and symbols[right] as they were when it was queued.
// Merging only ever grows a symbol to the right, so the pair is still current exactly when
// both sides are alive and their sizes still add up to `n_bytes`.
struct Candidate {
  int left;
  int right;
  double priority;  // BPE: -rank; SentencePiece: score. Higher merges first.
  size_t n_bytes;
};
struct CandidateOrder {
  bool operator()(const Candidate& a, const Candidate& b) const {
    // Equal priorities go to the leftmost pair.
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  }
};
using CandidateQueue = std::priority_queue<Candidate, std::vector<Candidate>, CandidateOrder>;

// Runs the queue to exhaustion. `propose(left, right)` pushes a candidate if the pair merges.
template <typename Propose>
void run_merges(std::vector<Symbol>& symbols, CandidateQueue& queue, Propose propose) {
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) propose(i - 1, i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.n_bytes == 0 || right.n_bytes == 0 || left.n_bytes + right.n_bytes != c.n_bytes) continue;
    left.n_bytes += right.n_bytes;
    right.n_bytes = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    propose(left.prev, c.left);
    propose(c.left, left.next);
  }
}

}  // namespace

int32_t Vocab::byte_token(uint8_t byte) const {
  static constexpr char kHex[] = "0123456789ABCDEF";
  const char name[6] = {'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
  if (const int32_t id = find(std::string_view(name, 6)); id >= 0) return id;
  const char raw = static_cast<char>(byte);
  return find(std::string_view(&raw, 1));
}

void bpe_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
  const std::vector<std::string> words = vocab.pre_tokenizer->split(text);
  std::string key;  // "left right", the way GGUF spells a merge
  for (const std::string& word : words) {
    std::vector<Symbol> symbols;
    if (vocab.ignore_merges && vocab.find(word) >= 0) {
      symbols.push_back({word.data(), word.size(), -1, -1});
    } else {
      symbols = split_chars(word);
    }
    CandidateQueue queue;
    run_merges(symbols, queue, [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const Symbol& l = symbols[left];
      const Symbol& r = symbols[right];
      key.assign(l.text, l.n_bytes);
      key += ' ';
      key.append(r.text, r.n_bytes);
      const auto it = vocab.merge_ranks.find(std::string_view(key));
      if (it == vocab.merge_ranks.end()) return;
      queue.push({left, right, -static_cast<double>(it->second), l.n_bytes + r.n_bytes});
    });
    for (const Symbol& s : symbols) {
      if (s.n_bytes == 0) continue;
      const std::string_view piece(s.text, s.n_bytes);
      if (const int32_t id = vocab.find(piece); id >= 0) {
        out.push_back(id);
        continue;
      }
      // A merge produced something the vocabulary lacks: fall back to one token per byte of
      // the spelled form. Bytes of multi-byte spellings have no token and are dropped, as in
      // the reference.
      for (char b : piece)
        if (const int32_t id = vocab.find(std::string_view(&b, 1)); id >= 0) out.push_back(id);
    }
  }
}

void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
  std::vector<Symbol> symbols = split_chars(text);
  if (symbols.empty()) return;
  CandidateQueue queue;
  run_merges(symbols, queue, [&](int left, int right) {
    if (left < 0 || right < 0) return;
    // The right symbol starts where the left one ends, so their union is one view.
    const size_t n_bytes = symbols[left].n_bytes + symbols[right].n_bytes;
    const int32_t id = vocab.find(std::string_view(symbols[left].text, n_bytes));
    if (id < 0) return;
    queue.push({left, right, static_cast<double>(vocab.scores[id]), n_bytes});
  });
  // Symbol 0 only ever absorbs others, so the list starts there.
  for (int i = 0; i != -1; i = symbols[i].next) {
    const std::string_view piece(symbols[i].text, symbols[i].n_bytes);
    if (const int32_t id = vocab.find(piece); id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char b : piece) {
      int32_t id = vocab.byte_token(static_cast<uint8_t>(b));
      // The reference throws when a vocabulary lacks byte tokens; unknown is the graceful reading.
      if (id < 0) id = vocab.unk;
      if (id >= 0) out.push_back(id);
    }
  }
}

}  // namespace longhaul::tokenizer
