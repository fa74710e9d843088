// Tile grids with optional captions (contact sheets of renders and retrievals).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "cv_util.hpp"

namespace ctok::image {
namespace {

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr double kMinScale = 0.25;  // about 8 px tall: smaller is unreadable

int thickness_for(double scale) { return scale >= 1.2 ? 2 : 1; }

// Height in pixels of one line (ascent + descent) at `scale`.
int line_height(double scale) {
  int baseline = 0;
  const cv::Size s = cv::getTextSize("Ag", kFont, scale, thickness_for(scale), &baseline);
  return s.height + baseline;
}

double scale_for_height(double px) { return std::max(kMinScale, px / line_height(1.0)); }

int text_width(const std::string& text, double scale) {
  int baseline = 0;
  return cv::getTextSize(text, kFont, scale, thickness_for(scale), &baseline).width;
}

// Greedy word wrap into at most `max_lines` lines no wider than `max_w`; false if it does not fit.
bool wrap(const std::string& text, double scale, int max_w, int max_lines, std::vector<std::string>* lines) {
  lines->clear();
  std::istringstream words(text);
  std::string word, line;
  while (words >> word) {
    const std::string candidate = line.empty() ? word : line + " " + word;
    if (text_width(candidate, scale) <= max_w) {
      line = candidate;
      continue;
    }
    if (line.empty()) return false;  // one word wider than the tile
    lines->push_back(line);
    line = word;
    if (text_width(line, scale) > max_w) return false;
  }
  if (!line.empty()) lines->push_back(line);
  return static_cast<int>(lines->size()) <= max_lines;
}

// Last resort at the smallest scale: cut by characters, ending with "..".
std::vector<std::string> cut_to_fit(const std::string& text, double scale, int max_w, int max_lines) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < text.size() && static_cast<int>(lines.size()) < max_lines) {
    const bool last = static_cast<int>(lines.size()) == max_lines - 1;
    std::size_t n = 1;
    while (pos + n <= text.size() && text_width(text.substr(pos, n), scale) <= max_w) ++n;
    --n;
    if (n == 0) break;
    std::string piece = text.substr(pos, n);
    if (last && pos + n < text.size()) {
      while (!piece.empty() && text_width(piece + "..", scale) > max_w) piece.pop_back();
      piece += "..";
    }
    lines.push_back(piece);
    pos += n;
    while (pos < text.size() && text[pos] == ' ') ++pos;
  }
  return lines;
}

// Draws into `band_roi` (the caption band under one tile), so nothing spills outside it.
void draw_caption(cv::Mat band_roi, const std::string& raw) {
  const int w = band_roi.cols, band = band_roi.rows;
  std::string text;
  for (char ch : raw)
    text += (static_cast<unsigned char>(ch) < 32 || static_cast<unsigned char>(ch) > 126) ? '?' : ch;
  if (text.find_first_not_of(' ') == std::string::npos) return;
  const int max_w = std::max(1, w - 4);
  const double one_line = scale_for_height(band * 0.62);
  const double two_lines = scale_for_height(band * 0.45);
  std::vector<std::string> lines;
  double scale = one_line;
  bool fitted = false;
  for (; scale >= two_lines && !fitted; scale *= 0.92) fitted = wrap(text, scale, max_w, 1, &lines);
  if (!fitted)
    for (scale = two_lines; scale >= kMinScale && !fitted; scale *= 0.92)
      fitted = wrap(text, scale, max_w, 2, &lines);
  if (fitted) {
    scale /= 0.92;  // undo the loop's last step
  } else {
    scale = kMinScale;
    lines = cut_to_fit(text, scale, max_w, 2);
  }
  const int thickness = thickness_for(scale);
  const int n = static_cast<int>(lines.size());
  const double slot = static_cast<double>(band) / std::max(1, n);
  for (int i = 0; i < n; ++i) {
    int baseline = 0;
    const cv::Size s = cv::getTextSize(lines[i], kFont, scale, thickness, &baseline);
    const int x = std::max(0, (w - s.width) / 2);
    const int y = static_cast<int>(slot * i + (slot + s.height - baseline) / 2.0);
    cv::putText(band_roi, lines[i], {x, y}, kFont, scale, cv::Scalar(0, 0, 0), thickness, cv::LINE_AA);
  }
}

}  // namespace

int grid_caption_band(int tile_height) {
  return std::clamp(static_cast<int>(std::lround(tile_height * 0.16)), 14, 72);
}

Image make_grid(const std::vector<Image>& tiles, int cols, const std::vector<std::string>& captions,
                int padding) {
  if (tiles.empty()) throw bad_input("make_grid: no tiles");
  if (cols <= 0) throw bad_input("make_grid: cols must be positive").found(std::to_string(cols));
  if (padding < 0) throw bad_input("make_grid: padding must be >= 0").found(std::to_string(padding));
  if (!captions.empty() && captions.size() != tiles.size())
    throw bad_input("make_grid: need no captions or one per tile")
        .expected(std::to_string(tiles.size()))
        .found(std::to_string(captions.size()));
  for (std::size_t i = 0; i < tiles.size(); ++i) detail::check_image(tiles[i], "make_grid");
  const int n = static_cast<int>(tiles.size());
  const int tw = tiles[0].width, th = tiles[0].height;
  const int c = std::min(cols, n), r = (n + cols - 1) / cols;
  const int band = captions.empty() ? 0 : grid_caption_band(th);
  const int64_t W = static_cast<int64_t>(c) * tw + static_cast<int64_t>(c + 1) * padding;
  const int64_t H = static_cast<int64_t>(r) * (th + band) + static_cast<int64_t>(r + 1) * padding;
  if (W > 32767 || H > 32767)
    throw bad_input("make_grid: grid too large")
        .expected("at most 32767 px per side")
        .found(std::to_string(W) + "x" + std::to_string(H));
  Image out;
  out.width = static_cast<int>(W);
  out.height = static_cast<int>(H);
  out.rgb.assign(static_cast<std::size_t>(W) * H * 3, 255);
  cv::Mat canvas(out.height, out.width, CV_8UC3, out.rgb.data());  // RGB; drawing is in black only
  for (int i = 0; i < n; ++i) {
    const Image resized =
        (tiles[i].width == tw && tiles[i].height == th) ? Image{} : resize_bicubic(tiles[i], tw, th);
    const Image& tile = resized.rgb.empty() ? tiles[i] : resized;
    const int x0 = padding + (i % cols) * (tw + padding);
    const int y0 = padding + (i / cols) * (th + band + padding);
    for (int y = 0; y < th; ++y)
      std::memcpy(out.rgb.data() + (static_cast<std::size_t>(y0 + y) * out.width + x0) * 3,
                  tile.rgb.data() + static_cast<std::size_t>(y) * tw * 3, static_cast<std::size_t>(tw) * 3);
    if (band > 0) draw_caption(canvas(cv::Rect(x0, y0 + th, tw, band)), captions[i]);
  }
  return out;
}

}  // namespace ctok::image
