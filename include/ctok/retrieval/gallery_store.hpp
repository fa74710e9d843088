// Gallery store (docs/architecture.md): image features of a gallery embedded once per
// bundle, shared by ctok-eval, ctok-gair and the catalogue index.
//
//   ctok::retrieval::build_gallery_store(bundle, items, {.dir = "runs/gallery"});
//   auto store = ctok::retrieval::GalleryStore::open("runs/gallery", bundle);
//   torch::Tensor g = store.features();                       // [N, F] float32, L2-normalised
//   auto hits = ctok::retrieval::search_exact(g, queries, 10);  // chunked matmul + top-k
//
// Layout: gallery.json (format "ctok-gallery", version, bundle name, image-encoder sha256,
// preprocessing, dim, dtype, count, source, shards), items.jsonl (one line per row: path,
// box or null, keys), features-NNNNN.safetensors (row-aligned shards). Each shard is
// written atomically and only counts once gallery.json lists it; items.jsonl and
// "complete": true are written last, so a killed build never reads as complete and a
// rebuild resumes at the first shard not listed.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"

namespace ctok::retrieval {

inline constexpr int kGalleryVersion = 1;
inline constexpr const char* kGalleryFormat = "ctok-gallery";

struct GalleryItem {
  std::string path;                            // relative to the source root (or absolute)
  std::optional<image::Box> box;               // crop before preprocessing
  nlohmann::json keys = nlohmann::json::object();  // the source's own keys (pair_id, style, ...)
};

struct GalleryBuildOptions {
  std::string dir;                                   // the store folder (created)
  std::string source_root;                           // item paths resolve against it
  nlohmann::json source = nlohmann::json::object();  // description recorded in gallery.json
  int64_t shard_size = 4096;                         // items per shard
  int64_t batch_size = 64;                           // images per encoder call
  int threads = 0;                                   // decode/preprocess threads; 0: all cores
  bool skip_bad = true;                              // unreadable images skipped (named, counted)
  bool show_progress = true;                         // progress bar / log lines
};

struct GalleryShard {
  std::string file;        // features-NNNNN.safetensors
  int64_t first_input = 0; // index of its first item in the build's item list
  int64_t inputs = 0;      // items of the list it covers
  int64_t rows = 0;        // rows written (inputs minus skipped)
};

struct GalleryInfo {
  std::string dir;
  std::string bundle_name, image_encoder_sha256;
  nlohmann::json preprocessing;  // {size, resize, crop, mean, std}
  int64_t dim = 0;
  std::string dtype = "F32";
  int64_t count = 0;           // rows (complete stores)
  int64_t planned_inputs = 0;  // items the build was asked to embed
  std::string items_sha256;    // of the requested item list: a resume must be given the same list
  nlohmann::json source;
  std::vector<GalleryShard> shards;
  std::vector<std::string> skipped;  // "path: why" per skipped image
  bool complete = false;
};

// The image encoder's sha256 and the preprocessing record of a bundle.
std::string image_encoder_sha256(const model::Bundle& bundle);
nlohmann::json preprocessing_record(const model::Bundle& bundle);

// Embeds `items` into options.dir, shard by shard; resumes an interrupted build of the same
// bundle and item list at the first missing shard (bad_input if the folder holds a store of
// another bundle, preprocessing or item list). Returns the info of the complete store.
GalleryInfo build_gallery_store(const model::Bundle& bundle, const std::vector<GalleryItem>& items,
                                const GalleryBuildOptions& options);

// gallery.json of `dir`, parsed and checked (format, version, types); no bundle check.
GalleryInfo read_gallery_info(const std::string& dir);

class GalleryStore {
 public:
  // bad_input: no gallery.json; another bundle (both hashes named) or preprocessing; a
  // half-built store (says which shards / files are missing); shards of the wrong shape.
  static GalleryStore open(const std::string& dir, const model::Bundle& bundle);
  // The same checks without a bundle (merge, info).
  static GalleryStore open_unchecked(const std::string& dir);

  const GalleryInfo& info() const { return info_; }
  const std::vector<GalleryItem>& items() const { return items_; }
  const torch::Tensor& features() const { return features_; }  // [N, F] float32 CPU

 private:
  GalleryInfo info_;
  std::vector<GalleryItem> items_;
  torch::Tensor features_;
};

struct SearchResult {
  torch::Tensor scores;   // [Q, k] float32, descending per row
  torch::Tensor indices;  // [Q, k] int64 rows of the gallery
};
// Exact inner-product top-k as chunked matrix products: memory O(Q * (chunk + k)).
// gallery [N, F], queries [Q, F] (both float32; normalise them for cosine). k is clamped to N.
SearchResult search_exact(const torch::Tensor& gallery, const torch::Tensor& queries, int64_t k,
                          int64_t chunk = 65536);

}  // namespace ctok::retrieval
