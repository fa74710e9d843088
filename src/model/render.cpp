#include "ctok/model/render.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>

#include "ctok/core/error.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/core/version.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/token/token_file.hpp"

namespace ctok::model {

namespace fs = std::filesystem;

int effective_scale(int scale, int tile_px) {
  if (scale > 0) return scale;
  if (tile_px <= 0) return 1;
  return std::min(8, (128 + tile_px - 1) / tile_px);
}

namespace {

// Each pixel becomes an s x s block (renders of small bundles stay crisp and captionable).
image::Image enlarge_nearest(const image::Image& in, int s) {
  image::Image out;
  out.width = in.width * s;
  out.height = in.height * s;
  out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = in.rgb.data() + static_cast<size_t>(y / s) * in.width * 3;
    uint8_t* dst = out.rgb.data() + static_cast<size_t>(y) * out.width * 3;
    for (int x = 0; x < out.width; ++x) {
      const uint8_t* p = src + static_cast<size_t>(x / s) * 3;
      dst[3 * x] = p[0];
      dst[3 * x + 1] = p[1];
      dst[3 * x + 2] = p[2];
    }
  }
  return out;
}

}  // namespace

void validate(const RenderOptions& o, const Bundle& bundle) {
  if (o.prompts.empty()) throw bad_input("no prompt to render").key("prompt");
  if (o.n < 1) throw bad_input("number of images per prompt must be at least 1").key("n").found(std::to_string(o.n));
  if (o.n > 10000) throw bad_input("too many images per prompt").key("n").expected("<= 10000").found(std::to_string(o.n));
  if (o.batch < 1) throw bad_input("batch must be at least 1").key("batch").found(std::to_string(o.batch));
  if (o.cols < 0) throw bad_input("cols must be >= 0").key("cols").found(std::to_string(o.cols));
  if (o.scale < 0 || o.scale > 16) {
    throw bad_input("scale out of range").key("scale").expected("0 (auto) .. 16").found(std::to_string(o.scale));
  }
  if (!std::isfinite(o.guidance)) throw bad_input("guidance must be a finite number").key("guidance");
  if (!(o.eta >= 0 && o.eta <= 1)) throw bad_input("eta out of range").key("eta").expected("0..1").found(std::to_string(o.eta));
  const int64_t T = bundle.has_diffusion() ? bundle.manifest().diffusion->num_train_timesteps : 1000;
  if (o.steps < 1 || o.steps > T) {
    throw bad_input("number of sampling steps out of range").key("steps")
        .expected("1.." + std::to_string(T)).found(std::to_string(o.steps));
  }
}

RenderOptions render_options_from_json(const nlohmann::json& j, const std::string& where, RenderOptions o) {
  json::check_keys(j, {"prompts", "negative", "n", "steps", "guidance", "sampler", "eta", "spacing", "seed", "batch",
                       "cols", "captions", "scale"},
                   where);
  o.prompts = json::optional<std::vector<std::string>>(j, "prompts", where, o.prompts);
  o.negative = json::optional<std::string>(j, "negative", where, o.negative);
  o.n = json::optional<int>(j, "n", where, o.n);
  o.steps = json::optional<int>(j, "steps", where, o.steps);
  o.guidance = json::optional<double>(j, "guidance", where, o.guidance);
  if (auto s = json::find<std::string>(j, "sampler", where)) o.sampler = parse_sampler(*s);
  o.eta = json::optional<double>(j, "eta", where, o.eta);
  if (auto s = json::find<std::string>(j, "spacing", where)) o.spacing = parse_spacing(*s);
  o.seed = json::optional<uint64_t>(j, "seed", where, o.seed);
  o.batch = json::optional<int>(j, "batch", where, o.batch);
  o.cols = json::optional<int>(j, "cols", where, o.cols);
  o.captions = json::optional<bool>(j, "captions", where, o.captions);
  o.scale = json::optional<int>(j, "scale", where, o.scale);
  return o;
}

std::vector<std::string> read_prompts_file(const std::string& path) {
  const std::string text = read_text_file(path);
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
    start = end + 1;
  }
  if (out.empty()) throw bad_input("prompts file has no prompt (one per line)").file(path);
  return out;
}

LoadedTokens load_tokens(const std::vector<std::string>& paths, const Bundle& bundle) {
  LoadedTokens out;
  for (const auto& path : paths) {
    token::TokenFile t = token::read_token_file(path);
    token::check_width(t, bundle.width());
    if (out.vectors.count(t.token)) {
      std::string first;
      for (const auto& s : out.sources) if (s.token == t.token) first = s.path;
      throw bad_input("token " + t.token + " is defined by two files (" + first + " and " + path + ")").file(path);
    }
    torch::Tensor v = torch::from_blob(t.vectors.data(), {t.n_vectors, t.width}, torch::kFloat32).clone();
    out.vectors[t.token] = v;
    TokenSource s;
    s.token = t.token;
    s.path = path;
    s.sha256 = sha256_file(path);
    s.n_vectors = t.n_vectors;
    s.bundle = t.bundle;
    if (!t.bundle_sha256.empty() && t.bundle_sha256 != bundle.text_encoder_sha256()) {
      spdlog::warn("token {} ({}) was learned on bundle {} with another text encoder; rendering it with {} anyway",
                   t.token, path, t.bundle.empty() ? "?" : t.bundle, bundle.name());
    }
    out.sources.push_back(std::move(s));
  }
  return out;
}

std::vector<image::Image> to_images(const torch::Tensor& decoded) {
  torch::Tensor d = decoded.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  if (d.dim() != 4 || (d.size(1) != 3 && d.size(1) != 1)) {
    throw runtime_failure("decoded images must be [B, 3, H, W]");
  }
  std::vector<image::Image> out;
  const int64_t per = d.size(1) * d.size(2) * d.size(3);
  for (int64_t b = 0; b < d.size(0); ++b) {
    image::FloatImage f;
    f.channels = static_cast<int>(d.size(1));
    f.height = static_cast<int>(d.size(2));
    f.width = static_cast<int>(d.size(3));
    const float* p = d.data_ptr<float>() + b * per;
    f.data.assign(p, p + per);
    out.push_back(image::from_float(f, -1.0f, 1.0f));
  }
  return out;
}

RenderResult render(const Bundle& bundle, const TokenVectors& tokens, const RenderOptions& o, const StepCallback& on_step) {
  validate(o, bundle);
  const auto t0 = std::chrono::steady_clock::now();
  ClipModel clip(bundle);
  DiffusionModel diffusion(bundle);  // bad_input without diffusion models
  clip.check_tokens(tokens);

  PromptBatch prompts = clip.tokenize(o.prompts, tokens);
  TextEncoding cond = clip.encode(prompts, tokens);
  PromptBatch negative = clip.tokenize({o.negative}, tokens);
  torch::Tensor uncond = o.guidance != 1.0 ? clip.encode(negative, tokens).hidden : cond.hidden.slice(0, 0, 1);
  for (const auto& [name, v] : tokens) {
    if (!prompts.token_lengths.count(name) && !negative.token_lengths.count(name)) {
      spdlog::warn("token {} is loaded but no prompt uses it", name);
    }
  }

  struct Item {
    int prompt, index;
    uint64_t seed;
  };
  std::vector<Item> items;
  for (int p = 0; p < static_cast<int>(o.prompts.size()); ++p) {
    for (int j = 0; j < o.n; ++j) items.push_back({p, j, o.seed + static_cast<uint64_t>(j)});
  }
  SampleOptions so;
  so.sampler = o.sampler;
  so.steps = o.steps;
  so.eta = o.eta;
  so.spacing = o.spacing;

  RenderResult result;
  result.truncated = prompts.truncated;
  const int chunks = static_cast<int>((items.size() + o.batch - 1) / o.batch);
  const int total_steps = chunks * o.steps;
  for (int c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * o.batch;
    const size_t end = std::min(items.size(), begin + o.batch);
    std::vector<int64_t> rows;
    std::vector<uint64_t> seeds;
    for (size_t i = begin; i < end; ++i) {
      rows.push_back(items[i].prompt);
      seeds.push_back(items[i].seed);
    }
    torch::Tensor idx = torch::tensor(rows, torch::kLong).to(cond.hidden.device());
    torch::Tensor cond_rows = cond.hidden.index_select(0, idx);
    StepCallback cb;
    if (on_step) cb = [&, c](int done, int) { on_step(c * o.steps + done, total_steps); };
    torch::Tensor latents = diffusion.sample(cond_rows, uncond, o.guidance, so, seeds, cb);
    auto images = to_images(diffusion.decode(latents));
    for (size_t i = begin; i < end; ++i) {
      result.images.push_back({items[i].prompt, items[i].index, items[i].seed, std::move(images[i - begin])});
    }
  }

  std::vector<image::Image> tiles;
  std::vector<std::string> captions;
  const bool caption = o.captions || o.prompts.size() > 1;
  const int s = result.images.empty()
                    ? 1
                    : effective_scale(o.scale, std::min(result.images[0].image.width, result.images[0].image.height));
  for (const auto& im : result.images) {
    tiles.push_back(s > 1 ? enlarge_nearest(im.image, s) : im.image);
    if (caption) captions.push_back(o.prompts[static_cast<size_t>(im.prompt)]);
  }
  result.grid = image::make_grid(tiles, o.cols > 0 ? o.cols : o.n, captions);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

namespace {

nlohmann::json sha_or_null(const Manifest& m, const std::string& file) {
  if (file.empty()) return nullptr;
  auto it = m.sha256.find(file);
  return it == m.sha256.end() ? nlohmann::json(nullptr) : nlohmann::json(it->second);
}

}  // namespace

nlohmann::json render_record(const Bundle& bundle, const RenderOptions& o, const LoadedTokens& tokens,
                             const RenderResult& result, const std::string& png_path) {
  using nlohmann::json;
  const Manifest& m = bundle.manifest();
  json j;
  j["format"] = "ctok-render/1";
  j["ctok_version"] = version_string();
  j["created"] = utc_timestamp();
  j["png"] = fs::path(png_path).filename().string();
  j["prompts"] = o.prompts;
  j["negative"] = o.negative;
  j["n"] = o.n;
  j["steps"] = o.steps;
  j["guidance"] = o.guidance;
  j["sampler"] = sampler_name(o.sampler);
  j["eta"] = o.eta;
  j["spacing"] = spacing_name(o.spacing);
  j["seed"] = o.seed;
  j["batch"] = o.batch;
  j["cols"] = o.cols > 0 ? o.cols : o.n;
  if (m.diffusion) {
    j["scale"] = effective_scale(o.scale, static_cast<int>(m.diffusion->image_size));
    j["image_size"] = m.diffusion->image_size;
    j["latent_shape"] = {m.diffusion->latent_channels, m.diffusion->latent_size, m.diffusion->latent_size};
  }
  j["device"] = device_name(bundle.options().device);
  j["precision"] = precision_name(bundle.precision());
  j["torch_threads"] = torch::get_num_threads();
  json b;
  b["name"] = m.name;
  b["dir"] = bundle.dir();
  b["text_encoder_sha256"] = bundle.text_encoder_sha256();
  if (m.diffusion) {
    b["unet_sha256"] = sha_or_null(m, m.diffusion->unet);
    b["vae_decoder_sha256"] = sha_or_null(m, m.diffusion->vae_decoder);
  }
  b["sha256_verified"] = bundle.options().verify_sha256;
  j["bundle"] = b;
  json toks = json::array();
  for (const auto& s : tokens.sources) {
    toks.push_back({{"token", s.token}, {"file", s.path}, {"sha256", s.sha256}, {"n_vectors", s.n_vectors},
                    {"learned_on", s.bundle}});
  }
  j["tokens"] = toks;
  json images = json::array();
  const int cols = o.cols > 0 ? o.cols : o.n;
  for (size_t i = 0; i < result.images.size(); ++i) {
    const auto& im = result.images[i];
    images.push_back({{"prompt", im.prompt}, {"index", im.index}, {"seed", im.seed},
                      {"row", static_cast<int>(i) / cols}, {"col", static_cast<int>(i) % cols}});
  }
  j["images"] = images;
  j["truncated_tokens"] = result.truncated;
  j["grid_size"] = {result.grid.width, result.grid.height};
  j["seconds"] = result.seconds;
  return j;
}

std::string sidecar_path(const std::string& png_path) {
  fs::path p(png_path);
  if (p.extension() == ".json") return png_path + ".json";
  return p.replace_extension(".json").string();
}

void check_output(const std::string& png_path, bool force) {
  if (png_path.empty()) throw bad_input("no output path").key("out");
  fs::path p(png_path);
  fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw bad_input("output directory cannot be created: " + ec.message()).file(dir.string()).key("out");
  }
  if (!fs::is_directory(dir, ec)) throw bad_input("output directory is not a directory").file(dir.string()).key("out");
  // Probe by creating a file: permission bits alone say nothing for root or read-only mounts.
  const fs::path probe = dir / (".ctok-write-probe-" + std::to_string(::getpid()));
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    throw bad_input(std::string("output directory is not writable: ") + std::strerror(errno))
        .file(dir.string()).key("out");
  }
  ::close(fd);
  ::unlink(probe.c_str());
  if (fs::is_directory(p, ec)) throw bad_input("output path is a directory; give a file name like grid.png").file(png_path).key("out");
  if (!force) {
    for (const std::string& f : {png_path, sidecar_path(png_path)}) {
      if (fs::exists(f, ec)) throw bad_input("output exists (use --force to overwrite)").file(f).key("out");
    }
  }
}

void write_render(const std::string& png_path, const RenderResult& result, const nlohmann::json& record) {
  image::write_png(png_path, result.grid);
  write_file_atomic(sidecar_path(png_path), record.dump(2) + "\n");
}

}  // namespace ctok::model
