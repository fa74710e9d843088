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

// Digest of an item list as gallery.json's items_sha256 records it (sha256 of the items.jsonl
// lines): the digest of a list is the digest of its slices' lines in order.
std::string gallery_items_digest(const std::vector<GalleryItem>& items);
// gallery.json for `info` (in info.dir), written atomically.
void write_gallery_info(const GalleryInfo& info);

// A complete store in `dir` from features computed elsewhere ([N, dim] float32, rows
// L2-normalised by this call) and their items; bundle, preprocessing and source are taken
// from `like` (dim, counts, shards and digest are set here). Benches, tests, imports.
GalleryInfo write_feature_store(const std::string& dir, const GalleryInfo& like, const std::vector<GalleryItem>& items,
                                const torch::Tensor& features, int64_t shard_size = 4096);

// gallery.json of `dir`, parsed and checked (format, version, types); no bundle check.
GalleryInfo read_gallery_info(const std::string& dir);
// bad_input for a half-built store, saying how many shards cover how many of the planned
// items and which files are missing.
void check_complete(const GalleryInfo& info);
// The `rows` x `dim` features of one shard as float32 bytes (shape checked).
std::vector<uint8_t> read_shard_features(const GalleryInfo& info, const GalleryShard& shard);

class GalleryStore {
 public:
  // bad_input: no gallery.json; another bundle (both hashes named) or preprocessing; a
  // half-built store (says which shards / files are missing); shards of the wrong shape.
  // Without `with_features` only the items are read (features() is then empty): what a
  // search through the FAISS index needs.
  static GalleryStore open(const std::string& dir, const model::Bundle& bundle, bool with_features = true);
  // The same checks without a bundle (merge, info).
  static GalleryStore open_unchecked(const std::string& dir, bool with_features = true);

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
