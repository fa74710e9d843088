#include "text/unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>

namespace ctok::text::unicode {
namespace {

struct CodeRange {
  char32_t lo, hi;
};
struct CodeMap {
  char32_t from, to;
};
struct CodeMap2 {
  char32_t from, to1, to2;
};
struct HtmlEntity {
  const char* name;
  const char* value;
};

#include "text/html_entities.inc"
#include "text/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t c) {
  const CodeRange* end = table + N;
  const CodeRange* it =
      std::upper_bound(table, end, c, [](char32_t v, const CodeRange& r) { return v < r.lo; });
  return it != table && c <= (it - 1)->hi;
}

constexpr char32_t kReplacement = 0xFFFD;

}  // namespace

const char* unicode_version() { return kUnicodeVersion; }

std::u32string decode_utf8(std::string_view bytes) {
  std::u32string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int need;
    char32_t cp;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2, cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3, cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      out.push_back(kReplacement);  // stray continuation byte or invalid lead byte
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      const unsigned char lo_k = k == 0 ? lo : 0x80, hi_k = k == 0 ? hi : 0xBF;
      if (j >= n || s[j] < lo_k || s[j] > hi_k) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (s[j] & 0x3F);
    }
    // A maximal subpart (the lead byte and the continuation bytes that were valid so
    // far) becomes one U+FFFD; decoding resumes at the byte that broke the sequence.
    out.push_back(ok ? cp : kReplacement);
    i = j;
  }
  return out;
}

bool is_valid_utf8(std::string_view bytes) {
  const std::u32string decoded = decode_utf8(bytes);
  // U+FFFD is valid when it was really there: compare by re-encoding.
  return encode_utf8(decoded) == bytes;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return in_ranges(kLetterRanges, c);
}

bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return in_ranges(kNumberRanges, c);
}

bool is_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return std::find(std::begin(kSpaceChars), std::end(kSpaceChars), c) != std::end(kSpaceChars);
}

namespace {

bool is_cased(char32_t c) { return in_ranges(kCasedRanges, c); }
bool is_case_ignorable(char32_t c) { return in_ranges(kCaseIgnorableRanges, c); }

// CPython's handle_capital_sigma: U+03A3 lowercases to final sigma when preceded by a
// cased letter and not followed by one (case-ignorable characters skipped both ways).
char32_t lower_sigma(std::u32string_view text, size_t i) {
  size_t j = i;
  char32_t c = 0;
  bool found = false;
  while (j > 0) {
    c = text[--j];
    if (!is_case_ignorable(c)) {
      found = true;
      break;
    }
  }
  bool final_sigma = found && is_cased(c);
  if (final_sigma && i + 1 < text.size()) {
    size_t k = i + 1;
    for (; k < text.size(); ++k) {
      c = text[k];
      if (!is_case_ignorable(c)) break;
    }
    final_sigma = k == text.size() || !is_cased(c);
  }
  return final_sigma ? 0x3C2 : 0x3C3;
}

}  // namespace

std::u32string to_lower(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    if (c == 0x3A3) {
      out.push_back(lower_sigma(text, i));
      continue;
    }
    bool multi = false;
    for (const CodeMap2& m : kLowerMulti) {
      if (m.from == c) {
        out.push_back(m.to1);
        out.push_back(m.to2);
        multi = true;
        break;
      }
    }
    if (multi) continue;
    const CodeMap* end = std::end(kLowerMap);
    const CodeMap* it = std::lower_bound(std::begin(kLowerMap), end, c,
                                         [](const CodeMap& m, char32_t v) { return m.from < v; });
    out.push_back(it != end && it->from == c ? it->to : c);
  }
  return out;
}

std::u32string_view strip(std::u32string_view text) {
  size_t b = 0, e = text.size();
  while (b < e && is_space(text[b])) ++b;
  while (e > b && is_space(text[e - 1])) --e;
  return text.substr(b, e - b);
}

std::u32string whitespace_clean(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  bool in_space = false;
  for (char32_t c : text) {
    if (is_space(c)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
    } else {
      out.push_back(c);
      in_space = false;
    }
  }
  return std::u32string(strip(out));
}

namespace {

const HtmlEntity* find_entity(const std::string& name) {
  const HtmlEntity* end = std::end(kHtmlEntities);
  const HtmlEntity* it = std::lower_bound(
      std::begin(kHtmlEntities), end, name,
      [](const HtmlEntity& e, const std::string& v) { return std::strcmp(e.name, v.c_str()) < 0; });
  return it != end && name == it->name ? it : nullptr;
}

bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_hex(char32_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Python's _replace_charref for a numeric reference whose digits are text[b, e).
void append_numeric(std::u32string& out, std::u32string_view digits, int base) {
  uint32_t num = 0;
  bool too_big = false;
  for (char32_t d : digits) {
    const uint32_t v = is_digit(d) ? d - '0' : (d | 0x20) - 'a' + 10;
    if (!too_big) num = num * base + v;
    if (num > 0x10FFFF) too_big = true;
  }
  if (too_big) {
    out.push_back(kReplacement);
    return;
  }
  for (const CodeMap& m : kInvalidCharrefs) {
    if (m.from == num) {
      out.push_back(m.to);
      return;
    }
  }
  if ((num >= 0xD800 && num <= 0xDFFF)) {
    out.push_back(kReplacement);
    return;
  }
  if (in_ranges(kInvalidCodepoints, num)) return;
  out.push_back(num);
}

// Python's _replace_charref for a named reference (name may end in ';').
void append_named(std::u32string& out, std::u32string_view name) {
  // The table's names are ASCII: only an ASCII prefix can match.
  size_t ascii = 0;
  while (ascii < name.size() && name[ascii] < 0x80) ++ascii;
  std::string key;
  for (size_t i = 0; i < ascii; ++i) key.push_back(static_cast<char>(name[i]));
  if (ascii == name.size()) {
    if (const HtmlEntity* e = find_entity(key)) {
      const std::u32string v = decode_utf8(e->value);
      out.append(v);
      return;
    }
  }
  // The longest prefix (at least 2 characters) that is a name, as the standard says.
  for (size_t x = name.size() - 1; x > 1; --x) {
    if (x > ascii) continue;
    if (const HtmlEntity* e = find_entity(key.substr(0, x))) {
      out.append(decode_utf8(e->value));
      out.append(name.substr(x));
      return;
    }
  }
  out.push_back('&');
  out.append(name);
}

bool excluded_from_name(char32_t c) {
  return c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';';
}

}  // namespace

std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  // The scan of Python's _charref regex:
  //   &(#[0-9]+;? | #[xX][0-9a-fA-F]+;? | [^\t\n\f <&#;]{1,32};?)
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != '&') {
      out.push_back(s[i++]);
      continue;
    }
    const size_t j = i + 1;
    if (j < n && s[j] == '#') {
      size_t k = j + 1;
      while (k < n && is_digit(s[k])) ++k;
      if (k > j + 1) {
        append_numeric(out, s.substr(j + 1, k - j - 1), 10);
        i = k < n && s[k] == ';' ? k + 1 : k;
        continue;
      }
      if (j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X')) {
        k = j + 2;
        while (k < n && is_hex(s[k])) ++k;
        if (k > j + 2) {
          append_numeric(out, s.substr(j + 2, k - j - 2), 16);
          i = k < n && s[k] == ';' ? k + 1 : k;
          continue;
        }
      }
      out.push_back(s[i++]);  // '#' cannot start a name: the '&' stays
      continue;
    }
    size_t k = j;
    while (k < n && k - j < 32 && !excluded_from_name(s[k])) ++k;
    if (k == j) {
      out.push_back(s[i++]);
      continue;
    }
    if (k < n && s[k] == ';') ++k;
    append_named(out, s.substr(j, k - j));
    i = k;
  }
  return out;
}

}  // namespace ctok::text::unicode
