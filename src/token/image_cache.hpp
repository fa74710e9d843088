// Private to the token module: the learner's images, decoded once, augmented into a fixed
// set of variants, and turned into latents and image features once (in memory, and on disk
// when a cache folder is given, keyed by the bundle's hashes and the file's sha256).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/token/learner.hpp"

namespace ctok::token {

struct ImageCacheRequest {
  std::vector<ImageSource> positives, negatives;
  int max_negatives = 64;      // a seeded subset when there are more
  uint64_t negative_seed = 0;
  int variants = 8;            // 0: plain; odd: flipped (when flip); >= 2: jittered box
  bool flip = true;
  double crop_jitter = 0.08;
  bool want_features = true;   // positives (all variants) and negatives (plain)
  bool want_latents = true;    // positives (all variants)
  std::string cache_dir;
};

struct ImageCache {
  std::vector<std::string> positive_paths;  // usable ones, in request order
  torch::Tensor features;                   // [N * V, F] float32, not normalised (or undefined)
  torch::Tensor latents;                    // [N * V, C, h, w] float32 (or undefined)
  torch::Tensor negative_features;          // [M, F] (or undefined when M == 0)
  std::vector<std::string> negative_labels; // [M], the usable negatives' labels
  std::vector<std::string> negative_paths;  // [M]
  std::string data_sha256;                  // of the usable files' bytes and boxes
};

// The box of variant j for a base box inside an image of the given size (deterministic,
// independent of the learning seed so caches can be shared).
image::Box variant_box(const image::Box& base, int width, int height, int variant, double jitter);
bool variant_flipped(int variant, bool flip);

// bad_input when no positive image can be decoded (every file named with its problem).
ImageCache build_image_cache(const model::Bundle& bundle, model::ClipModel& clip, model::DiffusionModel* diffusion,
                             const ImageCacheRequest& request);

}  // namespace ctok::token
