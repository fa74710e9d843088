// Private to src/image: Image <-> cv::Mat and shared checks. OpenCV never leaves src/image.
#pragma once

#include <opencv2/core.hpp>

#include "ctok/core/error.hpp"
#include "ctok/image/image.hpp"

namespace ctok::image::detail {

// Throws bad_input unless the image is non-empty and its buffer matches width x height x 3.
void check_image(const Image& image, const char* what);

// RGB Image -> BGR cv::Mat (a copy; our own loop, so no OpenCV thread pool is involved).
cv::Mat to_bgr_mat(const Image& image);
// 8-bit BGR (3 channels), gray (1) or BGRA (4) Mat -> RGB Image. `composite_white` blends
// 4-channel pixels over white, otherwise alpha is dropped.
Image from_mat(const cv::Mat& mat, bool composite_white);

}  // namespace ctok::image::detail
