#include "image_cache.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/random.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/data/concepts.hpp"

namespace ctok::token {
namespace fs = std::filesystem;

image::Box variant_box(const image::Box& base, int width, int height, int variant, double jitter) {
  image::Box b{std::max(0, base.x1), std::max(0, base.y1), std::min(width, base.x2), std::min(height, base.y2)};
  if (b.x2 <= b.x1 || b.y2 <= b.y1) b = {0, 0, width, height};
  if (variant < 2 || jitter <= 0) return b;
  SplitMix64 g(mix_seed(0x6a177e5ull, static_cast<uint64_t>(variant)));
  const double w = b.x2 - b.x1, h = b.y2 - b.y1;
  auto move = [&](double size) { return (2.0 * g.uniform() - 1.0) * jitter * size; };
  const double x1 = b.x1 + move(w), y1 = b.y1 + move(h), x2 = b.x2 + move(w), y2 = b.y2 + move(h);
  image::Box out;
  out.x1 = std::clamp(static_cast<int>(std::lround(x1)), 0, width - 1);
  out.y1 = std::clamp(static_cast<int>(std::lround(y1)), 0, height - 1);
  out.x2 = std::clamp(static_cast<int>(std::lround(x2)), out.x1 + 1, width);
  out.y2 = std::clamp(static_cast<int>(std::lround(y2)), out.y1 + 1, height);
  return out;
}

bool variant_flipped(int variant, bool flip) { return flip && variant % 2 == 1; }

namespace {

struct Decoded {
  std::string path;
  image::Image image;
  image::Box box;
  std::string file_sha;
  std::string label;
};

std::string box_text(const image::Box& b) {
  return std::to_string(b.x1) + "," + std::to_string(b.y1) + "," + std::to_string(b.x2) + "," + std::to_string(b.y2);
}

// Decodes each source; failures are returned as "path: why".
std::vector<Decoded> decode_all(const std::vector<ImageSource>& sources, std::vector<std::string>* failures) {
  std::vector<Decoded> out;
  for (const auto& s : sources) {
    try {
      Decoded d;
      d.path = s.path;
      d.label = s.label;
      d.image = image::decode_file(s.path);
      d.box = s.box ? *s.box : image::Box{0, 0, d.image.width, d.image.height};
      const image::Box clamped = variant_box(d.box, d.image.width, d.image.height, 0, 0);
      if (s.box && (clamped.x2 - clamped.x1 < 1 || s.box->x1 >= d.image.width || s.box->y1 >= d.image.height)) {
        throw bad_input("the box " + box_text(*s.box) + " lies outside the image (" + std::to_string(d.image.width) +
                        "x" + std::to_string(d.image.height) + ")");
      }
      d.file_sha = sha256_file(s.path);
      out.push_back(std::move(d));
    } catch (const Error& e) {
      failures->push_back(s.path + ": " + e.message());
    }
  }
  return out;
}

image::FloatImage prepare(const Decoded& d, int variant, const ImageCacheRequest& r, const image::Preprocess& pre) {
  const image::Box b = variant_box(d.box, d.image.width, d.image.height, variant, r.crop_jitter);
  image::Image im = image::crop(d.image, b);
  if (variant_flipped(variant, r.flip)) im = image::hflip(im);
  return image::preprocess(im, pre);
}

torch::Tensor encode_in_chunks(const std::vector<image::FloatImage>& px, int64_t chunk,
                               const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  std::vector<torch::Tensor> parts;
  for (std::size_t i = 0; i < px.size(); i += static_cast<std::size_t>(chunk)) {
    std::vector<image::FloatImage> part(px.begin() + static_cast<long>(i),
                                        px.begin() + static_cast<long>(std::min(px.size(), i + chunk)));
    parts.push_back(fn(model::stack_images(part)).to(torch::kCPU, torch::kFloat32));
  }
  return parts.size() == 1 ? parts[0] : torch::cat(parts);
}

torch::Tensor from_data(const TensorData& t) {
  std::vector<float> v = to_float32(t);
  return torch::from_blob(v.data(), std::vector<int64_t>(t.shape.begin(), t.shape.end()), torch::kFloat32).clone();
}

}  // namespace

ImageCache build_image_cache(const model::Bundle& bundle, model::ClipModel& clip, model::DiffusionModel* diffusion,
                             const ImageCacheRequest& r) {
  ImageCache out;
  const int V = r.variants;
  std::vector<std::string> failures;
  std::vector<Decoded> pos = decode_all(r.positives, &failures);
  if (pos.empty()) {
    std::string list;
    for (std::size_t i = 0; i < failures.size() && i < 20; ++i) list += (i ? "; " : "") + failures[i];
    throw bad_input("none of the " + std::to_string(r.positives.size()) +
                    " concept image(s) could be used; at least one is needed")
        .found(list);
  }
  for (const auto& f : failures) spdlog::warn("skipping an unusable concept image: {}", f);

  // Negatives: a seeded subset when there are more than max_negatives.
  std::vector<ImageSource> neg_sources = r.negatives;
  if (r.max_negatives <= 0) neg_sources.clear();
  if (static_cast<int>(neg_sources.size()) > r.max_negatives && r.max_negatives > 0) {
    std::vector<std::size_t> order(neg_sources.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    SplitMix64 g(mix_seed(r.negative_seed, 0x4e4547ull));
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[g.below(i)]);
    order.resize(static_cast<std::size_t>(r.max_negatives));
    std::sort(order.begin(), order.end());
    std::vector<ImageSource> kept;
    for (auto i : order) kept.push_back(neg_sources[i]);
    neg_sources = kept;
  }
  std::vector<std::string> neg_failures;
  std::vector<Decoded> neg = decode_all(neg_sources, &neg_failures);
  for (const auto& f : neg_failures) spdlog::warn("skipping an unusable negative image: {}", f);

  Sha256 data_hash;
  for (const auto& d : pos) {
    const std::string line = d.file_sha + " " + box_text(d.box) + "\n";
    data_hash.update(line.data(), line.size());
    out.positive_paths.push_back(d.path);
  }
  data_hash.update("negatives\n", 10);
  for (const auto& d : neg) {
    const std::string line = d.file_sha + " " + box_text(d.box) + (d.label.empty() ? "" : " " + d.label) + "\n";
    data_hash.update(line.data(), line.size());
    out.negative_labels.push_back(d.label);
    out.negative_paths.push_back(d.path);
  }
  out.data_sha256 = data_hash.hex_digest();

  const image::Preprocess clip_pre = model::image_preprocess(bundle);
  image::Preprocess vae_pre;
  if (r.want_latents) vae_pre.size = static_cast<int>(diffusion->image_size());
  vae_pre.mean = {0.5f, 0.5f, 0.5f};
  vae_pre.std = {0.5f, 0.5f, 0.5f};

  // Disk cache key parts shared by every image.
  std::string bundle_key = bundle.name() + "|" + bundle.text_encoder_sha256();
  for (const auto& [file, sha] : bundle.manifest().sha256) bundle_key += "|" + file + "=" + sha;
  bundle_key += "|" + std::to_string(clip_pre.size) + "|" + std::to_string(vae_pre.size) + "|" +
                std::to_string(r.flip) + "|" + std::to_string(r.crop_jitter) + "|" + std::to_string(V);

  const int64_t N = static_cast<int64_t>(pos.size());
  std::vector<torch::Tensor> feat_rows(static_cast<std::size_t>(N)), lat_rows(static_cast<std::size_t>(N));
  std::vector<image::FloatImage> clip_px, vae_px;
  std::vector<std::size_t> todo;  // images to compute
  for (std::size_t i = 0; i < pos.size(); ++i) {
    const Decoded& d = pos[i];
    std::string cache_file;
    if (!r.cache_dir.empty()) {
      cache_file = (fs::path(r.cache_dir) / (sha256_hex(bundle_key + "|" + d.file_sha + "|" + box_text(d.box)) +
                                             ".safetensors")).string();
      if (file_exists(cache_file)) {
        try {
          SafetensorsFile f = read_safetensors(cache_file);
          const TensorData* ft = f.find("features");
          const TensorData* lt = f.find("latents");
          const std::vector<int64_t> want_f{V, bundle.image_feature_dim()};
          std::vector<int64_t> want_l{V};
          if (r.want_latents) {
            const auto ls = diffusion->latent_shape();
            want_l.insert(want_l.end(), ls.begin(), ls.end());
          }
          if ((!r.want_features || (ft && ft->shape == want_f)) && (!r.want_latents || (lt && lt->shape == want_l))) {
            torch::Tensor f = r.want_features ? from_data(*ft) : torch::Tensor();
            torch::Tensor l = r.want_latents ? from_data(*lt) : torch::Tensor();
            if ((!f.defined() || torch::isfinite(f).all().item<bool>()) &&
                (!l.defined() || torch::isfinite(l).all().item<bool>())) {
              feat_rows[i] = f;
              lat_rows[i] = l;
              continue;
            }
            spdlog::warn("ignoring a cache file with NaN/Inf values: {}", cache_file);
          }
        } catch (const Error& e) {
          spdlog::warn("ignoring a bad cache file {}: {}", cache_file, e.message());
        }
      }
    }
    todo.push_back(i);
    for (int v = 0; v < V; ++v) {
      if (r.want_features) clip_px.push_back(prepare(d, v, r, clip_pre));
      if (r.want_latents) vae_px.push_back(prepare(d, v, r, vae_pre));
    }
  }
  torch::NoGradGuard no_grad;
  torch::Tensor new_feats, new_lats;
  if (r.want_features && !clip_px.empty()) {
    new_feats = encode_in_chunks(clip_px, 64, [&](const torch::Tensor& x) { return clip.encode_images(x); });
  }
  if (r.want_latents && !vae_px.empty()) {
    new_lats = encode_in_chunks(vae_px, 8, [&](const torch::Tensor& x) { return diffusion->encode(x); });
  }
  for (std::size_t k = 0; k < todo.size(); ++k) {
    const std::size_t i = todo[k];
    const int64_t a = static_cast<int64_t>(k) * V, b = a + V;
    if (new_feats.defined()) feat_rows[i] = new_feats.slice(0, a, b).contiguous();
    if (new_lats.defined()) lat_rows[i] = new_lats.slice(0, a, b).contiguous();
    if (!r.cache_dir.empty()) {
      SafetensorsFile f;
      auto put = [&](const char* name, const torch::Tensor& t) {
        std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
        f.tensors[name] = make_f32(shape, t.data_ptr<float>());
      };
      if (feat_rows[i].defined()) put("features", feat_rows[i]);
      if (lat_rows[i].defined()) put("latents", lat_rows[i]);
      f.metadata["file"] = pos[i].path;
      f.metadata["file_sha256"] = pos[i].file_sha;
      f.metadata["bundle"] = bundle.name();
      try {
        fs::create_directories(r.cache_dir);
        write_safetensors((fs::path(r.cache_dir) / (sha256_hex(bundle_key + "|" + pos[i].file_sha + "|" +
                                                                box_text(pos[i].box)) + ".safetensors")).string(), f);
      } catch (const std::exception& e) {
        spdlog::warn("cannot write the image cache in {}: {}", r.cache_dir, e.what());
      }
    }
  }
  if (r.want_features) out.features = torch::cat(feat_rows);
  if (r.want_latents) out.latents = torch::cat(lat_rows);
  if (r.want_features && !neg.empty()) {
    std::vector<image::FloatImage> px;
    for (const auto& d : neg) px.push_back(prepare(d, 0, r, clip_pre));
    out.negative_features = encode_in_chunks(px, 64, [&](const torch::Tensor& x) { return clip.encode_images(x); });
  }
  return out;
}

}  // namespace ctok::token
