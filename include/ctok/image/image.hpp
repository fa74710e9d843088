// Image pipeline: decode (JPEG/PNG/WebP, EXIF orientation honoured), box crop, CLIP-style
// preprocessing (PIL-compatible antialiased bicubic resize of the shorter side, centre
// crop, mean/std normalisation) to float CHW, parallel batch loading, PNG grids.
// OpenCV stays inside src/image; this header is plain C++.
//
//   ctok::image::Image img = ctok::image::decode_file("x.jpg");
//   ctok::image::FloatImage px = ctok::image::preprocess(img, {32, {.5,.5,.5}, {.5,.5,.5}});
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ctok::image {

struct Image {  // 8-bit RGB, row-major HWC
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

struct FloatImage {  // float32 CHW
  int channels = 3, height = 0, width = 0;
  std::vector<float> data;
};

struct Box {  // pixel box [x1, y1, x2, y2), clamped to the image on use
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

struct Preprocess {
  int size = 224;                              // output is size x size
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
};

Image decode_file(const std::string& path);  // bad_input naming the file on failure
Image decode_bytes(const uint8_t* data, std::size_t size, const std::string& origin);
Image crop(const Image& image, const Box& box);  // clamped; bad_input if empty after clamping
// PIL Image.resize(..., BICUBIC) equivalent (antialiased when shrinking).
Image resize_bicubic(const Image& image, int width, int height);
// Shorter side to size (bicubic), centre crop, (x/255 - mean)/std.
FloatImage preprocess(const Image& image, const Preprocess& options);

struct LoadRequest {
  std::string path;
  std::optional<Box> box;  // crop before preprocessing
  bool hflip = false;
};
struct LoadFailure {
  std::size_t index;
  std::string path;
  std::string message;
};
struct LoadOptions {
  Preprocess preprocess;
  int threads = 0;          // 0 = all cores
  bool skip_bad = false;    // false: the first bad file throws bad_input naming it
};
// Loads in parallel, order preserved. With skip_bad, failed entries are left empty
// (data.size() == 0) and listed in *failures.
std::vector<FloatImage> load_batch(const std::vector<LoadRequest>& requests, const LoadOptions& options,
                                   std::vector<LoadFailure>* failures = nullptr);

// Float CHW in [lo, hi] (e.g. [-1, 1] from a VAE decoder) -> 8-bit RGB, clamped.
Image from_float(const FloatImage& image, float lo, float hi);
// Grid of equally sized tiles, `cols` per row, optional caption under each tile
// (captions.empty() or one per image). Tiles of other sizes are resized to the first.
Image make_grid(const std::vector<Image>& tiles, int cols, const std::vector<std::string>& captions = {},
                int padding = 2);
void write_png(const std::string& path, const Image& image);  // atomic
std::vector<uint8_t> encode_png(const Image& image);

}  // namespace ctok::image
