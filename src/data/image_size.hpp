// Private to src/data: the upright pixel size of an image file from its header, without
// decoding it (the DeepFashion2 reader clamps boxes to it and names missing images).
#pragma once

#include <optional>
#include <string>

namespace ctok::data::detail {

struct PixelSize {
  int width = 0, height = 0;
};

// JPEG (SOFn) and PNG (IHDR) headers, with the EXIF orientation applied (5..8 swap the
// sides, as decode_file does); other formats are decoded in full. bad_input naming the
// file when it is missing or unreadable as an image.
PixelSize image_size(const std::string& path);

}  // namespace ctok::data::detail
