// Catalogue: a user's own images as a gallery store (docs/catalogue.md), built on one
// machine or as n deterministic shards on n machines, merged into one store, indexed with
// FAISS (retrieval/faiss_index.hpp) and searched by ctok-search.
//
//   auto list = ctok::retrieval::catalogue_from_folder("shop/");        // recursive, sorted
//   auto part = ctok::retrieval::shard_slice(list, ctok::retrieval::parse_shard("2/8"));
//   ctok::retrieval::build_catalogue(bundle, list, {"2/8"}, {.dir = "store-2"});
//   ctok::retrieval::merge_catalogues({"store-0", ..., "store-7"}, "store");
//
// A shard store records, in gallery.json's `source`, the whole list's size and digest and
// which slice [first, end) it holds; merge checks that every input is a complete store of
// the same bundle, preprocessing and list, that no two slices overlap and that together
// they cover the list, and writes a store equal to a single-machine build of the list.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/model/bundle.hpp"
#include "ctok/retrieval/gallery_store.hpp"

namespace ctok::retrieval {

// What a catalogue is made of: the items (paths relative to root, or absolute) and the
// description recorded in gallery.json (kind, root, ...).
struct CatalogueList {
  std::string root;  // absolute; item paths resolve against it
  std::vector<GalleryItem> items;
  nlohmann::json source = nlohmann::json::object();
};

// Every image file under `dir` (recursive, hidden names skipped, byte-sorted relative
// paths); bad_input naming the folder when it is missing or holds no image.
CatalogueList catalogue_from_folder(const std::string& dir);
// One image per line (blank lines and '#' comments skipped), paths relative to the list's
// folder or absolute; an optional tab-separated box "x1,y1,x2,y2" after the path.
// bad_input naming FILE:LINE for a malformed box; naming the file when it lists nothing.
CatalogueList catalogue_from_list(const std::string& file);
// The shop items of a DeepFashion2-layout split (the gallery of docs/method.md §5), with
// their boxes and keys (id, pair_id, style, category_name, color, pattern).
CatalogueList catalogue_from_df2(const std::string& root, const std::string& split);

struct ShardSpec {
  int64_t index = 0, count = 1;  // 0-based slice index of count
};
// "i/n" with 0 <= i < n; bad_input (key `shard`) for "3/2", "x/4", "1/0", ...
ShardSpec parse_shard(const std::string& text);
// The deterministic slice [first, end) of n items that shard i of n holds (contiguous,
// sizes differ by at most one).
std::pair<int64_t, int64_t> shard_range(int64_t n, const ShardSpec& shard);

struct CatalogueBuildOptions {
  std::string dir;          // the store folder
  ShardSpec shard;          // {0, 1}: the whole list
  int64_t shard_size = 4096;
  int64_t batch_size = 64;
  int threads = 0;          // decode threads; 0: all cores
  bool skip_bad = true;
  bool show_progress = true;
};
// Embeds the slice of `list` this shard holds into options.dir (resumable; see
// build_gallery_store). Returns the complete store's info.
GalleryInfo build_catalogue(const model::Bundle& bundle, const CatalogueList& list, const CatalogueBuildOptions& options);

struct MergeReport {
  GalleryInfo info;
  int64_t inputs = 0;
  double seconds = 0;
};
// Joins complete shard stores into `out` (a new folder; bad_input if it holds anything).
// bad_input: an input that is not a complete store, of another bundle (both hashes named)
// or preprocessing, of another list, two shards overlapping or the same shard twice,
// shards missing (named).
MergeReport merge_catalogues(const std::vector<std::string>& inputs, const std::string& out);

// `ctok-index info`: what a store holds, as JSON (counts, bundle, source, shards, index);
// with `verify`, every shard is read and checked (shape, finite, unit norm, items.jsonl
// rows) and the index file matched against the store: bad_input naming what is wrong.
nlohmann::json describe_store(const std::string& dir, bool verify);

}  // namespace ctok::retrieval
