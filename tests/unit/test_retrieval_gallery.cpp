// Gallery store: build, resume, refusals, exact search; catalogue shards, merge, FAISS index
// (tiny test bundle, generated images; synthetic feature stores for the index).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/catalogue.hpp"
#include "ctok/retrieval/catalogue_search.hpp"
#include "ctok/retrieval/faiss_index.hpp"
#include "ctok/retrieval/gallery_store.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using namespace ctok;
using namespace ctok::retrieval;
using ctok::test::TempDir;

namespace {

const model::Bundle& tiny() {
  static model::Bundle b = [] {
    model::BundleOptions o;
    o.dir = std::string(CTOK_TEST_DATA) + "/tiny_bundle";
    return model::Bundle::load(o);
  }();
  return b;
}

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
  auto items = make_images(t.fs_path(), 7);
  const auto info = build_gallery_store(tiny(), items, opts(t.fs_path(), t.fs_path() / "store"));
  EXPECT_TRUE(info.complete);
  EXPECT_EQ(info.count, 7);
  EXPECT_EQ(info.shards.size(), 3u);
  auto st = GalleryStore::open((t.fs_path() / "store").string(), tiny());
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
  const image::Preprocess pre = model::image_preprocess(tiny());
  model::ClipModel clip(tiny());
  std::vector<torch::Tensor> alone;
  for (int i = 0; i < 7; ++i) {
    image::Image im = image::decode_file((t.fs_path() / items[i].path).string());
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
  auto items = make_images(t.fs_path(), 7);
  const fs::path store = t.fs_path() / "store";
  build_gallery_store(tiny(), items, opts(t.fs_path(), store));
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
  const auto info = build_gallery_store(tiny(), items, opts(t.fs_path(), store));
  EXPECT_TRUE(info.complete);
  EXPECT_EQ(GalleryStore::open(store.string(), tiny()).features().size(0), 7);
}

TEST(GalleryStore, RefusesAnotherBundleAndAnotherList) {
  TempDir t;
  auto items = make_images(t.fs_path(), 3);
  const fs::path store = t.fs_path() / "store";
  build_gallery_store(tiny(), items, opts(t.fs_path(), store));
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
  const fs::path s2 = t2.fs_path() / "store";
  build_gallery_store(tiny(), items, opts(t.fs_path(), s2));
  items.pop_back();
  EXPECT_THROW(build_gallery_store(tiny(), items, opts(t.fs_path(), s2)), Error);
}

TEST(GalleryStore, BadImageSkippedAndCounted) {
  TempDir t;
  auto items = make_images(t.fs_path(), 4);
  write_file_atomic((t.fs_path() / items[1].path).string(), std::string("not a jpeg"));
  const auto info = build_gallery_store(tiny(), items, opts(t.fs_path(), t.fs_path() / "store"));
  EXPECT_EQ(info.count, 3);
  ASSERT_EQ(info.skipped.size(), 1u);
  auto st = GalleryStore::open((t.fs_path() / "store").string(), tiny());
  EXPECT_EQ(st.items()[1].path, items[2].path);
  auto o = opts(t.fs_path(), t.fs_path() / "store2");
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

// --- catalogue: shards, merge, FAISS index ---------------------------------------------

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

CatalogueBuildOptions cat_opts(const fs::path& store, const std::string& shard) {
  CatalogueBuildOptions o;
  o.dir = store.string();
  o.shard = parse_shard(shard);
  o.shard_size = 2;
  o.batch_size = 2;
  o.threads = 2;
  o.show_progress = false;
  return o;
}

// n unit vectors around 8 centres in dim 32, as a complete store.
GalleryInfo synthetic_store(const fs::path& dir, int64_t n, uint64_t seed = 0) {
  torch::manual_seed(seed);
  torch::Tensor centres = torch::randn({8, 32});
  torch::Tensor f = centres.index_select(0, torch::randint(0, 8, {n}, torch::kInt64)) + 0.3 * torch::randn({n, 32});
  std::vector<GalleryItem> items;
  for (int64_t i = 0; i < n; ++i) items.push_back({"img/" + std::to_string(i) + ".jpg", std::nullopt, {{"i", i}}});
  GalleryInfo like;
  like.bundle_name = "synthetic";
  like.image_encoder_sha256 = std::string(64, '0');
  like.preprocessing = {{"size", 32}};
  like.source = {{"kind", "synthetic"}};
  return write_feature_store(dir.string(), like, items, f, 97);
}

}  // namespace

TEST(Catalogue, ShardSpecsAndRanges) {
  EXPECT_EQ(parse_shard("0/1").count, 1);
  EXPECT_EQ(parse_shard("3/4").index, 3);
  for (const char* bad : {"3/2", "2/2", "x/4", "1/0", "-1/2", "2", "1/2/3", ""}) {
    EXPECT_TRUE(has(error_of([&] { parse_shard(bad); }), "shard")) << bad;
  }
  for (int64_t n : {1, 7, 10, 1001}) {
    for (int64_t k : {1, 3, 4}) {
      int64_t next = 0;
      for (int64_t i = 0; i < k; ++i) {
        auto [a, b] = shard_range(n, {i, k});
        EXPECT_EQ(a, next);
        EXPECT_LE(b - a, n / k + 1);
        EXPECT_GE(b - a, n / k);
        next = b;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(Catalogue, IndexSpecs) {
  EXPECT_EQ(parse_index_spec("flat").kind, IndexKind::kFlat);
  EXPECT_EQ(parse_index_spec("ivf:64").nlist, 64);
  EXPECT_EQ(parse_index_spec("ivf:64,pq:8").pq_m, 8);
  EXPECT_EQ(index_spec_name(parse_index_spec("ivf:64,pq:8")), "ivf:64,pq:8");
  for (const char* bad : {"hnsw", "ivf:", "ivf:0", "ivf:x", "ivf:4,pq:", "ivf:4,opq:2", "IVF:4"}) {
    EXPECT_TRUE(has(error_of([&] { parse_index_spec(bad); }), "index")) << bad;
  }
}

TEST(Catalogue, FolderAndListSources) {
  TempDir t;
  make_images(t.fs_path() / "shop", 3);
  make_images(t.fs_path() / "shop" / "sub", 2);
  fs::create_directories(t.fs_path() / "shop" / ".hidden");
  write_file_atomic((t.fs_path() / "shop" / ".hidden" / "x.jpg").string(), std::string("x"));
  write_file_atomic((t.fs_path() / "shop" / "notes.txt").string(), std::string("x"));
  const CatalogueList f = catalogue_from_folder((t.fs_path() / "shop").string());
  ASSERT_EQ(f.items.size(), 5u);
  EXPECT_EQ(f.items[0].path, "img/0.jpg");
  EXPECT_EQ(f.items[3].path, "sub/img/0.jpg");
  EXPECT_TRUE(has(error_of([&] { catalogue_from_folder((t.fs_path() / "shop" / ".hidden").string() + "/none"); }), "folder"));
  write_file_atomic((t.fs_path() / "list.txt").string(), std::string("# shop\nshop/img/0.jpg\n\nshop/img/1.jpg\t2,3,30,20\n"));
  const CatalogueList l = catalogue_from_list((t.fs_path() / "list.txt").string());
  ASSERT_EQ(l.items.size(), 2u);
  ASSERT_TRUE(l.items[1].box.has_value());
  EXPECT_EQ(l.items[1].box->x2, 30);
  write_file_atomic((t.fs_path() / "bad.txt").string(), std::string("a.jpg\nb.jpg\t3,3,1,9\n"));
  EXPECT_TRUE(has(error_of([&] { catalogue_from_list((t.fs_path() / "bad.txt").string()); }), "bad.txt:2"));
}

TEST(Catalogue, ShardsMergeIntoTheSingleMachineStore) {
  TempDir t;
  make_images(t.fs_path() / "shop", 7);
  const CatalogueList list = catalogue_from_folder((t.fs_path() / "shop").string());
  build_catalogue(tiny(), list, cat_opts(t.fs_path() / "one", "0/1"));
  std::vector<std::string> parts;
  for (int i = 0; i < 3; ++i) {
    parts.push_back((t.fs_path() / ("part" + std::to_string(i))).string());
    build_catalogue(tiny(), list, cat_opts(parts.back(), std::to_string(i) + "/3"));
  }
  // Given in any order.
  const MergeReport r = merge_catalogues({parts[2], parts[0], parts[1]}, (t.fs_path() / "merged").string());
  EXPECT_EQ(r.info.count, 7);
  const GalleryStore one = GalleryStore::open((t.fs_path() / "one").string(), tiny());
  const GalleryStore merged = GalleryStore::open((t.fs_path() / "merged").string(), tiny());
  EXPECT_EQ(merged.info().items_sha256, one.info().items_sha256);
  EXPECT_EQ(read_text_file((t.fs_path() / "merged" / "items.jsonl").string()), read_text_file((t.fs_path() / "one" / "items.jsonl").string()));
  EXPECT_TRUE(torch::allclose(merged.features(), one.features(), 1e-5, 1e-6));
  // A rebuild of the whole list into the merged store finds it complete.
  EXPECT_EQ(build_catalogue(tiny(), list, cat_opts(t.fs_path() / "merged", "0/1")).count, 7);

  // Refusals: missing, overlapping (the same shard twice), foreign, output not empty.
  EXPECT_TRUE(has(error_of([&] { merge_catalogues({parts[0], parts[2]}, (t.fs_path() / "m1").string()); }), "missing 1/3"));
  EXPECT_TRUE(has(error_of([&] { merge_catalogues({parts[0], parts[1], parts[1], parts[2]}, (t.fs_path() / "m2").string()); }),
                  "overlap"));
  CatalogueList other = list;
  other.items.pop_back();
  build_catalogue(tiny(), other, cat_opts(t.fs_path() / "foreign", "1/3"));
  EXPECT_TRUE(has(error_of([&] { merge_catalogues({parts[0], (t.fs_path() / "foreign").string(), parts[2]}, (t.fs_path() / "m3").string()); }),
                  "foreign"));
  EXPECT_TRUE(has(error_of([&] { merge_catalogues(parts, (t.fs_path() / "merged").string()); }), "not empty"));
  EXPECT_FALSE(fs::exists(t.fs_path() / "m1"));
  // A half-built shard is refused, saying what is missing.
  auto j = json::parse_file((fs::path(parts[1]) / "gallery.json").string());
  j["complete"] = false;
  write_file_atomic((fs::path(parts[1]) / "gallery.json").string(), j.dump());
  EXPECT_TRUE(has(error_of([&] { merge_catalogues(parts, (t.fs_path() / "m4").string()); }), "half-built"));
}

TEST(Catalogue, FlatAndIvfAgreeWithExactSearch) {
  TempDir t;
  const fs::path dir = t.fs_path() / "store";
  synthetic_store(dir, 600);
  const GalleryStore st = GalleryStore::open_unchecked(dir.string());
  torch::manual_seed(5);
  const torch::Tensor q = model::l2_normalize(st.features().slice(0, 0, 20) + 0.2 * torch::randn({20, 32}));
  const SearchResult exact = search_exact(st.features(), q, 10);

  IndexBuildOptions o;
  o.show_progress = false;
  build_index(dir.string(), o);
  const SearchResult flat = FaissIndex::open(dir.string()).search(q, 10);
  EXPECT_TRUE(torch::equal(flat.indices, exact.indices));
  EXPECT_TRUE(torch::allclose(flat.scores, exact.scores, 1e-4, 1e-5));

  o.spec = parse_index_spec("ivf:8");
  const IndexInfo info = build_index(dir.string(), o);
  EXPECT_EQ(info.trained_on, 512);  // 64 x nlist of the 600 rows
  const FaissIndex ivf = FaissIndex::open(dir.string());
  EXPECT_TRUE(torch::equal(ivf.search(q, 10, /*nprobe=*/8).indices, exact.indices));  // every list: exact
  const SearchResult one_list = ivf.search(q, 10, 1);
  EXPECT_EQ(one_list.indices.size(1), 10);
  EXPECT_EQ(ivf.search(q, 1000, 8).indices.size(1), 600);  // k clamped to the store

  o.spec = parse_index_spec("ivf:4,pq:8");
  build_index(dir.string(), o);
  const SearchResult pq = FaissIndex::open(dir.string()).search(q, 10, 4);
  EXPECT_EQ(pq.indices.size(0), 20);
  EXPECT_GE(pq.indices.min().item<int64_t>(), 0);

  // Refusals: more lists than items; M not dividing dim; a stale or truncated index.
  o.spec = parse_index_spec("ivf:601");
  EXPECT_TRUE(has(error_of([&] { build_index(dir.string(), o); }), "at least as many items as lists"));
  o.spec = parse_index_spec("ivf:4,pq:5");
  EXPECT_TRUE(has(error_of([&] { build_index(dir.string(), o); }), "divide"));
  auto j = json::parse_file((dir / "index.json").string());
  j["count"] = 599;
  write_file_atomic((dir / "index.json").string(), j.dump());
  EXPECT_TRUE(has(error_of([&] { FaissIndex::open(dir.string()); }), "stale"));
  EXPECT_TRUE(has(error_of([&] { describe_store(dir.string(), true); }), "index"));
  j["count"] = 600;
  write_file_atomic((dir / "index.json").string(), j.dump());
  fs::resize_file(dir / "index.faiss", fs::file_size(dir / "index.faiss") - 8);
  EXPECT_TRUE(has(error_of([&] { FaissIndex::open(dir.string()); }), "wrong size"));
  fs::remove(dir / "index.faiss");
  fs::remove(dir / "index.json");
  EXPECT_TRUE(has(error_of([&] { FaissIndex::open(dir.string()); }), "no FAISS index"));
  const auto d = describe_store(dir.string(), true);
  EXPECT_EQ(d["verified"]["rows"], 600);
  EXPECT_TRUE(d["index"].is_null());
}

TEST(Catalogue, HalfBuiltStoreIsNotIndexedNorSearched) {
  TempDir t;
  const fs::path dir = t.fs_path() / "store";
  synthetic_store(dir, 50);
  auto j = json::parse_file((dir / "gallery.json").string());
  j["complete"] = false;
  write_file_atomic((dir / "gallery.json").string(), j.dump());
  IndexBuildOptions o;
  o.show_progress = false;
  EXPECT_TRUE(has(error_of([&] { build_index(dir.string(), o); }), "half-built"));
  EXPECT_TRUE(describe_store(dir.string(), false).contains("problem"));
}
