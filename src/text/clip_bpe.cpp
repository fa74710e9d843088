// CLIP BPE, id for id with OpenAI's simple_tokenizer.py (without ftfy, see
// docs/tokenizers.md): basic_clean (html.unescape twice, strip), whitespace_clean, lower,
// the pre-split regex, byte-to-unicode mapping and BPE by merge rank.
#include "text/clip_bpe.hpp"

#include <zlib.h>

#include <sys/stat.h>
#include <limits>
#include <mutex>

#include "ctok/core/error.hpp"
#include "text/unicode.hpp"

namespace ctok::text {
namespace {

constexpr const char* kStartOfText = "<|startoftext|>";
constexpr const char* kEndOfText = "<|endoftext|>";
constexpr size_t kMaxCacheEntries = 1 << 18;  // cleared when full; Python's grows forever

std::string read_gz(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw bad_input("cannot open the CLIP BPE merges file").file(path);
  if (!S_ISREG(st.st_mode)) throw bad_input("the CLIP BPE merges file is not a regular file").file(path);
  gzFile f = gzopen(path.c_str(), "rb");  // also reads an uncompressed file as it is
  if (f == nullptr) throw bad_input("cannot open the CLIP BPE merges file").file(path);
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const std::string why = gzerror(f, &code);
      gzclose(f);
      throw bad_input("cannot read the CLIP BPE merges file (corrupt or truncated gzip)")
          .file(path)
          .found(why);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  // A truncated stream ends without error from gzread on some zlib versions: ask.
  int code = Z_OK;
  const std::string why = gzerror(f, &code);
  const int close_code = gzclose(f);
  if ((code != Z_OK && code != Z_STREAM_END) || close_code == Z_BUF_ERROR)
    throw bad_input("cannot read the CLIP BPE merges file (corrupt or truncated gzip)")
        .file(path)
        .found(code != Z_OK ? why : "unexpected end of file");
  return data;
}

// OpenAI's bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100+n.
// Returned in simple_tokenizer.py's dict order (which is the vocabulary order).
std::vector<std::pair<int, char32_t>> bytes_to_unicode() {
  std::vector<std::pair<int, char32_t>> out;
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  for (int b = 0; b < 256; ++b)
    if (printable[b]) out.emplace_back(b, static_cast<char32_t>(b));
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) out.emplace_back(b, static_cast<char32_t>(256 + n++));
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Case-insensitive match of an ASCII pattern as regex's IGNORECASE does it (simple case
// folding: 's' also matches U+017F LATIN SMALL LETTER LONG S).
bool match_ci(const std::u32string& text, size_t at, const char* pattern) {
  for (size_t k = 0; pattern[k] != '\0'; ++k) {
    if (at + k >= text.size()) return false;
    const char32_t c = text[at + k];
    const char32_t p = static_cast<unsigned char>(pattern[k]);
    const bool alpha = p >= 'a' && p <= 'z';
    if (c == p || (alpha && c == p - 32) || (p == 's' && c == 0x17F) || (p == 'k' && c == 0x212A)) continue;
    return false;
  }
  return true;
}

// Neither a letter, a number nor whitespace: [^\s\p{L}\p{N}] under IGNORECASE. U+0345
// (COMBINING GREEK YPOGEGRAMMENI) folds to a letter and so matches no branch of the
// IGNORECASE pattern at all; regex skips it like whitespace.
bool is_other(char32_t c) {
  return !unicode::is_letter(c) && !unicode::is_number(c) && !unicode::is_space(c) && c != 0x345;
}

// simple_tokenizer.py's pattern, applied like regex.findall:
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
void split_words(const std::u32string& text, std::vector<std::u32string_view>& out) {
  static const char* const kAlternatives[] = {
      "<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  const std::u32string_view all(text);
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const char32_t c = text[i];
    if (c == '<' || c == '\'') {
      size_t len = 0;
      for (const char* alt : kAlternatives) {
        if (alt[0] == static_cast<char>(c) && match_ci(text, i, alt)) {
          len = std::char_traits<char>::length(alt);
          break;
        }
      }
      if (len > 0) {
        out.push_back(all.substr(i, len));
        i += len;
        continue;
      }
    }
    size_t j = i + 1;
    if (unicode::is_letter(c)) {
      while (j < n && unicode::is_letter(text[j])) ++j;
    } else if (unicode::is_number(c)) {
      // one digit per match
    } else if (is_other(c)) {
      while (j < n && is_other(text[j])) ++j;
    } else {
      i = j;  // whitespace (or U+0345): no match here
      continue;
    }
    out.push_back(all.substr(i, j - i));
    i = j;
  }
}

}  // namespace

ClipBpeTokenizer::ClipBpeTokenizer(const std::string& path) {
  const std::string data = read_gz(path);
  if (!unicode::is_valid_utf8(data))
    throw bad_input("the CLIP BPE merges file is not valid UTF-8").file(path);

  // merges = data.split('\n')[1 : 49152-256-2+1], each split on whitespace into a pair.
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(kMerges);
  size_t pos = data.find('\n');
  if (pos == std::string::npos)
    throw bad_input("not a CLIP BPE merges file: no lines after the header").file(path);
  ++pos;
  int line_no = 1;
  while (static_cast<int>(merges.size()) < kMerges) {
    if (pos > data.size()) break;
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    const std::string line = data.substr(pos, end - pos);
    ++line_no;
    std::vector<std::string> parts;
    size_t k = 0;
    while (k < line.size()) {
      while (k < line.size() && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) ++k;
      size_t e = k;
      while (e < line.size() && line[e] != ' ' && line[e] != '\t' && line[e] != '\r') ++e;
      if (e > k) parts.push_back(line.substr(k, e - k));
      k = e;
    }
    if (parts.size() != 2)
      throw bad_input("not a CLIP BPE merges file: a merge line must hold two symbols")
          .file(path)
          .key("line " + std::to_string(line_no))
          .found("\"" + line.substr(0, 60) + "\"");
    merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
    pos = end + 1;
  }
  if (static_cast<int>(merges.size()) != kMerges)
    throw bad_input("not a CLIP BPE merges file: too few merges")
        .file(path)
        .expected(std::to_string(kMerges))
        .found(std::to_string(merges.size()));

  // vocab = byte symbols, byte symbols + '</w>', merged pairs, the two special tokens.
  const auto b2u = bytes_to_unicode();
  vocab_.reserve(512 + kMerges + 2);
  for (const auto& [b, u] : b2u) vocab_.push_back(unicode::encode_utf8(std::u32string(1, u)));
  for (size_t i = 0; i < b2u.size(); ++i) vocab_.push_back(vocab_[i] + "</w>");
  for (const auto& [a, b] : merges) vocab_.push_back(a + b);
  vocab_.push_back(kStartOfText);
  vocab_.push_back(kEndOfText);
  encoder_.reserve(vocab_.size() * 2);
  for (size_t i = 0; i < vocab_.size(); ++i) encoder_[vocab_[i]] = static_cast<int32_t>(i);
  for (size_t i = 0; i < b2u.size(); ++i) {
    byte_id_[b2u[i].first] = encoder_.at(vocab_[i]);
    byte_end_id_[b2u[i].first] = encoder_.at(vocab_[b2u.size() + i]);
  }

  // Ranks over symbol ids. A pair whose halves are not vocabulary pieces can never form
  // (every symbol BPE builds is a piece), so it is left out.
  merges_.reserve(merges.size() * 2);
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto a = encoder_.find(merges[r].first);
    const auto b = encoder_.find(merges[r].second);
    if (a == encoder_.end() || b == encoder_.end()) continue;
    merges_[pair_key(a->second, b->second)] =
        Merge{static_cast<int32_t>(r), encoder_.at(merges[r].first + merges[r].second)};
  }
  sot_ = encoder_.at(kStartOfText);
  eot_ = encoder_.at(kEndOfText);
  SpecialIds sp;
  sp.bos = sot_;
  sp.eos = eot_;
  sp.pad = eot_;  // Stable Diffusion 1.x pads with <|endoftext|>
  set_special(sp);
}

std::vector<int32_t> ClipBpeTokenizer::bpe(const std::string& word) const {
  {
    std::shared_lock lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) return it->second;
  }
  // Symbols of the word: one per byte, the last one with '</w>'.
  std::vector<int32_t> symbols(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const auto b = static_cast<unsigned char>(word[i]);
    symbols[i] = i + 1 < word.size() ? byte_id_[b] : byte_end_id_[b];
  }

  // Repeatedly merge every occurrence of the lowest-ranked adjacent pair, left to right.
  std::vector<int32_t> next;
  next.reserve(symbols.size());
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    int32_t first = -1, second = -1, merged = -1;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = merges_.find(pair_key(symbols[i], symbols[i + 1]));
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        first = symbols[i];
        second = symbols[i + 1];
        merged = it->second.merged;
      }
    }
    if (merged < 0) break;
    next.clear();
    for (size_t i = 0; i < symbols.size();) {
      if (symbols[i] == first && i + 1 < symbols.size() && symbols[i + 1] == second) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(symbols[i]);
        ++i;
      }
    }
    symbols.swap(next);
  }

  std::unique_lock lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(word, symbols);
  return symbols;
}

std::vector<std::string> ClipBpeTokenizer::pre_tokenize(const std::string& text) const {
  // text = whitespace_clean(basic_clean(text)).lower()
  const std::u32string decoded = unicode::decode_utf8(text);
  const std::u32string unescaped = unicode::html_unescape(unicode::html_unescape(decoded));
  const std::u32string cleaned = unicode::to_lower(unicode::whitespace_clean(unicode::strip(unescaped)));
  std::vector<std::u32string_view> words;
  split_words(cleaned, words);
  std::vector<std::string> out;
  out.reserve(words.size());
  for (const auto& w : words) out.push_back(unicode::encode_utf8(w));
  return out;
}

std::vector<int64_t> ClipBpeTokenizer::encode_plain(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& word : pre_tokenize(text)) {
    // simple_tokenizer.py seeds its cache with the two special tokens.
    if (word == kStartOfText) {
      ids.push_back(sot_);
      continue;
    }
    if (word == kEndOfText) {
      ids.push_back(eot_);
      continue;
    }
    for (int32_t id : bpe(word)) ids.push_back(id);
  }
  return ids;
}

std::string ClipBpeTokenizer::id_to_piece(int64_t id) const {
  if (id >= 0 && id < vocab_size()) return vocab_[static_cast<size_t>(id)];
  throw bad_input("token id out of range")
      .expected("0.." + std::to_string(vocab_size() - 1))
      .found(std::to_string(id));
}

int64_t ClipBpeTokenizer::piece_to_id(const std::string& piece) const {
  const auto it = encoder_.find(piece);
  return it == encoder_.end() ? -1 : it->second;
}

void ClipBpeTokenizer::clear_cache() const {
  std::unique_lock lock(cache_mutex_);
  cache_.clear();
}

size_t ClipBpeTokenizer::cache_size() const {
  std::shared_lock lock(cache_mutex_);
  return cache_.size();
}

std::unique_ptr<Tokenizer> load_clip_bpe(const std::string& path) {
  return std::make_unique<ClipBpeTokenizer>(path);
}

}  // namespace ctok::text
