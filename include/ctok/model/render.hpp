// Rendering: prompts (with custom tokens) -> images -> a PNG grid and a JSON sidecar that
// records every setting, so any image can be reproduced (docs/rendering.md).
//
//   auto tokens = ctok::model::load_tokens({"tokens/x.safetensors"}, bundle);
//   ctok::model::RenderOptions o;
//   o.prompts = {"a photo of a <x> dress in blue"};
//   ctok::model::check_output("grid.png", /*force=*/false);          // fail before the work
//   ctok::model::RenderResult r = ctok::model::render(bundle, tokens.vectors, o);
//   ctok::model::write_render("grid.png", r, ctok::model::render_record(bundle, o, tokens, r, "grid.png"));
//
// Image j of every prompt starts from the noise of seed + j (one CPU generator per image),
// so the rows of a multi-prompt grid are comparable, and the same command reproduces the
// same bits on the same machine and build.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/schedule.hpp"

namespace ctok::model {

struct RenderOptions {
  std::vector<std::string> prompts;      // one grid row each
  std::string negative;                  // unconditional prompt for guidance; empty: the empty prompt
  int n = 4;                             // images per prompt, seeds seed .. seed + n - 1
  int steps = 50;                        // sampler steps, 1 .. num_train_timesteps
  double guidance = 5.0;                 // classifier-free guidance scale (1: no unconditional pass)
  Sampler sampler = Sampler::kDdim;      // ddim | euler
  double eta = 0.0;                      // ddim stochasticity; euler: > 0 is Euler-ancestral
  Spacing spacing = Spacing::kTrailing;  // timestep spacing
  uint64_t seed = 0;                     // first seed
  int batch = 8;                         // images per sampler batch (x2 with guidance)
  int cols = 0;                          // grid columns; 0: n
  bool captions = false;                 // caption every tile with its prompt (always with several prompts)
  int scale = 0;                         // grid tiles enlarged x scale (nearest); 0: auto, tiles >= 128 px
};

// The tile enlargement `scale` gives for tiles of `tile_px` (auto: the smallest factor that
// makes them at least 128 px, at most 8).
int effective_scale(int scale, int tile_px);

// bad_input for n < 1, steps outside 1..T, no prompts, batch < 1, eta outside [0, 1], ...
void validate(const RenderOptions& options, const Bundle& bundle);

// A JSON config with the fields of RenderOptions (same names; sampler and spacing as
// strings); unknown keys and wrong types are bad_input. Fields absent keep `base`.
RenderOptions render_options_from_json(const nlohmann::json& j, const std::string& where, RenderOptions base = {});
// Prompts from a text file, one per line (blank lines skipped); bad_input if none.
std::vector<std::string> read_prompts_file(const std::string& path);

struct TokenSource {
  std::string token;       // as written in prompts
  std::string path;        // the file it was read from
  std::string sha256;      // of that file
  int64_t n_vectors = 0;
  std::string bundle;      // bundle name recorded in the token file (may be empty)
};

struct LoadedTokens {
  TokenVectors vectors;               // token -> [n, width] float32 CPU
  std::vector<TokenSource> sources;   // in the order given
};

// Reads token files (ctok-token/1 or diffusers layout). bad_input: width != text.width,
// the same token string in two files, unreadable files. A token learned on another bundle
// (different text encoder sha256) is a warning.
LoadedTokens load_tokens(const std::vector<std::string>& paths, const Bundle& bundle);

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
RenderResult render(const Bundle& bundle, const TokenVectors& tokens, const RenderOptions& options,
                    const StepCallback& on_step = {});

// Decoded images [B, 3, H, W] in [-1, 1] -> 8-bit RGB.
std::vector<image::Image> to_images(const torch::Tensor& decoded);

// The sidecar: every setting, the bundle (name, dir, sha256s), the tokens with their file
// sha256, the seeds of every tile, device, precision, ctok version, time.
nlohmann::json render_record(const Bundle& bundle, const RenderOptions& options, const LoadedTokens& tokens,
                             const RenderResult& result, const std::string& png_path);

// grid.png -> grid.json
std::string sidecar_path(const std::string& png_path);

// Fails early (bad_input): the output directory cannot be created or written, or the PNG
// or its sidecar exists and `force` is false.
void check_output(const std::string& png_path, bool force);

// Writes the grid PNG and the sidecar, each atomically.
void write_render(const std::string& png_path, const RenderResult& result, const nlohmann::json& record);

}  // namespace ctok::model
