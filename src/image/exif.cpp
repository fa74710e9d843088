// EXIF orientation: found in JPEG (APP1 "Exif"), PNG (eXIf chunk) and WebP (EXIF chunk),
// applied by us. OpenCV 4.6 applies it for JPEG and PNG but not WebP, and not at all when
// the alpha channel is requested (IMREAD_UNCHANGED), so doing it here keeps every format
// and alpha mode the same. Every read is bounds-checked; anything malformed means "no
// orientation" (1), never an error: a broken EXIF block should not reject a good picture.
#include "exif.hpp"

#include <cstring>

namespace ctok::image::detail {
namespace {

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
uint32_t le32(const uint8_t* p) {
  return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | p[0];
}

// TIFF structure (optionally after "Exif\0\0"): IFD0's tag 0x0112 (SHORT).
int orientation_from_tiff(const uint8_t* d, std::size_t n) {
  if (n >= 6 && std::memcmp(d, "Exif\0\0", 6) == 0) d += 6, n -= 6;
  if (n < 8) return 1;
  bool little;
  if (d[0] == 'I' && d[1] == 'I')
    little = true;
  else if (d[0] == 'M' && d[1] == 'M')
    little = false;
  else
    return 1;
  auto u16 = [&](std::size_t off) -> uint32_t {
    return little ? (uint32_t(d[off + 1]) << 8 | d[off]) : (uint32_t(d[off]) << 8 | d[off + 1]);
  };
  auto u32 = [&](std::size_t off) -> uint32_t { return little ? le32(d + off) : be32(d + off); };
  if (u16(2) != 42) return 1;
  const std::size_t ifd = u32(4);
  if (ifd > n || n - ifd < 2) return 1;
  const std::size_t count = u16(ifd);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t e = ifd + 2 + 12 * i;
    if (e > n || n - e < 12) return 1;
    if (u16(e) != 0x0112) continue;
    if (u16(e + 2) != 3 || u32(e + 4) < 1) return 1;  // SHORT, at least one value
    const uint32_t v = u16(e + 8);
    return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
  }
  return 1;
}

int jpeg_orientation(const uint8_t* d, std::size_t n) {
  std::size_t i = 2;
  while (i + 4 <= n) {
    if (d[i] != 0xFF) return 1;
    const uint8_t m = d[i + 1];
    if (m == 0xFF) {
      ++i;
      continue;
    }
    if (m == 0xDA || m == 0xD9) return 1;  // image data starts: no EXIF before it
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      i += 2;
      continue;
    }
    const std::size_t len = (std::size_t(d[i + 2]) << 8) | d[i + 3];
    if (len < 2 || i + 2 + len > n) return 1;
    if (m == 0xE1 && len >= 8 && std::memcmp(d + i + 4, "Exif\0\0", 6) == 0)
      return orientation_from_tiff(d + i + 4, len - 2);
    i += 2 + len;
  }
  return 1;
}

int png_orientation(const uint8_t* d, std::size_t n) {
  std::size_t i = 8;
  while (i + 12 <= n) {
    const std::size_t len = be32(d + i);
    if (len > n - i - 12) return 1;
    if (std::memcmp(d + i + 4, "eXIf", 4) == 0) return orientation_from_tiff(d + i + 8, len);
    if (std::memcmp(d + i + 4, "IEND", 4) == 0) return 1;
    i += 12 + len;
  }
  return 1;
}

int webp_orientation(const uint8_t* d, std::size_t n) {
  std::size_t i = 12;
  while (i + 8 <= n) {
    const std::size_t len = le32(d + i + 4);
    if (len > n - i - 8) return 1;
    if (std::memcmp(d + i, "EXIF", 4) == 0) return orientation_from_tiff(d + i + 8, len);
    i += 8 + len + (len & 1);
  }
  return 1;
}

}  // namespace

int exif_orientation(const uint8_t* d, std::size_t n) {
  if (n >= 4 && d[0] == 0xFF && d[1] == 0xD8) return jpeg_orientation(d, n);
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return png_orientation(d, n);
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0)
    return webp_orientation(d, n);
  return 1;
}

Image apply_orientation(const Image& in, int orientation) {
  if (orientation <= 1 || orientation > 8) return in;
  const bool swap = orientation >= 5;  // 5..8 transpose the axes
  Image out;
  out.width = swap ? in.height : in.width;
  out.height = swap ? in.width : in.height;
  out.rgb.resize(in.rgb.size());
  const int W = out.width, H = out.height;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      // Source pixel of displayed (x, y); same mapping as OpenCV's ApplyExifOrientation
      // and Pillow's ImageOps.exif_transpose.
      int sx, sy;
      switch (orientation) {
        case 2:
          sx = W - 1 - x, sy = y;
          break;  // mirror horizontal
        case 3:
          sx = W - 1 - x, sy = H - 1 - y;
          break;  // rotate 180
        case 4:
          sx = x, sy = H - 1 - y;
          break;  // mirror vertical
        case 5:
          sx = y, sy = x;
          break;  // transpose
        case 6:
          sx = y, sy = W - 1 - x;
          break;  // rotate 90 clockwise
        case 7:
          sx = H - 1 - y, sy = W - 1 - x;
          break;  // transverse
        default:
          sx = H - 1 - y, sy = x;
          break;  // 8: rotate 90 counter-clockwise
      }
      std::memcpy(&out.rgb[(std::size_t(y) * W + x) * 3], &in.rgb[(std::size_t(sy) * in.width + sx) * 3], 3);
    }
  return out;
}

}  // namespace ctok::image::detail
