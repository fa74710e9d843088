// Custom tokens: splitting, reserved ids, positions, truncation, collisions; templates.
#include <gtest/gtest.h>

#include "ctok/core/error.hpp"
#include "ctok/text/templates.hpp"
#include "ctok/text/tokenizer.hpp"
#include "unit/test_util.hpp"

using ctok::text::CustomTokens;
using ctok::text::Encoding;
using ctok::text::Tokenizer;

namespace {

const std::string kMerges = std::string(CTOK_SHARED_DIR) + "/clip/bpe_simple_vocab_16e6.txt.gz";
const std::string kSpm = std::string(CTOK_TEST_DATA) + "/text/spm-tiny.model";
constexpr int64_t kSot = 49406, kEot = 49407, kVocab = 49408;

std::unique_ptr<Tokenizer> clip() { return ctok::text::load_clip_bpe(kMerges); }

void expect_refused(const Tokenizer& t, const std::string& token, const std::string& fragment) {
  CustomTokens c;
  ctok::test::expect_bad_input([&] { c.add(t, token); }, fragment);
}

}  // namespace

TEST(CustomTokens, ReservedIdsBeyondTheVocabulary) {
  auto t = clip();
  CustomTokens c;
  EXPECT_EQ(c.add(*t, "<my-dress>"), kVocab);
  EXPECT_EQ(c.add(*t, "<my-bag>"), kVocab + 1);
  EXPECT_EQ(c.add(*t, "<my-dress>"), kVocab);  // same string, same id
  EXPECT_EQ(c.id("<my-bag>"), kVocab + 1);
  EXPECT_EQ(c.id("<other>"), -1);
  EXPECT_EQ(c.tokens(), (std::vector<std::string>{"<my-dress>", "<my-bag>"}));
  ASSERT_NE(c.token(kVocab + 1), nullptr);
  EXPECT_EQ(*c.token(kVocab + 1), "<my-bag>");
  EXPECT_EQ(c.token(kVocab + 2), nullptr);
  EXPECT_EQ(t->vocab_size(), kVocab);  // the ordinary vocabulary does not grow
  EXPECT_THROW(t->id_to_piece(kVocab), ctok::Error);  // the tokenizer holds no custom tokens
}

TEST(CustomTokens, TablesArePerRequest) {
  // One tokenizer, two tables: the same text gets each table's ids, and a table never
  // leaks into an encoding that does not pass it.
  auto t = clip();
  CustomTokens a, b;
  a.add(*t, "<x>");
  b.add(*t, "<y>");
  b.add(*t, "<x>");
  const Encoding ea = t->encode("a <x> dress", 77, a);
  const Encoding eb = t->encode("a <x> dress", 77, b);
  ASSERT_EQ(ea.custom.size(), 1u);
  ASSERT_EQ(eb.custom.size(), 1u);
  EXPECT_EQ(ea.ids[2], kVocab);
  EXPECT_EQ(eb.ids[2], kVocab + 1);
  EXPECT_TRUE(t->encode("a <x> dress", 77).custom.empty());
  EXPECT_TRUE(t->encode("a <y> dress", 77, a).custom.empty());
}

TEST(CustomTokens, SplitOutBeforeOrdinaryTokenisation) {
  auto t = clip();
  CustomTokens c;
  const int64_t id = c.add(*t, "<my-dress>");
  const Encoding e = t->encode("a photo of a <my-dress> dress", 77, c);
  const std::vector<int64_t> head{kSot, 320, 1125, 539, 320, id, 2595, kEot};
  EXPECT_EQ(std::vector<int64_t>(e.ids.begin(), e.ids.begin() + 8), head);
  EXPECT_EQ(e.eos_index, 7);
  EXPECT_EQ(e.truncated, 0);
  ASSERT_EQ(e.custom.size(), 1u);
  EXPECT_EQ(e.custom[0], (std::pair<int64_t, std::string>{5, "<my-dress>"}));
  EXPECT_EQ(e.pieces.size(), 8u);
  EXPECT_EQ(e.pieces[5], "<my-dress>");
  EXPECT_EQ(e.pieces[6], "dress</w>");
  for (size_t i = 8; i < 77; ++i) EXPECT_EQ(e.ids[i], kEot);  // SD 1.x pads with eos
}

TEST(CustomTokens, AdjacentPunctuationAndInsideWords) {
  auto t = clip();
  CustomTokens c;
  const int64_t a = c.add(*t, "<a>");
  const Encoding e = t->encode("(<a>), my<a>dress <a>!<a>", 77, c);
  std::vector<int64_t> want{kSot};
  auto add = [&](const std::string& s) {
    for (int64_t id : t->encode_plain(s)) want.push_back(id);
  };
  add("(");
  want.push_back(a);
  add("),");
  add("my");
  want.push_back(a);
  add("dress");
  want.push_back(a);
  add("!");
  want.push_back(a);
  want.push_back(kEot);
  EXPECT_EQ(std::vector<int64_t>(e.ids.begin(), e.ids.begin() + e.eos_index + 1), want);
  ASSERT_EQ(e.custom.size(), 4u);
  for (const auto& [pos, s] : e.custom) {
    EXPECT_EQ(e.ids[static_cast<size_t>(pos)], a);
    EXPECT_EQ(s, "<a>");
  }
}

TEST(CustomTokens, LongestMatchFirst) {
  auto t = clip();
  CustomTokens c;
  const int64_t shorter = c.add(*t, "<x>");
  const int64_t longer = c.add(*t, "<x>-pro");
  const Encoding e = t->encode("<x>-pro and <x>-prx", 77, c);
  ASSERT_EQ(e.custom.size(), 2u);
  EXPECT_EQ(e.ids[1], longer);
  EXPECT_EQ(e.custom[0].second, "<x>-pro");
  EXPECT_EQ(e.custom[1].second, "<x>");
  EXPECT_EQ(e.ids[static_cast<size_t>(e.custom[1].first)], shorter);
  const auto segs = t->split_custom("<x>-pro and <x>-prx", c);
  ASSERT_EQ(segs.size(), 4u);
  EXPECT_EQ(segs[1].text, " and ");
  EXPECT_EQ(segs[1].custom_id, -1);
  EXPECT_EQ(segs[3].text, "-prx");
}

TEST(CustomTokens, ExactStringMatchOnly) {
  auto t = clip();
  CustomTokens c;
  c.add(*t, "<my-dress>");
  EXPECT_TRUE(t->encode("a <MY-DRESS> and &lt;my-dress&gt;", 77, c).custom.empty());
}

TEST(CustomTokens, TruncationKeepsEos) {
  auto t = clip();
  CustomTokens c;
  const int64_t id = c.add(*t, "<tok>");
  std::string text = "<tok>";
  for (int i = 0; i < 100; ++i) text += " dress";
  text += " <tok>";
  const Encoding e = t->encode(text, 77, c);
  EXPECT_EQ(e.ids.size(), 77u);
  EXPECT_EQ(e.ids[76], kEot);
  EXPECT_EQ(e.eos_index, 76);
  EXPECT_EQ(e.truncated, 102 - 75);
  ASSERT_EQ(e.custom.size(), 1u);  // the second one was cut off
  EXPECT_EQ(e.custom[0].first, 1);
  EXPECT_EQ(e.ids[1], id);
  EXPECT_EQ(e.pieces.size(), 77u);
  EXPECT_EQ(e.pieces.back(), "<|endoftext|>");

  const Encoding tiny = t->encode("<tok> dress", 2, c);
  EXPECT_EQ(tiny.ids, (std::vector<int64_t>{kSot, kEot}));
  EXPECT_EQ(tiny.truncated, 2);
  EXPECT_TRUE(tiny.custom.empty());
  EXPECT_THROW(t->encode("dress", 1), ctok::Error);
  EXPECT_THROW(t->encode("dress", 0), ctok::Error);
}

TEST(CustomTokens, PadIdIsOverridable) {
  auto t = clip();
  auto sp = t->special();
  sp.pad = 0;  // OpenAI's own tokenize() pads with zeros
  t->set_special(sp);
  const Encoding e = t->encode("a cat", 10);
  EXPECT_EQ(e.ids, (std::vector<int64_t>{kSot, 320, 2368, kEot, 0, 0, 0, 0, 0, 0}));
}

TEST(CustomTokens, CollisionsAndBadStringsAreRefused) {
  auto t = clip();
  expect_refused(*t, "", "empty");
  expect_refused(*t, "dress", "already knows as one piece");
  expect_refused(*t, "photo", "\"photo</w>\"");
  expect_refused(*t, "<|endoftext|>", "one piece");
  expect_refused(*t, "!", "one piece");
  expect_refused(*t, "my dress", "whitespace");
  expect_refused(*t, "a\tb", "whitespace");
  expect_refused(*t, "<x>\n", "whitespace");
  expect_refused(*t,
                 "a\xc2\xa0"
                 "b",
                 "whitespace");  // no-break space
  expect_refused(*t, "<\xff>", "UTF-8");
  CustomTokens c;
  EXPECT_NO_THROW(c.add(*t, "<dress>"));
  EXPECT_NO_THROW(c.add(*t, "my-dress"));  // several pieces: allowed
  EXPECT_EQ(c.size(), 2u);
  expect_refused(*t, "sks", "one piece");            // DreamBooth's rare token is one CLIP piece
}

TEST(CustomTokens, SentencePieceToo) {
  auto t = ctok::text::load_sentencepiece(kSpm);
  EXPECT_EQ(t->type(), "sentencepiece");
  const int64_t v = t->vocab_size();
  expect_refused(*t, "dress", "one piece");  // encodes to the single piece "▁dress"
  expect_refused(*t,
                 "\xe2\x96\x81"
                 "dress",
                 "vocabulary piece");  // "▁dress" itself
  expect_refused(*t, "<unk>", "vocabulary piece");
  expect_refused(*t, "two words", "whitespace");
  CustomTokens c;
  const int64_t id = c.add(*t, "<my-dress>");
  EXPECT_EQ(id, v);
  const Encoding e = t->encode("a photo of a <my-dress> dress", 32, c);
  EXPECT_EQ(e.ids.size(), 32u);
  EXPECT_EQ(e.ids[0], t->special().bos);
  ASSERT_EQ(e.custom.size(), 1u);
  EXPECT_EQ(e.ids[static_cast<size_t>(e.custom[0].first)], id);
  EXPECT_EQ(e.pieces[static_cast<size_t>(e.custom[0].first)], "<my-dress>");
  EXPECT_EQ(e.ids[static_cast<size_t>(e.eos_index)], t->special().eos);
  for (size_t i = static_cast<size_t>(e.eos_index) + 1; i < e.ids.size(); ++i)
    EXPECT_EQ(e.ids[i], t->special().pad);
  // Text around the token is tokenised as it would be on its own.
  std::vector<int64_t> want{t->special().bos};
  for (int64_t x : t->encode_plain("a photo of a ")) want.push_back(x);
  want.push_back(id);
  for (int64_t x : t->encode_plain(" dress")) want.push_back(x);
  want.push_back(t->special().eos);
  EXPECT_EQ(std::vector<int64_t>(e.ids.begin(), e.ids.begin() + e.eos_index + 1), want);
}

// ---- templates ----------------------------------------------------------------------

TEST(Templates, FormatFillsPlaceholders) {
  using ctok::text::format_template;
  EXPECT_EQ(format_template("a photo of a {token} {parent}", {{"token", "<x>"}, {"parent", "dress"}}),
            "a photo of a <x> dress");
  EXPECT_EQ(format_template("{token}, {token}!", {{"token", "<x>"}}), "<x>, <x>!");
  EXPECT_EQ(format_template("no placeholders", {{"token", "<x>"}}), "no placeholders");
  EXPECT_EQ(format_template("braces {{literal}} {token}", {{"token", "<x>"}}), "braces {literal} <x>");
}

TEST(Templates, UnknownOrMalformedPlaceholdersAreErrors) {
  using ctok::text::format_template;
  for (const std::string bad : {"a {colour} {token}", "a {token", "a token}", "a {} b", "{to ken}"}) {
    ctok::test::expect_bad_input([&] { format_template(bad, {{"token", "<x>"}}); }, bad);
  }
  // The message names the unknown placeholder and the known names.
  ctok::test::expect_bad_input([] { format_template("a {colour} dress", {{"token", "<x>"}}); }, {"colour", "token"});
}

TEST(Templates, DefaultTemplatesAreUsable) {
  const auto& list = ctok::text::default_templates();
  ASSERT_GE(list.size(), 20u);
  auto t = clip();
  CustomTokens c;
  c.add(*t, "<x>");
  for (const std::string& tpl : list) {
    EXPECT_NE(tpl.find("{token}"), std::string::npos) << tpl;
    const std::string text = ctok::text::format_template(tpl, {{"token", "<x>"}, {"parent", "dress"}});
    const Encoding e = t->encode(text, 77, c);
    EXPECT_EQ(e.custom.size(), 1u) << text;
    EXPECT_EQ(e.truncated, 0) << text;
  }
  const auto prompts = ctok::text::fill_templates(list, {{"token", "<x>"}, {"parent", "dress"}});
  EXPECT_EQ(prompts.size(), list.size());
}
