// The render layer on the tiny fixture: grid and rows, validation, and the one field
// table behind the JSON config, the sidecar and the tool's flags.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>

#include "ctok/core/error.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/render/render.hpp"
#include "unit/test_util.hpp"
#include "unit/tiny_bundle.hpp"

using namespace ctok;
using render::RenderOptions;

namespace {

const model::Bundle& tiny() { return ctok::test::tiny_bundle(); }

}  // namespace

TEST(Render, InProcessIsReproducibleAndRowsShareSeeds) {
  const model::Bundle& b = tiny();
  RenderOptions o;
  o.prompts = {"a photo of a <r> dress", "a blue shoe"};
  o.n = 3;
  o.steps = 3;
  o.batch = 4;  // 6 images in 2 batches of different size
  model::TokenVectors tokens{{"<r>", torch::randn({1, 24})}};
  auto r1 = render::render(b, tokens, o);
  auto r2 = render::render(b, tokens, o);
  ASSERT_EQ(r1.images.size(), 6u);
  EXPECT_EQ(r1.images[4].prompt, 1);
  EXPECT_EQ(r1.images[4].index, 1);
  EXPECT_EQ(r1.images[4].seed, 1u);
  EXPECT_EQ(r1.grid.rgb, r2.grid.rgb);
  EXPECT_EQ(r1.images[0].image.width, 32);
  // The tiles are model::generate's images, in the same order.
  const auto gen = model::to_images(model::generate(b, o.prompts, tokens, o));
  for (size_t i = 0; i < gen.size(); ++i) EXPECT_EQ(gen[i].rgb, r1.images[i].image.rgb) << i;
  EXPECT_NE(r1.images[0].image.rgb, r1.images[3].image.rgb);
  o.seed = 100;
  EXPECT_NE(render::render(b, tokens, o).grid.rgb, r1.grid.rgb);
}

TEST(Render, Validation) {
  const model::Bundle& b = tiny();
  RenderOptions o;
  o.prompts = {"a dress"};
  EXPECT_NO_THROW(render::validate(o, b));
  o.n = 0;  // the generation fields are checked too
  test::expect_bad_input([&] { render::validate(o, b); }, "n");
  o.n = 1;
  o.cols = -1;
  test::expect_bad_input([&] { render::validate(o, b); }, "cols");
  o.cols = 0;
  o.scale = 17;
  test::expect_bad_input([&] { render::validate(o, b); }, "scale");
  o.scale = 0;
  o.prompts.clear();
  test::expect_bad_input([&] { render::validate(o, b); }, "no prompt");
}

TEST(Render, OneFieldTableForConfigRecordAndFlags) {
  std::set<std::string> keys;
  render::for_each_render_field([&](const char* key, auto, const char* help) {
    EXPECT_TRUE(keys.insert(key).second) << "key twice: " << key;
    EXPECT_GT(std::string(help).size(), 3u) << key;
  });
  // Every field is read from a config (enums by name) ...
  const nlohmann::json j = {{"prompts", {"a", "b"}}, {"negative", "blurry"}, {"n", 2}, {"steps", 7}, {"guidance", 3.5},
                            {"sampler", "euler"}, {"eta", 0.5}, {"spacing", "leading"}, {"seed", 9}, {"batch", 3},
                            {"cols", 1}, {"captions", true}, {"scale", 2}};
  EXPECT_EQ(j.size(), keys.size());
  const RenderOptions o = render::render_options_from_json(j, "cfg.json");
  EXPECT_EQ(o.prompts.size(), 2u);
  EXPECT_EQ(o.negative, "blurry");
  EXPECT_EQ(o.n, 2);
  EXPECT_EQ(o.steps, 7);
  EXPECT_DOUBLE_EQ(o.guidance, 3.5);
  EXPECT_EQ(o.sampler, model::Sampler::kEuler);
  EXPECT_DOUBLE_EQ(o.eta, 0.5);
  EXPECT_EQ(o.spacing, model::Spacing::kLeading);
  EXPECT_EQ(o.seed, 9u);
  EXPECT_EQ(o.batch, 3);
  EXPECT_EQ(o.cols, 1);
  EXPECT_TRUE(o.captions);
  EXPECT_EQ(o.scale, 2);
  // ... absent keys keep the base, and the sidecar writes every key back.
  RenderOptions base;
  base.steps = 11;
  EXPECT_EQ(render::render_options_from_json({{"n", 1}}, "cfg.json", base).steps, 11);
  render::RenderResult none;
  const auto rec = render::render_record(tiny(), o, {}, none, "grid.png");
  for (const auto& k : keys) EXPECT_TRUE(rec.contains(k)) << k;
  EXPECT_EQ(rec.at("sampler"), "euler");
  EXPECT_EQ(rec.at("spacing"), "leading");
  // Bad input names the file and the key.
  test::expect_bad_input([] { render::render_options_from_json({{"sampler", "plms"}}, "cfg.json"); },
                         {"cfg.json", "sampler", "ddim | euler"});
  test::expect_bad_input([] { render::render_options_from_json({{"colour", 1}}, "cfg.json"); }, {"cfg.json", "colour"});
}
