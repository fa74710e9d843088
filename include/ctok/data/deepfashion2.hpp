// DeepFashion2 annotations (FashionWorld writes the same layout, plus a few extra keys).
//
//   ctok::data::Split s = ctok::data::read_split("data/fashionworld", "validation");
//   for (const auto& a : s.annotations)
//     for (const auto& it : a.items) if (it.style > 0) use(a.image_path, it.box, it.category_name);
//
// Layout: <root>/<split>/annos/<stem>.json next to <root>/<split>/image/<stem>.jpg.
// Annotation files are untrusted input: every key is checked for presence and type, values
// for range, unknown keys are refused, and the nesting depth and file size are bounded
// before parsing. Each error is bad_input naming the file and the key.
//
// Real DeepFashion2's quirks are accepted and counted rather than refused: item keys in any
// order mixed with the image-level keys; boxes [x1, y1, x2, y2] that leave the image
// (clamped to it); boxes of zero area, before or after clamping (the item is dropped);
// style-0 items (kept: never a positive, but a shop one stays in the gallery). Split::counts
// says how many of each the reader met, for the report.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ctok/image/image.hpp"

namespace ctok::data {

// Annotation files larger than this are refused before parsing (DeepFashion2's largest is
// well under 1 MB).
inline constexpr std::size_t kMaxAnnotationBytes = 8u << 20;
// Deepest JSON nesting accepted (segmentation lists are depth 3 below the root).
inline constexpr int kMaxAnnotationDepth = 8;
// Largest box coordinate magnitude accepted (pixels); negative ones are clamped to 0.
inline constexpr int kMaxCoordinate = 1 << 16;

struct Item {
  std::string name;           // "item1", "item2", ...
  int category_id = 0;        // >= 1
  std::string category_name;  // non-empty, e.g. "short sleeve top", "sneaker"
  int style = 0;              // 0: not part of a consumer-shop pair (a distractor), else >= 1
  image::Box box;             // bounding_box [x1, y1, x2, y2), x1 < x2, y1 < y2, all >= 0, inside the image
  bool clamped = false;       // the annotated box left the image (or had negative coordinates) and was cut
  int scale = 0, occlusion = 0, zoom_in = 0, viewpoint = 0;  // 0 when absent
  // FashionWorld's extra keys; empty / -1 when absent (real DeepFashion2).
  std::string parent, color, pattern;
  int64_t own_pair_id = -1;
};

struct Annotation {
  std::string anno_path;   // the .json file
  std::string image_path;  // <split>/image/<stem>.jpg (not checked to exist here)
  std::string stem;        // "000001"
  std::string source;      // "shop" | "user"
  int64_t pair_id = 0;     // >= 0
  std::vector<Item> items; // in item order; a dropped item leaves a gap (item1, item3)
  int width = 0, height = 0;  // the image's upright size; 0 when not looked at (parse_annotation)
  int zero_area = 0;          // items dropped because their box has no area (after clamping)
};

// Parses one annotation (text as read from `origin`). Accepted keys: top level "source",
// "pair_id", "item<N>" (N = 1, 2, ... without gaps); items: category_id, category_name,
// style, bounding_box (required), segmentation, landmarks, scale, occlusion, zoom_in,
// viewpoint, parent, color, pattern, own_pair_id (optional). Negative box coordinates are
// clamped to 0; an item whose box is empty is dropped (Annotation::zero_area).
Annotation parse_annotation(const std::string& text, const std::string& origin);
// parse_annotation on the file; with check_image, the image (image_path, by default
// ../image/<stem>.jpg) must exist (bad_input naming it) and boxes are fitted to its size.
Annotation read_annotation(const std::string& anno_path, const std::string& image_path = {},
                           bool check_image = false);
// Clamps every box to [0, width) x [0, height) (Item::clamped) and drops the items left
// without area (Annotation::zero_area); records the size in the annotation.
void fit_boxes(Annotation& annotation, int width, int height);

struct SplitOptions {
  int threads = 0;            // parsing threads; 0: all cores
  bool skip_bad = false;      // false: the first bad annotation (in file order) throws
  bool check_images = true;   // each annotation's image must exist; boxes are clamped to its size
};

// What the reader met, for a report.
struct ReadCounts {
  std::size_t files = 0;         // annotations read
  std::size_t skipped_files = 0; // refused with skip_bad
  std::size_t items = 0;         // items kept
  std::size_t clamped = 0;       // kept items whose box was cut to the image
  std::size_t zero_area = 0;     // items dropped: no area after clamping
  std::size_t style0 = 0;        // kept items with style 0 (never positives)
  std::size_t style0_shop = 0;   // ... of them in shop images (in the gallery)
};

struct Split {
  std::string root, name;                // as given
  std::string dir;                       // <root>/<name>
  std::vector<Annotation> annotations;   // sorted by stem
  std::vector<std::string> skipped;      // with skip_bad: "file: why" per refused file
  ReadCounts counts;
};

// Reads every <root>/<split>/annos/*.json. bad_input naming the directory if it is missing
// or holds no annotation, naming the file (and key) of a malformed annotation, naming the
// image an annotation lacks (check_images); with skip_bad, bad files are listed in
// Split::skipped instead.
Split read_split(const std::string& root, const std::string& split, const SplitOptions& options = {});

}  // namespace ctok::data
