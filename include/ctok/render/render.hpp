// Rendering, the application layer above model::generate: prompts (with custom tokens)
// -> images -> a PNG grid and a JSON sidecar that records every setting, so any image can
// be reproduced (docs/rendering.md).
//
//   auto tokens = ctok::token::load_tokens({"tokens/x.safetensors"}, bundle);
//   ctok::render::RenderOptions o;
//   o.prompts = {"a photo of a <x> dress in blue"};
//   ctok::render::check_output("grid.png", /*force=*/false);          // fail before the work
//   ctok::render::RenderResult r = ctok::render::render(bundle, tokens.vectors, o);
//   ctok::render::write_render("grid.png", r, ctok::render::render_record(bundle, o, tokens, r, "grid.png"));
//
// Image j of every prompt starts from the noise of seed + j (model::generate), so the rows
// of a multi-prompt grid are comparable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/generate.hpp"
#include "ctok/token/load_tokens.hpp"

namespace ctok::render {

// The sampler settings (model::GenerateOptions) plus the grid's.
struct RenderOptions : model::GenerateOptions {
  std::vector<std::string> prompts;  // one grid row each
  int cols = 0;                      // grid columns; 0: n
  bool captions = false;             // caption every tile with its prompt (always with several prompts)
  int scale = 0;                     // grid tiles enlarged x scale (nearest); 0: auto, tiles >= 128 px
};

// Every field once: its key (JSON configs, the sidecar; the tool's flag is --key), the
// member and the help text. Readers, writers and the tool's options all use this table.
template <typename F>
void for_each_render_field(F&& f) {
  f("prompts", &RenderOptions::prompts, "prompts, one grid row each");
  f("negative", &RenderOptions::negative, "negative prompt for guidance (default: the empty prompt)");
  f("n", &RenderOptions::n, "images per prompt (seeds seed .. seed+n-1)");
  f("steps", &RenderOptions::steps, "sampler steps");
  f("guidance", &RenderOptions::guidance, "classifier-free guidance scale (1 = off)");
  f("sampler", &RenderOptions::sampler, "sampler");
  f("eta", &RenderOptions::eta, "ddim noise (0 deterministic); euler: > 0 ancestral");
  f("spacing", &RenderOptions::spacing, "timestep spacing");
  f("seed", &RenderOptions::seed, "first seed");
  f("batch", &RenderOptions::batch, "images per sampler batch");
  f("cols", &RenderOptions::cols, "grid columns (0: n)");
  f("captions", &RenderOptions::captions, "caption tiles with their prompt (always with several prompts)");
  f("scale", &RenderOptions::scale, "enlarge grid tiles x N, nearest (0 = auto: tiles >= 128 px)");
}

// The tile enlargement `scale` gives for tiles of `tile_px` (auto: the smallest factor that
// makes them at least 128 px, at most 8).
int effective_scale(int scale, int tile_px);

// model::validate plus: no prompts, cols < 0, scale outside 0..16.
void validate(const RenderOptions& options, const model::Bundle& bundle);

// A JSON config with the fields of RenderOptions (the table's keys; sampler and spacing
// as strings); unknown keys and wrong types are bad_input. Fields absent keep `base`.
RenderOptions render_options_from_json(const nlohmann::json& j, const std::string& where, RenderOptions base = {});
// Prompts from a text file, one per line (blank lines skipped); bad_input if none.
std::vector<std::string> read_prompts_file(const std::string& path);

struct RenderedImage {
  int prompt = 0;  // index into RenderOptions::prompts
  int index = 0;   // 0 .. n-1
  uint64_t seed = 0;
  image::Image image;
};

struct RenderResult {
  std::vector<RenderedImage> images;  // prompt-major
  image::Image grid;
  std::vector<int64_t> truncated;     // per prompt: tokens cut to fit the context
  double seconds = 0.0;               // wall time of encoding + sampling + decoding
};

// Called with (sampler steps done, total sampler steps).
RenderResult render(const model::Bundle& bundle, const model::TokenVectors& tokens, const RenderOptions& options,
                    const model::StepCallback& on_step = {});

// The sidecar: every setting, the bundle (name, dir, sha256s), the tokens with their file
// sha256, the seeds of every tile, device, precision, ctok version, time.
nlohmann::json render_record(const model::Bundle& bundle, const RenderOptions& options, const token::LoadedTokens& tokens,
                             const RenderResult& result, const std::string& png_path);

// grid.png -> grid.json
std::string sidecar_path(const std::string& png_path);

// Fails early (bad_input): the output directory cannot be created or written, or the PNG
// or its sidecar exists and `force` is false.
void check_output(const std::string& png_path, bool force);

// Writes the grid PNG and the sidecar, each atomically.
void write_render(const std::string& png_path, const RenderResult& result, const nlohmann::json& record);

}  // namespace ctok::render
