// FAISS index of a gallery store: build (sample-trained IVF, filled shard by shard), open
// (bound to the store's content), search.
#include "ctok/retrieval/faiss_index.hpp"

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <mutex>
#include <random>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/core/sha256.hpp"

namespace fs = std::filesystem;

namespace ctok::retrieval {
using Json = nlohmann::json;
namespace {

constexpr const char* kIndexFormat = "ctok-faiss-index";
constexpr int kIndexVersion = 1;

int64_t parse_positive(const std::string& s, const std::string& text) {
  if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos || std::stoll(s) < 1) {
    throw bad_input("malformed index spec").key("index").expected("flat, ivf:NLIST or ivf:NLIST,pq:M (positive integers)")
        .found("\"" + text + "\"");
  }
  return std::stoll(s);
}

std::string faiss_version() {
  return std::to_string(FAISS_VERSION_MAJOR) + "." + std::to_string(FAISS_VERSION_MINOR) + "." +
         std::to_string(FAISS_VERSION_PATCH);
}

Json info_json(const IndexInfo& i) {
  return {{"format", kIndexFormat},        {"version", kIndexVersion},         {"spec", index_spec_name(i.spec)},
          {"count", i.count},              {"dim", i.dim},                     {"trained_on", i.trained_on},
          {"default_nprobe", i.default_nprobe}, {"items_sha256", i.items_sha256}, {"file_sha256", i.file_sha256},
          {"bytes", i.bytes},              {"seconds", i.seconds},             {"faiss_version", i.faiss_version},
          {"metric", "inner_product"}};
}

void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

IndexSpec parse_index_spec(const std::string& text) {
  IndexSpec s;
  if (text == "flat") return s;
  if (text.rfind("ivf:", 0) != 0) {
    throw bad_input("unknown index type").key("index").expected("flat, ivf:NLIST or ivf:NLIST,pq:M").found("\"" + text + "\"");
  }
  const std::string rest = text.substr(4);
  const auto comma = rest.find(',');
  s.kind = IndexKind::kIvfFlat;
  s.nlist = parse_positive(rest.substr(0, comma), text);
  if (comma != std::string::npos) {
    const std::string pq = rest.substr(comma + 1);
    if (pq.rfind("pq:", 0) != 0) {
      throw bad_input("malformed index spec").key("index").expected("ivf:NLIST,pq:M").found("\"" + text + "\"");
    }
    s.kind = IndexKind::kIvfPq;
    s.pq_m = parse_positive(pq.substr(3), text);
  }
  return s;
}

std::string index_spec_name(const IndexSpec& s) {
  switch (s.kind) {
    case IndexKind::kFlat: return "flat";
    case IndexKind::kIvfFlat: return "ivf:" + std::to_string(s.nlist);
    case IndexKind::kIvfPq: return "ivf:" + std::to_string(s.nlist) + ",pq:" + std::to_string(s.pq_m);
  }
  return "flat";
}

IndexInfo build_index(const std::string& dir, const IndexBuildOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  GalleryInfo g = read_gallery_info(dir);
  check_complete(g);
  const IndexSpec& spec = o.spec;
  const int64_t n = g.count, d = g.dim;
  if (n < 1) throw bad_input("the store holds no item to index").file(dir);
  if (spec.kind != IndexKind::kFlat && n < spec.nlist) {
    throw bad_input("an IVF index needs at least as many items as lists").file(dir).key("index")
        .expected("nlist <= " + std::to_string(n) + " (items in the store)").found(index_spec_name(spec));
  }
  if (spec.kind == IndexKind::kIvfPq) {
    if (d % spec.pq_m != 0) {
      throw bad_input("PQ sub-quantizers must divide the feature dimension").key("index")
          .expected("M dividing " + std::to_string(d)).found(index_spec_name(spec));
    }
    if (n < 256) {
      throw bad_input("a PQ index needs at least 256 items (8-bit codebooks)").file(dir).key("index")
          .found(std::to_string(n) + " items");
    }
  }

  std::unique_ptr<faiss::Index> index;
  IndexInfo info;
  info.spec = spec;
  info.count = n;
  info.dim = d;
  info.items_sha256 = g.items_sha256;
  info.faiss_version = faiss_version();
  ProgressOptions po;
  po.label = "index";
  po.unit = "row";
  po.enabled = o.show_progress;
  try {
    if (spec.kind == IndexKind::kFlat) {
      index = std::make_unique<faiss::IndexFlatIP>(d);
    } else {
      auto* quantizer = new faiss::IndexFlatIP(d);
      faiss::IndexIVF* ivf = nullptr;
      if (spec.kind == IndexKind::kIvfFlat) {
        ivf = new faiss::IndexIVFFlat(quantizer, d, spec.nlist, faiss::METRIC_INNER_PRODUCT);
      } else {
        ivf = new faiss::IndexIVFPQ(quantizer, d, spec.nlist, spec.pq_m, 8, faiss::METRIC_INNER_PRODUCT);
      }
      ivf->own_fields = true;
      ivf->verbose = false;
      index.reset(ivf);
      info.default_nprobe = std::min<int64_t>(spec.nlist, 16);
      // A seeded sample (selection sampling: one pass, no permutation of n held in memory).
      int64_t m = o.train_sample > 0 ? o.train_sample
                                     : std::max<int64_t>(std::min<int64_t>(64 * spec.nlist, 262144), 39 * spec.nlist);
      if (spec.kind == IndexKind::kIvfPq) m = std::max<int64_t>(m, 256 * 39);
      m = std::min(m, n);
      std::vector<float> sample(static_cast<size_t>(m * d));
      std::mt19937_64 rng(o.seed ^ 0x9e3779b97f4a7c15ULL);
      std::uniform_real_distribution<double> u(0.0, 1.0);
      int64_t seen = 0, taken = 0;
      for (const auto& s : g.shards) {
        if (taken == m) break;
        const std::vector<uint8_t> bytes = read_shard_features(g, s);
        const float* rows = reinterpret_cast<const float*>(bytes.data());
        for (int64_t r = 0; r < s.rows && taken < m; ++r, ++seen) {
          if (u(rng) * double(n - seen) < double(m - taken)) {
            std::copy(rows + r * d, rows + (r + 1) * d, sample.begin() + taken * d);
            ++taken;
          }
        }
      }
      spdlog::info("training {} on {} of {} rows", index_spec_name(spec), taken, n);
      index->train(taken, sample.data());
      info.trained_on = taken;
    }
    Progress progress(n, po);
    for (const auto& s : g.shards) {
      if (s.rows == 0) continue;
      const std::vector<uint8_t> bytes = read_shard_features(g, s);
      index->add(s.rows, reinterpret_cast<const float*>(bytes.data()));
      progress.advance(s.rows);
    }
    progress.finish();
    const std::string path = (fs::path(dir) / kIndexFile).string();
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    faiss::write_index(index.get(), tmp.c_str());
    fsync_file(tmp);
    fs::rename(tmp, path);
    info.bytes = static_cast<int64_t>(fs::file_size(path));
    info.file_sha256 = sha256_file(path);
  } catch (const faiss::FaissException& e) {
    throw runtime_failure(std::string("FAISS: ") + e.what()).file(dir);
  }
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_file_atomic((fs::path(dir) / kIndexInfoFile).string(), info_json(info).dump(2) + "\n");
  return info;
}

std::optional<IndexInfo> read_index_info(const std::string& dir) {
  const std::string path = (fs::path(dir) / kIndexInfoFile).string();
  if (!file_exists(path)) return std::nullopt;
  const Json j = json::parse_file(path);
  json::check_keys(j, {"format", "version", "spec", "count", "dim", "trained_on", "default_nprobe", "items_sha256",
                       "file_sha256", "bytes", "seconds", "faiss_version", "metric"},
                   path);
  if (json::require<std::string>(j, "format", path) != kIndexFormat) {
    throw bad_input("not a ctok index description").file(path).key("format").expected(kIndexFormat);
  }
  if (json::require<int>(j, "version", path) > kIndexVersion) {
    throw bad_input("index of a newer format version").file(path).key("version")
        .expected("<= " + std::to_string(kIndexVersion));
  }
  IndexInfo i;
  i.spec = parse_index_spec(json::require<std::string>(j, "spec", path));
  i.count = json::require<int64_t>(j, "count", path);
  i.dim = json::require<int64_t>(j, "dim", path);
  i.trained_on = json::require<int64_t>(j, "trained_on", path);
  i.default_nprobe = json::require<int64_t>(j, "default_nprobe", path);
  i.items_sha256 = json::require<std::string>(j, "items_sha256", path);
  i.file_sha256 = json::require<std::string>(j, "file_sha256", path);
  i.bytes = json::require<int64_t>(j, "bytes", path);
  i.seconds = json::require<double>(j, "seconds", path);
  i.faiss_version = json::require<std::string>(j, "faiss_version", path);
  return i;
}

struct FaissIndex::Impl {
  IndexInfo info;
  std::unique_ptr<faiss::Index> index;
  mutable std::mutex mu;  // nprobe is set per search
};

FaissIndex::FaissIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FaissIndex::FaissIndex(FaissIndex&&) noexcept = default;
FaissIndex& FaissIndex::operator=(FaissIndex&&) noexcept = default;
FaissIndex::~FaissIndex() = default;
const IndexInfo& FaissIndex::info() const { return impl_->info; }

FaissIndex FaissIndex::open(const std::string& dir) {
  const auto info = read_index_info(dir);
  if (!info) {
    throw bad_input("the store has no FAISS index (build one: ctok-index index STORE --index SPEC)").file(dir);
  }
  const GalleryInfo g = read_gallery_info(dir);
  if (info->count != g.count || info->items_sha256 != g.items_sha256 || info->dim != g.dim) {
    throw bad_input("index.faiss was built for other store content (stale; rebuild: ctok-index index STORE)")
        .file((fs::path(dir) / kIndexInfoFile).string())
        .expected(std::to_string(g.count) + " rows, items " + g.items_sha256.substr(0, 12))
        .found(std::to_string(info->count) + " rows, items " + info->items_sha256.substr(0, 12));
  }
  const std::string path = (fs::path(dir) / kIndexFile).string();
  if (!file_exists(path)) throw bad_input("index.json names an index file that is missing").file(path);
  if (static_cast<int64_t>(fs::file_size(path)) != info->bytes) {
    throw bad_input("index.faiss has the wrong size (truncated or replaced)").file(path)
        .expected(std::to_string(info->bytes) + " bytes").found(std::to_string(fs::file_size(path)) + " bytes");
  }
  auto impl = std::make_unique<Impl>();
  impl->info = *info;
  try {
    impl->index.reset(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    throw bad_input(std::string("unreadable FAISS index: ") + e.what()).file(path);
  }
  if (impl->index->ntotal != g.count || impl->index->d != g.dim) {
    throw bad_input("index.faiss does not match its index.json").file(path)
        .expected(std::to_string(g.count) + " x " + std::to_string(g.dim))
        .found(std::to_string(impl->index->ntotal) + " x " + std::to_string(impl->index->d));
  }
  return FaissIndex(std::move(impl));
}

SearchResult FaissIndex::search(const torch::Tensor& queries, int64_t k, int64_t nprobe) const {
  const IndexInfo& in = impl_->info;
  if (queries.dim() != 2 || queries.size(1) != in.dim) {
    throw bad_input("queries must be [Q, " + std::to_string(in.dim) + "]");
  }
  if (k < 1) throw bad_input("k must be positive").found(std::to_string(k));
  k = std::min(k, in.count);
  const torch::Tensor q = queries.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t nq = q.size(0);
  torch::Tensor scores = torch::empty({nq, k}, torch::kFloat32);
  torch::Tensor idx = torch::empty({nq, k}, torch::kInt64);
  static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS ids are 64-bit");
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(impl_->index.get())) {
    ivf->nprobe = static_cast<size_t>(std::clamp<int64_t>(nprobe > 0 ? nprobe : in.default_nprobe, 1, in.spec.nlist));
  }
  try {
    impl_->index->search(nq, q.data_ptr<float>(), k, scores.data_ptr<float>(),
                         reinterpret_cast<faiss::Index::idx_t*>(idx.data_ptr<int64_t>()));
  } catch (const faiss::FaissException& e) {
    throw runtime_failure(std::string("FAISS search: ") + e.what());
  }
  scores.masked_fill_(idx < 0, -std::numeric_limits<float>::infinity());
  return {scores, idx};
}

}  // namespace ctok::retrieval
