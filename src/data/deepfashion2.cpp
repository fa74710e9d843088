#include "ctok/data/deepfashion2.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "ctok/core/error.hpp"
#include "ctok/core/json.hpp"

namespace ctok::data {
using Json = nlohmann::json;

namespace {

// Depth of the deepest [ or { outside strings; stops early once `limit` is exceeded.
int nesting_depth(const std::string& text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  return deepest;
}

// Checks that `value` is a (possibly nested, up to `levels`) array of finite numbers.
void check_number_lists(const Json& value, int levels, const std::string& key, const std::string& where) {
  if (!value.is_array()) {
    throw bad_input("wrong type").file(where).key(key).expected("array").found(json::describe(value));
  }
  for (const auto& v : value) {
    if (levels > 1 && v.is_array()) {
      check_number_lists(v, levels - 1, key, where);
    } else if (!v.is_number() || !std::isfinite(v.get<double>())) {
      throw bad_input("wrong type").file(where).key(key)
          .expected(levels > 1 ? "array of arrays of numbers" : "array of numbers")
          .found(json::describe(v));
    }
  }
}

// The box as integer pixels (floor / ceil), negative coordinates clamped to 0; nullopt when
// it has no area (the item is dropped and counted, not refused: DeepFashion2 has such boxes).
std::optional<image::Box> parse_box(const Json& item, const std::string& where, const std::string& key_prefix,
                                    bool& clamped) {
  const std::string key = key_prefix + "bounding_box";
  auto it = item.find("bounding_box");
  if (it == item.end()) throw bad_input("missing required key").file(where).key(key).expected("[x1, y1, x2, y2]");
  if (!it->is_array() || it->size() != 4) {
    throw bad_input("wrong type").file(where).key(key).expected("array of 4 numbers [x1, y1, x2, y2]")
        .found(json::describe(*it));
  }
  double c[4];
  for (int i = 0; i < 4; ++i) {
    const Json& v = (*it)[static_cast<std::size_t>(i)];
    if (!v.is_number()) {
      throw bad_input("wrong type").file(where).key(key + "[" + std::to_string(i) + "]").expected("number")
          .found(json::describe(v));
    }
    c[i] = v.get<double>();
    if (!std::isfinite(c[i]) || std::fabs(c[i]) > kMaxCoordinate) {
      throw bad_input("box coordinate out of range").file(where).key(key + "[" + std::to_string(i) + "]")
          .expected("a number in [-" + std::to_string(kMaxCoordinate) + ", " + std::to_string(kMaxCoordinate) + "]")
          .found(json::describe(v));
    }
  }
  image::Box box;
  box.x1 = static_cast<int>(std::floor(c[0]));
  box.y1 = static_cast<int>(std::floor(c[1]));
  box.x2 = static_cast<int>(std::ceil(c[2]));
  box.y2 = static_cast<int>(std::ceil(c[3]));
  clamped = box.x1 < 0 || box.y1 < 0 || box.x2 < 0 || box.y2 < 0;
  box.x1 = std::max(box.x1, 0);
  box.y1 = std::max(box.y1, 0);
  box.x2 = std::max(box.x2, 0);
  box.y2 = std::max(box.y2, 0);
  if (box.x2 <= box.x1 || box.y2 <= box.y1) return std::nullopt;
  return box;
}

// The item, or nullopt when its box has no area (checked after every other key).
std::optional<Item> parse_item(const Json& obj, const std::string& name, const std::string& where) {
  const std::string p = name + ".";
  if (!obj.is_object()) {
    throw bad_input("wrong type").file(where).key(name).expected("object").found(json::describe(obj));
  }
  static const std::vector<std::string> kAllowed = {
      "category_id", "category_name", "style", "bounding_box", "segmentation", "landmarks", "scale",
      "occlusion", "zoom_in", "viewpoint", "parent", "color", "pattern", "own_pair_id"};
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(kAllowed.begin(), kAllowed.end(), it.key()) == kAllowed.end()) {
      throw bad_input("unknown key in an item").file(where).key(p + it.key())
          .expected("one of category_id, category_name, style, bounding_box, segmentation, landmarks, scale, "
                    "occlusion, zoom_in, viewpoint, parent, color, pattern, own_pair_id");
    }
  }
  // Keys in messages carry the item name: re-key by wrapping errors would lose context, so
  // each helper gets the qualified key through a one-entry view.
  Item item;
  item.name = name;
  auto qualified = [&](const std::string& key) { return p + key; };
  auto get_int = [&](const std::string& key, int64_t lo, int64_t hi, bool required) -> int64_t {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) throw bad_input("missing required key").file(where).key(qualified(key)).expected("integer");
      return 0;
    }
    if (!it->is_number_integer()) {
      throw bad_input("wrong type").file(where).key(qualified(key)).expected("integer").found(json::describe(*it));
    }
    const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                          ? INT64_MAX
                          : it->get<int64_t>();
    if (v < lo || v > hi) {
      throw bad_input("value out of range").file(where).key(qualified(key))
          .expected("an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]")
          .found(json::describe(*it));
    }
    return v;
  };
  auto get_string = [&](const std::string& key, bool required) -> std::string {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) throw bad_input("missing required key").file(where).key(qualified(key)).expected("string");
      return {};
    }
    if (!it->is_string()) {
      throw bad_input("wrong type").file(where).key(qualified(key)).expected("string").found(json::describe(*it));
    }
    return it->get<std::string>();
  };
  item.category_id = static_cast<int>(get_int("category_id", 1, 1000000, true));
  item.category_name = get_string("category_name", true);
  if (item.category_name.empty() || item.category_name.size() > 200) {
    throw bad_input("category_name must be a non-empty name").file(where).key(qualified("category_name"))
        .expected("1 to 200 characters").found(std::to_string(item.category_name.size()) + " characters");
  }
  item.style = static_cast<int>(get_int("style", 0, 1000000, true));
  const std::optional<image::Box> box = parse_box(obj, where, p, item.clamped);
  item.scale = static_cast<int>(get_int("scale", 0, 100, false));
  item.occlusion = static_cast<int>(get_int("occlusion", 0, 100, false));
  item.zoom_in = static_cast<int>(get_int("zoom_in", 0, 100, false));
  item.viewpoint = static_cast<int>(get_int("viewpoint", 0, 100, false));
  item.parent = get_string("parent", false);
  item.color = get_string("color", false);
  item.pattern = get_string("pattern", false);
  if (obj.contains("own_pair_id")) item.own_pair_id = get_int("own_pair_id", 0, INT64_MAX, true);
  if (auto it = obj.find("segmentation"); it != obj.end()) check_number_lists(*it, 2, qualified("segmentation"), where);
  if (auto it = obj.find("landmarks"); it != obj.end()) check_number_lists(*it, 1, qualified("landmarks"), where);
  if (!box) return std::nullopt;
  item.box = *box;
  return item;
}

// "item12" -> 12; 0 if the key is not item<N> with N >= 1 without leading zeros.
int item_number(const std::string& key) {
  if (key.size() < 5 || key.size() > 9 || key.compare(0, 4, "item") != 0 || key[4] == '0') return 0;
  int n = 0;
  for (std::size_t i = 4; i < key.size(); ++i) {
    if (key[i] < '0' || key[i] > '9') return 0;
    n = n * 10 + (key[i] - '0');
  }
  return n;
}

}  // namespace

Annotation parse_annotation(const std::string& text, const std::string& origin) {
  if (text.size() > kMaxAnnotationBytes) {
    throw bad_input("annotation file too large").file(origin)
        .expected("at most " + std::to_string(kMaxAnnotationBytes) + " bytes")
        .found(std::to_string(text.size()) + " bytes");
  }
  if (const int depth = nesting_depth(text, kMaxAnnotationDepth); depth > kMaxAnnotationDepth) {
    throw bad_input("JSON nested too deeply").file(origin)
        .expected("at most " + std::to_string(kMaxAnnotationDepth) + " levels").found("more");
  }
  const Json j = json::parse_string(text, origin);
  json::require_object(j, origin);
  Annotation a;
  a.anno_path = origin;
  std::vector<std::pair<int, const Json*>> items;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "source" || key == "pair_id") continue;
    const int n = item_number(key);
    if (n == 0) {
      throw bad_input("unknown key in an annotation").file(origin).key(key)
          .expected("source, pair_id, item1, item2, ...");
    }
    items.emplace_back(n, &it.value());
  }
  a.source = json::require<std::string>(j, "source", origin);
  if (a.source != "shop" && a.source != "user") {
    throw bad_input("unknown source").file(origin).key("source").expected("\"shop\" or \"user\"")
        .found("\"" + a.source.substr(0, 40) + "\"");
  }
  {
    auto it = j.find("pair_id");
    if (it == j.end()) throw bad_input("missing required key").file(origin).key("pair_id").expected("integer");
    if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) ||
        it->get<int64_t>() < 0) {
      throw bad_input("wrong type").file(origin).key("pair_id").expected("non-negative integer")
          .found(json::describe(*it));
    }
    a.pair_id = it->get<int64_t>();
  }
  if (items.empty()) throw bad_input("annotation has no item").file(origin).expected("item1, item2, ...");
  std::sort(items.begin(), items.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].first != static_cast<int>(i + 1)) {
      throw bad_input("items must be numbered item1, item2, ... without gaps").file(origin)
          .expected("item" + std::to_string(i + 1)).found("item" + std::to_string(items[i].first));
    }
    std::optional<Item> item = parse_item(*items[i].second, "item" + std::to_string(items[i].first), origin);
    if (item) a.items.push_back(std::move(*item));
    else ++a.zero_area;
  }
  return a;
}

void fit_boxes(Annotation& a, int width, int height) {
  a.width = width;
  a.height = height;
  std::vector<Item> kept;
  kept.reserve(a.items.size());
  for (Item& it : a.items) {
    image::Box b = it.box;
    b.x1 = std::clamp(b.x1, 0, width);
    b.x2 = std::clamp(b.x2, 0, width);
    b.y1 = std::clamp(b.y1, 0, height);
    b.y2 = std::clamp(b.y2, 0, height);
    if (b.x1 != it.box.x1 || b.x2 != it.box.x2 || b.y1 != it.box.y1 || b.y2 != it.box.y2) it.clamped = true;
    if (b.x2 <= b.x1 || b.y2 <= b.y1) {
      ++a.zero_area;
      continue;
    }
    it.box = b;
    kept.push_back(std::move(it));
  }
  a.items = std::move(kept);
}

}  // namespace ctok::data
