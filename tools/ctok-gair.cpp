// ctok-gair: generation-aided image retrieval. Renders a composite query, corrects it over
// an alpha grid, scores each alpha for intent, retrieves, and writes a report a person can
// read to overrule the automatic choice (docs/gair.md).
//
//   ctok-gair --token tokens/x.safetensors --query "a photo of a <x> dress in blue"
//       (--df2 ROOT --split validation | --gallery STORE) [--concept-images DIR]
//       [--alphas 0,0.25,0.5,0.75,1] [--auto | --alpha A] [--beta B] --n 4 --seed 0 --out report/
#include <CLI/CLI.hpp>

#include <spdlog/spdlog.h>

#include <sstream>
#include <string>

#include "common/tool.hpp"
#include "ctok/core/format.hpp"
#include "ctok/gair/report.hpp"
#include "ctok/model/bundle.hpp"

using namespace ctok;

namespace {

std::string rank(const std::optional<int64_t>& r) { return r ? std::to_string(*r) : "-"; }

}  // namespace

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Generation-aided retrieval: visualise, correct, score and retrieve a composite query.",
                        [&](CLI::App& app) {
    tool::CommonOptions common;
    tool::add_common_options(app, common, tool::kAllCommon & ~tool::kConfig);
    gair::GairRequest r;
    gair::GairOptions o;
    model::GenerateOptions& g = o.generate;
    std::string alphas = join_numbers(o.alphas), emphasis = gair::emphasis_name(o.emphasis), target, out, precision = "fp32";
    bool auto_alpha = false, force = false, no_verify = false;
    double alpha = 0;

    app.add_option("--token", r.token_file, "token file (.safetensors)")->required()->check(CLI::ExistingFile);
    app.add_option("--query", r.query, "composite query with the token, e.g. \"a photo of a <x> dress in blue\"")->required();
    auto* o_df2 = app.add_option("--df2", r.df2_root, "gallery: the shop crops of a DeepFashion2-layout split")->type_name("ROOT");
    app.add_option("--split", r.split, "split of --df2")->capture_default_str();
    auto* o_store = app.add_option("--gallery", r.store, "gallery: a store built by ctok-index")->type_name("STORE");
    o_df2->excludes(o_store);
    app.add_option("--concept-images", r.concept_images, "the concept's own images (default: the token's support set)")
        ->type_name("DIR");
    app.add_option("--attributes", r.attributes, "attribute file (default: configs/attributes/<parent>.json)")
        ->type_name("FILE.json");
    app.add_option("--target", target, "ground truth PAIR_ID:STYLE (default: from the token's concept and the query's colour)");
    app.add_option("--alphas", alphas, "correction grid, each in [0, 1]")->capture_default_str();
    auto* o_auto = app.add_flag("--auto", auto_alpha, "pick the alpha automatically (best harmonic mean; the default)");
    auto* o_alpha = app.add_option("--alpha", alpha, "use this alpha in [0, 1] instead of the automatic pick");
    o_auto->excludes(o_alpha);
    app.add_option("--beta", o.beta, "fuse the renders' mean image feature into the query with this weight")
        ->capture_default_str();
    app.add_option("--emphasis", emphasis, "blend the query with: attribute (t(a)) | concept (t(c))")->capture_default_str();
    app.add_option("--n", g.n, "renders per alpha (seeds seed .. seed+n-1)")->capture_default_str();
    app.add_option("--steps", g.steps, "sampler steps")->capture_default_str();
    app.add_option("--guidance", g.guidance, "classifier-free guidance scale (1 = off)")->capture_default_str();
    tool::add_enum_option(app, "--sampler", g.sampler, "sampler");
    app.add_option("--eta", g.eta, "ddim noise (0 deterministic)")->capture_default_str();
    tool::add_enum_option(app, "--spacing", g.spacing, "timestep spacing");
    app.add_option("--negative", g.negative, "negative prompt for guidance (default: the empty prompt)");
    app.add_option("--batch", g.batch, "images per sampler call")->capture_default_str();
    app.add_option("--top-k", o.top_k, "retrieved items shown per alpha")->capture_default_str();
    app.add_option("--chunk", o.chunk, "gallery rows per matrix product")->capture_default_str();
    app.add_option("--precision", precision, "fp32 | bf16 | fp16 (where the device supports it)")->capture_default_str();
    app.add_flag("--no-verify", no_verify, "skip the bundle's sha256 check");
    app.add_option("--out", out, "report folder (index.html, results.json, PNGs)")->required();
    app.add_flag("--force", force, "replace an existing report folder");
    tool::parse(app, argc, argv, common, tool::kAllCommon & ~tool::kConfig);

    o.alphas = gair::parse_alphas(alphas);
    if (o_alpha->count()) o.alpha = alpha;
    o.emphasis = gair::parse_emphasis(emphasis);
    if (common.seed) g.seed = *common.seed;
    if (!target.empty()) r.target = gair::parse_item_key(target, "target");
    r.threads = common.threads;
    gair::validate(o);                      // cheap checks before loading anything
    gair::check_output_dir(out, force);

    model::BundleOptions bo;
    bo.dir = common.bundle_dir();
    bo.device = model::parse_device(common.device);
    bo.precision = model::parse_precision(precision);
    bo.verify_sha256 = !no_verify;
    bo.load_diffusion = true;
    model::Bundle bundle = model::Bundle::load(bo);
    gair::GairRun run = gair::run(bundle, r, o, common.verbosity() < 0);
    gair::write_report(out, run, force);

    const auto& c = run.correction;
    spdlog::info("chosen alpha {} ({}); first true match at rank {} before, {} after; wrote {}/index.html",
                 c.alphas[static_cast<size_t>(c.chosen)].alpha, c.chosen_by, rank(run.search.rank_before),
                 rank(run.search.rank_after), out);
    spdlog::info("seconds: render {:.2f}, score {:.2f}, retrieval {:.3f} (gallery {:.2f}), total {:.2f}",
                 run.seconds.render, run.seconds.score, run.seconds.retrieval, run.seconds.gallery, run.seconds.total);
    return 0;
  });
}
