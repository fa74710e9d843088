// Searching a catalogue store (ctok-search): composite text queries with custom tokens,
// image queries, the FAISS index or an exact scan, and the static report (results.json +
// an HTML contact sheet of the top-k crops).
//
//   auto cat = ctok::retrieval::Catalogue::open("store/", bundle, /*exact=*/false);
//   auto q = ctok::retrieval::encode_queries(bundle, {{Kind::kText, "a photo of a <x> dress in blue"}}, tokens);
//   auto hits = cat.search(q, 10, /*nprobe=*/0);
//   ctok::retrieval::write_search_report(cat, queries, hits, {.out = "results/"});
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/faiss_index.hpp"
#include "ctok/retrieval/gallery_store.hpp"

namespace ctok::retrieval {

struct CatalogueQuery {
  enum class Kind { kText, kImage };
  Kind kind = Kind::kText;
  std::string text;   // the prompt (custom tokens and words) or the image file
};

class Catalogue {
 public:
  // Opens a complete store of this bundle (bad_input otherwise, see GalleryStore::open).
  // With an index.faiss (not stale) and !exact, searches go through FAISS and the features
  // are not read; otherwise an exact scan over the features.
  static Catalogue open(const std::string& dir, const model::Bundle& bundle, bool exact);

  const GalleryStore& store() const { return store_; }
  const std::optional<FaissIndex>& index() const { return index_; }
  std::string root() const;  // source.root of the store ("" when it recorded none)
  // queries [Q, F] float32, L2-normalised -> top-k (k clamped to the store's size).
  SearchResult search(const torch::Tensor& queries, int64_t k, int64_t nprobe) const;
  nlohmann::json describe(int64_t nprobe) const;  // store, index, nprobe: for results.json

 private:
  std::string dir_;
  GalleryStore store_;
  std::optional<FaissIndex> index_;
};

// Text queries from a file, one per line (blank lines and lines starting with '#'
// skipped); bad_input naming the file when it holds none.
std::vector<CatalogueQuery> read_query_file(const std::string& path);

// Features [Q, F] float32 CPU, L2-normalised, in query order. Text through the CLIP text
// encoder with `tokens` (bad_input for an unknown <token>), images through the image
// encoder with the bundle's preprocessing (bad_input naming an unreadable file).
torch::Tensor encode_queries(const model::Bundle& bundle, const std::vector<CatalogueQuery>& queries,
                             const model::TokenVectors& tokens, int threads = 0);

struct SearchReportOptions {
  std::string out;        // report folder (written beside, renamed into place)
  std::string root;       // where item paths resolve; "" : the store's source root
  int tile = 128;         // px of every crop in the contact sheet
  bool force = false;     // replace an existing report
  nlohmann::json extra = nlohmann::json::object();  // merged into results.json (tokens, seconds, ...)
};

// Writes <out>/results.json (per query: rank, score, row, item path, box, keys, crop PNG),
// <out>/index.html (static, relative paths) and <out>/crops/*.png. An item whose image
// cannot be read any more keeps its row in results.json (crop null) and a placeholder in
// the sheet, with a warning. Returns results.json's content.
nlohmann::json write_search_report(const Catalogue& catalogue, const std::vector<CatalogueQuery>& queries,
                                   const SearchResult& hits, const SearchReportOptions& options);

}  // namespace ctok::retrieval
