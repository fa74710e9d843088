// DiffusionModel on the tiny fixture: guidance, seeds, VAE, gradients for the learner,
// and generation (model::generate) in-process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ctok/core/error.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/model/generate.hpp"
#include "unit/test_util.hpp"
#include "unit/tiny_bundle.hpp"

using namespace ctok::model;

namespace {

const Bundle& tiny() { return ctok::test::tiny_bundle(); }

struct Conditioning {
  torch::Tensor cond, uncond;
};

Conditioning conditioning(int batch) {
  ClipModel clip(tiny());
  std::vector<std::string> prompts(static_cast<size_t>(batch), "a photo of a red dress");
  return {clip.encode_text(prompts).hidden, clip.encode_text({""}).hidden};
}

}  // namespace

TEST(ModelDiffusion, GuidanceCombinesTwoUNetCalls) {
  DiffusionModel d(tiny());
  auto c = conditioning(2);
  auto x = torch::randn({2, 4, 8, 8});
  torch::NoGradGuard g;
  auto eps_c = d.unet(x, torch::full({2}, 500, torch::kLong), c.cond);
  auto eps_u = d.unet(x, torch::full({2}, 500, torch::kLong), c.uncond.expand({2, -1, -1}));
  auto guided = d.guided(x, 500, c.cond, c.uncond, 5.0);
  EXPECT_TRUE(torch::allclose(guided, eps_u + 5.0 * (eps_c - eps_u), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(d.guided(x, 500, c.cond, c.uncond, 1.0), eps_c, 1e-5, 1e-6));
}

TEST(ModelDiffusion, SameSeedSameLatentsBitForBit) {
  DiffusionModel d(tiny());
  auto c = conditioning(2);
  SampleOptions o;
  o.steps = 5;
  auto a = d.sample(c.cond, c.uncond, 5.0, o, {0, 1});
  auto b = d.sample(c.cond, c.uncond, 5.0, o, {0, 1});
  auto other = d.sample(c.cond, c.uncond, 5.0, o, {2, 3});
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::allclose(a, other));
  EXPECT_FALSE(torch::allclose(a[0], a[1]));  // each image has its own noise
  o.eta = 1.0;
  EXPECT_TRUE(torch::equal(d.sample(c.cond, c.uncond, 5.0, o, {4, 5}), d.sample(c.cond, c.uncond, 5.0, o, {4, 5})));
  o.sampler = Sampler::kEuler;
  EXPECT_TRUE(torch::equal(d.sample(c.cond, c.uncond, 5.0, o, {4, 5}), d.sample(c.cond, c.uncond, 5.0, o, {4, 5})));
}

TEST(ModelDiffusion, AnImageDoesNotDependOnItsBatch) {
  DiffusionModel d(tiny());
  auto c2 = conditioning(2);
  SampleOptions o;
  o.steps = 5;
  auto pair = d.sample(c2.cond, c2.uncond, 5.0, o, {10, 11});
  auto alone = d.sample(c2.cond.slice(0, 1, 2), c2.uncond, 5.0, o, {11});
  // Same noise; the arithmetic may differ in the last bits with the batch shape.
  EXPECT_TRUE(torch::allclose(pair[1], alone[0], 1e-4, 1e-4));
}

TEST(ModelDiffusion, SampleRejectsMismatchedSeeds) {
  DiffusionModel d(tiny());
  auto c = conditioning(2);
  EXPECT_THROW(d.sample(c.cond, c.uncond, 5.0, {}, {0}), ctok::Error);
}

TEST(ModelDiffusion, VaeRoundTripShapes) {
  DiffusionModel d(tiny());
  auto images = torch::rand({2, 3, 32, 32}) * 2 - 1;
  auto z = d.encode(images);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{2, 4, 8, 8}));
  auto back = d.decode(z);
  EXPECT_EQ(back.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_FALSE(back.is_inference());
  EXPECT_THROW(d.decode(torch::zeros({1, 3, 8, 8})), ctok::Error);
  EXPECT_THROW(d.encode(torch::zeros({1, 3, 64, 64})), ctok::Error);
}

TEST(ModelDiffusion, InversionLossGradientReachesTheToken) {
  // The learner's path: token vector -> hidden -> UNet -> loss must carry a gradient.
  const Bundle& b = tiny();
  ClipModel clip(b);
  DiffusionModel d(b);
  auto v = torch::randn({1, 24}).requires_grad_(true);
  auto hidden = clip.encode_text({"a photo of a <inv> dress"}, {{"<inv>", v}}).hidden;
  auto z0 = torch::randn({1, 4, 8, 8});
  auto eps = torch::randn({1, 4, 8, 8});
  auto t = torch::tensor({300}, torch::kLong);
  auto zt = d.schedule().add_noise(z0, eps, t);
  auto loss = (d.unet(zt, t, hidden) - eps).pow(2).mean();
  loss.backward();
  ASSERT_TRUE(v.grad().defined());
  EXPECT_GT(v.grad().abs().sum().item<double>(), 0.0);
}

TEST(ModelDiffusion, GenerateIsPromptMajorAndSeededPerImage) {
  const Bundle& b = tiny();
  GenerateOptions o;
  o.n = 3;
  o.steps = 3;
  o.batch = 4;  // 6 images in 2 batches of different size
  const std::vector<std::string> prompts{"a photo of a <r> dress", "a blue shoe"};
  TokenVectors tokens{{"<r>", torch::randn({1, 24})}};
  const auto a = generate(b, prompts, tokens, o);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a[0].sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::equal(a[0], generate(b, prompts, tokens, o)[0]));  // reproducible
  // Image j of every prompt starts from seed + j: alone with seed 1, prompt 1's image 0
  // is image 1 of that row (the batch shape may change the last bits only).
  GenerateOptions one = o;
  one.n = 1;
  one.seed = 1;
  one.batch = 1;
  EXPECT_TRUE(torch::allclose(generate(b, {prompts[1]}, tokens, one)[0], a[4], 1e-4, 1e-4));
  EXPECT_FALSE(torch::equal(a[0], a[3]));  // same noise, other prompt
  // From the encoded prompts the same images come out (the path GAIR takes).
  const ClipModel clip(b);
  const auto c = generate(b, clip.encode_text(prompts, tokens).hidden, clip.encode_text({""}).hidden, o);
  ASSERT_EQ(c.size(), 6u);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_TRUE(torch::equal(c[i], a[i])) << i;
  // 8-bit conversion keeps the layout.
  const auto rgb = to_images(a);
  EXPECT_EQ(rgb.size(), 6u);
  EXPECT_EQ(rgb[0].width, 32);
}

TEST(ModelDiffusion, GenerateValidation) {
  const Bundle& b = tiny();
  GenerateOptions o;
  o.n = 0;
  ctok::test::expect_bad_input([&] { validate(o, b); }, "n");
  o.n = 1;
  o.steps = 0;
  ctok::test::expect_bad_input([&] { validate(o, b); }, "steps");
  o.steps = 1;
  o.batch = 0;
  ctok::test::expect_bad_input([&] { validate(o, b); }, "batch");
  o.batch = 1;
  EXPECT_NO_THROW(validate(o, b));
  ctok::test::expect_bad_input([&] { generate(b, std::vector<std::string>{}, {}, o); }, "no prompt");
  ctok::test::expect_bad_input([&] { generate(b, torch::zeros({1, 4, 7}), torch::Tensor(), o); }, "conditioning");
}
