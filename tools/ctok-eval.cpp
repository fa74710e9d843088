// ctok-eval: the evaluations of docs/method.md §5, every method in one resumable run
// (docs/results.md): retrieval (MRR, Recall@K) on a DeepFashion2-layout split, and the
// hidden-category classification on FashionWorld.
//
//   ctok-eval --df2 data/fashionworld --split validation --task retrieve
//             --methods text,caption,image-mean,inv,cls,inv+cls,inv+cls+sub --shots 3
//             --max-concepts 100 --seeds 0,1,2 --out runs/eval/
//   ctok-eval --df2 data/fashionworld --split validation --methods text,inv,inv+cls,gair,gair-fixed
//             --composition --max-concepts 20 --seeds 0,1,2 --out runs/gair-eval/   (docs/gair.md)
//   ctok-eval --df2 data/fashionworld --task classify --shots 5 --seeds 0,1,2 --out runs/classify/
//   ctok-eval --df2 data/fashionworld --task classify --split train --min-identity 5001 --out runs/tune/  (tuning set)
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <optional>

#include "common/bundle.hpp"
#include "common/stop.hpp"
#include "common/tool.hpp"
#include "ctok/core/format.hpp"
#include "ctok/eval/eval.hpp"
#include "ctok/gair/gair.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/learn_config.hpp"

using namespace ctok;

namespace {

struct Options {
  tool::CommonOptions common;
  eval::EvalOptions eval;
  std::string task = "retrieve";
  std::optional<std::string> methods, seeds, hidden, gair_alphas;
  std::optional<int> steps, shots, negatives;
  std::optional<int64_t> max_identity;
  int64_t min_identity = 0;
  bool no_verify = false;
};

int classify(Options& o) {
  eval::ClassifyOptions c;
  c.df2 = o.eval.df2;
  c.split = o.eval.split;
  if (o.methods) c.methods = eval::parse_names(*o.methods, eval::classify_methods(), "methods");
  if (o.seeds) c.seeds = eval::parse_seeds(*o.seeds);
  if (o.hidden) c.hidden = eval::parse_names(*o.hidden, {}, "hidden");
  if (o.shots) c.shots = *o.shots;
  if (o.negatives) c.negatives = *o.negatives;
  c.min_identity = o.min_identity;
  // The tuning set has no upper bound unless one is given: the default 5000 is the support's.
  c.max_identity = o.max_identity ? *o.max_identity : (o.min_identity > 0 ? 0 : c.max_identity);
  if (!o.common.config.empty()) c.learn = token::read_learn_config(o.common.config, eval::method_base_config());
  if (o.steps) c.learn.steps = *o.steps;
  c.out = o.eval.out;
  c.cache_dir = o.eval.cache_dir;
  c.threads = o.common.threads;
  c.progress = o.common.verbosity() >= 0;
  token::validate(c.learn);
  bool inversion = false;
  for (const auto& m : c.methods) {
    inversion = inversion || (eval::is_learned(m) && eval::method_config(m, c.learn).lambda_inv > 0);
  }
  model::Bundle bundle = tool::load_bundle(o.common, !o.no_verify, inversion);
  c.stop = tool::catch_sigint();
  const eval::EvalSummary s = eval::run_classification(bundle, c);
  tool::release_sigint();
  if (s.interrupted) {
    std::fprintf(stderr, "interrupted while learning; run the same command to resume\n");
    return 130;
  }
  spdlog::info("{} units ({} resumed) in {:.1f} s; table in {}/table.md", s.units_done, s.units_resumed, s.seconds, c.out);
  return 0;
}

int run(Options& o) {
  if (o.task == "classify") return classify(o);
  if (o.task != "retrieve") throw bad_input("unknown task \"" + o.task + "\"").key("task").expected("retrieve or classify");
  eval::EvalOptions& e = o.eval;
  if (o.max_identity) throw bad_input("--max-identity is a classify option").key("max_identity").expected("--task classify");
  e.min_identity = o.min_identity;
  if (o.methods) e.methods = eval::parse_methods(*o.methods);
  if (o.seeds) e.seeds = eval::parse_seeds(*o.seeds);
  if (o.shots) e.shots = *o.shots;
  if (o.negatives) e.negatives = *o.negatives;
  if (!o.common.config.empty()) e.learn = token::read_learn_config(o.common.config, eval::method_base_config());
  if (o.steps) e.learn.steps = *o.steps;
  if (o.common.seed) e.subset_seed = *o.common.seed;
  if (o.gair_alphas) e.gair.alphas = gair::parse_alphas(*o.gair_alphas);
  e.threads = o.common.threads;
  e.progress = o.common.verbosity() >= 0;
  token::validate(e.learn);

  bool learned = false, inversion = false, renders = false;
  for (const auto& m : e.methods) {
    renders = renders || m == "gair";
    if (!eval::is_learned(m)) continue;
    learned = true;
    inversion = inversion || eval::method_config(m, e.learn).lambda_inv > 0;
  }
  model::Bundle bundle = tool::load_bundle(o.common, !o.no_verify, (learned && inversion) || renders);

  e.stop = tool::catch_sigint();
  const eval::EvalSummary s = eval::run_retrieval(bundle, e);
  tool::release_sigint();
  if (s.interrupted) {
    std::fprintf(stderr, "interrupted: %zu of %zu (concept, seed) units done; run the same command to resume\n",
                 s.units_done, s.units_total);
    return 130;
  }
  spdlog::info("{} units ({} resumed) in {:.1f} s; tables in {}/table.md", s.units_done, s.units_resumed, s.seconds,
               e.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Retrieval evaluation (MRR, Recall@K) of every method on a DeepFashion2-layout split.",
                        [&](CLI::App& app) {
    Options o;
    eval::EvalOptions& e = o.eval;
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag overrides
    tool::add_common_options(app, o.common);
    app.add_option("--df2", e.df2, "DeepFashion2-layout root (annos/ and image/ per split)")->required()->type_name("ROOT");
    app.add_option("--split", e.split, "split to evaluate")->capture_default_str();
    app.add_option("--task", o.task, "retrieve (MRR over the split's shop gallery) | classify (hidden categories, FashionWorld)")
        ->capture_default_str();
    app.add_option("--methods", o.methods, "comma-separated methods (retrieve, default " + join(eval::default_methods(), ",") +
                                               "; also gair, gair-fixed with --composition; classify: " +
                                               join(eval::classify_methods(), ",") + ")");
    app.add_option("--shots", o.shots, "support-set size k (retrieve: user crops per concept, default " +
                                           std::to_string(eval::EvalOptions{}.shots) + "; classify: train identities, default " +
                                           std::to_string(eval::ClassifyOptions{}.shots) + ")");
    app.add_option("--hidden", o.hidden, "classify: hidden categories (default: world.json's)");
    app.add_option("--max-identity", o.max_identity, "classify: train identities the support may use (0: all; the rest "
                                                     "is the tuning set; default " +
                                                         std::to_string(eval::ClassifyOptions{}.max_identity) +
                                                         ", 0 with --min-identity)");
    app.add_option("--min-identity", o.min_identity,
                   "only identities with pair_id >= N (FashionWorld: --split train --min-identity 5001, the tuning "
                   "identities); retrieve: concepts and gallery; classify: support, negatives and the classified items, "
                   "each unit leaving out the identities it learned from")
        ->capture_default_str()->type_name("N");
    app.add_option("--max-concepts", e.max_concepts, "seeded subset of the eligible concepts (0: all; subset seed --seed)")
        ->capture_default_str();
    app.add_option("--seeds", o.seeds, "comma-separated run seeds (support set and learning; retrieve default 0, classify 0,1,2)");
    app.add_option("--out", e.out, "output folder (resumed when it holds a run of the same settings)")
        ->required()->type_name("DIR");
    app.add_option("--cache-dir", e.cache_dir, "where the gallery store lives (default: OUT/gallery)")->type_name("DIR");
    app.add_flag("--composition", e.composition, "also the colour-swap queries (FashionWorld)");
    app.add_option("--negatives", o.negatives, "negative crops per token for the classification loss (retrieve default " +
                                                   std::to_string(eval::EvalOptions{}.negatives) + ", classify " +
                                                   std::to_string(eval::ClassifyOptions{}.negatives) + ")");
    app.add_option("--steps", o.steps, "learning steps (overrides --config; default " +
                                           std::to_string(token::LearnConfig{}.steps) + ")");
    app.add_option("--gair-base", e.gair.base, "GAIR rows: the learned method whose composition query they correct "
                                               "(default: the last learned method listed)")->type_name("METHOD");
    app.add_option("--gair-alphas", o.gair_alphas, "GAIR rows: the alpha grid (default " + join_numbers(eval::EvalOptions{}.gair.alphas) + ")")->type_name("LIST");
    app.add_option("--gair-n", e.gair.n, "gair: images rendered per alpha")->capture_default_str();
    app.add_option("--gair-steps", e.gair.steps, "gair: DDIM steps per render")->capture_default_str();
    app.add_option("--gair-beta", e.gair.beta, "gair: weight of the renders' mean feature fused into the query")
        ->capture_default_str();
    app.add_option("--gair-tune", e.gair.tune_concepts, "gair-fixed: concepts its alpha is tuned on")->capture_default_str();
    app.add_option("--gair-tune-split", e.gair.tune_split, "gair-fixed: split of the tuning concepts")->capture_default_str();
    app.add_option("--gair-tune-min-identity", e.gair.tune_min_identity,
                   "gair-fixed: tuning concepts and gallery are the pair_ids >= this (FashionWorld train: 5001-6000)")
        ->capture_default_str();
    app.add_option("--bootstrap", e.bootstrap_resamples, "bootstrap resamples of the intervals")->capture_default_str();
    app.add_flag("--no-verify", o.no_verify, "skip the bundle's sha256 check");
    tool::parse(app, argc, argv, o.common);
    return run(o);
  });
}
