#include "cv_util.hpp"

#include <string>

namespace ctok::image::detail {

void check_image(const Image& image, const char* what) {
  if (image.width <= 0 || image.height <= 0)
    throw bad_input(std::string(what) + ": empty image")
        .found(std::to_string(image.width) + "x" + std::to_string(image.height));
  const std::size_t want = static_cast<std::size_t>(image.width) * image.height * 3;
  if (image.rgb.size() != want)
    throw bad_input(std::string(what) + ": pixel buffer does not match width x height x 3")
        .expected(std::to_string(want) + " bytes")
        .found(std::to_string(image.rgb.size()));
}

cv::Mat to_bgr_mat(const Image& image) {
  cv::Mat mat(image.height, image.width, CV_8UC3);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.rgb.data() + static_cast<std::size_t>(y) * image.width * 3;
    uint8_t* dst = mat.ptr<uint8_t>(y);
    for (int x = 0; x < image.width; ++x) {
      dst[3 * x + 0] = src[3 * x + 2];
      dst[3 * x + 1] = src[3 * x + 1];
      dst[3 * x + 2] = src[3 * x + 0];
    }
  }
  return mat;
}

Image from_mat(const cv::Mat& mat, bool composite_white) {
  CV_Assert(mat.depth() == CV_8U);
  const int channels = mat.channels();
  CV_Assert(channels == 1 || channels == 3 || channels == 4);
  Image out;
  out.width = mat.cols;
  out.height = mat.rows;
  out.rgb.resize(static_cast<std::size_t>(out.width) * out.height * 3);
  for (int y = 0; y < mat.rows; ++y) {
    const uint8_t* src = mat.ptr<uint8_t>(y);
    uint8_t* dst = out.rgb.data() + static_cast<std::size_t>(y) * out.width * 3;
    for (int x = 0; x < mat.cols; ++x, dst += 3) {
      if (channels == 1) {
        dst[0] = dst[1] = dst[2] = src[x];
      } else if (channels == 3) {
        const uint8_t* p = src + 3 * x;
        dst[0] = p[2], dst[1] = p[1], dst[2] = p[0];
      } else {
        const uint8_t* p = src + 4 * x;
        if (!composite_white) {
          dst[0] = p[2], dst[1] = p[1], dst[2] = p[0];
        } else {
          // round(c * a / 255 + 255 * (1 - a / 255)) in integers.
          const int a = p[3];
          for (int c = 0; c < 3; ++c)
            dst[c] = static_cast<uint8_t>((p[2 - c] * a + 255 * (255 - a) + 127) / 255);
        }
      }
    }
  }
  return out;
}

}  // namespace ctok::image::detail
