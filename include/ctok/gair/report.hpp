// The GAIR application: load a token, its concept images and a gallery, run
// correct_and_score and search (gair.hpp), and write the report a person reads to overrule
// the automatic choice: <out>/index.html (static, relative paths, no scripts), its PNGs and
// <out>/results.json (docs/gair.md lists every field).
//
//   ctok::gair::GairRequest r;
//   r.token_file = "tokens/x.safetensors";
//   r.query = "a photo of a <x> dress in blue";
//   r.df2_root = "data/fashionworld";                     // or r.store = "galleries/val"
//   ctok::gair::check_output_dir("report", /*force=*/false);
//   ctok::gair::GairRun run = ctok::gair::run(bundle, r, options);
//   ctok::gair::write_report("report", run, /*force=*/false);
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/gair/gair.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/load_tokens.hpp"

namespace ctok::gair {

struct ItemKey {  // a DeepFashion2 concept / retrieval target
  int64_t pair_id = 0;
  int style = 0;
};
// "100017:2" -> {100017, 2}; bad_input otherwise.
ItemKey parse_item_key(const std::string& text, const std::string& key);

struct GairRequest {
  std::string token_file;          // one token file (ctok-token/1 or diffusers layout)
  std::string query;               // the composite query, with the token's string
  // The gallery: a DeepFashion2-layout split (its shop crops, embedded here) or a store.
  std::string df2_root;
  std::string split = "validation";
  std::string store;
  // The concept's own images; empty: the token's DeepFashion2 support set, else its images folder.
  std::string concept_images;
  std::string attributes;          // attribute file; empty: configs/attributes/<parent>.json
  std::optional<ItemKey> target;   // ground truth; default: the token's concept, or the style of its
                                   // pair whose colour the query names (composition queries)
  int threads = 0;                 // image decoding threads (0: all cores)
};

struct GalleryItem {
  std::string image_path;          // as the source names it (absolute or relative to the cwd)
  std::optional<image::Box> box;
  std::string id;                  // unique within the gallery
  nlohmann::json keys = nlohmann::json::object();  // pair_id, style, category_name, color, ...
};

struct Gallery {
  std::vector<GalleryItem> items;
  torch::Tensor features;          // [N, F] float32, L2-normalised
  nlohmann::json provenance = nlohmann::json::object();  // kind, root/split or store dir, hashes
};

struct Timings {
  double load = 0, concept_ = 0, gallery = 0, render = 0, score = 0, retrieval = 0, total = 0;
};

struct GairRun {
  GairRequest request;
  GairOptions options;
  token::LoadedTokens tokens;
  nlohmann::json token_info = nlohmann::json::object();  // parent, bundle, source of the token file
  std::string attribute_file;      // "" when none was found
  std::vector<image::Image> concept_images;
  std::vector<std::string> concept_ids;
  Gallery gallery;
  std::optional<ItemKey> target;
  std::string target_reason;       // why this target
  std::vector<int64_t> correct;    // gallery rows of the target
  Correction correction;
  Search search;
  Timings seconds;
  nlohmann::json bundle_info = nlohmann::json::object();
};

// bad_input unless `dir` is absent, an empty folder, or `force` is set; and its parent can
// be written.
void check_output_dir(const std::string& dir, bool force);

// Everything up to the report. bad_input: a token learned on another bundle (text encoder
// sha256 differs), no custom token in the query, alpha outside [0, 1], an unreadable
// gallery or one of another bundle, no concept images. Progress on stderr unless `quiet`.
GairRun run(const model::Bundle& bundle, const GairRequest& request, const GairOptions& options, bool quiet = false);

// results.json as written into the report.
nlohmann::json results_json(const GairRun& run);

// Writes <dir>/index.html, results.json, renders/*.png, hits/*.png, concept/*.png into a
// temporary sibling folder and renames it into place, so a report is complete or absent.
void write_report(const std::string& dir, const GairRun& run, bool force);


}  // namespace ctok::gair
