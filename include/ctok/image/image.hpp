// Image pipeline: decode (JPEG/PNG/WebP, EXIF orientation honoured), box crop, CLIP-style
// preprocessing (PIL-compatible antialiased bicubic resize of the shorter side, centre
// crop, mean/std normalisation) to float CHW, parallel batch loading, PNG grids.
// OpenCV stays inside src/image; this header is plain C++. docs/image-pipeline.md explains
// each step and how it matches CLIP/PIL.
//
//   ctok::image::Image img = ctok::image::decode_file("x.jpg");
//   ctok::image::FloatImage px = ctok::image::preprocess(img, {32, {.5,.5,.5}, {.5,.5,.5}});
//   auto batch = ctok::image::load_batch({{"a.jpg"}, {"b.png", ctok::image::Box{0, 0, 64, 64}, true}},
//                                        {{224, kClipMean, kClipStd}});
//   ctok::image::write_png("grid.png", ctok::image::make_grid(tiles, 4, captions));
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

// OpenAI CLIP's normalisation constants (Normalize in clip/clip.py).
inline constexpr std::array<float, 3> kClipMean{0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd{0.26862954f, 0.26130258f, 0.27577711f};

struct Preprocess {
  int size = 224;  // output is size x size
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
};

// What to do with an alpha channel (PNG/WebP with transparency).
enum class Alpha {
  kDrop,            // ignore alpha, keep the stored colour: what PIL's convert("RGB") does (CLIP)
  kCompositeWhite,  // blend over white: what a viewer shows
};
struct DecodeOptions {
  Alpha alpha = Alpha::kDrop;  // default matches CLIP's preprocessing
};

// Decodes whatever OpenCV reads (JPEG, PNG, WebP, BMP, ...) to RGB. Grayscale is replicated
// to three channels; EXIF orientation is applied (JPEG, PNG, WebP). Errors are bad_input naming the
// file: unreadable, empty, truncated (JPEG without end-of-image marker, broken PNG), not an image.
Image decode_file(const std::string& path, const DecodeOptions& options = {});
Image decode_bytes(const uint8_t* data, std::size_t size, const std::string& origin,
                   const DecodeOptions& options = {});
Image crop(const Image& image, const Box& box);  // clamped; bad_input if empty after clamping
Image hflip(const Image& image);                 // mirror left-right
// PIL Image.resize(..., BICUBIC) equivalent (antialiased when shrinking), bit-exact with
// Pillow's fixed-point ImagingResample.
Image resize_bicubic(const Image& image, int width, int height);
// torchvision Resize(size) on a PIL image: shorter side to `size`, the other side
// int(size * long / short), PIL bicubic. Returns the input unchanged if it already fits.
Image resize_shorter_side(const Image& image, int size);
// torchvision CenterCrop(size): top = int(round((h - size) / 2.0)) (round half to even);
// bad_input if the image is smaller than size x size.
Image center_crop(const Image& image, int size);
// ToTensor + Normalize: (x / 255 - mean) / std in float32, CHW.
FloatImage normalize(const Image& image, const std::array<float, 3>& mean, const std::array<float, 3>& std);
// Shorter side to size (bicubic), centre crop, (x/255 - mean)/std.
FloatImage preprocess(const Image& image, const Preprocess& options);

struct LoadRequest {
  std::string path;
  std::optional<Box> box;  // crop before preprocessing
  bool hflip = false;      // applied after the crop
};
struct LoadFailure {
  std::size_t index;
  std::string path;
  std::string message;
};
struct LoadOptions {
  Preprocess preprocess;
  int threads = 0;        // 0 = all cores
  bool skip_bad = false;  // false: the first bad file throws bad_input naming it
  DecodeOptions decode;   // alpha handling
};
// Loads in parallel, order preserved. With skip_bad, failed entries are left empty
// (data.size() == 0) and listed in *failures (sorted by index). Without it, the failing
// request with the lowest index is rethrown (deterministic whatever the thread count).
std::vector<FloatImage> load_batch(const std::vector<LoadRequest>& requests, const LoadOptions& options,
                                   std::vector<LoadFailure>* failures = nullptr);

// Float CHW in [lo, hi] (e.g. [-1, 1] from a VAE decoder) -> 8-bit RGB, clamped.
// One channel is replicated to gray; rounding is half to even, like numpy's round.
Image from_float(const FloatImage& image, float lo, float hi);
// Grid of equally sized tiles, `cols` per row, optional caption under each tile
// (captions.empty() or one per image). Tiles of other sizes are resized to the first.
// Size: W = c*tw + (c+1)*padding with c = min(cols, n); H = r*(th + band) + (r+1)*padding
// with r = ceil(n / cols) and band = grid_caption_band(th) if captions are given, else 0.
// Background and caption band are white, captions black, wrapped to two lines and shrunk
// (then cut with "..") to fit the tile width.
Image make_grid(const std::vector<Image>& tiles, int cols, const std::vector<std::string>& captions = {},
                int padding = 2);
int grid_caption_band(int tile_height);
// The image enlarged by the largest whole factor that fits a `side` x `side` square
// (nearest: every pixel a crisp block, so colour and pattern of 32 px images are
// judgeable), centred on a white square of that side. Larger images are shrunk to fit
// (nearest). Report tiles of ctok-gair and ctok-search.
Image square_tile(const Image& image, int side);  // caption band height in pixels for a tile height
void write_png(const std::string& path, const Image& image);  // atomic
std::vector<uint8_t> encode_png(const Image& image);
std::vector<uint8_t> encode_jpeg(const Image& image, int quality = 95);

}  // namespace ctok::image
