// ctok-learn: learn a custom token from a few images of a concept and its parent word
// (docs/learning.md).
//
//   ctok-learn --images photos/ --parent dress --token "<my-dress>" --out tokens/my-dress.safetensors
//   ctok-learn --df2 data/fashionworld --split validation --pair-id 100017 --style 1 --shots 3
//              --token "<c17>" --out tokens/c17.safetensors
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "common/stop.hpp"
#include "common/tool.hpp"
#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/core/version.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/core/json.hpp"
#include "ctok/token/cohort.hpp"
#include "ctok/token/learner.hpp"
#include "ctok/token/negatives.hpp"

namespace fs = std::filesystem;
using namespace ctok;

namespace {

struct Options {
  tool::CommonOptions common;  // --bundle --device --threads --seed --config -v -q
  std::string out;
  bool force = false, no_verify = false;
  // concept
  std::string images, negatives, negatives_from, negatives_cache, parent, token;
  std::string concepts, parents;  // cohort: one token per sub-folder
  int cohort = token::CohortOptions{}.cohort;
  int workers = token::CohortOptions{}.workers;
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

token::NegativeSourceOptions negative_sources(const Options& o) {
  token::NegativeSourceOptions n;
  n.folder = o.negatives;
  n.split = o.negatives_from;
  n.none = o.no_negatives;
  n.split_n = o.df2_negatives;
  n.generated_n = o.generated_negatives;
  n.cache_dir = o.negatives_cache;
  n.progress = !log_quiet();
  return n;
}

// The learning config (file + flags); no images yet.
token::LearnRequest make_request_base(const Options& o) {
  token::LearnRequest r;
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
  token::check_negative_sources(negative_sources(o));
  return r;
}

token::LearnRequest make_request(const Options& o) {
  token::LearnRequest r = make_request_base(o);
  const token::LearnConfig& c = r.config;
  r.token = o.token;
  r.parent = o.parent;
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
  if (r.parent.empty()) throw bad_input("--parent is required (the concept's parent word, e.g. dress)");
  if (r.token.empty()) throw bad_input("--token is required (the token string, e.g. \"<my-dress>\")");
  return r;
}

// The image encoder always (the classification loss and the end-of-run hub check use it);
// the diffusion models for the inversion loss and for generated negatives.
model::Bundle load_bundle(const Options& o, bool inversion, bool& generate) {
  model::BundleOptions bo;
  bo.dir = o.common.bundle_dir();
  bo.device = model::parse_device(o.common.device);
  model::check_device(bo.device);
  bo.verify_sha256 = !o.no_verify;
  bo.load_image = true;
  const model::Manifest m = model::load_manifest(bo.dir);
  if (inversion && !m.diffusion) {
    throw bad_input("the inversion loss (--lambda-inv) needs a UNet, and bundle " + m.name +
                    " has none (no \"diffusion\" section); use --lambda-inv 0 or a bundle with diffusion models")
        .file(m.path).key("diffusion");
  }
  if (generate && !m.diffusion) {
    spdlog::warn("bundle {} has no diffusion models to generate negatives with; give --negatives DIR or "
                 "--negatives-from ROOT", m.name);
    generate = false;
  }
  bo.load_diffusion = inversion || generate;
  return model::Bundle::load(bo);
}

// --concepts DIR --out OUTDIR: one token per sub-folder, learned as a cohort.
int run_concepts(const Options& o) {
  token::LearnRequest base = make_request_base(o);
  nlohmann::json parents = nlohmann::json::object();
  if (!o.parents.empty()) {
    parents = json::parse_file(o.parents);
    json::require_object(parents, o.parents);
  }
  std::vector<token::LearnRequest> requests;
  std::vector<std::string> outs;
  bool generate = false;
  const auto n = negative_sources(o);
  for (const auto& name : data::list_subfolders(o.concepts)) {
    token::LearnRequest r = base;
    r.token = "<" + name + ">";
    r.parent = parents.contains(name) ? parents[name].get<std::string>() : o.parent;
    if (r.parent.empty()) {
      throw bad_input("no parent word for concept folder " + name + ": give --parent or list it in --parents")
          .file(o.parents.empty() ? o.concepts : o.parents).key(name);
    }
    const std::string dir = (fs::path(o.concepts) / name).string();
    for (const auto& f : data::list_images(dir)) r.images.push_back({f, std::nullopt, ""});  // names an empty folder
    r.source = {{"images", dir}, {"concepts", o.concepts}};
    const std::string out = (fs::path(o.out) / (name + ".safetensors")).string();
    if (!o.force && file_exists(out)) {
      spdlog::info("{} exists: {} is done (--force learns it again)", out, r.token);
      continue;
    }
    generate = token::attach_given_negatives(r, n) || generate;
    requests.push_back(std::move(r));
    outs.push_back(out);
  }
  if (requests.empty()) return 0;
  bool inversion = false;
  for (const auto& r : requests) inversion = inversion || r.config.lambda_inv > 0;
  model::Bundle bundle = load_bundle(o, inversion, generate);
  for (auto& r : requests) {
    bundle.tokenizer().check_custom_token(r.token);  // a name the vocabulary has as one piece: exit 2 now
    if (r.negatives.empty() && r.negatives_source.empty() && generate) token::attach_generated_negatives(bundle, r, n);
  }
  fs::create_directories(o.out);
  token::CohortOptions co;
  co.cohort = o.cohort;
  co.workers = o.workers;
  spdlog::info("{} token(s), {} worker thread(s), up to {} in flight", requests.size(),
               token::cohort_workers(co, requests.size()), o.cohort);
  for (const auto& out : outs) co.checkpoint_paths.push_back(out + ".ckpt");
  co.on_done = [&](std::size_t i, const token::LearnResult& r) {
    token::write_token_file(outs[i], r.token);
    std::error_code ec;
    fs::remove(co.checkpoint_paths[i], ec);
  };
  co.stop = tool::catch_sigint();
  const auto results = token::learn_cohort(bundle, requests, co);
  tool::release_sigint();
  int failed = 0, interrupted = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (!results[i].error.empty()) {
      ++failed;
      spdlog::error("{}: {}", requests[i].token, results[i].error);
    } else if (results[i].result.status == token::LearnStatus::kInterrupted) {
      ++interrupted;
    }
  }
  spdlog::info("{} token(s) learned into {}, {} failed, {} interrupted", results.size() - failed - interrupted,
               o.out, failed, interrupted);
  if (interrupted) {
    std::fprintf(stderr, "interrupted; run the same command again to continue from the checkpoints\n");
    return 130;
  }
  return failed ? 1 : 0;
}

int run(const Options& o) {
  if (!o.concepts.empty()) return run_concepts(o);
  tool::check_overwrite(o.out, o.force);
  token::LearnRequest request = make_request(o);
  bool generate = token::attach_given_negatives(request, negative_sources(o));
  model::Bundle bundle = load_bundle(o, request.config.lambda_inv > 0, generate);
  if (generate) token::attach_generated_negatives(bundle, request, negative_sources(o));
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
  ro.stop = tool::catch_sigint();
  token::LearnResult result = token::learn(learner, ro);
  tool::release_sigint();
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
    app.add_option("--concepts", o.concepts,
                   "folder of concept folders: sub-folder x learns token <x> into --out/x.safetensors, all as one "
                   "batched cohort (--out is then a folder; finished tokens are skipped without --force)")
        ->type_name("DIR");
    app.add_option("--parents", o.parents, "with --concepts: JSON object mapping folder name to parent word")
        ->type_name("FILE.json");
    app.add_option("--cohort", o.cohort, "with --concepts: tokens in flight at once, split between the workers")
        ->capture_default_str();
    app.add_option("--workers", o.workers,
                   "with --concepts: threads each running batched steps over a share of the tokens (0 = auto: "
                   "cores / --threads, so 2 on 2 cores with the default bundle)")
        ->capture_default_str()->check(CLI::NonNegativeNumber);
    app.add_option("--parent", o.parent, "the parent concept word, e.g. dress (with --df2: default the category)");
    app.add_option("--token", o.token, "the token string, e.g. \"<my-dress>\"");
    app.add_option("--out", o.out, "token file to write (.safetensors); with --concepts a folder")->required()->type_name("FILE");
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
    app.add_option("--lambda-cls", o.lambda_cls, "weight of the classification loss (default 0: inversion only; 0.1 = configs/learn/retrieval.json, better for identity retrieval, see docs/results.md)");
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
