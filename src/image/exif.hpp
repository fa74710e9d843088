// Private to src/image: EXIF orientation (1..8) of JPEG, PNG and WebP bytes, and applying it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ctok/image/image.hpp"

namespace ctok::image::detail {

// The EXIF orientation tag, or 1 (upright) when absent or unreadable.
int exif_orientation(const uint8_t* data, std::size_t size);
// The upright picture for stored pixels with the given orientation.
Image apply_orientation(const Image& stored, int orientation);

}  // namespace ctok::image::detail
