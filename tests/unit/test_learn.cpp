// The token learner on the tiny fixture bundle (random weights): finite losses, a loss that
// goes down, bit-identical resume, the subspace, NaN stop, checkpoint checks, bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/attributes.hpp"
#include "ctok/token/cohort.hpp"
#include "ctok/token/learn_config.hpp"
#include "ctok/data/deepfashion2.hpp"
#include "ctok/token/learner.hpp"
#include "ctok/token/losses.hpp"
#include "ctok/token/negatives.hpp"
#include "ctok/token/subspace.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using namespace ctok;
using namespace ctok::token;
using ctok::test::expect_bad_input;

namespace {

const std::string kBundle = std::string(CTOK_TEST_DATA) + "/tiny_bundle";
const std::string kAttributes = std::string(CTOK_SOURCE_DIR) + "/configs/attributes";

const model::Bundle& bundle(bool diffusion = true) {
  static std::unique_ptr<model::Bundle> with, without;
  auto& slot = diffusion ? with : without;
  if (!slot) {
    model::BundleOptions o;
    o.dir = kBundle;
    o.load_diffusion = diffusion;
    slot = std::make_unique<model::Bundle>(model::Bundle::load(o));
  }
  return *slot;
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ctok_test_learn_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A small coloured image: a disc of `rgb` on a grey ramp, shifted by `shift`.
image::Image make_image(int w, int h, std::array<uint8_t, 3> rgb, int shift) {
  image::Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<std::size_t>(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int dx = x - w / 2 - shift, dy = y - h / 2;
      const bool in = dx * dx + dy * dy < (w * w) / 9;
      for (int c = 0; c < 3; ++c)
        im.rgb[static_cast<std::size_t>((y * w + x) * 3 + c)] =
            in ? rgb[c] : static_cast<uint8_t>(60 + (x * 120) / w);
    }
  return im;
}

struct Images {
  fs::path dir;
  std::vector<ImageSource> positives, negatives;
};

Images make_images(const std::string& name, int n_pos = 3, int n_neg = 4) {
  Images out;
  out.dir = temp_dir(name);
  for (int i = 0; i < n_pos; ++i) {
    const auto p = out.dir / ("pos" + std::to_string(i) + ".png");
    image::write_png(p.string(), make_image(40, 36, {220, 30, 30}, i * 2));
    out.positives.push_back({p.string(), std::nullopt});
  }
  for (int i = 0; i < n_neg; ++i) {
    const auto p = out.dir / ("neg" + std::to_string(i) + ".png");
    image::write_png(p.string(), make_image(40, 36, {30, 30, static_cast<uint8_t>(150 + 20 * i)}, -i));
    out.negatives.push_back({p.string(), image::Box{2, 2, 38, 34}});
  }
  return out;
}

// The learner's tests exercise the whole method (whole_method_config: the classification loss
// and the attribute subspace on; the shipped defaults are inversion only, free vector).
LearnRequest request(const Images& im, LearnConfig c = whole_method_config()) {
  LearnRequest r;
  r.token = "<my-shoe>";
  r.parent = "shoe";
  c.batch = 2;
  c.variants = 4;
  r.config = c;
  r.images = im.positives;
  r.negatives = im.negatives;
  r.attributes_dir = kAttributes;
  return r;
}

bool all_finite(const StepLosses& l) {
  return std::isfinite(l.total) && std::isfinite(l.inv) && std::isfinite(l.cls_text) && std::isfinite(l.cls_image) &&
         std::isfinite(l.norm);
}

}  // namespace

TEST(LearnConfig, JsonRoundTripAndStrictness) {
  LearnConfig c;
  c.steps = 17;
  c.templates = {"a {token} {parent}"};
  LearnConfig d = learn_config_from_json(to_json(c), "x.json");
  EXPECT_EQ(to_json(d), to_json(c));
  expect_bad_input([] { learn_config_from_json(nlohmann::json{{"stepz", 3}}, "x.json"); }, "stepz");
  expect_bad_input([] { learn_config_from_json(nlohmann::json{{"steps", "3"}}, "x.json"); }, "steps");
  LearnConfig bad;
  bad.lr = -1;
  expect_bad_input([&] { validate(bad); }, "lr");
  bad = {};
  bad.templates = {"a photo of a {parent}"};
  expect_bad_input([&] { validate(bad); }, "templates");
  bad = {};
  bad.templates = {"a photo of a {token} {colour}"};
  expect_bad_input([&] { validate(bad); }, "templates");
  bad = {};
  bad.lambda_inv = 0;
  bad.lambda_cls = 0;
  expect_bad_input([&] { validate(bad); }, "lambda");
  // The shipped default config is the struct's defaults.
  LearnConfig shipped = read_learn_config(std::string(CTOK_SOURCE_DIR) + "/configs/learn/default.json");
  EXPECT_EQ(to_json(shipped), to_json(LearnConfig{}));
}

TEST(Attributes, FilesAndTemplates) {
  for (const auto& p : list_attribute_parents(kAttributes)) {
    AttributeSet a = read_attribute_file(find_attribute_file(p, kAttributes));
    EXPECT_EQ(a.parent, p);
    EXPECT_EQ(a.subspace_words().front(), p);
    EXPECT_FALSE(a.colours.empty());
  }
  EXPECT_GE(list_attribute_parents(kAttributes).size(), 17u);
  AttributeSet shoe = read_attribute_file(find_attribute_file("shoe", kAttributes));
  EXPECT_EQ(std::count(shoe.siblings.begin(), shoe.siblings.end(), "sneaker"), 0);  // hidden in FashionWorld
  expect_bad_input([] { find_attribute_file("hat", kAttributes); }, "shoe.json");
  EXPECT_EQ(fill_template("a photo of a {token} {parent}", "<x>", "shoe"), "a photo of a <x> shoe");
  EXPECT_EQ(fill_template("a photo of a {token} {parent}", "", "ankle boot"), "a photo of an ankle boot");
  EXPECT_EQ(fill_template("a photo of a {token} {parent}", "", "shoe"), "a photo of a shoe");
  // A smaller subspace: the parent, then one word of each list in turn.
  EXPECT_EQ(shoe.subspace_words(0), shoe.subspace_words());
  const std::vector<std::string> four = shoe.subspace_words(4);
  ASSERT_EQ(four.size(), 4u);
  EXPECT_EQ(four[0], "shoe");
  EXPECT_EQ(four[1], shoe.colours.front());
  EXPECT_EQ(four[2], shoe.patterns.front());
  EXPECT_EQ(four[3], shoe.materials.front());
  EXPECT_EQ(shoe.subspace_words(1000), shoe.subspace_words());
}

TEST(Subspace, OrthonormalAndSpansTheWords) {
  auto& b = bundle(false);
  const std::vector<std::string> words = {"shoe", "red", "blue", "striped", "sandal", "ankle boot"};
  Subspace s = build_subspace(b, words, {});
  ASSERT_EQ(s.words.size(), words.size());
  EXPECT_EQ(s.dim(), 6);
  torch::Tensor qtq = torch::matmul(s.basis.t(), s.basis);
  EXPECT_TRUE(torch::allclose(qtq, torch::eye(s.dim()), 1e-5, 1e-5));
  for (const auto& w : words) {  // each word's embedding lies in the span
    torch::Tensor e = word_embedding(b, w);
    torch::Tensor back = expand(s, project(s, e));
    EXPECT_LT((back - e).norm().item<double>(), 1e-4 * std::max(1.0, e.norm().item<double>())) << w;
  }
  // A repeated direction adds nothing.
  Subspace r = build_subspace(b, {"shoe", "red", "shoe"}, {});
  EXPECT_EQ(r.dim(), 2);
  // "leather" is not in the fixture's vocabulary: spelled letter by letter, dropped by "known".
  EXPECT_FALSE(tokenizer_knows(b, "leather"));
  EXPECT_TRUE(tokenizer_knows(b, "shoe"));
  SubspaceOptions known;
  known.drop_unknown = true;
  Subspace k = build_subspace(b, {"shoe", "leather"}, known);
  EXPECT_EQ(k.words, std::vector<std::string>{"shoe"});
  EXPECT_EQ(k.dropped, std::vector<std::string>{"leather"});
}

TEST(Learner, LossesFiniteAndTokenFile) {
  Images im = make_images("finite");
  LearnConfig c = whole_method_config();
  c.steps = 3;
  Learner learner(bundle(), request(im, c));
  EXPECT_EQ(learner.usable_images(), 3);
  EXPECT_EQ(learner.usable_negatives(), 4);
  ASSERT_NE(learner.subspace(), nullptr);
  RunOptions o;
  o.progress = false;
  o.log_path = (im.dir / "log.csv").string();
  LearnResult r = learn(learner, o);
  EXPECT_EQ(r.status, LearnStatus::kDone);
  EXPECT_EQ(r.steps_done, 3);
  EXPECT_TRUE(all_finite(r.last));
  EXPECT_GT(r.last.inv, 0);
  EXPECT_GT(r.last.cls_text, 0);
  EXPECT_GT(r.last.cls_image, 0);
  EXPECT_EQ(r.token.width, 24);
  EXPECT_EQ(r.token.n_vectors, 1);
  EXPECT_EQ(r.token.token, "<my-shoe>");
  EXPECT_EQ(r.token.parent, "shoe");
  EXPECT_FALSE(r.token.subspace_words.empty());
  EXPECT_EQ(static_cast<int64_t>(r.token.coefficients.size()), learner.subspace()->dim());
  for (float x : r.token.vectors) EXPECT_TRUE(std::isfinite(x));
  // The token file round-trips through the writer and reader.
  const std::string out = (im.dir / "t.safetensors").string();
  write_token_file(out, r.token);
  TokenFile back = read_token_file(out);
  EXPECT_EQ(back.vectors, r.token.vectors);
  EXPECT_EQ(back.subspace_words, r.token.subspace_words);
  // The CSV log has a header and one row per step.
  std::ifstream log(o.log_path);
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) ++lines;
  EXPECT_EQ(lines, 4);
  // The loss curve of the token file's metrics: every step (3 <= 100 points), the last one
  // the last step's losses.
  const nlohmann::json& curve = r.metrics.at("loss_curve");
  EXPECT_EQ(curve.at("every"), 1);
  ASSERT_EQ(curve.at("step").size(), 3u);
  EXPECT_EQ(curve["step"].back(), 3);
  EXPECT_NEAR(curve["total"].back().get<double>(), r.last.total, 1e-4 * std::max(1.0, r.last.total));
  EXPECT_NEAR(curve["inversion"].back().get<double>(), r.last.inv, 1e-4 * std::max(1.0, r.last.inv));
  EXPECT_EQ(back.metrics.at("loss_curve"), curve);
  EXPECT_EQ(learner.loss_curve(2).at("every"), 2);  // block means when there are more steps than points
  EXPECT_EQ(learner.loss_curve(2).at("step").size(), 2u);
  fs::remove_all(im.dir);
}

TEST(Learner, ClassificationLossGoesDown) {
  Images im = make_images("down", 1, 2);
  LearnConfig c = whole_method_config();
  c.lambda_inv = 0;
  c.lambda_cls = 1;
  c.subspace = "none";
  c.lr = 0.05;
  c.steps = 40;
  c.variants = 1;
  Learner learner(bundle(false), request(im, c));
  const double before = learner.forward_backward(0).cls_text;
  for (int i = 0; i < c.steps; ++i) learner.step();
  const double after = learner.forward_backward(0).cls_text;
  // With negatives the text side has a floor well above 0 on random fixture weights.
  EXPECT_LT(after, 0.85 * before) << "before " << before << " after " << after;
  fs::remove_all(im.dir);
}

TEST(Learner, InversionLossGoesDownOnAFixedDraw) {
  Images im = make_images("inv_down", 1, 0);
  LearnConfig c = whole_method_config();
  c.lambda_inv = 1;
  c.lambda_cls = 0;
  c.subspace = "none";
  c.lr = 0.05;
  c.steps = 30;
  Learner learner(bundle(), request(im, c));
  double before = 0, after = 0;
  for (int s = 0; s < 4; ++s) before += learner.forward_backward(s).inv;
  for (int i = 0; i < c.steps; ++i) learner.step();
  for (int s = 0; s < 4; ++s) after += learner.forward_backward(s).inv;
  EXPECT_LT(after, before);
  fs::remove_all(im.dir);
}

TEST(Learner, ResumeIsBitIdentical) {
  Images im = make_images("resume");
  LearnConfig c = whole_method_config();
  c.steps = 6;
  c.checkpoint_every = 0;
  const std::string ckpt = (im.dir / "run.ckpt").string();

  Learner full(bundle(), request(im, c));
  RunOptions quiet;
  quiet.progress = false;
  LearnResult a = learn(full, quiet);

  // Interrupted after step 3 (the stop flag as Ctrl-C sets it), then resumed.
  std::atomic<bool> stop{false};
  Learner first(bundle(), request(im, c));
  RunOptions o;
  o.progress = false;
  o.checkpoint_path = ckpt;
  o.stop = &stop;
  o.on_step = [&](int step, const StepLosses&) {
    if (step == 3) stop = true;
  };
  LearnResult r1 = learn(first, o);
  EXPECT_EQ(r1.status, LearnStatus::kInterrupted);
  EXPECT_EQ(r1.steps_done, 3);
  ASSERT_TRUE(file_exists(ckpt));

  Learner second(bundle(), request(im, c));
  RunOptions o2;
  o2.progress = false;
  o2.checkpoint_path = ckpt;
  o2.resume_path = ckpt;
  LearnResult b = learn(second, o2);
  EXPECT_EQ(b.status, LearnStatus::kDone);
  EXPECT_EQ(b.steps_done, 6);
  EXPECT_EQ(a.token.vectors, b.token.vectors);  // bit for bit
  EXPECT_EQ(a.token.coefficients, b.token.coefficients);
  // The final metrics do not depend on where the run was interrupted.
  nlohmann::json ma = a.metrics, mb = b.metrics;
  ma.erase("seconds");
  mb.erase("seconds");
  EXPECT_EQ(ma.dump(), mb.dump());  // the loss curve included: it survives the resume
  EXPECT_EQ(mb.at("loss_curve").at("step").size(), 6u);
  fs::remove_all(im.dir);
}

TEST(Learner, SubspaceKeepsTheTokenInSpan) {
  Images im = make_images("span");
  LearnConfig c = whole_method_config();
  c.steps = 5;
  c.subspace_lr = 0.1;
  Learner learner(bundle(), request(im, c));
  const Subspace* s = learner.subspace();
  ASSERT_NE(s, nullptr);
  torch::Tensor q = s->basis.cpu();
  EXPECT_TRUE(torch::allclose(torch::matmul(q.t(), q), torch::eye(s->dim()), 1e-5, 1e-5));
  // Start: the parent's own embedding (the parent is one of the spanning words).
  torch::Tensor v0 = learner.vectors();
  torch::Tensor e = word_embedding(bundle(), "shoe").cpu().reshape({1, -1});
  EXPECT_TRUE(torch::allclose(v0, e, 1e-4, 1e-5));
  for (int i = 0; i < c.steps; ++i) learner.step();
  torch::Tensor v = learner.vectors();
  EXPECT_FALSE(torch::allclose(v, v0));
  torch::Tensor in_span = torch::matmul(torch::matmul(v, q), q.t());
  EXPECT_LT((v - in_span).norm().item<double>(), 1e-5);
  fs::remove_all(im.dir);
}

TEST(Learner, NanStopsAndKeepsTheLastGoodCheckpoint) {
  Images im = make_images("nan");
  LearnConfig c = whole_method_config();
  c.steps = 20;
  c.subspace = "none";
  // Step 1 is computed at the initial vector and moves it by ~1e37 per coordinate; step 2's
  // norm term overflows: an Inf loss.
  c.lr = 1e37;
  c.lambda_norm = 1.0;
  c.checkpoint_every = 1;
  const std::string ckpt = (im.dir / "nan.ckpt").string();
  Learner learner(bundle(), request(im, c));
  RunOptions o;
  o.progress = false;
  o.checkpoint_path = ckpt;
  std::string before_sha;
  int done = 0;
  o.on_step = [&](int step, const StepLosses&) { done = step; };
  try {
    learn(learner, o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
    const std::string what = e.what();
    EXPECT_TRUE(what.find("NaN") != std::string::npos || what.find("Inf") != std::string::npos) << what;
    EXPECT_NE(what.find(ckpt), std::string::npos) << what;
  }
  ASSERT_GE(done, 1);
  ASSERT_TRUE(file_exists(ckpt));
  // The checkpoint is the state after the last good step, finite, and loadable.
  SafetensorsFile f = read_safetensors(ckpt);
  EXPECT_EQ(to_int64(*f.find("step")).at(0), done);
  for (float x : to_float32(*f.find("param"))) EXPECT_TRUE(std::isfinite(x));
  Learner again(bundle(), request(im, c));
  EXPECT_NO_THROW(again.load_checkpoint(ckpt));
  EXPECT_EQ(again.steps_done(), done);
  fs::remove_all(im.dir);
}

TEST(Learner, ResumeRefusesAnotherConfigOrImages) {
  Images im = make_images("mismatch");
  LearnConfig c = whole_method_config();
  c.steps = 2;
  const std::string ckpt = (im.dir / "m.ckpt").string();
  {
    Learner l(bundle(), request(im, c));
    l.step();
    l.save_checkpoint(ckpt, 1.0);
  }
  LearnConfig other = c;
  other.lr = 0.5;
  other.subspace_lr = 0.5;
  Learner l2(bundle(), request(im, other));
  expect_bad_input([&] { l2.load_checkpoint(ckpt); }, "subspace_lr");
  // Other images.
  Images im2 = make_images("mismatch2", 2, 4);
  Learner l3(bundle(), request(im2, c));
  expect_bad_input([&] { l3.load_checkpoint(ckpt); }, "other images");
  // Another bundle: the same checkpoint with a different bundle hash.
  SafetensorsFile f = read_safetensors(ckpt);
  f.metadata["bundle_sha256"] = std::string(64, 'a');
  f.metadata["bundle"] = "other-bundle";
  write_safetensors(ckpt, f);
  Learner l4(bundle(), request(im, c));
  expect_bad_input([&] { l4.load_checkpoint(ckpt); }, "other-bundle");
  // Not a checkpoint at all.
  write_file_atomic(ckpt, std::string("garbage"));
  expect_bad_input([&] { l4.load_checkpoint(ckpt); }, ckpt);
  fs::remove_all(im.dir);
  fs::remove_all(im2.dir);
}

TEST(Learner, BadInput) {
  Images im = make_images("bad");
  LearnConfig c = whole_method_config();
  {
    LearnRequest r = request(im, c);
    r.token = "dress";  // one piece of the fixture's vocabulary
    expect_bad_input([&] { Learner l(bundle(), r); }, "dress");
  }
  {
    LearnRequest r = request(im, c);
    r.parent = "hat";  // no attribute file under subspace "auto"
    expect_bad_input([&] { Learner l(bundle(), r); }, "shoe.json");
  }
  {
    // lambda_inv > 0 with a bundle loaded without its UNet.
    expect_bad_input([&] { Learner l(bundle(false), request(im, c)); }, "lambda_inv");
  }
  {
    LearnRequest r = request(im, c);
    const auto bad = im.dir / "broken.jpg";
    std::ofstream(bad) << "not a jpeg";
    r.images = {{bad.string(), std::nullopt}};
    expect_bad_input([&] { Learner l(bundle(), r); }, "broken.jpg");
  }
  {
    LearnRequest r = request(im, c);
    r.images.clear();
    expect_bad_input([&] { Learner l(bundle(), r); }, "image");
  }
  fs::remove_all(im.dir);
}

TEST(Learner, DiskCacheGivesTheSameResult) {
  Images im = make_images("cache");
  LearnConfig c = whole_method_config();
  c.steps = 2;
  c.cache_dir = (im.dir / "cache").string();
  RunOptions o;
  o.progress = false;
  Learner a(bundle(), request(im, c));
  LearnResult ra = learn(a, o);
  int files = 0;
  for (auto& e : fs::directory_iterator(c.cache_dir)) files += e.path().extension() == ".safetensors";
  EXPECT_EQ(files, 3);
  Learner b(bundle(), request(im, c));  // now read from the cache
  LearnResult rb = learn(b, o);
  EXPECT_EQ(ra.token.vectors, rb.token.vectors);
  fs::remove_all(im.dir);
}

namespace {

torch::Tensor unit(std::vector<float> v) {
  torch::Tensor t = torch::tensor(v);
  return t / t.norm();
}

}  // namespace

// Hand values of the per-image negative loss: "not the token" is -log(1 - p0), a known class
// is the cross-entropy to its prompt's column.
TEST(Losses, NegativeTextLossHandValues) {
  torch::Tensor logits = torch::tensor({0.0f, 0.0f, 0.0f, std::log(3.0f), 0.0f, 0.0f}).reshape({2, 3});
  torch::Tensor l = negative_text_loss(logits, torch::tensor({int64_t{-1}, int64_t{1}}));
  EXPECT_NEAR(l[0].item<double>(), -std::log(1.0 - 1.0 / 3.0), 1e-5);  // p0 = 1/3
  EXPECT_NEAR(l[1].item<double>(), -std::log(1.0 / 5.0), 1e-5);        // column 2 of [3, 1, 1] / 5
  l = negative_text_loss(logits, torch::tensor({int64_t{0}, int64_t{-1}}));
  EXPECT_NEAR(l[0].item<double>(), std::log(3.0), 1e-5);
  EXPECT_NEAR(l[1].item<double>(), -std::log(2.0 / 5.0), 1e-5);
}

// The old text side (positives only) prefers a hub token, whose prompt is near every image
// of the parent; the loss of method.md §1 (every image, negatives with their own class or
// "not the token") and the image side prefer the discriminative one.
TEST(Losses, HubScoresWorseThanDiscriminative) {
  // e3 is what every image of the parent shares; e0, e1, e2 tell concept, sandal, boot apart.
  torch::Tensor pos = torch::stack({unit({0.5f, 0, 0, 1}), unit({0.45f, 0.05f, 0, 1})});
  torch::Tensor neg = torch::stack({unit({0, 0.5f, 0, 1}), unit({0, 0, 0.5f, 1})});
  torch::Tensor prompts = torch::stack({unit({1, 1, 1, 0}), unit({0, 1, 0, 0}), unit({0, 0, 1, 0})});  // parent, sandal, boot
  torch::Tensor hub = unit({0, 0, 0, 1}), disc = unit({1, 0, 0, 0});
  const double s = 10;
  auto old_text = [&](const torch::Tensor& t) {
    return text_side_loss(pos, neg.slice(0, 0, 0), torch::empty({0}, torch::kLong), t, prompts, s).item<double>();
  };
  auto text = [&](const torch::Tensor& t, const torch::Tensor& targets) {
    return text_side_loss(pos, neg, targets, t, prompts, s).item<double>();
  };
  const torch::Tensor labelled = torch::tensor({int64_t{1}, int64_t{2}}), unknown = torch::tensor({int64_t{-1}, int64_t{-1}});
  EXPECT_LT(old_text(hub), old_text(disc)) << "the fixture must reproduce the old objective's preference";
  EXPECT_GT(text(hub, labelled), text(disc, labelled) + 1.0);
  EXPECT_GT(text(hub, unknown), text(disc, unknown) + 1.0);
  EXPECT_GT(image_side_loss(hub.reshape({1, -1}), pos, neg, s).item<double>(),
            image_side_loss(disc.reshape({1, -1}), pos, neg, s).item<double>() + 0.5);
}

TEST(Learner, NoTextSideWithoutNegatives) {
  Images im = make_images("no_negatives", 2, 0);
  LearnConfig c = whole_method_config();
  c.steps = 2;
  c.subspace = "none";
  Learner learner(bundle(), request(im, c));
  EXPECT_FALSE(learner.text_side_on());
  const StepLosses l = learner.forward_backward(0);
  EXPECT_EQ(l.cls_text, 0);
  EXPECT_EQ(l.cls_image, 0);
  EXPECT_GT(l.inv, 0);
  // Classification alone without negatives has nothing to learn from.
  c.lambda_inv = 0;
  expect_bad_input([&] { Learner l2(bundle(false), request(im, c)); }, "nothing to learn");
  fs::remove_all(im.dir);
}

TEST(Learner, LabelledNegativesAndHubCheck) {
  Images im = make_images("labels", 2, 4);
  im.negatives[0].label = "sandal";      // a sibling of shoe: its own class prompt
  im.negatives[1].label = "ankle boot";  // likewise
  im.negatives[2].label = "shoe";        // the parent prompt
  im.negatives[3].label = "hat";         // no prompt: "not the token"
  LearnConfig c = whole_method_config();
  c.steps = 2;
  c.subspace = "none";
  Learner learner(bundle(), request(im, c));
  EXPECT_TRUE(learner.text_side_on());
  EXPECT_EQ(learner.labelled_negatives(), 3);
  RunOptions o;
  o.progress = false;
  LearnResult r = learn(learner, o);
  ASSERT_TRUE(r.metrics.contains("hub_check")) << r.metrics.dump();
  const auto& h = r.metrics["hub_check"];
  EXPECT_EQ(h["positives"], 2);
  EXPECT_EQ(h["negatives"], 4);
  EXPECT_GE(h["negatives_won"].get<double>(), 0.0);
  EXPECT_LE(h["negatives_won"].get<double>(), 1.0);
  EXPECT_EQ(r.token.config["negative_images_labelled"], 3);
  // The labels are part of the data fingerprint: a checkpoint of other labels is refused.
  const std::string ck = (im.dir / "a.ckpt").string();
  learner.save_checkpoint(ck, 0);
  LearnRequest other = request(im, c);
  other.negatives[0].label = "";
  Learner l2(bundle(), other);
  expect_bad_input([&] { l2.load_checkpoint(ck); }, "other images");
  fs::remove_all(im.dir);
}

TEST(Negatives, FolderSubfoldersAreLabels) {
  fs::path d = temp_dir("neg_folder");
  image::write_png((d / "a.png").string(), make_image(8, 8, {1, 2, 3}, 0));
  fs::create_directories(d / "ankle_boot");
  image::write_png((d / "ankle_boot" / "b.png").string(), make_image(8, 8, {1, 2, 3}, 0));
  fs::create_directories(d / "empty");
  fs::create_directories(d / ".hidden");
  image::write_png((d / ".hidden" / "c.png").string(), make_image(8, 8, {1, 2, 3}, 0));
  auto n = negatives_from_folder(d.string());
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n[0].label, "");
  EXPECT_EQ(n[1].label, "ankle boot");
  fs::remove_all(d / "a.png");
  fs::remove_all(d / "ankle_boot");
  expect_bad_input([&] { negatives_from_folder(d.string()); }, "no image");
  expect_bad_input([&] { negatives_from_folder((d / "missing").string()); }, "missing");
  fs::remove_all(d);
}

TEST(Negatives, FromASplitAndTheConceptProtocol) {
  fs::path root = temp_dir("neg_split");
  int n = 0;
  auto add = [&](const std::string& source, int pair, const std::string& cat, int style) {
    char stem[16];
    std::snprintf(stem, sizeof stem, "%06d", ++n);
    const fs::path a = root / "validation" / "annos" / (std::string(stem) + ".json");
    fs::create_directories(a.parent_path());
    std::ofstream(a) << "{\"source\": \"" << source << "\", \"pair_id\": " << pair
                     << ", \"item1\": {\"category_id\": 1, \"category_name\": \"" << cat << "\", \"style\": " << style
                     << ", \"bounding_box\": [0, 0, 10, 10], \"parent\": \"shoe\"}}";
    const fs::path im = root / "validation" / "image" / (std::string(stem) + ".jpg");
    fs::create_directories(im.parent_path());
    const auto bytes = image::encode_jpeg(make_image(16, 16, {200, 10, 10}, 0), 90);
    std::ofstream(im, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  for (int p = 1; p <= 3; ++p) {
    for (int u = 0; u < 3; ++u) add("user", p, "sneaker", 1);
    add("shop", p, "sneaker", 1);
  }
  for (int p = 4; p <= 5; ++p) add("user", p, "sandal", 1);
  add("user", 6, "bag", 1);
  add("user", 7, "sandal", 0);  // style 0: never used
  for (int u = 0; u < 3; ++u) add("user", 8, "beret", 1);  // a category alone in the split
  add("shop", 8, "beret", 1);
  std::ofstream(root / "world.json") << R"({"categories": [{"id": 8, "name": "sneaker", "parent": "shoe", "hidden": true}]})";
  data::Split split = data::read_split(root.string(), "validation");
  auto concepts = data::find_concepts(split);
  const data::Concept& c = data::get_concept(concepts, 1, 1);
  ConceptRequestOptions o;
  o.root = root.string();
  o.split = "validation";
  o.negatives = 4;
  o.hidden = data::hidden_categories(root.string());
  o.attributes_dir = kAttributes;
  LearnRequest r = request_for_concept(split, c, o);
  EXPECT_EQ(r.parent, "shoe");  // the hidden category's parent
  EXPECT_EQ(r.token, "<p1-s1>");
  EXPECT_EQ(r.images.size(), 3u);
  ASSERT_EQ(r.negatives.size(), 4u);
  int shoe = 0, sandal = 0;
  for (const auto& x : r.negatives) {
    shoe += x.label == "shoe";  // other sneaker identities: the parent's prompt
    sandal += x.label == "sandal";
  }
  EXPECT_EQ(shoe, 2);  // half from each pool, one crop per identity (pairs 2 and 3)
  EXPECT_EQ(sandal, 2);
  EXPECT_EQ(r.negatives_source["kind"], "df2");
  // The same draw for the same seed; no crop of the concept itself.
  LearnRequest again = request_for_concept(split, c, o);
  for (std::size_t i = 0; i < r.negatives.size(); ++i) EXPECT_EQ(again.negatives[i].path, r.negatives[i].path);
  SplitNegativeOptions so;
  so.parent = "hat";
  expect_bad_input([&] { negatives_from_split(split, so); }, "hat");
  // The concept protocol on a split with nothing to contrast (a parent without items there)
  // leaves the negatives to the next source instead of failing.
  o.parent = "beret";
  LearnRequest none = request_for_concept(split, data::get_concept(concepts, 8, 1), o);
  EXPECT_TRUE(none.negatives.empty());
  EXPECT_TRUE(none.negatives_source.empty());
  EXPECT_TRUE(attach_given_negatives(none, NegativeSourceOptions{}));  // the caller generates them
  fs::remove_all(root);
}

TEST(Negatives, GeneratedAreCachedPerBundleAndReused) {
  fs::path d = temp_dir("neg_generated");
  GeneratedNegativeOptions g;
  g.words = {"sandal", "ankle boot"};
  g.n = 2;
  g.steps = 2;
  g.cache_dir = d.string();
  g.progress = false;
  auto a = generate_negatives(bundle(), g);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a[0].label, "sandal");
  EXPECT_EQ(a[3].label, "ankle boot");
  for (const auto& x : a) EXPECT_TRUE(file_exists(x.path)) << x.path;
  const std::string bytes = read_text_file(a[1].path);
  fs::remove(a[1].path);  // a missing seed is rendered again, the same image
  auto b = generate_negatives(bundle(), g);
  EXPECT_EQ(read_text_file(b[1].path), bytes);
  // A cache entry whose meta.json names another bundle is refused.
  const fs::path meta = fs::path(a[0].path).parent_path() / "meta.json";
  auto j = nlohmann::json::parse(read_text_file(meta.string()));
  j["bundle_sha256"] = {{"x", "y"}};
  write_file_atomic(meta.string(), j.dump());
  expect_bad_input([&] { generate_negatives(bundle(), g); }, "another bundle");
  expect_bad_input([&] { generate_negatives(bundle(false), g); }, "diffusion");
  fs::remove_all(d);
}

// A cohort learns each token as it would be learned alone: same draws, own AdamW state; only
// the batched passes reassociate floating-point sums. Members share a token string and
// differ in config (inversion + classification, classification only, subspace).
TEST(Cohort, EqualsLearningEachAlone) {
  Images im = make_images("cohort", 3, 3);
  std::vector<LearnRequest> reqs;
  LearnConfig a = whole_method_config();
  a.steps = 6;
  a.subspace = "none";
  reqs.push_back(request(im, a));
  LearnConfig b = a;
  b.lambda_inv = 0;
  b.lambda_cls = 1;
  b.seed = 7;
  reqs.push_back(request(im, b));
  LearnConfig c = a;
  c.subspace = "auto";
  c.steps = 4;  // leaves the cohort early
  reqs.push_back(request(im, c));
  reqs[2].token = "<other>";
  std::vector<torch::Tensor> alone;
  for (const auto& r : reqs) {
    Learner l(bundle(), r);
    for (int s = 0; s < r.config.steps; ++s) l.step();
    alone.push_back(l.vectors());
  }
  CohortOptions o;
  o.progress = false;
  o.cohort = 3;
  o.workers = 1;  // one batched step of all three
  auto res = learn_cohort(bundle(), reqs, o);
  ASSERT_EQ(res.size(), 3u);
  for (std::size_t i = 0; i < res.size(); ++i) {
    ASSERT_TRUE(res[i].error.empty()) << res[i].error;
    EXPECT_EQ(res[i].result.steps_done, reqs[i].config.steps);
    torch::Tensor v = torch::from_blob(res[i].result.token.vectors.data(), {1, 24}, torch::kFloat32).clone();
    const double diff = (v - alone[i]).abs().max().item<double>();
    const double moved = (alone[i] - Learner(bundle(), reqs[i]).vectors()).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4) << "member " << i;   // the stated tolerance (docs/learning.md)
    EXPECT_GT(moved, 100 * diff) << "member " << i << ": the test must see the token move";
    EXPECT_TRUE(res[i].result.metrics.contains("hub_check"));
  }
  // Rounds of one token give the same as one round of three.
  o.cohort = 1;
  auto one = learn_cohort(bundle(), reqs, o);
  for (std::size_t i = 0; i < res.size(); ++i) {
    torch::Tensor x = torch::from_blob(one[i].result.token.vectors.data(), {1, 24}, torch::kFloat32).clone();
    EXPECT_LT((x - alone[i]).abs().max().item<double>(), 1e-4);
  }
  // Two worker threads, each batching its round-robin share ({0, 2} and {1}), give the same.
  o.cohort = 4;
  o.workers = 2;
  auto two = learn_cohort(bundle(), reqs, o);
  for (std::size_t i = 0; i < res.size(); ++i) {
    ASSERT_TRUE(two[i].error.empty()) << two[i].error;
    EXPECT_EQ(two[i].result.steps_done, reqs[i].config.steps);
    torch::Tensor x = torch::from_blob(two[i].result.token.vectors.data(), {1, 24}, torch::kFloat32).clone();
    EXPECT_LT((x - alone[i]).abs().max().item<double>(), 1e-4) << "member " << i << " with 2 workers";
  }
  // A bad request fails alone.
  reqs[1].images = {{(im.dir / "missing.png").string(), std::nullopt, ""}};
  auto bad = learn_cohort(bundle(), reqs, o);
  EXPECT_TRUE(bad[0].error.empty());
  EXPECT_NE(bad[1].error.find("missing.png"), std::string::npos) << bad[1].error;
  fs::remove_all(im.dir);
}

TEST(Cohort, Workers) {
  CohortOptions o;
  o.cohort = 16;
  o.workers = 3;
  EXPECT_EQ(cohort_workers(o, 10), 3);
  EXPECT_EQ(cohort_workers(o, 2), 2);  // no more workers than tokens
  o.cohort = 1;
  EXPECT_EQ(cohort_workers(o, 10), 1);  // --cohort 1: one token at a time
  o.cohort = 16;
  o.workers = 0;
  o.cores = 4;
  EXPECT_EQ(cohort_workers(o, 10), std::max(1, 4 / at::get_num_threads()));
  o.cores = 1;
  EXPECT_EQ(cohort_workers(o, 10), 1);  // a ctok-batch cell's one core
  o.workers = -1;
  expect_bad_input([&] { cohort_workers(o, 10); }, "workers");
}

TEST(Cohort, StopsWithCheckpointsAndResumes) {
  Images im = make_images("cohort_resume", 2, 2);
  LearnConfig a = whole_method_config();
  a.steps = 6;
  a.subspace = "none";
  std::vector<LearnRequest> reqs{request(im, a), request(im, a)};
  reqs[1].config.seed = 3;
  CohortOptions o;
  o.progress = false;
  o.checkpoint_paths = {(im.dir / "a.ckpt").string(), (im.dir / "b.ckpt").string()};
  std::atomic<bool> stop{false};
  o.stop = &stop;
  std::vector<LearnRequest> first = reqs;
  for (auto& r : first) r.config.checkpoint_every = 3;  // bookkeeping: not in the fingerprint
  CohortOptions full = o;
  full.checkpoint_paths.clear();
  full.stop = nullptr;
  auto ref = learn_cohort(bundle(), reqs, full);
  // Interrupt at once (stop set before the first step: one step runs, then checkpoints).
  stop = true;
  auto part = learn_cohort(bundle(), first, o);
  EXPECT_EQ(part[0].result.status, LearnStatus::kInterrupted);
  EXPECT_TRUE(file_exists(o.checkpoint_paths[0]));
  stop = false;
  auto rest = learn_cohort(bundle(), first, o);
  for (std::size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(rest[i].error.empty()) << rest[i].error;
    EXPECT_EQ(rest[i].result.status, LearnStatus::kDone);
    torch::Tensor x = torch::from_blob(rest[i].result.token.vectors.data(), {1, 24}, torch::kFloat32).clone();
    torch::Tensor y = torch::from_blob(ref[i].result.token.vectors.data(), {1, 24}, torch::kFloat32).clone();
    EXPECT_LT((x - y).abs().max().item<double>(), 1e-5);
  }
  fs::remove_all(im.dir);
}
