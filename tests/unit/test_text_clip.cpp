// CLIP BPE: id-for-id parity with OpenAI's simple_tokenizer.py, edge cases, bad files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "ctok/core/error.hpp"
#include "ctok/text/tokenizer.hpp"
#include "text/clip_bpe.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using ctok::text::ClipBpeTokenizer;
using ctok::text::Tokenizer;
using ctok::test::TempDir;

namespace {

const std::string kMerges = std::string(CTOK_SHARED_DIR) + "/clip/bpe_simple_vocab_16e6.txt.gz";
const std::string kReference = std::string(CTOK_SHARED_DIR) + "/clip/reference-tokens.jsonl";
const std::string kParity = std::string(CTOK_TEST_DATA) + "/text/clip-python-parity.jsonl";
constexpr int64_t kSot = 49406, kEot = 49407;

class ClipBpe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(kMerges)) << "missing shared CLIP merges file " << kMerges;
    tok_ = std::make_unique<ClipBpeTokenizer>(kMerges);
  }
  static void TearDownTestSuite() { tok_.reset(); }
  static std::unique_ptr<ClipBpeTokenizer> tok_;

  // bos + encode_plain + eos, as the reference files list them.
  static std::vector<int64_t> full(const std::string& text) {
    std::vector<int64_t> ids{kSot};
    for (int64_t id : tok_->encode_plain(text)) ids.push_back(id);
    ids.push_back(kEot);
    return ids;
  }
};
std::unique_ptr<ClipBpeTokenizer> ClipBpe::tok_;

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

struct Case {
  int line;
  std::string text;
  std::vector<int64_t> ids;
};

std::vector<Case> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<Case> out;
  if (!in) return out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    Case c;
    c.line = n;
    c.text = j.contains("hex") ? from_hex(j.at("hex").get<std::string>()) : j.at("text").get<std::string>();
    c.ids = j.at("ids").get<std::vector<int64_t>>();
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

TEST_F(ClipBpe, ReferenceFileEveryLineMatchesOpenAI) {
  ASSERT_TRUE(fs::exists(kReference)) << "missing " << kReference;
  const auto cases = read_jsonl(kReference);
  ASSERT_GE(cases.size(), 70u) << kReference;
  int mismatches = 0;
  for (const Case& c : cases) {
    // Through the full encode() too: same ids, eos position, padding with eos.
    const auto e = tok_->encode(c.text, 77);
    const std::vector<int64_t> got(e.ids.begin(), e.ids.begin() + e.eos_index + 1);
    EXPECT_EQ(got, c.ids) << "line " << c.line << ": \"" << c.text << "\"";
    EXPECT_EQ(e.truncated, 0);
    for (size_t i = static_cast<size_t>(e.eos_index) + 1; i < e.ids.size(); ++i) EXPECT_EQ(e.ids[i], kEot);
    mismatches += got != c.ids;
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " reference lines";
}

TEST_F(ClipBpe, PythonParityFixtureEveryLine) {
  // Edge cases and random text (incl. invalid UTF-8) run through simple_tokenizer.py
  // minus ftfy by tests/data/text/make_clip_parity.py.
  ASSERT_TRUE(fs::exists(kParity)) << "missing " << kParity;
  const auto cases = read_jsonl(kParity);
  ASSERT_GE(cases.size(), 400u);
  int mismatches = 0;
  for (const Case& c : cases) {
    const auto got = full(c.text);
    EXPECT_EQ(got, c.ids) << "line " << c.line;
    mismatches += got != c.ids;
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " lines";
}

TEST_F(ClipBpe, VocabularyLayout) {
  EXPECT_EQ(tok_->vocab_size(), 49408);
  EXPECT_EQ(tok_->type(), "clip-bpe");
  EXPECT_EQ(tok_->id_to_piece(kSot), "<|startoftext|>");
  EXPECT_EQ(tok_->id_to_piece(kEot), "<|endoftext|>");
  EXPECT_EQ(tok_->piece_to_id("photo</w>"), 1125);
  EXPECT_EQ(tok_->piece_to_id("!"), 0);  // byte symbols first, in bytes_to_unicode order
  EXPECT_EQ(tok_->piece_to_id("!</w>"), 256);
  EXPECT_EQ(tok_->piece_to_id("not-a-piece"), -1);
  EXPECT_EQ(tok_->special().bos, kSot);
  EXPECT_EQ(tok_->special().eos, kEot);
  EXPECT_EQ(tok_->special().pad, kEot);
  EXPECT_THROW(tok_->id_to_piece(49408), ctok::Error);
  EXPECT_THROW(tok_->id_to_piece(-1), ctok::Error);
}

TEST_F(ClipBpe, EmptyAndWhitespaceOnly) {
  for (const std::string text : {"", " ", "   \t\n  ",
                                 "\xc2\xa0"
                                 "\xe3\x80\x80"}) {
    EXPECT_TRUE(tok_->encode_plain(text).empty()) << "\"" << text << "\"";
    const auto e = tok_->encode(text, 77);
    EXPECT_EQ(e.ids.size(), 77u);
    EXPECT_EQ(e.ids[0], kSot);
    EXPECT_EQ(e.ids[1], kEot);
    EXPECT_EQ(e.eos_index, 1);
    EXPECT_EQ(e.pieces, (std::vector<std::string>{"<|startoftext|>", "<|endoftext|>"}));
  }
}

TEST_F(ClipBpe, HtmlEntitiesAreUnescapedTwice) {
  EXPECT_EQ(tok_->encode_plain("a&amp;b"), tok_->encode_plain("a&b"));
  EXPECT_EQ(tok_->encode_plain("&amp;lt;tag&amp;gt;"), tok_->encode_plain("<tag>"));
  EXPECT_EQ(tok_->encode_plain("&#x41;&#66;&#x1F457;"), tok_->encode_plain("AB\xf0\x9f\x91\x97"));
  EXPECT_EQ(tok_->encode_plain("&ampxyz"), tok_->encode_plain("&xyz"));  // legacy prefix match
  EXPECT_EQ(tok_->encode_plain("&notaname;"), tok_->encode_plain("\xc2\xac"
                                                                 "aname;"));        // &not
  EXPECT_EQ(tok_->encode_plain("&#128;"), tok_->encode_plain("\xe2\x82\xac"));      // cp1252 rule
  EXPECT_EQ(tok_->encode_plain("&nbsp;dress&nbsp;"), tok_->encode_plain("dress"));  // then stripped
}

TEST_F(ClipBpe, NonAsciiLettersAndCase) {
  EXPECT_EQ(tok_->encode_plain("CAFÉ"), tok_->encode_plain("café"));
  EXPECT_EQ(tok_->encode_plain("ΚΑΛΟΣ"), tok_->encode_plain("καλος"));  // final sigma
  EXPECT_EQ(tok_->encode_plain("ΣΑ"), tok_->encode_plain("σα"));
  EXPECT_EQ(tok_->pre_tokenize("Straße ÜBER naïve"), (std::vector<std::string>{"straße", "über", "naïve"}));
  EXPECT_EQ(tok_->pre_tokenize("İ"), (std::vector<std::string>{"i", "\xcc\x87"}));
}

TEST_F(ClipBpe, PreTokenizeFollowsTheRegex) {
  EXPECT_EQ(tok_->pre_tokenize("It's 42!? we'LL"),
            (std::vector<std::string>{"it", "'s", "4", "2", "!?", "we", "'ll"}));
  EXPECT_EQ(tok_->pre_tokenize("x<|endoftext|>y!<|endoftext|>"),
            (std::vector<std::string>{"x", "<|endoftext|>", "y", "!<|", "endoftext", "|>"}));
  // A literal special token string in the text becomes the special id, as in OpenAI's.
  EXPECT_EQ(tok_->encode_plain("a <|endoftext|>"), (std::vector<int64_t>{320, kEot}));
}

TEST_F(ClipBpe, EmojiAreByteLevel) {
  const auto ids = tok_->encode_plain("\xf0\x9f\x91\x97");  // 👗
  ASSERT_FALSE(ids.empty());
  std::string joined;
  for (int64_t id : ids) joined += tok_->id_to_piece(id);
  EXPECT_EQ(joined.substr(joined.size() - 4), "</w>");
}

TEST_F(ClipBpe, VeryLongWord) {
  std::string word;
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) word.push_back(static_cast<char>('a' + rng() % 26));
  const auto ids = tok_->encode_plain(word);
  ASSERT_FALSE(ids.empty());
  std::string joined;
  for (int64_t id : ids) joined += tok_->id_to_piece(id);
  EXPECT_EQ(joined, word + "</w>");  // ASCII letters are their own byte symbols
  const auto e = tok_->encode(word, 77);
  EXPECT_EQ(e.ids.size(), 77u);
  EXPECT_EQ(e.ids[76], kEot);
  EXPECT_EQ(e.eos_index, 76);
  EXPECT_EQ(e.truncated, static_cast<int64_t>(ids.size()) - 75);
  EXPECT_EQ(e.pieces.size(), 77u);
}

TEST_F(ClipBpe, InvalidUtf8BecomesReplacementCharacters) {
  // Python's bytes.decode("utf-8", errors="replace"): one U+FFFD per maximal subpart.
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(tok_->encode_plain("a \xff\xfe b"), tok_->encode_plain("a " + fffd + fffd + " b"));
  EXPECT_EQ(tok_->encode_plain("a \xe6\x9d b"), tok_->encode_plain("a " + fffd + " b"));
  EXPECT_EQ(tok_->encode_plain("\xed\xa0\x80"), tok_->encode_plain(fffd + fffd + fffd));
  EXPECT_EQ(tok_->encode_plain("caf\xe9"), tok_->encode_plain("caf" + fffd));
  // Random bytes never crash and give ids inside the vocabulary.
  std::mt19937 rng(1);
  for (int n = 0; n < 2000; ++n) {
    std::string bytes(rng() % 40, '\0');
    for (char& ch : bytes) ch = static_cast<char>(rng() & 0xFF);
    const auto e = tok_->encode(bytes, 77);
    for (int64_t id : e.ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok_->vocab_size());
    }
  }
}

TEST_F(ClipBpe, CacheGivesTheSameIdsAndIsSharedByThreads) {
  const std::string text = "a cropped photo of a yellow polka-dot vest dress, taken outdoors";
  tok_->clear_cache();
  EXPECT_EQ(tok_->cache_size(), 0u);
  const auto cold = tok_->encode_plain(text);
  EXPECT_GT(tok_->cache_size(), 0u);
  EXPECT_EQ(tok_->encode_plain(text), cold);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (i % 50 == 0 && t == 0) tok_->clear_cache();
        bad[t] += tok_->encode_plain(text) != cold;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

TEST_F(ClipBpe, LoadTokenizerSpec) {
  auto t = ctok::text::load_tokenizer("clip-bpe:" + kMerges);
  EXPECT_EQ(t->type(), "clip-bpe");
  EXPECT_EQ(t->encode("a photo of a cat", 77).ids[5], 2368);
  for (const std::string& spec :
       std::vector<std::string>{"bpe:" + kMerges, "clip-bpe:", "clip-bpe", "", "CLIP-BPE:" + kMerges}) {
    try {
      ctok::text::load_tokenizer(spec);
      ADD_FAILURE() << "accepted \"" << spec << "\"";
    } catch (const ctok::Error& e) {
      EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput) << spec;
      EXPECT_NE(std::string(e.what()).find("clip-bpe:FILE"), std::string::npos) << e.what();
    }
  }
}

// ---- missing and corrupt files ------------------------------------------------------

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
}
std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  std::string out;
  char buf[65536];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}
void write_gz(const std::string& path, const std::string& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
  gzclose(f);
}

// The loader must refuse `path` with bad_input naming the file.
void expect_bad_file(const std::string& path, const std::string& why_fragment) {
  try {
    ctok::text::load_clip_bpe(path);
    ADD_FAILURE() << "accepted " << path;
  } catch (const ctok::Error& e) {
    EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
    EXPECT_EQ(e.file_context(), path);
    EXPECT_NE(std::string(e.what()).find(why_fragment), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(ClipBpeFiles, MissingFile) { expect_bad_file("/nonexistent/bpe.txt.gz", "cannot open"); }

TEST(ClipBpeFiles, TruncatedGzip) {
  TempDir dir;
  const std::string gz = read_file(kMerges);
  ASSERT_GT(gz.size(), 1000u);
  write_file(dir.file("half.gz"), gz.substr(0, gz.size() / 2));
  expect_bad_file(dir.file("half.gz"), "truncated");
  write_file(dir.file("tail-cut.gz"), gz.substr(0, gz.size() - 6));  // trailer missing
  expect_bad_file(dir.file("tail-cut.gz"), "truncated");
  std::string flipped = gz;
  flipped[gz.size() / 3] ^= 0x55;
  write_file(dir.file("flipped.gz"), flipped);
  try {
    ctok::text::load_clip_bpe(dir.file("flipped.gz"));
    ADD_FAILURE() << "accepted a corrupted gzip stream";
  } catch (const ctok::Error& e) {
    EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
    EXPECT_EQ(e.file_context(), dir.file("flipped.gz"));
  }
}

TEST(ClipBpeFiles, NotAMergesList) {
  TempDir dir;
  write_file(dir.file("empty.gz"), "");
  expect_bad_file(dir.file("empty.gz"), "not a CLIP BPE merges file");
  write_gz(dir.file("prose.gz"), "#version: 0.2\nthis line has four words\n");
  expect_bad_file(dir.file("prose.gz"), "two symbols");
  std::string merges = gunzip(kMerges);
  write_gz(dir.file("short.gz"), merges.substr(0, merges.size() / 20));  // ~13k merges
  expect_bad_file(dir.file("short.gz"), "too few merges");
  write_gz(dir.file("latin1.gz"), "#version: 0.2\n\xe9 t\n");
  expect_bad_file(dir.file("latin1.gz"), "UTF-8");
  expect_bad_file(std::string(CTOK_TEST_DATA) + "/text", "not a regular file");
}

TEST(ClipBpeFiles, UncompressedMergesFileLoadsToo) {
  TempDir dir;
  write_file(dir.file("bpe.txt"), gunzip(kMerges));
  auto t = ctok::text::load_clip_bpe(dir.file("bpe.txt"));
  EXPECT_EQ(t->encode_plain("a photo of a cat"), (std::vector<int64_t>{320, 1125, 539, 320, 2368}));
}
