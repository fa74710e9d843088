// PNG/JPEG encoding and atomic PNG writes (core's write_file_atomic: temp file in the same
// directory, fsync, rename).
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "ctok/core/fs.hpp"
#include "cv_util.hpp"

namespace ctok::image {
namespace {

std::vector<uint8_t> encode(const Image& image, const char* ext, const std::vector<int>& params) {
  const cv::Mat bgr = detail::to_bgr_mat(image);
  std::vector<uint8_t> bytes;
  try {
    if (!cv::imencode(ext, bgr, bytes, params)) throw runtime_failure(std::string("cannot encode ") + ext);
  } catch (const cv::Exception& e) {
    throw runtime_failure(std::string("cannot encode ") + ext + ": " + e.msg);
  }
  return bytes;
}

}  // namespace

std::vector<uint8_t> encode_png(const Image& image) {
  detail::check_image(image, "encode_png");
  // Level 3: close to the smallest files at a fraction of level 9's time.
  return encode(image, ".png", {cv::IMWRITE_PNG_COMPRESSION, 3});
}

std::vector<uint8_t> encode_jpeg(const Image& image, int quality) {
  detail::check_image(image, "encode_jpeg");
  if (quality < 1 || quality > 100)
    throw bad_input("encode_jpeg: quality must be 1..100").found(std::to_string(quality));
  return encode(image, ".jpg", {cv::IMWRITE_JPEG_QUALITY, quality});
}

void write_png(const std::string& path, const Image& image) {
  const std::vector<uint8_t> bytes = encode_png(image);
  write_file_atomic(path, bytes);
}

}  // namespace ctok::image
