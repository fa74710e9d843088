// The data module: DeepFashion2 annotation reader (strict, untrusted input), image folder
// listing, concept / support / gallery / negative selection.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <unistd.h>

#include "ctok/core/error.hpp"
#include "ctok/core/random.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/deepfashion2.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/image/image.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using namespace ctok;
using namespace ctok::data;

namespace {

const char* kValid = R"({"source": "user", "pair_id": 7,
  "item1": {"category_id": 8, "category_name": "sneaker", "style": 1, "bounding_box": [4, 5, 40, 30],
            "segmentation": [[4, 5, 40, 5, 40, 30]], "scale": 2, "occlusion": 1, "zoom_in": 1,
            "viewpoint": 2, "landmarks": [], "parent": "shoe", "color": "red", "pattern": "plain"},
  "item2": {"category_id": 6, "category_name": "sandal", "style": 0, "bounding_box": [1, 1, 9, 9],
            "own_pair_id": 12}})";

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ctok_test_data_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// A plain w x h JPEG at p.
void write_jpeg(const fs::path& p, int w, int h) {
  image::Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(static_cast<std::size_t>(w) * h * 3, 128);
  const auto bytes = image::encode_jpeg(img);
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

// Expects bad_input whose message mentions `needle`.
void expect_bad(const std::string& text, const std::string& needle) {
  ctok::test::expect_bad_input([&] { parse_annotation(text, "x.json"); }, {needle, "x.json"});
}

std::string anno(const std::string& source, int64_t pair, const std::string& cat, int style,
                 const std::string& parent = "") {
  std::string extra = parent.empty() ? "" : ", \"parent\": \"" + parent + "\"";
  return "{\"source\": \"" + source + "\", \"pair_id\": " + std::to_string(pair) +
         ", \"item1\": {\"category_id\": 1, \"category_name\": \"" + cat + "\", \"style\": " + std::to_string(style) +
         ", \"bounding_box\": [0, 0, 10, 10]" + extra + "}}";
}

// A split: pairs 1..4; pair p has 4 user + 1 shop images of style 1 ("sneaker" for p <= 3,
// "sandal" for p = 4); pair 1 also has style 2 with 2 user images (not eligible at k=3).
fs::path make_split(const std::string& name) {
  fs::path root = temp_dir(name);
  int n = 0;
  auto add = [&](const std::string& text) {
    char stem[16];
    std::snprintf(stem, sizeof stem, "%06d", ++n);
    write(root / "validation" / "annos" / (std::string(stem) + ".json"), text);
    write_jpeg(root / "validation" / "image" / (std::string(stem) + ".jpg"), 16, 16);
  };
  for (int p = 1; p <= 4; ++p) {
    const std::string cat = p <= 3 ? "sneaker" : "sandal";
    for (int u = 0; u < 4; ++u) add(anno("user", p, cat, 1, "shoe"));
    add(anno("shop", p, cat, 1, "shoe"));
  }
  add(anno("user", 1, "sneaker", 2, "shoe"));
  add(anno("user", 1, "sneaker", 2, "shoe"));
  add(anno("shop", 1, "sneaker", 2, "shoe"));
  write(root / "world.json", R"({"categories": [{"id": 8, "name": "sneaker", "parent": "shoe", "hidden": true},
                                                 {"id": 6, "name": "sandal", "parent": "shoe", "hidden": false}]})");
  return root;
}

}  // namespace

TEST(DeepFashion2, ParsesAValidAnnotation) {
  Annotation a = parse_annotation(kValid, "x.json");
  EXPECT_EQ(a.source, "user");
  EXPECT_EQ(a.pair_id, 7);
  ASSERT_EQ(a.items.size(), 2u);
  EXPECT_EQ(a.items[0].name, "item1");
  EXPECT_EQ(a.items[0].category_name, "sneaker");
  EXPECT_EQ(a.items[0].style, 1);
  EXPECT_EQ(a.items[0].box.x1, 4);
  EXPECT_EQ(a.items[0].box.y2, 30);
  EXPECT_EQ(a.items[0].parent, "shoe");
  EXPECT_EQ(a.items[0].color, "red");
  EXPECT_EQ(a.items[1].style, 0);
  EXPECT_EQ(a.items[1].own_pair_id, 12);
  EXPECT_EQ(a.items[1].parent, "");
}

TEST(DeepFashion2, RefusesMalformedAnnotations) {
  expect_bad("[1, 2]", "object");
  expect_bad("{\"source\": \"user\", \"pair_id\": 1}", "no item");
  expect_bad(R"({"source": "web", "pair_id": 1, "item1": {}})", "source");
  expect_bad(R"({"pair_id": 1, "item1": {}})", "source");
  expect_bad(R"({"source": "user", "item1": {}})", "pair_id");
  expect_bad(R"({"source": "user", "pair_id": -3, "item1": {}})", "pair_id");
  expect_bad(R"({"source": "user", "pair_id": "7", "item1": {}})", "pair_id");
  expect_bad(R"({"source": "user", "pair_id": 1, "extra": 1, "item1": {}})", "extra");
  expect_bad(R"({"source": "user", "pair_id": 1, "item2": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [0,0,1,1]}})",
             "item1");
  expect_bad(R"({"source": "user", "pair_id": 1, "item01": {}})", "item01");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": [1]})", "item1");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_name": "a", "style": 1, "bounding_box": [0,0,1,1]}})",
             "item1.category_id");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "", "style": 1, "bounding_box": [0,0,1,1]}})",
             "category_name");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": -1, "bounding_box": [0,0,1,1]}})",
             "item1.style");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1.5, "bounding_box": [0,0,1,1]}})",
             "item1.style");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1}})",
             "item1.bounding_box");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [0,0,1]}})",
             "bounding_box");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [-1e6,0,5,9]}})",
             "out of range");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [0,0,5,1e9]}})",
             "out of range");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [0,0,5,"9"]}})",
             "bounding_box[3]");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [0,0,5,9], "hat": 1}})",
             "item1.hat");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [0,0,5,9], "segmentation": [["x"]]}})",
             "segmentation");
  expect_bad(R"({"source": "user", "pair_id": 1, "item1": {"category_id": 1, "category_name": 3, "style": 1, "bounding_box": [0,0,5,9]}})",
             "category_name");
  expect_bad(R"({"source": "user", "source": "shop", "pair_id": 1, "item1": {}})", "duplicate");
  expect_bad("{\"source\": \"user\", ", "invalid JSON");
  expect_bad("", "invalid JSON");
}

// DeepFashion2's quirks: keys in any order, negative and zero-area boxes, style 0.
TEST(DeepFashion2, AcceptsRealDatasetQuirks) {
  const std::string item = R"({"category_id": 1, "category_name": "a", "style": %d, "bounding_box": [%s]})";
  auto it = [&](int style, const std::string& box) {
    char buf[256];
    std::snprintf(buf, sizeof buf, item.c_str(), style, box.c_str());
    return std::string(buf);
  };
  const std::string text = "{\"item3\": " + it(2, "-4, -2.5, 30, 20") + ", \"pair_id\": 5, \"item1\": " + it(0, "1, 1, 8, 8") +
                           ", \"source\": \"shop\", \"item2\": " + it(1, "5, 0, 5, 9") + "}";
  Annotation a = parse_annotation(text, "q.json");
  EXPECT_EQ(a.source, "shop");
  EXPECT_EQ(a.pair_id, 5);
  EXPECT_EQ(a.zero_area, 1);  // item2 has no width: dropped, not refused
  ASSERT_EQ(a.items.size(), 2u);
  EXPECT_EQ(a.items[0].name, "item1");
  EXPECT_EQ(a.items[0].style, 0);
  EXPECT_FALSE(a.items[0].clamped);
  EXPECT_EQ(a.items[1].name, "item3");
  EXPECT_TRUE(a.items[1].clamped);
  EXPECT_EQ(a.items[1].box.x1, 0);
  EXPECT_EQ(a.items[1].box.y1, 0);
  EXPECT_EQ(a.items[1].box.x2, 30);

  // Fitted to a 24 x 16 image: item3 is cut at the right and bottom edges.
  fit_boxes(a, 24, 16);
  ASSERT_EQ(a.items.size(), 2u);
  EXPECT_EQ(a.items[1].box.x2, 24);
  EXPECT_EQ(a.items[1].box.y2, 16);
  // A box wholly outside the image has no area left.
  Annotation b = parse_annotation("{\"source\": \"user\", \"pair_id\": 1, \"item1\": " + it(1, "30, 2, 40, 9") +
                                  ", \"item2\": " + it(1, "2, 2, 9, 9") + "}", "r.json");
  fit_boxes(b, 24, 16);
  EXPECT_EQ(b.zero_area, 1);
  ASSERT_EQ(b.items.size(), 1u);
  EXPECT_EQ(b.items[0].name, "item2");
  EXPECT_FALSE(b.items[0].clamped);
}

TEST(DeepFashion2, SplitCountsClampsAndNamesMissingImages) {
  fs::path root = temp_dir("quirks");
  const fs::path annos = root / "validation" / "annos", images = root / "validation" / "image";
  // 000001: shop, style 1 (clamped at the right) + style 0; 000002: user, one box outside the image.
  write(annos / "000001.json", R"({"pair_id": 3, "item2": {"category_id": 2, "category_name": "b", "style": 0,
      "bounding_box": [0, 0, 4, 4]}, "source": "shop",
      "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [2, 2, 50, 10]}})");
  write_jpeg(images / "000001.jpg", 20, 12);
  write(annos / "000002.json", R"({"source": "user", "pair_id": 3,
      "item1": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [1, 1, 9, 9]},
      "item2": {"category_id": 1, "category_name": "a", "style": 1, "bounding_box": [40, 1, 60, 9]}})");
  write_jpeg(images / "000002.jpg", 20, 12);
  Split s = read_split(root.string(), "validation");
  ASSERT_EQ(s.annotations.size(), 2u);
  EXPECT_EQ(s.annotations[0].width, 20);
  EXPECT_EQ(s.annotations[0].height, 12);
  EXPECT_EQ(s.annotations[0].items[0].box.x2, 20);
  EXPECT_EQ(s.counts.files, 2u);
  EXPECT_EQ(s.counts.items, 3u);
  EXPECT_EQ(s.counts.clamped, 1u);
  EXPECT_EQ(s.counts.zero_area, 1u);
  EXPECT_EQ(s.counts.style0, 1u);
  EXPECT_EQ(s.counts.style0_shop, 1u);
  // The style-0 shop item is in the gallery but never part of a concept.
  auto g = gallery(s);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1].style, 0);
  auto concepts = find_concepts(s, ConceptOptions{1, 1});
  ASSERT_EQ(concepts.size(), 1u);
  EXPECT_EQ(concepts[0].style, 1);
  EXPECT_EQ(concepts[0].shop.size(), 1u);
  EXPECT_EQ(concepts[0].user.size(), 1u);

  // A missing image is named (and skipped with skip_bad); so is a missing image/ folder.
  fs::remove(images / "000002.jpg");
  try {
    read_split(root.string(), "validation");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("000002.jpg"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  Split t = read_split(root.string(), "validation", SplitOptions{1, true});
  EXPECT_EQ(t.annotations.size(), 1u);
  EXPECT_EQ(t.counts.skipped_files, 1u);
  EXPECT_EQ(read_split(root.string(), "validation", SplitOptions{1, false, false}).annotations.size(), 2u);
  fs::remove_all(images);
  try {
    read_split(root.string(), "validation");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image/"), std::string::npos) << e.what();
  }
  fs::remove_all(root);
}

TEST(DeepFashion2, BoundsDepthAndSize) {
  std::string deep = "{\"source\": \"user\", \"pair_id\": 1, \"item1\": {\"segmentation\": ";
  for (int i = 0; i < 100000; ++i) deep += "[";
  expect_bad(deep, "nested too deeply");
  std::string big(kMaxAnnotationBytes + 1, ' ');
  expect_bad(big, "too large");
}

// Random mutations of a valid file: each either parses or throws ctok::Error, nothing else.
TEST(DeepFashion2, SurvivesMutatedInput) {
  std::mt19937 rng(1234);
  const std::string base = kValid;
  const std::string alphabet = "{}[]\",:0123456789-.eE \\ntrufalsnitem";
  int parsed = 0, refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t pos = rng() % (s.size() + 1);
      switch (rng() % 3) {
        case 0: if (pos < s.size()) s.erase(pos, 1 + rng() % 3); break;
        case 1: s.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
        default: if (pos < s.size()) s[pos] = static_cast<char>(rng() % 256); break;
      }
    }
    try {
      Annotation a = parse_annotation(s, "fuzz.json");
      ++parsed;
      for (const auto& it : a.items) {
        EXPECT_LT(it.box.x1, it.box.x2);
        EXPECT_LT(it.box.y1, it.box.y2);
        EXPECT_FALSE(it.category_name.empty());
      }
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(parsed, 0);
}

TEST(DeepFashion2, ReadsASplitInOrder) {
  fs::path root = make_split("order");
  Split s = read_split(root.string(), "validation", SplitOptions{3, false});
  ASSERT_EQ(s.annotations.size(), 23u);
  EXPECT_EQ(s.annotations[0].stem, "000001");
  EXPECT_EQ(s.annotations[22].stem, "000023");
  EXPECT_EQ(s.annotations[0].image_path, (root / "validation" / "image" / "000001.jpg").string());
  fs::remove_all(root);
}

TEST(DeepFashion2, SplitErrorsNameTheFile) {
  fs::path root = make_split("errors");
  write(root / "validation" / "annos" / "000005.json", "{\"source\": 1}");
  try {
    read_split(root.string(), "validation");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("000005.json"), std::string::npos) << e.what();
  }
  Split s = read_split(root.string(), "validation", SplitOptions{2, true});
  EXPECT_EQ(s.annotations.size(), 22u);
  ASSERT_EQ(s.skipped.size(), 1u);
  EXPECT_THROW(read_split(root.string(), "train"), Error);
  fs::remove_all(root);
}

TEST(Concepts, EligibilitySupportAndGallery) {
  fs::path root = make_split("concepts");
  Split s = read_split(root.string(), "validation");
  auto concepts = find_concepts(s, ConceptOptions{3, 1});
  ASSERT_EQ(concepts.size(), 4u);  // (1,1) (2,1) (3,1) (4,1); (1,2) has 2 user items
  EXPECT_EQ(concepts[0].pair_id, 1);
  EXPECT_EQ(concepts[0].user.size(), 4u);
  EXPECT_EQ(concepts[0].shop.size(), 1u);
  EXPECT_EQ(find_concepts(s, ConceptOptions{2, 1}).size(), 5u);
  EXPECT_THROW(get_concept(concepts, 1, 2), Error);
  EXPECT_THROW(get_concept(concepts, 99, 1), Error);
  const Concept& c = get_concept(concepts, 2, 1);

  // Deterministic per seed; some seed gives another choice; always k distinct user crops.
  auto a = select_support(c, 3, 7), b = select_support(c, 3, 7);
  ASSERT_EQ(a.size(), 3u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].id(), b[i].id());
  std::set<std::string> ids;
  for (const auto& x : a) {
    ids.insert(x.id());
    EXPECT_EQ(x.source, "user");
    EXPECT_EQ(x.pair_id, 2);
  }
  EXPECT_EQ(ids.size(), 3u);
  bool differs = false;
  for (uint64_t seed = 0; seed < 20 && !differs; ++seed) {
    auto o = select_support(c, 3, seed);
    for (std::size_t i = 0; i < o.size(); ++i) differs = differs || o[i].id() != a[i].id();
  }
  EXPECT_TRUE(differs);
  EXPECT_THROW(select_support(c, 5, 0), Error);
  EXPECT_THROW(select_support(c, 0, 0), Error);

  auto g = gallery(s);
  EXPECT_EQ(g.size(), 5u);
  for (const auto& x : g) EXPECT_EQ(x.source, "shop");

  // Negatives: user crops of other pairs of the same category, one per identity.
  auto n = select_negatives(s, c, 0, 1);
  ASSERT_EQ(n.size(), 2u);  // pairs 1 and 3 (pair 4 is a sandal)
  for (const auto& x : n) {
    EXPECT_NE(x.pair_id, 2);
    EXPECT_EQ(x.category_name, "sneaker");
    EXPECT_EQ(x.source, "user");
  }
  EXPECT_EQ(select_negatives(s, c, 1, 1).size(), 1u);
  EXPECT_EQ(select_negatives(s, c, 0, 1, 4).size(), 8u);

  // Hidden categories take their parent word in queries.
  auto hidden = hidden_categories(root.string());
  EXPECT_EQ(hidden, std::set<std::string>{"sneaker"});
  EXPECT_EQ(query_word(c, hidden), "shoe");
  EXPECT_EQ(query_word(get_concept(concepts, 4, 1), hidden), "sandal");
  fs::remove_all(root);
}

TEST(Concepts, SeededSubsetAndShotsHistogram) {
  fs::path root = make_split("subset");
  Split s = read_split(root.string(), "validation");
  auto all = find_concepts(s, ConceptOptions{1, 1});
  ASSERT_EQ(all.size(), 5u);
  auto a = subset_concepts(all, 3, 11), b = subset_concepts(all, 3, 11), big = subset_concepts(all, 4, 11);
  ASSERT_EQ(a.size(), 3u);
  std::set<std::pair<int64_t, int>> sa, sbig;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].pair_id, b[i].pair_id);
    EXPECT_EQ(a[i].style, b[i].style);
    if (i > 0) EXPECT_LT(std::make_pair(a[i - 1].pair_id, a[i - 1].style), std::make_pair(a[i].pair_id, a[i].style));
    sa.insert({a[i].pair_id, a[i].style});
  }
  for (const auto& c : big) sbig.insert({c.pair_id, c.style});
  for (const auto& k : sa) EXPECT_TRUE(sbig.count(k));  // a larger n keeps the smaller subset
  bool differs = false;
  for (uint64_t seed = 0; seed < 20 && !differs; ++seed) {
    auto o = subset_concepts(all, 3, seed);
    for (std::size_t i = 0; i < o.size(); ++i) differs = differs || o[i].pair_id != a[i].pair_id || o[i].style != a[i].style;
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(subset_concepts(all, 0, 1).size(), 5u);
  EXPECT_EQ(subset_concepts(all, 9, 1).size(), 5u);
  // 4 concepts with 4 user items, (1, 2) with 2.
  EXPECT_EQ(concepts_per_shots(s), (std::vector<std::size_t>{5, 5, 4, 4}));
  fs::remove_all(root);
}

TEST(ImageFolder, ListsImagesSorted) {
  fs::path d = temp_dir("folder");
  write(d / "b.PNG", "x");
  write(d / "a.jpg", "x");
  write(d / "notes.txt", "x");
  write(d / ".hidden.jpg", "x");
  fs::create_directories(d / "sub");
  auto files = list_images(d.string());
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(fs::path(files[0]).filename(), "a.jpg");
  EXPECT_EQ(fs::path(files[1]).filename(), "b.PNG");
  fs::remove_all(d);
}

TEST(ImageFolder, ErrorsNameTheFolderAndItsFiles) {
  fs::path d = temp_dir("folder_bad");
  try {
    list_images(d.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
  }
  write(d / "readme.txt", "x");
  write(d / "data.csv", "x");
  try {
    list_images(d.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("readme.txt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("data.csv"), std::string::npos) << e.what();
  }
  EXPECT_THROW(list_images((d / "missing").string()), Error);
  EXPECT_THROW(list_images((d / "readme.txt").string()), Error);
  fs::remove_all(d);
}

TEST(SplitMix, DeterministicAndUniformEnough) {
  SplitMix64 a(5), b(5);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next(), b.next());
  SplitMix64 g(1);
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 3000; ++i) ++counts[g.below(3)];
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
  EXPECT_NE(mix_seed(1, 2), mix_seed(1, 3));
  EXPECT_NE(mix_seed(1, 2, 3), mix_seed(1, 3, 2));
}
