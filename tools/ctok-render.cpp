// ctok-render: render (composite) prompts with custom tokens to a PNG grid + JSON sidecar.
//
//   ctok-render --prompt "a photo of a <tok> dress in blue" --token tokens/x.safetensors
//       [--token ...] [--negative TEXT] --n 4 --steps 50 --guidance 5 --sampler ddim --seed 0 --out grid.png
//   ctok-render --prompts prompts.txt ...     one prompt per line: one grid row each, captioned
#include <CLI/CLI.hpp>

#include <spdlog/spdlog.h>

#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "common/tool.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/render/render.hpp"

using namespace ctok;

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Render prompts with custom tokens to a PNG grid and a JSON sidecar.",
                        [&](CLI::App& app) {
    tool::CommonOptions common;
    tool::add_common_options(app, common);
    // Flags land in `cli`; after parsing they override the config file field by field.
    render::RenderOptions cli;
    std::map<std::string, CLI::Option*> given;
    std::vector<std::string> token_files;
    std::string prompts_file, out, precision = "fp32";
    bool force = false, no_verify = false;

    app.add_option("--prompt", cli.prompts, "prompt (repeatable); custom tokens written as their string, e.g. <my-dress>");
    app.add_option("--prompts", prompts_file, "file with one prompt per line (one grid row each)")
        ->check(CLI::ExistingFile);
    app.add_option("--token", token_files, "token file (.safetensors, repeatable)")->check(CLI::ExistingFile);
    render::for_each_render_field([&](const char* key, auto member, const char* help) {
      auto& field = cli.*member;
      using T = std::decay_t<decltype(field)>;
      const std::string flag = std::string("--") + key;
      CLI::Option* opt = nullptr;
      if (flag == "--seed") return;  // a common option
      if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        return;  // prompts: --prompt and --prompts above
      } else if constexpr (std::is_same_v<T, bool>) {
        opt = app.add_flag(flag, field, help);
      } else {
        if constexpr (std::is_enum_v<T>) opt = tool::add_enum_option(app, flag, field, help);
        else opt = app.add_option(flag, field, help)->capture_default_str();
        opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a flag given twice: the last wins
      }
      given[key] = opt;
    });
    app.add_option("--precision", precision, "fp32 | bf16 | fp16 (where the device supports it)")->capture_default_str();
    app.add_flag("--no-verify", no_verify, "skip the bundle's sha256 check");
    app.add_option("--out", out, "output PNG; the sidecar is the same name with .json")->required();
    app.add_flag("--force", force, "overwrite existing outputs");
    tool::parse(app, argc, argv, common);

    // Defaults, then the config file, then the flags given on the command line.
    render::RenderOptions o;
    if (!common.config.empty()) o = render::render_options_from_json(json::parse_file(common.config), common.config, o);
    render::for_each_render_field([&](const char* key, auto member, const char*) {
      auto it = given.find(key);
      if (it != given.end() && it->second->count()) o.*member = cli.*member;
    });
    if (common.seed) o.seed = *common.seed;
    if (!cli.prompts.empty() || !prompts_file.empty()) o.prompts = cli.prompts;
    if (!prompts_file.empty()) {
      auto more = render::read_prompts_file(prompts_file);
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
    render::check_output(out, force);
    model::Bundle bundle = model::Bundle::load(bo);
    render::validate(o, bundle);
    const token::LoadedTokens tokens = token::load_tokens(token_files, bundle);

    render::RenderResult result;
    {
      ProgressOptions po;
      po.label = "render";
      po.unit = "step";
      const int64_t chunks = (static_cast<int64_t>(o.prompts.size()) * o.n + o.batch - 1) / o.batch;
      Progress progress(chunks * o.steps, po);
      result = render::render(bundle, tokens.vectors, o, [&](int, int) { progress.advance(); });
      progress.finish();
    }
    nlohmann::json record = render::render_record(bundle, o, tokens, result, out);
    record["argv"] = std::vector<std::string>(argv, argv + argc);
    render::write_render(out, result, record);
    spdlog::info("wrote {} ({} image{}, {}x{} px) and {} in {:.2f} s", out, result.images.size(),
                 result.images.size() == 1 ? "" : "s", result.grid.width, result.grid.height,
                 render::sidecar_path(out), result.seconds);
    return 0;
  });
}
