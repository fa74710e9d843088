// Decoding: bytes are read here (so every error names the file), OpenCV decodes.
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "cv_util.hpp"
#include "exif.hpp"

namespace ctok::image {
namespace {

bool is_jpeg(const uint8_t* d, std::size_t n) {
  return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
}

// libjpeg (and so OpenCV) silently fills a JPEG cut short with grey and returns an image.
// Walk the marker segments and entropy-coded scans and require the end-of-image marker,
// as PIL does (it raises "image file is truncated").
bool jpeg_is_complete(const uint8_t* d, std::size_t n) {
  std::size_t i = 2;  // after SOI
  while (i + 1 < n) {
    if (d[i] != 0xFF) {  // stray bytes between segments: libjpeg skips them with a warning
      ++i;
      continue;
    }
    const uint8_t m = d[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    i += 2;
    if (m == 0xD9) return true;                                        // EOI
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (i + 2 > n) return false;
    const std::size_t len = (static_cast<std::size_t>(d[i]) << 8) | d[i + 1];
    if (len < 2) return false;
    i += len;
    if (m == 0xDA) {  // start of scan: entropy-coded data up to the next real marker
      while (i + 1 < n) {
        if (d[i] == 0xFF) {
          const uint8_t next = d[i + 1];
          if (next != 0x00 && next != 0xFF && !(next >= 0xD0 && next <= 0xD7)) break;
        }
        ++i;
      }
    }
  }
  return false;
}

std::vector<uint8_t> read_image_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw bad_input("no such file").file(path);
  if (fs::is_directory(status)) throw bad_input("is a directory, not an image file").file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw bad_input("cannot open the file for reading").file(path);
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes;
  if (size > 0) {
    bytes.resize(static_cast<std::size_t>(size));
    in.read(reinterpret_cast<char*>(bytes.data()), size);
    if (in.gcount() != size) throw bad_input("cannot read the whole file").file(path);
  } else {  // not seekable (a pipe): read to the end
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) throw bad_input("cannot read the file").file(path);
  }
  return bytes;
}

}  // namespace

Image decode_bytes(const uint8_t* data, std::size_t size, const std::string& origin,
                   const DecodeOptions& options) {
  if (size == 0 || data == nullptr) throw bad_input("empty file, not an image").file(origin);
  const bool jpeg = is_jpeg(data, size);
  if (jpeg && !jpeg_is_complete(data, size))
    throw bad_input("truncated or damaged JPEG (no end-of-image marker)").file(origin);
  // Alpha is only visible with IMREAD_UNCHANGED; JPEG has none, so it always takes the
  // plain path. OpenCV's own EXIF handling is off in both; we apply the orientation
  // ourselves so that every format and alpha mode behave the same (exif.cpp).
  const bool want_alpha = options.alpha == Alpha::kCompositeWhite && !jpeg;
  if (size > static_cast<std::size_t>(INT32_MAX))
    throw bad_input("file too large to decode (over 2 GiB)").file(origin);
  const cv::Mat buffer(1, static_cast<int>(size), CV_8U, const_cast<uint8_t*>(data));
  try {
    cv::Mat mat;
    if (want_alpha) {
      mat = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
      if (!mat.empty() && mat.depth() == CV_16U) {  // keep the high byte, as IMREAD_COLOR does
        cv::Mat m8(mat.rows, mat.cols, CV_MAKETYPE(CV_8U, mat.channels()));
        for (int y = 0; y < mat.rows; ++y) {
          const uint16_t* s = mat.ptr<uint16_t>(y);
          uint8_t* t = m8.ptr<uint8_t>(y);
          for (int x = 0; x < mat.cols * mat.channels(); ++x) t[x] = static_cast<uint8_t>(s[x] >> 8);
        }
        mat = m8;
      }
      if (!mat.empty() && (mat.depth() != CV_8U || mat.channels() == 2))
        mat.release();  // odd format: plain path
    }
    if (mat.empty()) mat = cv::imdecode(buffer, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
    if (mat.empty())
      throw bad_input("not a decodable image (JPEG, PNG, WebP, ...) or the file is damaged").file(origin);
    return detail::apply_orientation(detail::from_mat(mat, options.alpha == Alpha::kCompositeWhite),
                                     detail::exif_orientation(data, size));
  } catch (const cv::Exception& e) {
    throw bad_input("cannot decode image: " + e.msg).file(origin);
  }
}

Image decode_file(const std::string& path, const DecodeOptions& options) {
  const std::vector<uint8_t> bytes = read_image_file(path);
  return decode_bytes(bytes.data(), bytes.size(), path, options);
}

}  // namespace ctok::image
