// ClipModel: custom token substitution, gradients, eos pooling, tokenisation errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ctok/core/error.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "unit/test_util.hpp"

#include <thread>

using namespace ctok::model;

namespace {

const std::string kTiny = std::string(CTOK_TEST_DATA) + "/tiny_bundle";

const Bundle& tiny() {
  static Bundle b = [] {
    BundleOptions o;
    o.dir = kTiny;
    return Bundle::load(o);
  }();
  return b;
}

// Id of a word the tokenizer keeps as one piece (the first of `words` that is).
std::pair<std::string, int64_t> single_piece_word(const Bundle& b, const std::vector<std::string>& words) {
  for (const auto& w : words) {
    auto ids = b.tokenizer().encode_plain(w);
    if (ids.size() == 1) return {w, ids[0]};
  }
  return {"", -1};
}

using ctok::test::expect_bad_input;

}  // namespace

TEST(ModelClip, EndToEndFromPromptsMatchesReference) {
  auto ref = ctok::read_safetensors(kTiny + "/reference.safetensors");
  ClipModel clip(tiny());
  auto enc = clip.encode_text({"a photo of a red striped dress", "", "a blue shoe with dots"});
  auto hidden = torch::from_blob(const_cast<uint8_t*>(ref.find("text.hidden")->bytes.data()), {3, 16, 24}).clone();
  auto features = torch::from_blob(const_cast<uint8_t*>(ref.find("text.features")->bytes.data()), {3, 16}).clone();
  EXPECT_LT((enc.hidden - hidden).abs().max().item<double>(), 1e-4);
  EXPECT_LT((enc.features - features).abs().max().item<double>(), 1e-4);
  EXPECT_FALSE(enc.features.is_inference());
}

TEST(ModelClip, TokenWithAWordsEmbeddingEncodesLikeTheWord) {
  const Bundle& b = tiny();
  auto [word, id] = single_piece_word(b, {"dress", "shoe", "red", "photo"});
  ASSERT_GE(id, 0) << "fixture tokenizer has none of the test words as one piece";
  ClipModel clip(b);
  TokenVectors tokens{{"<w>", b.token_embedding()[id].unsqueeze(0).clone()}};
  auto a = clip.encode_text({"a photo of a <w> in blue"}, tokens);
  auto c = clip.encode_text({"a photo of a " + word + " in blue"});
  EXPECT_TRUE(torch::allclose(a.hidden, c.hidden, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(a.features, c.features, 1e-5, 1e-6));
  // And a different vector changes the result.
  TokenVectors other{{"<w>", torch::randn({1, 24})}};
  EXPECT_FALSE(torch::allclose(clip.encode_text({"a photo of a <w> in blue"}, other).features, c.features, 1e-3, 1e-3));
}

TEST(ModelClip, FeatureGradientMatchesFiniteDifferences) {
  ClipModel clip(tiny());
  torch::manual_seed(0);
  auto v0 = torch::randn({2, 24}) * 0.5;
  auto w = torch::randn({2, 16});
  auto batch = clip.tokenize({"a photo of a <tok> dress", "<tok> with dots"}, std::map<std::string, int64_t>{{"<tok>", 2}});
  auto f = [&](const torch::Tensor& v) {
    return (clip.encode(batch, {{"<tok>", v}}).features * w).sum();
  };
  auto v = v0.clone().requires_grad_(true);
  auto loss = f(v);
  loss.backward();
  auto grad = v.grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad[0].abs().sum().item<double>(), 0);  // both vectors get gradient
  EXPECT_GT(grad[1].abs().sum().item<double>(), 0);
  torch::NoGradGuard no_grad;
  const double h = 1e-2;
  for (auto [r, c] : std::vector<std::pair<int, int>>{{0, 0}, {0, 7}, {1, 3}, {1, 23}, {0, 15}}) {
    auto plus = v0.clone(), minus = v0.clone();
    plus[r][c] += h;
    minus[r][c] -= h;
    const double fd = (f(plus).item<double>() - f(minus).item<double>()) / (2 * h);
    const double an = grad[r][c].item<double>();
    EXPECT_NEAR(an, fd, 1e-3 + 1e-2 * std::abs(fd)) << "coordinate (" << r << ", " << c << ")";
  }
}

TEST(ModelClip, NormalisedFeatureGradientMatchesFiniteDifferences) {
  ClipModel clip(tiny());
  torch::manual_seed(1);
  auto v0 = torch::randn({1, 24}) * 0.5;
  auto target = l2_normalize(torch::randn({1, 16}));
  auto batch = clip.tokenize({"a photo of a <t>"}, std::map<std::string, int64_t>{{"<t>", 1}});
  auto f = [&](const torch::Tensor& v) {
    return (l2_normalize(clip.encode(batch, {{"<t>", v}}).features) * target).sum();
  };
  auto v = v0.clone().requires_grad_(true);
  f(v).backward();
  torch::NoGradGuard no_grad;
  const double h = 1e-2;
  for (int c : {0, 5, 11, 23}) {
    auto plus = v0.clone(), minus = v0.clone();
    plus[0][c] += h;
    minus[0][c] -= h;
    const double fd = (f(plus).item<double>() - f(minus).item<double>()) / (2 * h);
    EXPECT_NEAR(v.grad()[0][c].item<double>(), fd, 2e-4 + 1e-2 * std::abs(fd)) << c;
  }
}

TEST(ModelClip, TokenTablesArePerRequestAcrossThreads) {
  // One const bundle, two threads, the same prompt and token string with different vectors:
  // each thread gets its own table's result, equal to the same encoding done alone.
  const Bundle& b = tiny();
  torch::manual_seed(7);
  const TokenVectors ta{{"<t>", torch::randn({1, 24})}};
  const TokenVectors tb{{"<t>", torch::randn({2, 24})}};  // another length too
  const std::vector<std::string> prompts{"a photo of a <t> dress in blue", "<t>"};
  torch::Tensor alone_a, alone_b;
  {
    ClipModel clip(b);
    alone_a = clip.encode_text(prompts, ta).features;
    alone_b = clip.encode_text(prompts, tb).features;
  }
  ASSERT_FALSE(torch::allclose(alone_a, alone_b, 1e-3, 1e-3));
  std::vector<torch::Tensor> got_a, got_b;
  auto work = [&b, &prompts](const TokenVectors& t, std::vector<torch::Tensor>& out) {
    ClipModel clip(b);
    for (int i = 0; i < 20; ++i) out.push_back(clip.encode_text(prompts, t).features);
  };
  std::thread x(work, std::cref(ta), std::ref(got_a));
  std::thread y(work, std::cref(tb), std::ref(got_b));
  x.join();
  y.join();
  ASSERT_EQ(got_a.size(), 20u);
  ASSERT_EQ(got_b.size(), 20u);
  for (size_t i = 0; i < got_a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(got_a[i], alone_a, 1e-5, 1e-6)) << i;
    EXPECT_TRUE(torch::allclose(got_b[i], alone_b, 1e-5, 1e-6)) << i;
  }
}

TEST(ModelClip, CustomIdBeyondEosStillPoolsAtEos) {
  const Bundle& b = tiny();
  ClipModel clip(b);
  TokenVectors tokens{{"<far>", torch::randn({1, 24})}};
  auto batch = clip.tokenize({"a photo of a <far>"}, tokens);
  const int64_t eos_id = b.manifest().text.eos_id;
  auto ids = batch.ids[0];
  const int64_t custom_id = batch.custom.id("<far>");
  ASSERT_GT(custom_id, eos_id);
  const int64_t eos_pos = batch.eos_index[0].item<int64_t>();
  EXPECT_EQ(ids[eos_pos].item<int64_t>(), eos_id);
  const int64_t argmax_pos = ids.argmax().item<int64_t>();
  ASSERT_NE(argmax_pos, eos_pos);  // argmax pooling would pick the custom token
  EXPECT_EQ(ids[argmax_pos].item<int64_t>(), custom_id);

  auto enc = clip.encode(batch, tokens);
  torch::Tensor embeds;
  {
    torch::NoGradGuard g;
    embeds = clip.embed(batch, tokens);
  }
  auto at_eos = clip.encode_embeds(embeds, torch::tensor({eos_pos}));
  auto at_argmax = clip.encode_embeds(embeds, torch::tensor({argmax_pos}));
  EXPECT_TRUE(torch::allclose(enc.features, at_eos.features, 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(enc.features, at_argmax.features, 1e-4, 1e-4));
}

TEST(ModelClip, MultiVectorTokenTakesConsecutivePositions) {
  ClipModel clip(tiny());
  auto one = clip.tokenize({"a <m> dress"}, std::map<std::string, int64_t>{{"<m>", 1}});
  auto three = clip.tokenize({"a <m> dress"}, std::map<std::string, int64_t>{{"<m>", 3}});
  ASSERT_EQ(one.slots.size(), 1u);
  ASSERT_EQ(three.slots.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(three.slots[r].position, one.slots[0].position + r);
    EXPECT_EQ(three.slots[r].row, r);
  }
  EXPECT_EQ(three.eos_index[0].item<int64_t>(), one.eos_index[0].item<int64_t>() + 2);
  // The word after the token moved by two positions.
  const int64_t after = one.slots[0].position + 1;
  EXPECT_EQ(three.ids[0][after + 2].item<int64_t>(), one.ids[0][after].item<int64_t>());
}

TEST(ModelClip, TwoTokensInOnePrompt) {
  ClipModel clip(tiny());
  auto a = torch::randn({1, 24}), c = torch::randn({2, 24});
  auto enc = clip.encode_text({"a <a> dress with <c> dots"}, {{"<a>", a}, {"<c>", c}});
  EXPECT_EQ(enc.hidden.size(0), 1);
  auto batch = clip.tokenize({"a <a> dress with <c> dots"}, TokenVectors{{"<a>", a}, {"<c>", c}});
  EXPECT_EQ(batch.slots.size(), 3u);
  auto e = clip.embed(batch, {{"<a>", a}, {"<c>", c}});
  EXPECT_TRUE(torch::equal(e[0][batch.slots[0].position], a[0]));
  EXPECT_TRUE(torch::equal(e[0][batch.slots[2].position], c[1]));
}

TEST(ModelClip, UnknownTokenIsBadInput) {
  ClipModel clip(tiny());
  expect_bad_input([&] { clip.encode_text({"a photo of a <nope> dress"}); }, "<nope>");
  expect_bad_input([&] { clip.encode_text({"a <nope>"}, {{"<yes>", torch::zeros({1, 24})}}); }, "<yes>");
}

TEST(ModelClip, WrongWidthIsBadInput) {
  ClipModel clip(tiny());
  expect_bad_input([&] { clip.encode_text({"a <wide>"}, {{"<wide>", torch::zeros({1, 768})}}); },
                   "token width 768 does not match bundle text.width 24");
  expect_bad_input([&] { clip.encode_text({"a <nan>"}, {{"<nan>", torch::full({1, 24}, NAN)}}); }, "NaN");
}

TEST(ModelClip, LongPromptIsTruncatedKeepingEos) {
  const Bundle& b = tiny();
  ClipModel clip(b);
  std::string long_prompt = "a photo of a red striped dress";
  for (int i = 0; i < 6; ++i) long_prompt += " with blue dots";
  auto batch = clip.tokenize({long_prompt, "a <t> " + long_prompt}, std::map<std::string, int64_t>{{"<t>", 2}});
  EXPECT_GT(batch.truncated[0], 0);
  EXPECT_EQ(batch.truncated[1], batch.truncated[0] + 3);  // "a" and two vectors
  EXPECT_EQ(batch.eos_index[0].item<int64_t>(), 15);
  EXPECT_EQ(batch.ids[0][15].item<int64_t>(), b.manifest().text.eos_id);
  EXPECT_EQ(batch.ids[1][15].item<int64_t>(), b.manifest().text.eos_id);
  auto plain = b.tokenizer().encode_plain(long_prompt);
  EXPECT_EQ(batch.truncated[0], static_cast<int64_t>(plain.size()) - 14);
}

TEST(ModelClip, NoGradResultsWorkInALoss) {
  ClipModel clip(tiny());
  auto fixed = clip.encode_text({"a photo of a dress"}).features;  // computed in inference mode
  auto v = torch::randn({1, 24}).requires_grad_(true);
  auto t = clip.encode_text({"a <g> dress"}, {{"<g>", v}}).features;
  auto loss = (l2_normalize(t) * l2_normalize(fixed)).sum();
  loss.backward();
  EXPECT_TRUE(v.grad().defined());
}

TEST(ModelClip, ImageChunksGiveTheSameFeatures) {
  ClipModel clip(tiny());
  auto px = torch::randn({5, 3, 32, 32});
  auto all = clip.encode_images(px, 64);
  auto ones = clip.encode_images(px, 2);
  EXPECT_EQ(all.sizes(), (std::vector<int64_t>{5, 16}));
  EXPECT_TRUE(torch::allclose(all, ones, 1e-5, 1e-5));
  EXPECT_FALSE(all.is_inference());
  expect_bad_input([&] { clip.encode_images(torch::zeros({1, 3, 16, 16})); }, "[B, 3, 32, 32]");
  ctok::image::FloatImage im;
  im.height = im.width = 32;
  im.data.assign(3 * 32 * 32, 0.25f);
  auto f = clip.encode_images(std::vector<ctok::image::FloatImage>{im, im});
  EXPECT_TRUE(torch::allclose(f[0], f[1]));
}

TEST(ModelClip, L2Normalize) {
  auto x = torch::tensor({{3.0, 4.0}, {0.0, 0.0}});
  auto n = l2_normalize(x);
  EXPECT_NEAR(n[0][0].item<double>(), 0.6, 1e-7);
  EXPECT_EQ(n[1][0].item<double>(), 0.0);
}
