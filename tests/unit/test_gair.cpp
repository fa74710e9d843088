// GAIR (src/gair): query splitting, the alpha grid, intent scores, the pick, exact search,
// report helpers. The model parts run on the tiny fixture bundle with a stand-in token.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "ctok/core/error.hpp"
#include "ctok/core/html.hpp"
#include "ctok/gair/gair.hpp"
#include "ctok/gair/report.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/generate.hpp"
#include "ctok/token/attributes.hpp"

#include "unit/test_util.hpp"
#include "unit/tiny_bundle.hpp"

using namespace ctok;
using namespace ctok::gair;
using ctok::test::expect_bad_input;

namespace {

token::AttributeSet dress_attributes() {
  token::AttributeSet a;
  a.parent = "dress";
  a.colours = {"red", "blue", "light blue", "green"};
  a.patterns = {"plain", "striped", "dotted"};
  a.materials = {"silk", "denim"};
  a.shapes = {"long", "short"};
  return a;
}

const model::Bundle& tiny() { return ctok::test::tiny_bundle(); }

// A stand-in token: the input embedding of "dress".
model::TokenVectors dress_token() {
  const model::Bundle& b = tiny();
  model::ClipModel clip(b);
  const auto ids = b.tokenizer().encode_plain("dress");
  return {{"<x>", b.token_embedding().index_select(0, torch::tensor(ids, torch::kLong)).mean(0, true).to(torch::kFloat32).clone()}};
}

GairOptions small_options() {
  GairOptions o;
  o.alphas = {0.0, 0.5, 1.0};
  o.generate.n = 2;
  o.generate.steps = 2;
  o.generate.batch = 2;  // one sampler call per alpha
  return o;
}

}  // namespace

TEST(Gair, QuerySplitsIntoAttributeAndConceptPrompts) {
  const auto attrs = dress_attributes();
  Query q = parse_query("a photo of a <x> dress in  light blue", "<x>", "dress", &attrs);
  EXPECT_EQ(q.text, "a photo of a <x> dress in light blue");
  EXPECT_EQ(q.attribute_prompt, "a photo of a dress in light blue");
  EXPECT_EQ(q.concept_prompt, "a photo of a <x> dress");
  ASSERT_EQ(q.mentions.size(), 1u);  // "light blue" wins over "blue"
  EXPECT_EQ(q.mentions[0].list, "colours");
  EXPECT_EQ(q.mentions[0].word, "light blue");
  EXPECT_EQ(q.mentions[0].index, 2u);
  ASSERT_EQ(q.mentions[0].prompts.size(), 4u);
  EXPECT_EQ(q.mentions[0].prompts[0], "a photo of a dress in red");
  EXPECT_EQ(q.mentions[0].prompts[2], "a photo of a dress in light blue");
}

TEST(Gair, QueryFindsSeveralAttributeWordsButNotInsideTheParent) {
  const auto attrs = dress_attributes();
  Query q = parse_query("a photo of a <x> long dress, striped and red", "<x>", "long dress", &attrs);
  std::vector<std::string> words;
  for (const auto& m : q.mentions) words.push_back(m.word);
  EXPECT_EQ(words, (std::vector<std::string>{"red", "striped"}));  // "long" belongs to the parent
  Query none = parse_query("a photo of a <x> dress", "<x>", "dress", &attrs);
  EXPECT_TRUE(none.mentions.empty());
  Query art = parse_query("a <x> ankle boot", "<x>", "ankle boot", nullptr);
  EXPECT_EQ(art.attribute_prompt, "an ankle boot");
  EXPECT_EQ(art.concept_prompt, "a photo of a <x> ankle boot");
}

TEST(Gair, QueryWithoutTheTokenIsBadInput) {
  const auto attrs = dress_attributes();
  EXPECT_NE(expect_bad_input([&] { parse_query("a photo of a dress in blue", "<x>", "dress", &attrs); })
                .find("GAIR needs one"),
            std::string::npos);
  EXPECT_NE(expect_bad_input([&] { parse_query("a photo of a <y> dress", "<x>", "dress", &attrs); }).find("<y>"),
            std::string::npos);
}

TEST(Gair, OptionsAreChecked) {
  GairOptions o;
  EXPECT_NO_THROW(validate(o));
  o.alphas = {0.0, 1.5};
  EXPECT_NE(expect_bad_input([&] { validate(o); }).find("alpha outside [0, 1]"), std::string::npos);
  o.alphas = {0.5};
  o.alpha = -0.1;
  EXPECT_NE(expect_bad_input([&] { validate(o); }).find("alpha"), std::string::npos);
  o.alpha.reset();
  o.beta = -1;
  EXPECT_NE(expect_bad_input([&] { validate(o); }).find("beta"), std::string::npos);
  EXPECT_EQ(parse_alphas("0, 0.25,1"), (std::vector<double>{0.0, 0.25, 1.0}));
  expect_bad_input([] { parse_alphas("0,,1"); });
  expect_bad_input([] { parse_alphas("0,x"); });
  EXPECT_EQ(parse_item_key("100017:2", "target").pair_id, 100017);
  expect_bad_input([] { parse_item_key("100017", "target"); });
  expect_bad_input([] { parse_emphasis("both"); });
}

TEST(Gair, HtmlEscapeAndTiles) {
  EXPECT_EQ(html_escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  image::Image im;
  im.width = 2;
  im.height = 1;
  im.rgb = {255, 0, 0, 0, 0, 255};
  image::Image t = image::square_tile(im, 8);  // x4 nearest: 8 x 4, centred vertically
  ASSERT_EQ(t.width, 8);
  ASSERT_EQ(t.height, 8);
  auto px = [&](int x, int y) { return t.rgb[(static_cast<size_t>(y) * 8 + x) * 3 + (x < 4 ? 0 : 2)]; };
  EXPECT_EQ(px(0, 2), 255);  // red block
  EXPECT_EQ(px(3, 5), 255);
  EXPECT_EQ(px(4, 2), 255);  // blue block
  EXPECT_EQ(t.rgb[(0 * 8 + 0) * 3 + 1], 255);  // white padding row 0
  EXPECT_EQ(t.rgb[(2 * 8 + 0) * 3 + 1], 0);    // image row: green channel 0
}

TEST(Gair, SearchRanksAreExactAndChunked) {
  // Gallery: 5 unit vectors in 2-D; one query pointing at (1, 0).
  torch::Tensor g = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {0.8f, 0.6f}, {0.6f, 0.8f}, {-1.0f, 0.0f}});
  Correction c;
  c.plain = torch::tensor({0.0f, 1.0f});
  AlphaResult a;
  a.alpha = 0.5;
  a.query_feature = torch::tensor({1.0f, 0.0f});
  c.alphas.push_back(a);
  GairOptions o;
  o.top_k = 3;
  o.chunk = 2;
  Search s = search(g, c, {3, 4}, o);
  ASSERT_EQ(s.alphas.size(), 1u);
  const auto& top = s.alphas[0].top;
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].row, 0);
  EXPECT_EQ(top[1].row, 2);
  EXPECT_EQ(top[2].row, 3);
  EXPECT_TRUE(top[2].correct);
  EXPECT_FALSE(top[0].correct);
  EXPECT_NEAR(top[1].score, 0.8, 1e-6);
  EXPECT_EQ(*s.alphas[0].first_true, 3);  // rows 0 and 2 score strictly above row 3
  EXPECT_EQ(*s.rank_before, 2);           // t(q) = (0, 1): only row 1 scores above row 3
  EXPECT_EQ(*s.rank_after, 3);
  Search none = search(g, c, {}, o);
  EXPECT_FALSE(none.rank_before.has_value());
  EXPECT_FALSE(none.alphas[0].first_true.has_value());
}

TEST(Gair, CorrectionInterpolatesFeaturesAndRendersEachAlpha) {
  const model::Bundle& b = tiny();
  const auto tokens = dress_token();
  const auto attrs = dress_attributes();
  const Query q = parse_query("a photo of a <x> dress in blue", "<x>", "dress", &attrs);
  GairOptions o = small_options();
  model::ClipModel clip(b);
  const torch::Tensor t = model::l2_normalize(clip.encode_text({q.text, q.attribute_prompt}, tokens).features);
  const torch::Tensor concept_ = torch::randn({3, b.image_feature_dim()});
  Correction c = correct_and_score(b, tokens, q, concept_, o);

  ASSERT_EQ(c.alphas.size(), 3u);
  EXPECT_TRUE(torch::allclose(c.alphas[0].corrected, t[0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(c.alphas[2].corrected, t[1], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(c.alphas[1].corrected, model::l2_normalize(t[0] + t[1]), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(c.plain, t[0], 1e-5, 1e-6));
  for (const auto& a : c.alphas) {
    ASSERT_EQ(a.renders.size(), 2u);
    EXPECT_EQ(a.seeds, (std::vector<uint64_t>{0, 1}));
    EXPECT_EQ(a.render_features.size(0), 2);
    ASSERT_TRUE(a.scores.attribute.has_value());
    EXPECT_GE(*a.scores.attribute, 0.0);
    EXPECT_LE(*a.scores.attribute, 1.0);
    const double cc = std::max(0.0, a.scores.concept_);
    EXPECT_NEAR(*a.scores.harmonic, cc + *a.scores.attribute > 0 ? 2 * cc * *a.scores.attribute / (cc + *a.scores.attribute) : 0,
                1e-9);
    EXPECT_TRUE(torch::equal(a.query_feature, a.corrected));  // beta 0: no fusion
  }
  // The pick is the best harmonic mean.
  EXPECT_EQ(c.chosen_by, "auto");
  for (const auto& a : c.alphas) EXPECT_LE(*a.scores.harmonic, *c.alphas[static_cast<size_t>(c.chosen)].scores.harmonic);

  // Alpha 0 renders exactly what model::generate (and so ctok-render) gives for the query
  // with the same seeds ...
  model::GenerateOptions g;
  g.n = 2;
  g.steps = 2;
  std::vector<ctok::image::Image> rr = model::to_images(model::generate(b, {q.text}, tokens, g));
  ASSERT_EQ(rr.size(), 2u);
  EXPECT_EQ(rr[0].rgb, c.alphas[0].renders[0].rgb);
  EXPECT_EQ(rr[1].rgb, c.alphas[0].renders[1].rgb);
  // ... and alpha 1 what it gives for the attribute prompt (the token's vectors unused).
  rr = model::to_images(model::generate(b, {q.attribute_prompt}, {}, g));
  EXPECT_EQ(rr[0].rgb, c.alphas[2].renders[0].rgb);
}

TEST(Gair, FixedAlphaFusionAndConceptEmphasis) {
  const model::Bundle& b = tiny();
  const auto tokens = dress_token();
  const auto attrs = dress_attributes();
  const Query q = parse_query("a photo of a <x> dress in blue", "<x>", "dress", &attrs);
  GairOptions o = small_options();
  o.alphas = {0.0, 1.0};
  o.alpha = 0.25;  // not in the grid: added, chosen
  o.beta = 0.5;
  o.emphasis = Emphasis::kConcept;
  o.generate.n = 1;
  Correction c = correct_and_score(b, tokens, q, torch::randn({2, b.image_feature_dim()}), o);
  ASSERT_EQ(c.alphas.size(), 3u);
  EXPECT_EQ(c.alphas[1].alpha, 0.25);
  EXPECT_EQ(c.chosen, 1);
  EXPECT_EQ(c.chosen_by, "fixed");
  model::ClipModel clip(b);
  const torch::Tensor t = model::l2_normalize(clip.encode_text({q.text, q.concept_prompt}, tokens).features);
  EXPECT_TRUE(torch::allclose(c.alphas[2].corrected, t[1], 1e-5, 1e-6));  // concept emphasis: t(c)
  for (const auto& a : c.alphas) {
    const torch::Tensor fused = model::l2_normalize(a.corrected + 0.5 * a.render_features.mean(0));
    EXPECT_TRUE(torch::allclose(a.query_feature, fused, 1e-5, 1e-6));
    EXPECT_NEAR(a.query_feature.norm().item<double>(), 1.0, 1e-5);
  }
  // Without attribute words there is nothing to pick by: the smallest alpha.
  o.alpha.reset();
  const Query plain = parse_query("a photo of a <x> dress", "<x>", "dress", &attrs);
  Correction d = correct_and_score(b, tokens, plain, torch::randn({2, b.image_feature_dim()}), o);
  EXPECT_EQ(d.chosen, 0);
  EXPECT_EQ(d.chosen_by, "default");
  EXPECT_FALSE(d.alphas[0].scores.harmonic.has_value());
}
