// ctok-learn: learn a custom token from a few images of a concept and its parent word
// (docs/learning.md).
//
//   ctok-learn --images photos/ --parent dress --token "<my-dress>" --out tokens/my-dress.safetensors
//   ctok-learn --df2 data/fashionworld --split validation --pair-id 100017 --style 1 --shots 3
//              --token "<c17>" --out tokens/c17.safetensors
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "common/tool.hpp"
#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/core/version.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/attributes.hpp"
#include "ctok/token/learner.hpp"
#include "ctok/token/negatives.hpp"

namespace fs = std::filesystem;
using namespace ctok;

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  g_stop.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program at once
}

struct Options {
  tool::CommonOptions common;  // --bundle --device --threads --seed --config -v -q
  std::string out;
  bool force = false, no_verify = false;
  // concept
  std::string images, negatives, negatives_from, negatives_cache, parent, token;
  std::vector<std::string> negative_prompts;
  bool no_negatives = false;
  int generated_negatives = token::GeneratedNegativeOptions{}.n;
  // DeepFashion2 concept
  std::string df2, split = "validation";
  std::optional<int64_t> pair_id;
  std::optional<int> style;
  int shots = token::ConceptRequestOptions{}.shots, df2_negatives = token::ConceptRequestOptions{}.negatives;
  // learning overrides
  std::optional<int> steps, batch, checkpoint_every;
  std::optional<double> lr, lambda_inv, lambda_cls, lambda_norm;
  std::optional<std::string> subspace, init_word, cache_dir;
  // run
  std::string log, checkpoint, resume;
  bool keep_checkpoint = false;
};

token::LearnRequest make_request(const Options& o) {
  token::LearnRequest r;
  r.token = o.token;
  r.parent = o.parent;
  r.config = o.common.config.empty() ? token::LearnConfig{} : token::read_learn_config(o.common.config);
  token::LearnConfig& c = r.config;
  if (o.steps) c.steps = *o.steps;
  if (o.batch) c.batch = *o.batch;
  if (o.lr) {
    c.lr = *o.lr;
    c.subspace_lr = *o.lr;  // --lr sets the rate of whichever parameter is learned
  }
  if (o.lambda_inv) c.lambda_inv = *o.lambda_inv;
  if (o.lambda_cls) c.lambda_cls = *o.lambda_cls;
  if (o.lambda_norm) c.lambda_norm = *o.lambda_norm;
  if (o.subspace) c.subspace = *o.subspace;
  if (o.init_word) c.init_word = *o.init_word;
  if (o.cache_dir) c.cache_dir = *o.cache_dir;
  if (o.checkpoint_every) c.checkpoint_every = *o.checkpoint_every;
  if (o.common.seed) c.seed = *o.common.seed;
  if (!o.negative_prompts.empty()) c.negative_prompts = o.negative_prompts;
  token::validate(c);

  const int given = !o.negatives.empty() + !o.negatives_from.empty() + o.no_negatives;
  if (given > 1) throw bad_input("give at most one of --negatives, --negatives-from and --no-negatives");
  if (!o.df2.empty()) {
    if (!o.images.empty()) throw bad_input("give either --images or --df2, not both");
    if (!o.pair_id || !o.style) throw bad_input("--df2 needs --pair-id and --style");
    data::Split split = data::read_split(o.df2, o.split);
    data::ConceptOptions co;  // any concept with user items; select_support checks the shots
    co.min_user = 1;
    co.min_shop = 0;
    auto concepts = data::find_concepts(split, co);
    const data::Concept& concept_ = data::get_concept(concepts, *o.pair_id, *o.style);
    token::ConceptRequestOptions cr;
    cr.root = o.df2;
    cr.split = o.split;
    cr.shots = o.shots;
    cr.seed = c.seed;
    cr.negatives = (o.negatives.empty() && o.negatives_from.empty() && !o.no_negatives) ? o.df2_negatives : 0;
    cr.token = o.token;
    cr.parent = o.parent;
    cr.hidden = data::hidden_categories(o.df2);
    cr.config = c;
    r = token::request_for_concept(split, concept_, cr);
    spdlog::info("concept ({}, {}): {} \"{}\", support {} of {} user crops, {} negatives from the split",
                 concept_.pair_id, concept_.style, concept_.category_name, r.parent, r.images.size(),
                 concept_.user.size(), r.negatives.size());
  } else {
    if (o.images.empty()) throw bad_input("give the concept images with --images DIR (or a concept with --df2)");
    for (const auto& f : data::list_images(o.images)) r.images.push_back({f, std::nullopt, ""});
    r.source = {{"images", o.images}};
  }
  if (!o.negatives.empty()) {
    r.negatives = token::negatives_from_folder(o.negatives);
    r.negatives_source = {{"kind", "folder"}, {"dir", o.negatives}, {"n", r.negatives.size()}};
  } else if (!o.negatives_from.empty()) {
    if (r.parent.empty()) throw bad_input("--negatives-from needs --parent (the parent's categories are the negatives)");
    // ROOT[:SPLIT]; a colon followed by a path separator belongs to the path.
    std::string root = o.negatives_from, split_name = "train";
    const auto colon = root.rfind(':');
    if (colon != std::string::npos && root.find('/', colon) == std::string::npos) {
      split_name = root.substr(colon + 1);
      root = root.substr(0, colon);
    }
    data::Split split = data::read_split(root, split_name);
    token::SplitNegativeOptions no;
    no.parent = r.parent;
    try {
      no.siblings = token::read_attribute_file(token::find_attribute_file(r.parent)).siblings;
    } catch (const Error&) {
    }
    no.n = o.df2_negatives;
    no.seed = c.seed;
    r.negatives = token::negatives_from_split(split, no);
    r.negatives_source = {{"kind", "df2"}, {"root", root}, {"split", split_name}, {"n", r.negatives.size()},
                          {"seed", c.seed}};
  } else if (o.no_negatives) {
    r.negatives.clear();
    r.negatives_source = {{"kind", "none"}, {"why", "--no-negatives"}};
  }
  if (r.parent.empty()) throw bad_input("--parent is required (the concept's parent word, e.g. dress)");
  if (r.token.empty()) throw bad_input("--token is required (the token string, e.g. \"<my-dress>\")");
  return r;
}

int run(const Options& o) {
  tool::check_overwrite(o.out, o.force);
  token::LearnRequest request = make_request(o);

  model::BundleOptions bo;
  bo.dir = o.common.bundle;
  bo.device = model::parse_device(o.common.device);
  model::check_device(bo.device);
  bo.verify_sha256 = !o.no_verify;
  // The image encoder always: the classification loss and the end-of-run hub check use it.
  bo.load_image = true;
  const model::Manifest manifest = model::load_manifest(bo.dir.empty() ? model::default_bundle_dir() : bo.dir);
  bool generate = request.negatives.empty() && request.negatives_source.empty() && !o.no_negatives;
  if (generate && !manifest.diffusion) {
    spdlog::warn("bundle {} has no diffusion models to generate negatives with; give --negatives DIR or "
                 "--negatives-from ROOT", manifest.name);
    generate = false;
  }
  if (request.config.lambda_inv > 0 || generate) {
    const model::Manifest& m = manifest;
    if (!m.diffusion) {
      throw bad_input("the inversion loss (--lambda-inv " + std::to_string(request.config.lambda_inv) +
                      ") needs a UNet, and bundle " + m.name +
                      " has none (no \"diffusion\" section); use --lambda-inv 0 or a bundle with diffusion models")
          .file(m.path).key("diffusion");
    }
    bo.load_diffusion = true;
  }
  model::Bundle bundle = model::Bundle::load(bo);
  if (generate) {
    token::GeneratedNegativeOptions g;
    g.words = token::generated_negative_words(request.parent);
    g.templ = request.config.templates.front();
    g.n = o.generated_negatives;
    g.seed = request.config.seed;
    g.cache_dir = o.negatives_cache;
    g.progress = !log_quiet();
    request.negatives = token::generate_negatives(bundle, g);
    request.negatives_source = {{"kind", "generated"}, {"words", g.words}, {"per_word", g.n},
                                {"seed", g.seed}, {"steps", g.steps}, {"guidance", g.guidance}};
  }
  spdlog::info("bundle {} ({}), {} concept image(s), {} negative image(s)", bundle.name(), bundle.dir(),
               request.images.size(), request.negatives.size());

  token::Learner learner(bundle, request);
  spdlog::info("token prompt \"{}\"; negatives: {}", learner.token_prompts().front(),
               learner.negative_prompts().empty() ? std::string("none") : [&] {
                 std::string s;
                 for (const auto& p : learner.negative_prompts()) s += (s.empty() ? "\"" : ", \"") + p + "\"";
                 return s;
               }());

  token::RunOptions ro;
  ro.checkpoint_path = o.checkpoint.empty() ? o.out + ".ckpt" : o.checkpoint;
  ro.resume_path = o.resume;
  ro.keep_checkpoint = o.keep_checkpoint;
  ro.log_path = o.log;
  ro.stop = &g_stop;
  std::signal(SIGINT, on_sigint);
  token::LearnResult result = token::learn(learner, ro);
  std::signal(SIGINT, SIG_DFL);
  if (result.status == token::LearnStatus::kInterrupted) {
    std::fprintf(stderr, "interrupted after step %d of %d; checkpoint saved to %s\nresume with: --resume %s\n",
                 result.steps_done, learner.config().steps, result.checkpoint_path.c_str(),
                 result.checkpoint_path.c_str());
    return 130;
  }
  ensure_parent_dir(o.out);
  token::write_token_file(o.out, result.token);  // atomic; the checkpoint goes only after it
  if (!o.keep_checkpoint) {
    std::error_code ec;
    fs::remove(ro.checkpoint_path, ec);
  }
  spdlog::info("wrote {} ({} step(s), {:.1f} s, final loss {:.4f})", o.out, result.steps_done, result.seconds,
               result.metrics.value("loss", 0.0));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Learn a custom token from a few images of a concept and its parent word.",
                        [&](CLI::App& app) {
    Options o;
    tool::add_common_options(app, o.common);
    app.add_option("--images", o.images, "folder of the concept's images")->type_name("DIR");
    app.add_option("--parent", o.parent, "the parent concept word, e.g. dress (with --df2: default the category)");
    app.add_option("--token", o.token, "the token string, e.g. \"<my-dress>\"");
    app.add_option("--out", o.out, "token file to write (.safetensors)")->required()->type_name("FILE");
    app.add_flag("--force", o.force, "overwrite --out");
    app.add_option("--negatives", o.negatives,
                   "folder of other items of the parent; sub-folders named by class word (sandal/, ankle_boot/) "
                   "label their images")
        ->type_name("DIR");
    app.add_option("--negatives-from", o.negatives_from,
                   "negatives from a DeepFashion2-layout split: the parent's category and its siblings (SPLIT "
                   "default train)")
        ->type_name("ROOT[:SPLIT]");
    app.add_flag("--no-negatives", o.no_negatives,
                 "no negative images (the classification loss is then off; default: generate them)");
    app.add_option("--generated-negatives", o.generated_negatives,
                   "without --negatives/--negatives-from/--df2: images rendered per sibling class word")
        ->capture_default_str();
    app.add_option("--negatives-cache", o.negatives_cache,
                   "cache of generated negatives (default $CTOK_CACHE_DIR/negatives or ~/.cache/ctok/negatives)")
        ->type_name("DIR");
    app.add_option("--negative-prompt", o.negative_prompts,
                   "a negative class prompt (repeatable); replaces the default parent + sibling prompts");
    app.add_option("--steps", o.steps, "optimisation steps (default " + std::to_string(token::LearnConfig{}.steps) + ")");
    app.add_option("--lr", o.lr, "AdamW learning rate (of c with the subspace, else of v)");
    app.add_option("--batch", o.batch, "images per step (default " + std::to_string(token::LearnConfig{}.batch) + ")");
    app.add_option("--lambda-inv", o.lambda_inv, "weight of the inversion loss (0: classification only)");
    app.add_option("--lambda-cls", o.lambda_cls, "weight of the classification loss (0: inversion only)");
    app.add_option("--lambda-norm", o.lambda_norm, "weight of the (|v| - r)^2 norm term");
    app.add_option("--subspace", o.subspace, "attribute subspace: auto | none | FILE (an attribute JSON)");
    app.add_option("--init-word", o.init_word, "word whose embedding starts the token (default: the parent)");
    app.add_option("--log", o.log, "per-step losses as CSV")->type_name("FILE");
    app.add_option("--checkpoint", o.checkpoint, "checkpoint file (default: OUT.ckpt)")->type_name("FILE");
    app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: only on Ctrl-C)");
    app.add_flag("--keep-checkpoint", o.keep_checkpoint, "keep the checkpoint after a finished run");
    app.add_option("--resume", o.resume, "continue from a checkpoint of the same bundle, config and images")
        ->type_name("FILE");
    app.add_option("--cache-dir", o.cache_dir, "on-disk cache of latents and image features")->type_name("DIR");
    app.add_option("--df2", o.df2, "DeepFashion2-layout root: learn the concept (pair_id, style) from its support set")
        ->type_name("ROOT");
    app.add_option("--split", o.split, "split of --df2")->capture_default_str();
    app.add_option("--pair-id", o.pair_id, "concept pair_id (with --df2)");
    app.add_option("--style", o.style, "concept style (with --df2)");
    app.add_option("--shots", o.shots, "support-set size k (with --df2)")->capture_default_str();
    app.add_option("--df2-negatives", o.df2_negatives,
                   "negative crops from the split (--df2, --negatives-from): other identities and sibling categories")
        ->capture_default_str();
    app.add_flag("--no-verify", o.no_verify, "skip the bundle's sha256 check");
    tool::parse(app, argc, argv, o.common);
    return run(o);
  });
}
