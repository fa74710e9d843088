// Crop, flip, CLIP preprocessing (torchvision Resize + CenterCrop + ToTensor + Normalize
// on a PIL image) and float -> 8-bit conversion.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "cv_util.hpp"

namespace ctok::image {

Image crop(const Image& image, const Box& box) {
  detail::check_image(image, "crop");
  const int x1 = std::clamp(box.x1, 0, image.width), x2 = std::clamp(box.x2, 0, image.width);
  const int y1 = std::clamp(box.y1, 0, image.height), y2 = std::clamp(box.y2, 0, image.height);
  if (x2 <= x1 || y2 <= y1)
    throw bad_input("crop box is empty after clamping to the image")
        .expected("a box overlapping 0,0," + std::to_string(image.width) + "," + std::to_string(image.height))
        .found(std::to_string(box.x1) + "," + std::to_string(box.y1) + "," + std::to_string(box.x2) + "," +
               std::to_string(box.y2));
  Image out;
  out.width = x2 - x1;
  out.height = y2 - y1;
  out.rgb.resize(static_cast<std::size_t>(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y)
    std::memcpy(out.rgb.data() + static_cast<std::size_t>(y) * out.width * 3,
                image.rgb.data() + (static_cast<std::size_t>(y1 + y) * image.width + x1) * 3,
                static_cast<std::size_t>(out.width) * 3);
  return out;
}

Image hflip(const Image& image) {
  detail::check_image(image, "hflip");
  Image out = image;
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.rgb.data() + static_cast<std::size_t>(y) * image.width * 3;
    uint8_t* dst = out.rgb.data() + static_cast<std::size_t>(y) * image.width * 3;
    for (int x = 0; x < image.width; ++x) std::memcpy(dst + 3 * x, src + 3 * (image.width - 1 - x), 3);
  }
  return out;
}

Image resize_shorter_side(const Image& image, int size) {
  detail::check_image(image, "resize_shorter_side");
  if (size <= 0) throw bad_input("resize_shorter_side: size must be positive").found(std::to_string(size));
  const int w = image.width, h = image.height;
  const int shorter = std::min(w, h), longer = std::max(w, h);
  // torchvision: int(size * long / short), Python true division then truncation.
  const int new_long = static_cast<int>(static_cast<double>(static_cast<int64_t>(size) * longer) / shorter);
  const int ow = w <= h ? size : new_long;
  const int oh = w <= h ? new_long : size;
  if (ow == w && oh == h) return image;
  return resize_bicubic(image, ow, oh);
}

Image center_crop(const Image& image, int size) {
  detail::check_image(image, "center_crop");
  if (size <= 0 || size > image.width || size > image.height)
    throw bad_input("center_crop: crop size must be positive and fit the image")
        .expected("1.." + std::to_string(std::min(image.width, image.height)))
        .found(std::to_string(size));
  // Python's round() rounds half to even; std::nearbyint does the same in the default mode.
  const int top = static_cast<int>(std::nearbyint((image.height - size) / 2.0));
  const int left = static_cast<int>(std::nearbyint((image.width - size) / 2.0));
  return crop(image, {left, top, left + size, top + size});
}

FloatImage normalize(const Image& image, const std::array<float, 3>& mean, const std::array<float, 3>& std) {
  detail::check_image(image, "normalize");
  for (int c = 0; c < 3; ++c)
    if (!(std[c] != 0.0f) || !std::isfinite(std[c]) || !std::isfinite(mean[c]))
      throw bad_input("normalize: std must be non-zero and mean/std finite")
          .found("mean " + std::to_string(mean[c]) + ", std " + std::to_string(std[c]));
  FloatImage out;
  out.channels = 3;
  out.height = image.height;
  out.width = image.width;
  const std::size_t plane = static_cast<std::size_t>(image.width) * image.height;
  out.data.resize(plane * 3);
  // Same float32 operations as ToTensor (x / 255) then Normalize ((x - mean) / std), so
  // the values are bit-identical to torchvision's, not just close. One table per channel.
  for (int c = 0; c < 3; ++c) {
    float table[256];
    for (int v = 0; v < 256; ++v) table[v] = (static_cast<float>(v) / 255.0f - mean[c]) / std[c];
    float* dst = out.data.data() + plane * c;
    const uint8_t* src = image.rgb.data() + c;
    for (std::size_t i = 0; i < plane; ++i) dst[i] = table[src[3 * i]];
  }
  return out;
}

FloatImage preprocess(const Image& image, const Preprocess& options) {
  return normalize(center_crop(resize_shorter_side(image, options.size), options.size), options.mean,
                   options.std);
}

Image from_float(const FloatImage& image, float lo, float hi) {
  if (image.channels != 1 && image.channels != 3)
    throw bad_input("from_float: channels must be 1 or 3").found(std::to_string(image.channels));
  if (image.width <= 0 || image.height <= 0)
    throw bad_input("from_float: empty image")
        .found(std::to_string(image.width) + "x" + std::to_string(image.height));
  const std::size_t plane = static_cast<std::size_t>(image.width) * image.height;
  if (image.data.size() != plane * image.channels)
    throw bad_input("from_float: data size does not match channels x height x width")
        .expected(std::to_string(plane * image.channels))
        .found(std::to_string(image.data.size()));
  if (!(hi > lo))
    throw bad_input("from_float: need hi > lo").found(std::to_string(lo) + ", " + std::to_string(hi));
  Image out;
  out.width = image.width;
  out.height = image.height;
  out.rgb.resize(plane * 3);
  const float range = hi - lo;
  for (int c = 0; c < 3; ++c) {
    const float* src = image.data.data() + plane * (image.channels == 1 ? 0 : c);
    for (std::size_t i = 0; i < plane; ++i) {
      float v = (src[i] - lo) / range;
      v = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
      out.rgb[3 * i + c] = static_cast<uint8_t>(std::nearbyint(v * 255.0f));
    }
  }
  return out;
}

Image square_tile(const Image& in, int side) {
  Image out;
  out.width = out.height = side;
  out.rgb.assign(static_cast<size_t>(side) * side * 3, 255);
  if (in.width <= 0 || in.height <= 0) return out;
  // Whole-factor enlargement when it fits; otherwise a nearest shrink to fit.
  const int big = std::max(in.width, in.height);
  const double s = big <= side ? static_cast<double>(side / big) : static_cast<double>(side) / big;
  const int w = std::max(1, static_cast<int>(in.width * s)), h = std::max(1, static_cast<int>(in.height * s));
  const int x0 = (side - w) / 2, y0 = (side - h) / 2;
  for (int y = 0; y < h; ++y) {
    const int sy = std::min(in.height - 1, static_cast<int>(y / s));
    for (int x = 0; x < w; ++x) {
      const int sx = std::min(in.width - 1, static_cast<int>(x / s));
      const uint8_t* p = in.rgb.data() + (static_cast<size_t>(sy) * in.width + sx) * 3;
      uint8_t* d = out.rgb.data() + (static_cast<size_t>(y0 + y) * side + x0 + x) * 3;
      d[0] = p[0];
      d[1] = p[1];
      d[2] = p[2];
    }
  }
  return out;
}

}  // namespace ctok::image
