// Gallery store: build, resume, refusals, exact search (tiny test bundle, generated images).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <filesystem>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/gallery_store.hpp"

namespace fs = std::filesystem;
using namespace ctok;
using namespace ctok::retrieval;

namespace {

model::Bundle& tiny() {
  static model::Bundle b = [] {
    model::BundleOptions o;
    o.dir = std::string(CTOK_TEST_DATA) + "/tiny_bundle";
    return model::Bundle::load(o);
  }();
  return b;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("ctok_gallery_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// n small JPEGs of distinct colours in dir/img; returns the items (relative paths).
std::vector<GalleryItem> make_images(const fs::path& dir, int n) {
  fs::create_directories(dir / "img");
  std::vector<GalleryItem> items;
  for (int i = 0; i < n; ++i) {
    image::Image im{48, 40, std::vector<uint8_t>(48 * 40 * 3)};
    for (int p = 0; p < 48 * 40; ++p) {
      const int x = p % 48, y = p / 48;
      const bool on = ((x / (2 + i)) + (y / (3 + i))) % 2;
      im.rgb[3 * p] = uint8_t(on ? 37 * i : 255 - 37 * i);
      im.rgb[3 * p + 1] = uint8_t(x * 5);
      im.rgb[3 * p + 2] = uint8_t(on ? 255 - 20 * i : y * 6);
    }
    const std::string rel = "img/" + std::to_string(i) + ".jpg";
    write_file_atomic((dir / rel).string(), image::encode_jpeg(im));
    GalleryItem it{rel, std::nullopt, {{"i", i}}};
    if (i % 2) it.box = image::Box{4, 4, 40, 36};
    items.push_back(it);
  }
  return items;
}

GalleryBuildOptions opts(const fs::path& root, const fs::path& store) {
  GalleryBuildOptions o;
  o.dir = store.string();
  o.source_root = root.string();
  o.shard_size = 3;
  o.batch_size = 2;
  o.threads = 2;
  o.show_progress = false;
  return o;
}

}  // namespace

TEST(GalleryStore, BuildOpenRowsAlignedAndNormalised) {
  TempDir t;
  auto items = make_images(t.path, 7);
  const auto info = build_gallery_store(tiny(), items, opts(t.path, t.path / "store"));
  EXPECT_TRUE(info.complete);
  EXPECT_EQ(info.count, 7);
  EXPECT_EQ(info.shards.size(), 3u);
  auto st = GalleryStore::open((t.path / "store").string(), tiny());
  ASSERT_EQ(st.items().size(), 7u);
  ASSERT_EQ(st.features().size(0), 7);
  EXPECT_EQ(st.features().size(1), tiny().image_feature_dim());
  EXPECT_TRUE(torch::allclose(st.features().norm(2, 1), torch::ones({7}), 1e-4, 1e-4));
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(st.items()[i].path, items[i].path);
    EXPECT_EQ(st.items()[i].keys["i"], i);
    EXPECT_EQ(st.items()[i].box.has_value(), i % 2 == 1);
  }
  // Row i equals the image embedded on its own (order kept across parallel decode).
  image::Preprocess pre{int(tiny().image_size()), {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
  const auto& m = tiny().manifest().image;
  pre.mean = {float(m.mean[0]), float(m.mean[1]), float(m.mean[2])};
  pre.std = {float(m.std[0]), float(m.std[1]), float(m.std[2])};
  model::ClipModel clip(tiny());
  std::vector<torch::Tensor> alone;
  for (int i = 0; i < 7; ++i) {
    image::Image im = image::decode_file((t.path / items[i].path).string());
    if (items[i].box) im = image::crop(im, *items[i].box);
    alone.push_back(model::l2_normalize(clip.encode_images({image::preprocess(im, pre)}))[0]);
    EXPECT_TRUE(torch::allclose(alone.back(), st.features()[i], 1e-4, 1e-5)) << i;
  }
  // The tiny test encoder maps these images to nearly parallel features, so order is
  // checked by distance: the image embedded alone is nearest to its own row.
  torch::Tensor d = torch::cdist(torch::stack(alone).to(torch::kFloat64), st.features().to(torch::kFloat64));
  for (int i = 0; i < 7; ++i) EXPECT_EQ(d[i].argmin().item<int64_t>(), i) << d[i];
}

TEST(GalleryStore, HalfBuiltRefusedThenResumed) {
  TempDir t;
  auto items = make_images(t.path, 7);
  const fs::path store = t.path / "store";
  build_gallery_store(tiny(), items, opts(t.path, store));
  // Simulate a kill after the first shard: drop the later entries and the final files.
  auto j = json::parse_file((store / "gallery.json").string());
  j["shards"].erase(j["shards"].begin() + 1, j["shards"].end());
  j["complete"] = false;
  j["count"] = 0;
  write_file_atomic((store / "gallery.json").string(), j.dump());
  fs::remove(store / "items.jsonl");
  try {
    GalleryStore::open(store.string(), tiny());
    FAIL() << "half-built store opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("covering 3 of 7 items"), std::string::npos) << e.what();
  }
  fs::remove(store / "features-00002.safetensors");
  const auto info = build_gallery_store(tiny(), items, opts(t.path, store));
  EXPECT_TRUE(info.complete);
  EXPECT_EQ(GalleryStore::open(store.string(), tiny()).features().size(0), 7);
}

TEST(GalleryStore, RefusesAnotherBundleAndAnotherList) {
  TempDir t;
  auto items = make_images(t.path, 3);
  const fs::path store = t.path / "store";
  build_gallery_store(tiny(), items, opts(t.path, store));
  auto j = json::parse_file((store / "gallery.json").string());
  j["bundle"]["image_encoder_sha256"] = std::string(64, 'a');
  write_file_atomic((store / "gallery.json").string(), j.dump());
  try {
    GalleryStore::open(store.string(), tiny());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::string(64, 'a')), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(image_encoder_sha256(tiny())), std::string::npos) << e.what();
  }
  TempDir t2;
  const fs::path s2 = t2.path / "store";
  build_gallery_store(tiny(), items, opts(t.path, s2));
  items.pop_back();
  EXPECT_THROW(build_gallery_store(tiny(), items, opts(t.path, s2)), Error);
}

TEST(GalleryStore, BadImageSkippedAndCounted) {
  TempDir t;
  auto items = make_images(t.path, 4);
  write_file_atomic((t.path / items[1].path).string(), std::string("not a jpeg"));
  const auto info = build_gallery_store(tiny(), items, opts(t.path, t.path / "store"));
  EXPECT_EQ(info.count, 3);
  ASSERT_EQ(info.skipped.size(), 1u);
  auto st = GalleryStore::open((t.path / "store").string(), tiny());
  EXPECT_EQ(st.items()[1].path, items[2].path);
  auto o = opts(t.path, t.path / "store2");
  o.skip_bad = false;
  EXPECT_THROW(build_gallery_store(tiny(), items, o), Error);
}

TEST(SearchExact, ChunkedEqualsFullProduct) {
  torch::manual_seed(0);
  torch::Tensor g = model::l2_normalize(torch::randn({1000, 16}));
  torch::Tensor q = model::l2_normalize(torch::randn({13, 16}));
  auto full = (q.matmul(g.t())).topk(10, 1);
  for (int64_t chunk : {1, 7, 64, 5000}) {
    auto r = search_exact(g, q, 10, chunk);
    EXPECT_TRUE(torch::equal(r.indices, std::get<1>(full))) << chunk;
    EXPECT_TRUE(torch::allclose(r.scores, std::get<0>(full)));
  }
  EXPECT_EQ(search_exact(g.slice(0, 0, 4), q, 10).indices.size(1), 4);
  EXPECT_THROW(search_exact(g, torch::randn({2, 8}), 5), Error);
}
