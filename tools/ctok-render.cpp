// ctok-render: render (composite) prompts with custom tokens to a PNG grid + JSON sidecar.
//
//   ctok-render --prompt "a photo of a <tok> dress in blue" --token tokens/x.safetensors
//       [--token ...] [--negative TEXT] --n 4 --steps 50 --guidance 5 --sampler ddim --seed 0 --out grid.png
//   ctok-render --prompts prompts.txt ...     one prompt per line: one grid row each, captioned
#include <CLI/CLI.hpp>

#include <spdlog/spdlog.h>

#include <string>
#include <vector>

#include "common/tool.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/render.hpp"

using namespace ctok;

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Render prompts with custom tokens to a PNG grid and a JSON sidecar.",
                        [&](CLI::App& app) {
    tool::CommonOptions common;
    tool::add_common_options(app, common);
    model::RenderOptions defaults, cli;
    std::vector<std::string> prompts, token_files;
    std::string prompts_file, out, sampler = "ddim", spacing = "trailing", precision = "fp32";
    bool force = false, no_verify = false;

    app.add_option("--prompt", prompts, "prompt (repeatable); custom tokens written as their string, e.g. <my-dress>");
    app.add_option("--prompts", prompts_file, "file with one prompt per line (one grid row each)")
        ->check(CLI::ExistingFile);
    app.add_option("--token", token_files, "token file (.safetensors, repeatable)")->check(CLI::ExistingFile);
    auto* o_neg = app.add_option("--negative", cli.negative, "negative prompt for guidance (default: the empty prompt)");
    auto* o_n = app.add_option("--n", cli.n, "images per prompt (seeds seed .. seed+n-1)")->capture_default_str();
    auto* o_steps = app.add_option("--steps", cli.steps, "sampler steps")->capture_default_str();
    auto* o_guid = app.add_option("--guidance", cli.guidance, "classifier-free guidance scale (1 = off)")
                       ->capture_default_str();
    auto* o_samp = app.add_option("--sampler", sampler, "ddim | euler")->capture_default_str();
    auto* o_eta = app.add_option("--eta", cli.eta, "ddim noise (0 deterministic); euler: > 0 ancestral")
                      ->capture_default_str();
    auto* o_space = app.add_option("--spacing", spacing, "timestep spacing: trailing | leading")->capture_default_str();
    auto* o_batch = app.add_option("--batch", cli.batch, "images per sampler batch")->capture_default_str();
    auto* o_cols = app.add_option("--cols", cli.cols, "grid columns (default: n)");
    auto* o_capt = app.add_flag("--captions", cli.captions, "caption tiles with their prompt (always with several prompts)");
    auto* o_scale = app.add_option("--scale", cli.scale, "enlarge grid tiles x N, nearest (0 = auto: tiles >= 128 px)")
                        ->capture_default_str();
    app.add_option("--precision", precision, "fp32 | bf16 | fp16 (where the device supports it)")->capture_default_str();
    app.add_flag("--no-verify", no_verify, "skip the bundle's sha256 check");
    app.add_option("--out", out, "output PNG; the sidecar is the same name with .json")->required();
    app.add_flag("--force", force, "overwrite existing outputs");
    // A flag given twice: the last one wins (scripts append overrides).
    for (CLI::Option* opt : {o_neg, o_n, o_steps, o_guid, o_samp, o_eta, o_space, o_batch, o_cols, o_scale}) {
      opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
    tool::parse(app, argc, argv, common);

    // Config file first, then the flags given on the command line.
    model::RenderOptions o = defaults;
    if (!common.config.empty()) o = model::render_options_from_json(json::parse_file(common.config), common.config, o);
    if (o_neg->count()) o.negative = cli.negative;
    if (o_n->count()) o.n = cli.n;
    if (o_steps->count()) o.steps = cli.steps;
    if (o_guid->count()) o.guidance = cli.guidance;
    if (o_samp->count()) o.sampler = model::parse_sampler(sampler);
    if (o_eta->count()) o.eta = cli.eta;
    if (o_space->count()) o.spacing = model::parse_spacing(spacing);
    if (o_batch->count()) o.batch = cli.batch;
    if (o_cols->count()) o.cols = cli.cols;
    if (o_capt->count()) o.captions = cli.captions;
    if (o_scale->count()) o.scale = cli.scale;
    if (common.seed) o.seed = *common.seed;
    if (!prompts.empty() || !prompts_file.empty()) o.prompts = prompts;
    if (!prompts_file.empty()) {
      auto more = model::read_prompts_file(prompts_file);
      o.prompts.insert(o.prompts.end(), more.begin(), more.end());
    }
    if (o.prompts.empty()) throw bad_input("give --prompt TEXT or --prompts FILE");

    model::BundleOptions bo;
    bo.dir = common.bundle_dir();
    bo.device = model::parse_device(common.device);
    bo.precision = model::parse_precision(precision);
    bo.verify_sha256 = !no_verify;
    bo.load_image = false;
    bo.load_diffusion = true;
    // Cheap checks before loading anything.
    model::check_output(out, force);
    model::Bundle bundle = model::Bundle::load(bo);
    model::validate(o, bundle);
    model::LoadedTokens tokens = model::load_tokens(token_files, bundle);

    model::RenderResult result;
    {
      ProgressOptions po;
      po.label = "render";
      po.unit = "step";
      const int64_t chunks = (static_cast<int64_t>(o.prompts.size()) * o.n + o.batch - 1) / o.batch;
      Progress progress(chunks * o.steps, po);
      result = model::render(bundle, tokens.vectors, o, [&](int, int) { progress.advance(); });
      progress.finish();
    }
    nlohmann::json record = model::render_record(bundle, o, tokens, result, out);
    record["argv"] = std::vector<std::string>(argv, argv + argc);
    model::write_render(out, result, record);
    spdlog::info("wrote {} ({} image{}, {}x{} px) and {} in {:.2f} s", out, result.images.size(),
                 result.images.size() == 1 ? "" : "s", result.grid.width, result.grid.height,
                 model::sidecar_path(out), result.seconds);
    return 0;
  });
}
