// The shared part of every tokenizer: custom tokens, bos/eos, truncation and padding.
#include "ctok/text/tokenizer.hpp"

#include <algorithm>

#include "ctok/core/error.hpp"
#include "text/unicode.hpp"

namespace ctok::text {

void Tokenizer::check_custom_token(const std::string& token) const {
  if (token.empty()) throw bad_input("a custom token must not be empty");
  if (!unicode::is_valid_utf8(token)) throw bad_input("a custom token must be valid UTF-8").found(token);
  const std::u32string chars = unicode::decode_utf8(token);
  if (std::any_of(chars.begin(), chars.end(), unicode::is_space))
    throw bad_input("a custom token must not contain whitespace")
        .expected("one word such as <my-dress>")
        .found("\"" + token + "\"");
  if (const std::string why = known_as_single_piece(token); !why.empty())
    throw bad_input("custom token \"" + token + "\" collides with a word the " + type() +
                    " tokenizer already knows as one piece (" + why +
                    "); choose a string that is not a word, e.g. <" + token + ">");
}

int64_t CustomTokens::add(const Tokenizer& tok, const std::string& token) {
  if (!tokens_.empty() && first_id_ != tok.vocab_size())
    throw runtime_failure("custom token table used with tokenizers of different vocabulary sizes");
  if (const int64_t existing = id(token); existing >= 0) return existing;
  tok.check_custom_token(token);
  first_id_ = tok.vocab_size();
  tokens_.push_back(token);
  return first_id_ + static_cast<int64_t>(tokens_.size()) - 1;
}

int64_t CustomTokens::id(const std::string& token) const {
  const auto it = std::find(tokens_.begin(), tokens_.end(), token);
  if (it == tokens_.end()) return -1;
  return first_id_ + static_cast<int64_t>(it - tokens_.begin());
}

const std::string* CustomTokens::token(int64_t id) const {
  if (id >= first_id_ && id < first_id_ + static_cast<int64_t>(tokens_.size()))
    return &tokens_[static_cast<size_t>(id - first_id_)];
  return nullptr;
}

std::string Tokenizer::known_as_single_piece(const std::string& token) const {
  const std::vector<int64_t> ids = encode_plain(token);
  if (ids.size() == 1)
    return "it encodes to the single piece \"" + id_to_piece(ids[0]) + "\", id " + std::to_string(ids[0]);
  return {};
}

std::vector<Segment> Tokenizer::split_custom(const std::string& text, const CustomTokens& table) const {
  std::vector<Segment> out;
  const std::vector<std::string>& tokens = table.tokens();
  if (tokens.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return out;
  }
  size_t start = 0, i = 0;
  while (i < text.size()) {
    // Longest registered token starting here.
    size_t best_len = 0;
    int64_t best = -1;
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      if (t.size() > best_len && text.compare(i, t.size(), t) == 0) {
        best_len = t.size();
        best = static_cast<int64_t>(k);
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    if (i > start) out.push_back({text.substr(start, i - start), -1});
    out.push_back({tokens[static_cast<size_t>(best)], table.id(tokens[static_cast<size_t>(best)])});
    i += best_len;
    start = i;
  }
  if (start < text.size()) out.push_back({text.substr(start), -1});
  return out;
}

Encoding Tokenizer::encode(const std::string& text, int64_t context_length, const CustomTokens& table) const {
  const SpecialIds& sp = special_;
  const int64_t reserved = (sp.bos >= 0 ? 1 : 0) + (sp.eos >= 0 ? 1 : 0);
  if (context_length < std::max<int64_t>(reserved, 1))
    throw bad_input("context length too small for bos and eos")
        .expected(">= " + std::to_string(std::max<int64_t>(reserved, 1)))
        .found(std::to_string(context_length));

  // Ordinary ids with custom tokens spliced in; custom positions relative to the tokens.
  std::vector<int64_t> tokens;
  std::vector<std::pair<int64_t, std::string>> custom;
  for (const Segment& seg : split_custom(text, table)) {
    if (seg.custom_id >= 0) {
      custom.emplace_back(static_cast<int64_t>(tokens.size()), seg.text);
      tokens.push_back(seg.custom_id);
    } else {
      const std::vector<int64_t> ids = encode_plain(seg.text);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
  }

  Encoding e;
  const int64_t room = context_length - reserved;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t keep = std::min(n, room);
  e.truncated = n - keep;
  const int64_t offset = sp.bos >= 0 ? 1 : 0;
  if (sp.bos >= 0) e.ids.push_back(sp.bos);
  e.ids.insert(e.ids.end(), tokens.begin(), tokens.begin() + keep);
  if (sp.eos >= 0) e.ids.push_back(sp.eos);
  // Without an eos id the last real token plays its part (pooling position).
  e.eos_index = std::max<int64_t>(static_cast<int64_t>(e.ids.size()) - 1, 0);
  e.pieces.reserve(e.ids.size());
  for (int64_t id : e.ids) {
    const std::string* t = table.token(id);
    e.pieces.push_back(t ? *t : id_to_piece(id));
  }
  for (auto& [pos, token] : custom)
    if (pos < keep) e.custom.emplace_back(pos + offset, std::move(token));
  e.ids.resize(static_cast<size_t>(context_length), sp.pad >= 0 ? sp.pad : 0);
  return e;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string kind = colon == std::string::npos ? spec : spec.substr(0, colon);
  const std::string path = colon == std::string::npos ? std::string() : spec.substr(colon + 1);
  if (kind == "clip-bpe" && !path.empty()) return load_clip_bpe(path);
  if (kind == "sentencepiece" && !path.empty()) return load_sentencepiece(path);
  throw bad_input("unknown tokenizer specification")
      .expected("clip-bpe:FILE or sentencepiece:FILE")
      .found("\"" + spec + "\"");
}

}  // namespace ctok::text
