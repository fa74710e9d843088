// Checks shared by the two tokenizer targets: what encode() promises for any bytes, and
// custom-token splitting with token sets taken from the input (on a byte-level mock, so
// every run starts from a fresh tokenizer and a crash replays on its own).
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "ctok/text/tokenizer.hpp"
#include "fuzz_common.hpp"

namespace ctok_fuzz {

// Every byte its own piece: ids 0..255.
class ByteTokenizer final : public ctok::text::Tokenizer {
 public:
  ByteTokenizer() { set_special({256, 257, 258}); }
  std::vector<int64_t> encode_plain(const std::string& text) const override {
    std::vector<int64_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string id_to_piece(int64_t id) const override {
    if (id >= 256 && id <= 258) return id == 256 ? "<bos>" : id == 257 ? "<eos>" : "<pad>";
    if (id < 0 || id >= 256) throw ctok::bad_input("byte id out of range");
    return std::string(1, static_cast<char>(id));
  }
  int64_t piece_to_id(const std::string& piece) const override {
    return piece.size() == 1 ? static_cast<unsigned char>(piece[0]) : -1;
  }
  // The specials live at 256..258, so custom ids start after them.
  int64_t vocab_size() const override { return 259; }
  std::string type() const override { return "bytes"; }
};

// What encode(text, context_length, custom) promises when it succeeds.
inline void check_encoding(const ctok::text::Tokenizer& tok, const ctok::text::CustomTokens& custom,
                           const std::string& text, int64_t ctx) {
  ctok::text::Encoding e;
  if (!run_guarded([&] { e = tok.encode(text, ctx, custom); })) {
    const int64_t reserved = (tok.special().bos >= 0) + (tok.special().eos >= 0);
    CTOK_FUZZ_CHECK(ctx < std::max<int64_t>(reserved, 1), "encode refused a usable context length");
    return;
  }
  const int64_t n_ids = tok.vocab_size() + static_cast<int64_t>(custom.size());
  CTOK_FUZZ_CHECK(static_cast<int64_t>(e.ids.size()) == ctx, "ids not padded to context_length");
  CTOK_FUZZ_CHECK(e.truncated >= 0, "negative truncation");
  CTOK_FUZZ_CHECK(static_cast<int64_t>(e.pieces.size()) <= ctx, "more pieces than positions");
  CTOK_FUZZ_CHECK(e.eos_index >= 0 && e.eos_index < ctx, "eos_index out of range");
  CTOK_FUZZ_CHECK(e.eos_index == std::max<int64_t>(static_cast<int64_t>(e.pieces.size()) - 1, 0),
                  "eos_index is not the last real position");
  for (int64_t id : e.ids) CTOK_FUZZ_CHECK(id >= 0 && id < n_ids, "id outside vocabulary + custom ids");
  const auto& sp = tok.special();
  if (sp.bos >= 0) CTOK_FUZZ_CHECK(e.ids[0] == sp.bos, "bos missing");
  if (sp.eos >= 0) CTOK_FUZZ_CHECK(e.ids[static_cast<size_t>(e.eos_index)] == sp.eos, "eos missing");
  for (size_t i = 0; i < e.pieces.size(); ++i) {
    const std::string* t = custom.token(e.ids[i]);
    CTOK_FUZZ_CHECK(e.pieces[i] == (t ? *t : tok.id_to_piece(e.ids[i])), "piece does not match its id");
  }
  int64_t last = -1;
  for (const auto& [pos, token] : e.custom) {
    CTOK_FUZZ_CHECK(pos > last && pos < static_cast<int64_t>(e.pieces.size()), "custom position out of order or range");
    CTOK_FUZZ_CHECK(e.ids[static_cast<size_t>(pos)] == custom.id(token), "custom position holds another id");
    last = pos;
  }
  // Every custom id in the kept ids is reported.
  size_t custom_ids = 0;
  for (size_t i = 0; i < e.pieces.size(); ++i) custom_ids += e.ids[i] >= tok.vocab_size();
  CTOK_FUZZ_CHECK(custom_ids == e.custom.size(), "custom ids and custom positions disagree");
}

// split_custom: the pieces put back together are the text, custom segments carry their
// ids, and no registered token starts anywhere inside an ordinary segment.
inline void check_split(const ctok::text::Tokenizer& tok, const ctok::text::CustomTokens& custom,
                        const std::string& text) {
  const std::vector<ctok::text::Segment> segs = tok.split_custom(text, custom);
  std::string joined;
  for (const auto& s : segs) {
    if (s.custom_id >= 0) {
      CTOK_FUZZ_CHECK(custom.id(s.text) == s.custom_id, "custom segment with a wrong id");
    } else {
      CTOK_FUZZ_CHECK(!s.text.empty(), "empty ordinary segment");
      for (size_t p = joined.size(); p < joined.size() + s.text.size(); ++p)
        for (const std::string& t : custom.tokens())
          CTOK_FUZZ_CHECK(text.compare(p, t.size(), t) != 0, "a custom token left inside ordinary text");
    }
    joined += s.text;
  }
  CTOK_FUZZ_CHECK(joined == text, "segments do not rebuild the text");
}

// Up to 6 whitespace-separated words of `text` (at most 16 bytes each) as custom tokens on
// a fresh byte tokenizer; then split and encode the whole text.
inline void fuzz_custom_tokens(const std::string& text, int64_t ctx) {
  ByteTokenizer tok;
  ctok::text::CustomTokens custom;
  size_t i = 0, registered = 0;
  while (i < text.size() && registered < 6) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i && j - i <= 16) {
      const std::string word = text.substr(i, j - i);
      int64_t id = -1;
      if (run_guarded([&] { id = custom.add(tok, word); })) {
        CTOK_FUZZ_CHECK(id >= tok.vocab_size(), "custom id inside the vocabulary");
        CTOK_FUZZ_CHECK(custom.add(tok, word) == id, "same token, another id");
        ++registered;
      }
    }
    i = j;
  }
  check_split(tok, custom, text);
  check_encoding(tok, custom, text, ctx);
}

}  // namespace ctok_fuzz
