// The FAISS index of a gallery store (docs/catalogue.md): index.faiss beside the shards,
// described and bound to the store's content by index.json. FAISS stays out of this
// header (Debian's libfaiss-dev 1.7.3; facts in docs/catalogue.md and shared/specs/architecture.md).
//
//   auto spec = ctok::retrieval::parse_index_spec("ivf:1024");         // flat | ivf:N | ivf:N,pq:M
//   ctok::retrieval::build_index("store", {.spec = spec});             // train on a sample, add shard by shard
//   auto index = ctok::retrieval::FaissIndex::open("store");           // refuses a stale index
//   auto hits = index.search(queries, 10, /*nprobe=*/16);              // [Q, F] float32, L2-normalised
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ctok/retrieval/gallery_store.hpp"

namespace ctok::retrieval {

inline constexpr const char* kIndexFile = "index.faiss";
inline constexpr const char* kIndexInfoFile = "index.json";

enum class IndexKind { kFlat, kIvfFlat, kIvfPq };

struct IndexSpec {
  IndexKind kind = IndexKind::kFlat;
  int64_t nlist = 0;  // IVF lists
  int64_t pq_m = 0;   // PQ sub-quantizers (8 bits each)
};
// "flat", "ivf:NLIST", "ivf:NLIST,pq:M"; bad_input (key `index`) otherwise.
IndexSpec parse_index_spec(const std::string& text);
std::string index_spec_name(const IndexSpec& spec);

struct IndexBuildOptions {
  IndexSpec spec;
  int64_t train_sample = 0;  // IVF training rows; 0: min(count, 64 * nlist, 262144), at least 39 * nlist when possible
  uint64_t seed = 0;         // which rows the sample takes
  bool show_progress = true;
};

struct IndexInfo {
  IndexSpec spec;
  int64_t count = 0, dim = 0;
  int64_t trained_on = 0;      // rows of the training sample (0: flat)
  int64_t default_nprobe = 0;  // IVF: min(nlist, 16)
  std::string items_sha256;    // of the store it indexes
  std::string file_sha256;     // of index.faiss
  int64_t bytes = 0;           // size of index.faiss
  double seconds = 0;          // train + add
  std::string faiss_version;
};

// Builds index.faiss + index.json for the complete store in `dir`, reading one shard at a
// time (IVF: a seeded sample trains the coarse quantizer and PQ once, then every shard is
// added). bad_input: a half-built store; IVF with fewer rows than lists; PQ whose M does not
// divide the dimension or with fewer than 256 rows. Both files are written atomically,
// index.json last: an index without its index.json does not count.
IndexInfo build_index(const std::string& dir, const IndexBuildOptions& options);

// index.json of `dir` if there is one (no check against the store).
std::optional<IndexInfo> read_index_info(const std::string& dir);

class FaissIndex {
 public:
  // bad_input: no index (build one with `ctok-index index`), or one built for other store
  // content (count or items digest differ: stale), or an unreadable index.faiss.
  static FaissIndex open(const std::string& dir);
  FaissIndex(FaissIndex&&) noexcept;
  FaissIndex& operator=(FaissIndex&&) noexcept;
  ~FaissIndex();

  const IndexInfo& info() const;
  // queries [Q, dim] float32 (normalise for cosine). nprobe <= 0: the default; clamped to
  // nlist. The result has min(k, count) columns; where the probed lists held fewer items
  // than that, the row ends in index -1 with score -inf (callers skip them).
  SearchResult search(const torch::Tensor& queries, int64_t k, int64_t nprobe = 0) const;

 private:
  struct Impl;
  explicit FaissIndex(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctok::retrieval
