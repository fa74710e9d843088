// ctok-eval: the retrieval evaluation of docs/method.md §5 on a DeepFashion2-layout split,
// every method in one resumable run (docs/results.md).
//
//   ctok-eval --df2 data/fashionworld --split validation --task retrieve
//             --methods text,caption,image-mean,inv,cls,inv+cls,inv+cls+sub --shots 3
//             --max-concepts 100 --seeds 0,1,2 --out runs/eval/
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <optional>

#include "common/stop.hpp"
#include "common/tool.hpp"
#include "ctok/eval/eval.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/learn_config.hpp"

using namespace ctok;

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

struct Options {
  tool::CommonOptions common;
  eval::EvalOptions eval;
  std::string task = "retrieve";
  std::string methods = join(eval::EvalOptions{}.methods);
  std::string seeds = "0";
  std::optional<int> steps;
  bool no_verify = false;
};

int run(Options& o) {
  if (o.task != "retrieve") {
    throw bad_input("unknown task \"" + o.task + "\"").key("task").expected("retrieve (classify: not in this build yet)");
  }
  eval::EvalOptions& e = o.eval;
  e.methods = eval::parse_methods(o.methods);
  e.seeds = eval::parse_seeds(o.seeds);
  if (!o.common.config.empty()) e.learn = token::read_learn_config(o.common.config);
  if (o.steps) e.learn.steps = *o.steps;
  if (o.common.seed) e.subset_seed = *o.common.seed;
  e.threads = o.common.threads;
  e.progress = o.common.verbosity() >= 0;
  token::validate(e.learn);

  bool learned = false, inversion = false;
  for (const auto& m : e.methods) {
    if (!eval::is_learned(m)) continue;
    learned = true;
    inversion = inversion || eval::method_config(m, e.learn).lambda_inv > 0;
  }
  model::BundleOptions bo;
  bo.dir = o.common.bundle_dir();
  bo.device = model::parse_device(o.common.device);
  model::check_device(bo.device);
  bo.verify_sha256 = !o.no_verify;
  bo.load_image = true;
  bo.load_diffusion = learned && inversion;
  model::Bundle bundle = model::Bundle::load(bo);

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
    app.add_option("--task", o.task, "retrieve")->capture_default_str();
    app.add_option("--methods", o.methods, "comma-separated methods")->capture_default_str();
    app.add_option("--shots", e.shots, "support-set size k (user crops per concept)")->capture_default_str();
    app.add_option("--max-concepts", e.max_concepts, "seeded subset of the eligible concepts (0: all; subset seed --seed)")
        ->capture_default_str();
    app.add_option("--seeds", o.seeds, "comma-separated run seeds (support set and learning)")->capture_default_str();
    app.add_option("--out", e.out, "output folder (resumed when it holds a run of the same settings)")
        ->required()->type_name("DIR");
    app.add_option("--cache-dir", e.cache_dir, "where the gallery store lives (default: OUT/gallery)")->type_name("DIR");
    app.add_flag("--composition", e.composition, "also the colour-swap queries (FashionWorld)");
    app.add_option("--negatives", e.negatives, "negative crops per concept for the classification loss")
        ->capture_default_str();
    app.add_option("--steps", o.steps, "learning steps (overrides --config; default " +
                                           std::to_string(token::LearnConfig{}.steps) + ")");
    app.add_option("--bootstrap", e.bootstrap_resamples, "bootstrap resamples of the intervals")->capture_default_str();
    app.add_flag("--no-verify", o.no_verify, "skip the bundle's sha256 check");
    tool::parse(app, argc, argv, o.common);
    return run(o);
  });
}
