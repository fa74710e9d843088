#include "ctok/render/render.hpp"

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
#include <type_traits>

#include "ctok/core/error.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/core/version.hpp"
#include "ctok/model/clip.hpp"

namespace ctok::render {

using model::Bundle;
using model::Manifest;

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
  model::validate(static_cast<const model::GenerateOptions&>(o), bundle);
  if (o.cols < 0) throw bad_input("cols must be >= 0").key("cols").found(std::to_string(o.cols));
  if (o.scale < 0 || o.scale > 16) {
    throw bad_input("scale out of range").key("scale").expected("0 (auto) .. 16").found(std::to_string(o.scale));
  }
}

RenderOptions render_options_from_json(const nlohmann::json& j, const std::string& where, RenderOptions o) {
  std::vector<std::string> keys;
  for_each_render_field([&](const char* key, auto, const char*) { keys.emplace_back(key); });
  json::check_keys(j, keys, where);
  for_each_render_field([&](const char* key, auto member, const char*) {
    auto& field = o.*member;
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_enum_v<T>) {
      if (auto s = json::find<std::string>(j, key, where)) {
        try {
          field = model::parse_enum<T>(*s);
        } catch (Error& e) {
          e.file(where);
          throw;
        }
      }
    } else {
      field = json::optional<T>(j, key, where, field);
    }
  });
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

RenderResult render(const Bundle& bundle, const model::TokenVectors& tokens, const RenderOptions& o,
                    const model::StepCallback& on_step) {
  validate(o, bundle);
  const auto t0 = std::chrono::steady_clock::now();
  // Tokenised here once: the record says how many tokens each prompt lost to the context.
  const model::ClipModel clip(bundle);
  const model::PromptBatch prompts = clip.tokenize(o.prompts, tokens);
  const model::PromptBatch negative = clip.tokenize({o.negative}, tokens);
  for (const auto& [name, v] : tokens) {
    if (!prompts.token_lengths.count(name) && !negative.token_lengths.count(name)) {
      spdlog::warn("token {} is loaded but no prompt uses it", name);
    }
  }
  const torch::Tensor cond = clip.encode(prompts, tokens).hidden;
  const torch::Tensor uncond = o.guidance != 1.0 ? clip.encode(negative, tokens).hidden : torch::Tensor();
  const std::vector<image::Image> images = model::to_images(model::generate(bundle, cond, uncond, o, on_step));

  RenderResult result;
  result.truncated = prompts.truncated;
  for (size_t i = 0; i < images.size(); ++i) {
    const int index = static_cast<int>(i) % o.n;
    result.images.push_back({static_cast<int>(i) / o.n, index, o.seed + static_cast<uint64_t>(index), images[i]});
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

nlohmann::json render_record(const Bundle& bundle, const RenderOptions& o, const token::LoadedTokens& tokens,
                             const RenderResult& result, const std::string& png_path) {
  using nlohmann::json;
  const Manifest& m = bundle.manifest();
  json j;
  j["format"] = "ctok-render/1";
  j["ctok_version"] = version_string();
  j["created"] = utc_timestamp();
  j["png"] = fs::path(png_path).filename().string();
  for_each_render_field([&](const char* key, auto member, const char*) {
    const auto& field = o.*member;
    if constexpr (std::is_enum_v<std::decay_t<decltype(field)>>) j[key] = model::enum_name(field);
    else j[key] = field;
  });
  j["cols"] = o.cols > 0 ? o.cols : o.n;  // as laid out
  if (m.diffusion) {
    j["scale"] = effective_scale(o.scale, static_cast<int>(m.diffusion->image_size));
    j["image_size"] = m.diffusion->image_size;
    j["latent_shape"] = {m.diffusion->latent_channels, m.diffusion->latent_size, m.diffusion->latent_size};
  }
  j["device"] = model::device_name(bundle.options().device);
  j["precision"] = model::precision_name(bundle.precision());
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

}  // namespace ctok::render
