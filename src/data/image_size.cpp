#include "image_size.hpp"

#include <fstream>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/image/image.hpp"
#include "image/exif.hpp"  // the same orientation rule decode_file applies

namespace ctok::data::detail {
namespace {

// Enough for the headers of any ordinary JPEG (EXIF, tables, SOF) or PNG (IHDR, eXIf).
constexpr std::size_t kHeadBytes = 256u << 10;

std::optional<PixelSize> jpeg_size(const std::vector<uint8_t>& d) {
  const std::size_t n = d.size();
  if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return std::nullopt;
  std::size_t i = 2;
  while (i + 4 <= n) {
    if (d[i] != 0xFF) return std::nullopt;
    const uint8_t m = d[i + 1];
    if (m == 0xFF) {
      ++i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // markers without a length
      i += 2;
      continue;
    }
    const std::size_t len = (std::size_t(d[i + 2]) << 8) | d[i + 3];
    if (len < 2) return std::nullopt;
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 9 > n) return std::nullopt;
      const int h = (d[i + 5] << 8) | d[i + 6], w = (d[i + 7] << 8) | d[i + 8];
      if (w <= 0 || h <= 0) return std::nullopt;
      return PixelSize{w, h};
    }
    if (m == 0xDA || m == 0xD9) return std::nullopt;
    i += 2 + len;
  }
  return std::nullopt;
}

std::optional<PixelSize> png_size(const std::vector<uint8_t>& d) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (d.size() < 24 || !std::equal(sig, sig + 8, d.begin()) || std::string(d.begin() + 12, d.begin() + 16) != "IHDR")
    return std::nullopt;
  auto be32 = [&](std::size_t o) {
    return (uint32_t(d[o]) << 24) | (uint32_t(d[o + 1]) << 16) | (uint32_t(d[o + 2]) << 8) | d[o + 3];
  };
  const uint32_t w = be32(16), h = be32(20);
  if (w == 0 || h == 0 || w > (1u << 30) || h > (1u << 30)) return std::nullopt;
  return PixelSize{static_cast<int>(w), static_cast<int>(h)};
}

}  // namespace

PixelSize image_size(const std::string& path) {
  if (!file_exists(path)) throw bad_input("image missing").file(path).expected("an image file next to its annotation");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw bad_input("cannot open the image").file(path);
  std::vector<uint8_t> head(kHeadBytes);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  std::optional<PixelSize> size = jpeg_size(head);
  if (!size) size = png_size(head);
  if (!size) {  // another format, or headers past kHeadBytes: decode it (upright already)
    const image::Image img = image::decode_file(path);
    return PixelSize{img.width, img.height};
  }
  if (image::detail::exif_orientation(head.data(), head.size()) >= 5) std::swap(size->width, size->height);
  return *size;
}

}  // namespace ctok::data::detail
