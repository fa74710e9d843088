// Image module: decode (EXIF, colour modes, errors), crop, PIL-parity resize, CLIP
// preprocessing, batch loading, grids, PNG round trip. Fixtures: tests/data/image, made by
// tests/data/image/make_fixtures.py with Debian's Pillow.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/image/image.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using namespace ctok::image;
using ctok::test::expect_bad_input;
using ctok::test::TempDir;

namespace {

std::string data_path(const std::string& name) { return std::string(CTOK_TEST_DATA) + "/image/" + name; }

Image solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  for (std::size_t i = 0; i < im.rgb.size(); i += 3) im.rgb[i] = r, im.rgb[i + 1] = g, im.rgb[i + 2] = b;
  return im;
}

// Distinct value per pixel and channel.
Image ramp(int w, int h) {
  Image im = solid(w, h, 0, 0, 0);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.rgb[(static_cast<std::size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 7 + y * 31 + c * 80) % 256);
  return im;
}

std::array<int, 3> pixel(const Image& im, int x, int y) {
  const uint8_t* p = &im.rgb[(static_cast<std::size_t>(y) * im.width + x) * 3];
  return {p[0], p[1], p[2]};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Case {
  std::string kind, input, expected;
  int a = 0, b = 0;
};

std::vector<Case> read_cases() {
  std::ifstream in(data_path("cases.txt"));
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    Case c;
    s >> c.kind >> c.input >> c.expected >> c.a;
    if (c.kind == "resize") s >> c.b;
    cases.push_back(c);
  }
  return cases;
}

int max_abs_diff(const Image& a, const Image& b) {
  int m = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) m = std::max(m, std::abs(int(a.rgb[i]) - int(b.rgb[i])));
  return m;
}

}  // namespace

// ---- PIL parity -------------------------------------------------------------------------

TEST(ImageResize, MatchesPillowBicubicExactly) {
  int n = 0;
  for (const Case& c : read_cases()) {
    if (c.kind != "resize") continue;
    ++n;
    SCOPED_TRACE(c.input + " -> " + c.expected);
    const Image in = decode_file(data_path(c.input));
    const Image want = decode_file(data_path(c.expected));
    const Image got = resize_bicubic(in, c.a, c.b);
    ASSERT_EQ(got.width, want.width);
    ASSERT_EQ(got.height, want.height);
    EXPECT_EQ(max_abs_diff(got, want), 0);
  }
  EXPECT_GE(n, 5);
}

TEST(ImageResize, OpenCvStyleNonAntialiasedWouldFail) {
  // Guards the test above: a 2x shrink with PIL's antialiasing differs from plain
  // 4-tap cubic sampling, so matching the fixture proves the wide support is used.
  const Image in = decode_file(data_path("in_64x64.png"));
  const Image half = resize_bicubic(in, 32, 32);
  const Image want = decode_file(data_path("resize_64x64_to_32x32.png"));
  EXPECT_EQ(max_abs_diff(half, want), 0);
  Image point = half;  // nearest sampling at the same centres
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c)
        point.rgb[(y * 32 + x) * 3 + c] = in.rgb[((2 * y + 1) * 64 + 2 * x + 1) * 3 + c];
  EXPECT_GT(max_abs_diff(point, want), 50);
}

TEST(ImageResize, SameSizeIsIdentityAndBadSizesThrow) {
  const Image in = ramp(9, 7);
  EXPECT_EQ(resize_bicubic(in, 9, 7).rgb, in.rgb);
  EXPECT_THROW(resize_bicubic(in, 0, 7), ctok::Error);
  EXPECT_THROW(resize_bicubic(in, 9, -1), ctok::Error);
  EXPECT_THROW(resize_bicubic(Image{}, 4, 4), ctok::Error);
}

TEST(ImagePreprocess, MatchesClipPipelineOnFixtures) {
  // pre_*.png is torchvision Resize(size) + CenterCrop(size) on the PIL image (uint8);
  // preprocess must give exactly (x/255 - mean)/std of it, computed in float32.
  int n = 0;
  for (const Case& c : read_cases()) {
    if (c.kind != "preprocess") continue;
    ++n;
    SCOPED_TRACE(c.input + " size " + std::to_string(c.a));
    const Image in = decode_file(data_path(c.input));
    const Image want = decode_file(data_path(c.expected));
    ASSERT_EQ(want.width, c.a);
    const Image cropped = center_crop(resize_shorter_side(in, c.a), c.a);
    EXPECT_EQ(max_abs_diff(cropped, want), 0);
    const FloatImage px = preprocess(in, {c.a, kClipMean, kClipStd});
    ASSERT_EQ(px.channels, 3);
    ASSERT_EQ(px.height, c.a);
    ASSERT_EQ(px.width, c.a);
    float worst = 0;
    for (int ch = 0; ch < 3; ++ch)
      for (int i = 0; i < c.a * c.a; ++i) {
        const float x = static_cast<float>(want.rgb[i * 3 + ch]) / 255.0f;
        const float v = (x - kClipMean[ch]) / kClipStd[ch];
        worst = std::max(worst, std::abs(v - px.data[ch * c.a * c.a + i]));
      }
    EXPECT_EQ(worst, 0.0f);
  }
  EXPECT_GE(n, 3);
}

TEST(ImagePreprocess, NormalisationOnlyWhenSizeMatches) {
  // 2x2, size 2: no resize, no crop; (x/255 - 0.5)/0.5 by hand.
  Image im = solid(2, 2, 0, 0, 0);
  im.rgb = {0, 255, 51, 102, 153, 204, 255, 0, 127, 128, 1, 254};
  const FloatImage px = preprocess(im, {2, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}});
  ASSERT_EQ(px.data.size(), 12u);
  const std::vector<float> want = {
      -1.0f, -0.2f, 1.0f,          0.003921628f,  // R of the four pixels: 0, 102, 255, 128
      1.0f,  0.2f,  -1.0f,         -0.99215686f,  // G: 255, 153, 0, 1
      -0.6f, 0.6f,  -0.003921628f, 0.99215686f};  // B: 51, 204, 127, 254
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(px.data[i], want[i], 1e-6f) << i;
  // Per-channel mean/std.
  const FloatImage q = preprocess(solid(2, 2, 255, 0, 51), {2, {1.0f, 0.0f, 0.1f}, {2.0f, 0.5f, 0.25f}});
  EXPECT_FLOAT_EQ(q.data[0], 0.0f);
  EXPECT_FLOAT_EQ(q.data[4], 0.0f);
  EXPECT_NEAR(q.data[8], (0.2f - 0.1f) / 0.25f, 1e-6f);
}

TEST(ImagePreprocess, CentreCropUsesRoundHalfToEven) {
  // 4 wide, 7 tall, size 4: no resize, (7 - 4) / 2 = 1.5 -> round -> 2 (Python round).
  const Image im = ramp(4, 7);
  const FloatImage px = preprocess(im, {4, {0, 0, 0}, {1, 1, 1}});
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x)
      EXPECT_FLOAT_EQ(px.data[y * 4 + x], pixel(im, x, y + 2)[0] / 255.0f) << x << "," << y;
  // (9 - 4) / 2 = 2.5 -> 2 (half to even, not 3).
  const Image tall = ramp(4, 9);
  const Image c = center_crop(tall, 4);
  EXPECT_EQ(pixel(c, 0, 0), pixel(tall, 0, 2));
  EXPECT_THROW(center_crop(tall, 5), ctok::Error);
}

TEST(ImagePreprocess, ShorterSideRuleTruncates) {
  // torchvision: int(size * long / short). 640x480 -> 298x224 (298.67 truncated).
  const Image r = resize_shorter_side(solid(640, 480, 1, 2, 3), 224);
  EXPECT_EQ(r.width, 298);
  EXPECT_EQ(r.height, 224);
  const Image t = resize_shorter_side(solid(45, 64, 1, 2, 3), 32);
  EXPECT_EQ(t.width, 32);
  EXPECT_EQ(t.height, 45);  // 45.51 -> 45
  const Image s = resize_shorter_side(solid(5, 5, 1, 2, 3), 5);
  EXPECT_EQ(s.width, 5);
  EXPECT_THROW(preprocess(solid(4, 4, 0, 0, 0), {0}), ctok::Error);
}

// ---- crop ---------------------------------------------------------------------------------

TEST(ImageCrop, ClampsToTheImage) {
  const Image im = ramp(10, 8);
  const Image c = crop(im, {-5, 2, 4, 100});
  EXPECT_EQ(c.width, 4);
  EXPECT_EQ(c.height, 6);
  EXPECT_EQ(pixel(c, 0, 0), pixel(im, 0, 2));
  EXPECT_EQ(pixel(c, 3, 5), pixel(im, 3, 7));
  const Image inner = crop(im, {3, 1, 5, 4});
  EXPECT_EQ(inner.width, 2);
  EXPECT_EQ(inner.height, 3);
  EXPECT_EQ(pixel(inner, 1, 2), pixel(im, 4, 3));
}

TEST(ImageCrop, EmptyAfterClampingIsBadInput) {
  const Image im = ramp(10, 8);
  expect_bad_input([&] { crop(im, {10, 0, 20, 8}); }, "empty");
  expect_bad_input([&] { crop(im, {5, 5, 5, 6}); }, "empty");
  expect_bad_input([&] { crop(im, {-9, -9, -1, -1}); }, "empty");
  expect_bad_input([&] { crop(im, {6, 0, 2, 8}); }, "empty");
}

TEST(ImageCrop, HflipMirrors) {
  const Image im = ramp(5, 3);
  const Image f = hflip(im);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x) EXPECT_EQ(pixel(f, x, y), pixel(im, 4 - x, y));
}

// ---- decode -------------------------------------------------------------------------------

TEST(ImageDecode, ExifOrientationAllEightJpegPngWebp) {
  const auto near = [](std::array<int, 3> p, std::array<int, 3> want, int tol) {
    for (int c = 0; c < 3; ++c)
      if (std::abs(p[c] - want[c]) > tol) return false;
    return true;
  };
  for (const char* ext : {"jpg", "png", "webp"}) {
    const int tol = std::string(ext) == "jpg" ? 40 : 0;  // PNG and WebP fixtures are lossless
    for (int k = 1; k <= 8; ++k) {
      SCOPED_TRACE(std::string(ext) + " orientation " + std::to_string(k));
      const Image im = decode_file(data_path("exif_" + std::to_string(k) + "." + ext));
      ASSERT_EQ(im.width, 24);
      ASSERT_EQ(im.height, 16);
      // Displayed: red top-left, green top-right, blue bottom-left, white bottom-right.
      for (int y : {1, 6})
        for (int x : {1, 10}) {
          EXPECT_TRUE(near(pixel(im, x, y), {255, 0, 0}, tol));
          EXPECT_TRUE(near(pixel(im, x + 12, y), {0, 255, 0}, tol));
          EXPECT_TRUE(near(pixel(im, x, y + 8), {0, 0, 255}, tol));
          EXPECT_TRUE(near(pixel(im, x + 12, y + 8), {255, 255, 255}, tol));
        }
    }
  }
  // The alpha path (IMREAD_UNCHANGED in OpenCV, which ignores EXIF) is oriented too.
  for (Alpha mode : {Alpha::kDrop, Alpha::kCompositeWhite}) {
    const Image im = decode_file(data_path("exif_6_rgba.png"), {mode});
    ASSERT_EQ(im.width, 24);
    ASSERT_EQ(im.height, 16);
    EXPECT_EQ(pixel(im, 2, 2), (std::array<int, 3>{255, 0, 0}));
    EXPECT_EQ(pixel(im, 20, 2), (std::array<int, 3>{0, 255, 0}));
    const int corner = mode == Alpha::kDrop ? 0 : 255;  // transparent black: dropped or on white
    EXPECT_EQ(pixel(im, 20, 13), (std::array<int, 3>{corner, corner, corner}));
  }
}

TEST(ImageDecode, MalformedExifIsIgnored) {
  // Orientation 6 JPEG with its TIFF IFD offset corrupted: decodes, not rotated, no crash.
  std::vector<uint8_t> bytes = read_bytes(data_path("exif_6.jpg"));
  const auto it = std::search(bytes.begin(), bytes.end(), std::begin("Exif"), std::end("Exif") - 1);
  ASSERT_NE(it, bytes.end());
  const std::size_t tiff = static_cast<std::size_t>(it - bytes.begin()) + 6;
  for (std::size_t i = 4; i < 8; ++i) bytes[tiff + i] = 0xFF;  // IFD0 offset far past the end
  const Image im = decode_bytes(bytes.data(), bytes.size(), "bad-exif");
  EXPECT_EQ(im.width, 16);  // stored (unrotated) size
  EXPECT_EQ(im.height, 24);
  // Every prefix of a valid file either decodes or throws bad_input; nothing else.
  const std::vector<uint8_t> good = read_bytes(data_path("exif_6.png"));
  for (std::size_t n = 0; n < good.size(); n += 7) {
    try {
      decode_bytes(good.data(), n, "prefix");
    } catch (const ctok::Error& e) {
      EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
    }
  }
}

TEST(ImageDecode, GrayscaleIsReplicated) {
  const Image im = decode_file(data_path("gray.png"));
  ASSERT_EQ(im.width, 4);
  ASSERT_EQ(im.height, 2);
  const int want[8] = {0, 50, 100, 150, 200, 250, 255, 7};
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(pixel(im, i % 4, i / 4), (std::array<int, 3>{want[i], want[i], want[i]}));
}

TEST(ImageDecode, AlphaDroppedByDefaultCompositedOnRequest) {
  const Image drop = decode_file(data_path("rgba.png"));
  ASSERT_EQ(drop.width, 3);
  EXPECT_EQ(pixel(drop, 0, 0), (std::array<int, 3>{10, 20, 30}));
  EXPECT_EQ(pixel(drop, 1, 0),
            (std::array<int, 3>{10, 20, 30}));  // alpha 0: colour kept, like PIL convert("RGB")
  EXPECT_EQ(pixel(drop, 2, 0), (std::array<int, 3>{200, 100, 0}));
  const Image white = decode_file(data_path("rgba.png"), {Alpha::kCompositeWhite});
  EXPECT_EQ(pixel(white, 0, 0), (std::array<int, 3>{10, 20, 30}));
  EXPECT_EQ(pixel(white, 1, 0), (std::array<int, 3>{255, 255, 255}));
  // alpha 128: (c*128 + 255*127 + 127) / 255
  EXPECT_EQ(pixel(white, 2, 0), (std::array<int, 3>{227, 177, 127}));
  const Image la = decode_file(data_path("gray_alpha.png"));
  EXPECT_EQ(pixel(la, 0, 0), (std::array<int, 3>{100, 100, 100}));
  EXPECT_EQ(pixel(la, 1, 0), (std::array<int, 3>{100, 100, 100}));
  const Image la_white = decode_file(data_path("gray_alpha.png"), {Alpha::kCompositeWhite});
  EXPECT_EQ(pixel(la_white, 0, 0), (std::array<int, 3>{100, 100, 100}));
  EXPECT_EQ(pixel(la_white, 1, 0), (std::array<int, 3>{255, 255, 255}));
  const Image pal = decode_file(data_path("palette.png"));
  EXPECT_EQ(pixel(pal, 0, 0), (std::array<int, 3>{255, 0, 0}));
  EXPECT_EQ(pixel(pal, 1, 0), (std::array<int, 3>{0, 0, 255}));
}

TEST(ImageDecode, TruncatedJpegNamesTheFile) {
  TempDir dir;
  const std::vector<uint8_t> full = encode_jpeg(ramp(64, 48), 90);
  ASSERT_NO_THROW(decode_bytes(full.data(), full.size(), "full"));
  // Cut anywhere (even just the end-of-image marker): libjpeg would return a grey-filled
  // image; we refuse it.
  for (std::size_t keep : {full.size() - 2, full.size() - 50, full.size() / 2, std::size_t{200}}) {
    const std::string path = dir.file("cut_" + std::to_string(keep) + ".jpg");
    write_bytes(path, std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(keep)));
    expect_bad_input([&] { decode_file(path); }, path);
  }
  // Trailing bytes after the end-of-image marker are fine (common in camera files).
  std::vector<uint8_t> padded = full;
  padded.insert(padded.end(), {0, 0, 1, 2});
  EXPECT_EQ(decode_bytes(padded.data(), padded.size(), "padded").width, 64);
}

TEST(ImageDecode, TruncatedPngNamesTheFile) {
  TempDir dir;
  const std::vector<uint8_t> full = encode_png(ramp(64, 48));
  const std::string path = dir.file("cut.png");
  write_bytes(path, std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(full.size() / 2)));
  expect_bad_input([&] { decode_file(path); }, path);
}

TEST(ImageDecode, NotAnImageMissingEmptyDirectory) {
  TempDir dir;
  const std::string text = dir.file("notes.jpg");
  write_bytes(text, {'h', 'e', 'l', 'l', 'o', '\n'});
  expect_bad_input([&] { decode_file(text); }, text);
  const std::string empty = dir.file("empty.png");
  write_bytes(empty, {});
  expect_bad_input([&] { decode_file(empty); }, empty);
  expect_bad_input([&] { decode_file(dir.file("missing.png")); }, dir.file("missing.png"));
  expect_bad_input([&] { decode_file(dir.fs_path().string()); }, dir.fs_path().string());
}

TEST(ImageDecode, Webp) {
  // Lossless WebP with alpha (same pixels as rgba.png).
  const Image drop = decode_file(data_path("rgba.webp"));
  ASSERT_EQ(drop.width, 3);
  EXPECT_EQ(pixel(drop, 0, 0), (std::array<int, 3>{10, 20, 30}));
  EXPECT_EQ(pixel(drop, 2, 0), (std::array<int, 3>{200, 100, 0}));
  const Image white = decode_file(data_path("rgba.webp"), {Alpha::kCompositeWhite});
  EXPECT_EQ(pixel(white, 1, 0), (std::array<int, 3>{255, 255, 255}));
  EXPECT_EQ(pixel(white, 2, 0), (std::array<int, 3>{227, 177, 127}));
}

// ---- PNG ----------------------------------------------------------------------------------

TEST(ImagePng, EncodeDecodeRoundTrip) {
  const Image im = ramp(33, 17);
  const std::vector<uint8_t> png = encode_png(im);
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png[1], 'P');
  const Image back = decode_bytes(png.data(), png.size(), "memory");
  EXPECT_EQ(back.width, 33);
  EXPECT_EQ(back.height, 17);
  EXPECT_EQ(back.rgb, im.rgb);
}

TEST(ImagePng, WritePngIsAtomicAndNamesBadDirectories) {
  TempDir dir;
  const std::string path = dir.file("out.png");
  write_png(path, ramp(8, 8));
  write_png(path, ramp(9, 9));  // replaces
  EXPECT_EQ(decode_file(path).width, 9);
  for (const auto& entry : fs::directory_iterator(dir.fs_path()))  // no temporary left behind
    EXPECT_EQ(entry.path().filename().string(), "out.png");
  const std::string missing_dir = dir.file("no/such/dir");
  expect_bad_input([&] { write_png(missing_dir + "/x.png", ramp(4, 4)); }, missing_dir);
  // A file where the directory should be.
  expect_bad_input([&] { write_png(path + "/x.png", ramp(4, 4)); }, path);
}

// ---- from_float / grid --------------------------------------------------------------------

TEST(ImageFromFloat, MapsRangeClampsAndRounds) {
  FloatImage f;
  f.channels = 3;
  f.height = 1;
  f.width = 4;
  f.data = {-1.0f, 1.0f, 0.0f,  5.0f,   // R
            -2.0f, 0.5f, -0.5f, 0.0f,   // G
            0.0f,  0.0f, 0.0f,  0.0f};  // B
  const Image im = from_float(f, -1.0f, 1.0f);
  EXPECT_EQ(pixel(im, 0, 0), (std::array<int, 3>{0, 0, 128}));
  EXPECT_EQ(pixel(im, 1, 0), (std::array<int, 3>{255, 191, 128}));  // 0.75*255 = 191.25
  EXPECT_EQ(pixel(im, 2, 0), (std::array<int, 3>{128, 64, 128}));   // 127.5 -> 128 (even), 63.75 -> 64
  EXPECT_EQ(pixel(im, 3, 0), (std::array<int, 3>{255, 128, 128}));
  FloatImage gray{1, 1, 2, {0.0f, 1.0f}};
  const Image g = from_float(gray, 0.0f, 1.0f);
  EXPECT_EQ(pixel(g, 1, 0), (std::array<int, 3>{255, 255, 255}));
  EXPECT_THROW(from_float(FloatImage{3, 1, 2, {0.0f}}, 0.0f, 1.0f), ctok::Error);
  EXPECT_THROW(from_float(gray, 1.0f, 1.0f), ctok::Error);
}

TEST(ImageGrid, DimensionsAndPlacement) {
  std::vector<Image> tiles = {solid(10, 8, 255, 0, 0), solid(10, 8, 0, 255, 0), solid(10, 8, 0, 0, 255),
                              solid(20, 16, 0, 0, 0), solid(5, 4, 9, 9, 9)};  // last two get resized
  const Image g = make_grid(tiles, 3, {}, 2);
  EXPECT_EQ(g.width, 3 * 10 + 4 * 2);
  EXPECT_EQ(g.height, 2 * 8 + 3 * 2);
  EXPECT_EQ(pixel(g, 0, 0), (std::array<int, 3>{255, 255, 255}));  // padding is white
  EXPECT_EQ(pixel(g, 2, 2), (std::array<int, 3>{255, 0, 0}));
  EXPECT_EQ(pixel(g, 2 + 12, 2), (std::array<int, 3>{0, 255, 0}));
  EXPECT_EQ(pixel(g, 2 + 24 + 9, 2 + 7), (std::array<int, 3>{0, 0, 255}));
  EXPECT_EQ(pixel(g, 2 + 5, 2 + 10 + 4), (std::array<int, 3>{0, 0, 0}));
  EXPECT_EQ(pixel(g, 2 + 12 + 5, 2 + 10 + 4), (std::array<int, 3>{9, 9, 9}));
  EXPECT_EQ(pixel(g, 2 + 24 + 5, 2 + 10 + 4), (std::array<int, 3>{255, 255, 255}));  // empty slot
  // Fewer tiles than columns: the grid is only as wide as the tiles.
  EXPECT_EQ(make_grid({tiles[0]}, 4, {}, 0).width, 10);
  EXPECT_THROW(make_grid({}, 3), ctok::Error);
  EXPECT_THROW(make_grid(tiles, 0), ctok::Error);
  EXPECT_THROW(make_grid(tiles, 2, {"only one"}), ctok::Error);
}

TEST(ImageGrid, CaptionBandHoldsTheText) {
  const int th = 128, tw = 128, pad = 4;
  std::vector<Image> tiles(4, solid(tw, th, 255, 255, 255));
  const std::vector<std::string> captions = {
      "short", "", "a much longer caption that cannot possibly fit on one line of a small tile at all",
      "supercalifragilisticexpialidocious-without-any-spaces-at-all"};
  const Image g = make_grid(tiles, 2, captions, pad);
  const int band = grid_caption_band(th);
  EXPECT_GE(band, 14);
  EXPECT_EQ(g.width, 2 * tw + 3 * pad);
  EXPECT_EQ(g.height, 2 * (th + band) + 3 * pad);
  // Dark pixels: only inside the bands of captioned tiles, never on tiles or padding.
  auto dark_in = [&](int x0, int y0, int w, int h) {
    int n = 0;
    for (int y = y0; y < y0 + h; ++y)
      for (int x = x0; x < x0 + w; ++x) n += pixel(g, x, y)[0] < 128;
    return n;
  };
  int total_dark = 0;
  for (int y = 0; y < g.height; ++y)
    for (int x = 0; x < g.width; ++x) total_dark += pixel(g, x, y)[0] < 128;
  int in_bands = 0;
  for (int i = 0; i < 4; ++i) {
    const int x0 = pad + (i % 2) * (tw + pad), y0 = pad + (i / 2) * (th + band + pad) + th;
    const int n = dark_in(x0, y0, tw, band);
    in_bands += n;
    if (i == 1)
      EXPECT_EQ(n, 0);
    else
      EXPECT_GT(n, 10) << "caption " << i;
  }
  EXPECT_EQ(total_dark, in_bands);
  // Larger tiles get a taller band.
  EXPECT_GT(grid_caption_band(512), grid_caption_band(128));
}

// ---- batch loading ------------------------------------------------------------------------

TEST(ImageBatch, OrderPreservedWithManyThreads) {
  TempDir dir;
  std::vector<LoadRequest> requests;
  const int n = 64;
  for (int i = 0; i < n; ++i) {
    // Solid colour encodes the index; sizes vary so the work is uneven.
    const Image im = solid(8 + (i % 5) * 7, 8 + (i % 3) * 9, static_cast<uint8_t>(i * 3),
                           static_cast<uint8_t>(255 - i), static_cast<uint8_t>((i * 37) % 256));
    const std::string path = dir.file("img_" + std::to_string(i) + ".png");
    write_png(path, im);
    requests.push_back({path});
  }
  LoadOptions options;
  options.preprocess = {8, {0, 0, 0}, {1, 1, 1}};
  for (int threads : {1, 3, 16, 0}) {
    options.threads = threads;
    const std::vector<FloatImage> out = load_batch(requests, options);
    ASSERT_EQ(out.size(), requests.size());
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(out[i].data.size(), 3u * 8 * 8);
      EXPECT_FLOAT_EQ(out[i].data[0], static_cast<float>(i * 3) / 255.0f) << i << " threads " << threads;
      EXPECT_FLOAT_EQ(out[i].data[64], static_cast<float>(255 - i) / 255.0f);
    }
  }
}

TEST(ImageBatch, BoxAndHflipPerRequest) {
  TempDir dir;
  Image im = solid(8, 4, 0, 0, 0);
  for (int y = 0; y < 4; ++y)
    for (int x = 4; x < 8; ++x) im.rgb[(y * 8 + x) * 3] = 255;  // right half red
  const std::string path = dir.file("half.png");
  write_png(path, im);
  LoadOptions options;
  options.preprocess = {4, {0, 0, 0}, {1, 1, 1}};
  const auto out = load_batch({{path, Box{0, 0, 4, 4}, false},
                               {path, Box{4, 0, 8, 4}, false},
                               {path, Box{2, 0, 6, 4}, false},
                               {path, Box{2, 0, 6, 4}, true}},
                              options);
  EXPECT_FLOAT_EQ(out[0].data[0], 0.0f);
  EXPECT_FLOAT_EQ(out[1].data[0], 1.0f);
  EXPECT_FLOAT_EQ(out[2].data[0], 0.0f);  // left column of the middle box is black
  EXPECT_FLOAT_EQ(out[2].data[3], 1.0f);
  EXPECT_FLOAT_EQ(out[3].data[0], 1.0f);  // flipped
  EXPECT_FLOAT_EQ(out[3].data[3], 0.0f);
}

TEST(ImageBatch, SkipBadRecordsFailures) {
  TempDir dir;
  std::vector<LoadRequest> requests;
  for (int i = 0; i < 20; ++i) {
    const std::string path = dir.file("f" + std::to_string(i) + ".png");
    if (i == 3 || i == 11) {
      write_bytes(path, {'n', 'o', 'p', 'e'});
    } else if (i == 17) {
      // missing file
    } else {
      write_png(path, solid(6, 6, 10, 20, 30));
    }
    requests.push_back({path});
  }
  requests[5].box = Box{100, 100, 200, 200};  // empty after clamping
  LoadOptions options;
  options.preprocess.size = 4;
  options.skip_bad = true;
  options.threads = 4;
  std::vector<LoadFailure> failures;
  const auto out = load_batch(requests, options, &failures);
  ASSERT_EQ(out.size(), 20u);
  ASSERT_EQ(failures.size(), 4u);
  const std::size_t bad[] = {3, 5, 11, 17};
  for (std::size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(failures[k].index, bad[k]);
    EXPECT_EQ(failures[k].path, requests[bad[k]].path);
    EXPECT_NE(failures[k].message.find(requests[bad[k]].path), std::string::npos) << failures[k].message;
    EXPECT_TRUE(out[bad[k]].data.empty());
  }
  EXPECT_EQ(out[4].data.size(), 48u);
}

TEST(ImageBatch, FatalErrorIsTheFirstBadFileDeterministically) {
  TempDir dir;
  std::vector<LoadRequest> requests;
  for (int i = 0; i < 40; ++i) {
    const std::string path = dir.file("g" + std::to_string(i) + ".png");
    if (i == 7 || i == 8 || i == 30)
      write_bytes(path, {'x'});
    else
      write_png(path, solid(6, 6, 1, 2, 3));
    requests.push_back({path});
  }
  LoadOptions options;
  options.preprocess.size = 4;
  for (int threads : {1, 2, 8, 40}) {
    options.threads = threads;
    for (int repeat = 0; repeat < 5; ++repeat)
      expect_bad_input([&] { load_batch(requests, options); }, requests[7].path);
  }
  options.threads = -1;
  EXPECT_THROW(load_batch(requests, options), ctok::Error);
  EXPECT_TRUE(load_batch({}, LoadOptions{}).empty());
}
