// Pillow's ImagingResample (libImaging/Resample.c) for 8-bit RGB with the BICUBIC filter,
// reproduced step by step so the output is bit-identical to PIL's Image.resize(size,
// Image.BICUBIC): per-output-pixel coefficients over a support widened by the downscale
// factor (antialiasing), normalised in double, converted to 22-bit fixed point, horizontal
// pass first into an 8-bit intermediate (rows limited to those the vertical pass reads),
// then the vertical pass; every pass rounds and clamps to 0..255.
#include <cmath>
#include <cstdint>
#include <vector>

#include "cv_util.hpp"

namespace ctok::image {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's PRECISION_BITS
constexpr int kMaxSide = 1 << 16;

double bicubic_filter(double x) {  // a = -0.5, support 2
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;  // per output pixel: first input index, tap count
  std::vector<int32_t> k;   // per output pixel: ksize fixed-point weights
};

// precompute_coeffs + normalize_coeffs_8bpc, with box = [0, in_size).
Coefficients precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<std::size_t>(out_size) * 2);
  c.k.assign(static_cast<std::size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    if (xmax > c.ksize) xmax = c.ksize;  // cannot happen; keeps the writes in bounds
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* k = &c.k[static_cast<std::size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      const double f = v * (1 << kPrecisionBits);
      k[x] = static_cast<int32_t>(v < 0 ? -0.5 + f : 0.5 + f);
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift, as in PIL
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over input rows [row0, row0 + rows) into `out` (rows x out_w).
void horizontal(const uint8_t* in, int in_w, int row0, int rows, const Coefficients& c, int out_w,
                uint8_t* out) {
  constexpr int32_t half = 1 << (kPrecisionBits - 1);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in + static_cast<std::size_t>(row0 + y) * in_w * 3;
    uint8_t* dst = out + static_cast<std::size_t>(y) * out_w * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[2 * xx], n = c.bounds[2 * xx + 1];
      const int32_t* k = &c.k[static_cast<std::size_t>(xx) * c.ksize];
      const uint8_t* p = src + static_cast<std::size_t>(xmin) * 3;
      int32_t s0 = half, s1 = half, s2 = half;
      for (int x = 0; x < n; ++x) {
        s0 += p[3 * x + 0] * k[x];
        s1 += p[3 * x + 1] * k[x];
        s2 += p[3 * x + 2] * k[x];
      }
      dst[3 * xx + 0] = clip8(s0);
      dst[3 * xx + 1] = clip8(s1);
      dst[3 * xx + 2] = clip8(s2);
    }
  }
}

// Vertical pass: `in` has width w; bounds are relative to row `row_offset` of `in`.
void vertical(const uint8_t* in, int w, int row_offset, const Coefficients& c, int out_h, uint8_t* out) {
  constexpr int32_t half = 1 << (kPrecisionBits - 1);
  const std::size_t row_len = static_cast<std::size_t>(w) * 3;
  std::vector<int32_t> acc(row_len);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = c.bounds[2 * yy] - row_offset, n = c.bounds[2 * yy + 1];
    const int32_t* k = &c.k[static_cast<std::size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), half);
    for (int y = 0; y < n; ++y) {  // integer sums: the order does not change the result
      const uint8_t* src = in + static_cast<std::size_t>(ymin + y) * row_len;
      const int32_t ky = k[y];
      for (std::size_t i = 0; i < row_len; ++i) acc[i] += src[i] * ky;
    }
    uint8_t* dst = out + static_cast<std::size_t>(yy) * row_len;
    for (std::size_t i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
  }
}

}  // namespace

Image resize_bicubic(const Image& image, int width, int height) {
  detail::check_image(image, "resize_bicubic");
  if (width <= 0 || height <= 0 || width > kMaxSide || height > kMaxSide)
    throw bad_input("resize_bicubic: output size out of range")
        .expected("1.." + std::to_string(kMaxSide) + " per side")
        .found(std::to_string(width) + "x" + std::to_string(height));
  const bool need_h = width != image.width;
  const bool need_v = height != image.height;
  if (!need_h && !need_v) return image;

  const Coefficients cv = precompute(image.height, height);
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<std::size_t>(width) * height * 3);
  if (need_h) {
    const Coefficients ch = precompute(image.width, width);
    // Only the input rows the vertical pass reads (all of them when there is no vertical pass).
    const int first = need_v ? cv.bounds[0] : 0;
    const int last = need_v ? cv.bounds[2 * height - 2] + cv.bounds[2 * height - 1] : image.height;
    if (!need_v) {
      horizontal(image.rgb.data(), image.width, 0, image.height, ch, width, out.rgb.data());
      return out;
    }
    std::vector<uint8_t> tmp(static_cast<std::size_t>(width) * (last - first) * 3);
    horizontal(image.rgb.data(), image.width, first, last - first, ch, width, tmp.data());
    vertical(tmp.data(), width, first, cv, height, out.rgb.data());
  } else {
    vertical(image.rgb.data(), image.width, 0, cv, height, out.rgb.data());
  }
  return out;
}

}  // namespace ctok::image
