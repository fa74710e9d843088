// Gallery store: build (sharded, atomic, resumable), open (checked), exact search.
#include "ctok/retrieval/gallery_store.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/model/clip.hpp"

namespace fs = std::filesystem;

namespace ctok::retrieval {
using Json = nlohmann::json;
namespace {

// An exclusive flock on <dir>/.lock while a store is built: two builders of one store (the
// cells of a ctok-batch run sharing a cache, shards on one machine) take turns; the second
// finds the store complete. Released on close, also when the process dies.
class BuildLock {
 public:
  explicit BuildLock(const std::string& dir) {
    const std::string path = (fs::path(dir) / ".lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;  // read-only folder: building fails later with a clear message
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      spdlog::info("{}: another process is building this gallery store; waiting for it", dir);
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~BuildLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  BuildLock(const BuildLock&) = delete;
  BuildLock& operator=(const BuildLock&) = delete;

 private:
  int fd_ = -1;
};

constexpr const char* kInfoFile = "gallery.json";
constexpr const char* kItemsFile = "items.jsonl";

std::string shard_name(int64_t i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "features-%05lld.safetensors", static_cast<long long>(i));
  return buf;
}

Json item_json(const GalleryItem& it) {
  Json j = {{"path", it.path}, {"box", nullptr}, {"keys", it.keys}};
  if (it.box) j["box"] = {it.box->x1, it.box->y1, it.box->x2, it.box->y2};
  return j;
}

GalleryItem item_from_json(const Json& j, const std::string& where) {
  json::check_keys(j, {"path", "box", "keys"}, where);
  GalleryItem it;
  it.path = json::require<std::string>(j, "path", where);
  const Json& box = j.at("box");
  if (!box.is_null()) {
    auto v = json::convert<std::vector<int>>(box, "box", where);
    if (v.size() != 4) throw bad_input("box must have 4 numbers").file(where).key("box").found(box.dump());
    it.box = image::Box{v[0], v[1], v[2], v[3]};
  }
  it.keys = json::require<Json>(j, "keys", where);
  return it;
}

Json info_json(const GalleryInfo& g) {
  Json shards = Json::array();
  for (const auto& s : g.shards) {
    shards.push_back({{"file", s.file}, {"first_input", s.first_input}, {"inputs", s.inputs}, {"rows", s.rows}});
  }
  return {{"format", kGalleryFormat},
          {"version", kGalleryVersion},
          {"bundle", {{"name", g.bundle_name}, {"image_encoder_sha256", g.image_encoder_sha256}}},
          {"preprocessing", g.preprocessing},
          {"dim", g.dim},
          {"dtype", g.dtype},
          {"count", g.count},
          {"planned_inputs", g.planned_inputs},
          {"items_sha256", g.items_sha256},
          {"source", g.source},
          {"shards", shards},
          {"skipped", g.skipped},
          {"complete", g.complete}};
}


std::vector<image::FloatImage> load_range(const std::vector<GalleryItem>& items, int64_t first, int64_t n,
                                          const GalleryBuildOptions& o, const image::Preprocess& pre,
                                          std::vector<image::LoadFailure>* failures) {
  std::vector<image::LoadRequest> req;
  req.reserve(n);
  for (int64_t i = first; i < first + n; ++i) {
    const fs::path p(items[i].path);
    req.push_back({p.is_absolute() || o.source_root.empty() ? p.string() : (fs::path(o.source_root) / p).string(),
                   items[i].box, false});
  }
  image::LoadOptions lo;
  lo.preprocess = pre;
  lo.threads = o.threads;
  lo.skip_bad = o.skip_bad;
  return image::load_batch(req, lo, failures);
}

}  // namespace

std::string gallery_items_digest(const std::vector<GalleryItem>& items) {
  Sha256 h;
  for (const auto& it : items) {
    const std::string line = item_json(it).dump() + "\n";
    h.update(line.data(), line.size());
  }
  return h.hex_digest();
}

void write_gallery_info(const GalleryInfo& g) {
  write_file_atomic((fs::path(g.dir) / kInfoFile).string(), info_json(g).dump(2) + "\n");
}

std::string image_encoder_sha256(const model::Bundle& bundle) {
  const auto& m = bundle.manifest();
  auto it = m.sha256.find(m.image.file);
  return it != m.sha256.end() ? it->second : sha256_file(m.path_of(m.image.file));
}

Json preprocessing_record(const model::Bundle& bundle) {
  const auto& i = bundle.manifest().image;
  return {{"size", i.size}, {"resize", i.resize}, {"crop", i.crop}, {"mean", i.mean}, {"std", i.std}};
}

GalleryInfo read_gallery_info(const std::string& dir) {
  const std::string path = (fs::path(dir) / kInfoFile).string();
  if (!file_exists(path)) throw bad_input("not a gallery store (no gallery.json)").file(dir);
  const Json j = json::parse_file(path);
  json::check_keys(j, {"format", "version", "bundle", "preprocessing", "dim", "dtype", "count", "planned_inputs",
                       "items_sha256", "source", "shards", "skipped", "complete"},
                   path);
  if (json::require<std::string>(j, "format", path) != kGalleryFormat) {
    throw bad_input("not a gallery store").file(path).key("format").expected(kGalleryFormat).found(j["format"].dump());
  }
  const int version = json::require<int>(j, "version", path);
  if (version > kGalleryVersion) {
    throw bad_input("gallery store of a newer format version").file(path).key("version")
        .expected("<= " + std::to_string(kGalleryVersion)).found(std::to_string(version));
  }
  GalleryInfo g;
  g.dir = dir;
  const Json b = json::require<Json>(j, "bundle", path);
  g.bundle_name = json::require<std::string>(b, "name", path);
  g.image_encoder_sha256 = json::require<std::string>(b, "image_encoder_sha256", path);
  g.preprocessing = json::require<Json>(j, "preprocessing", path);
  g.dim = json::require<int64_t>(j, "dim", path);
  g.dtype = json::require<std::string>(j, "dtype", path);
  if (g.dtype != "F32") throw bad_input("unsupported dtype").file(path).key("dtype").expected("F32").found(g.dtype);
  g.count = json::require<int64_t>(j, "count", path);
  g.planned_inputs = json::require<int64_t>(j, "planned_inputs", path);
  g.items_sha256 = json::require<std::string>(j, "items_sha256", path);
  g.source = json::require<Json>(j, "source", path);
  g.skipped = json::require<std::vector<std::string>>(j, "skipped", path);
  g.complete = json::require<bool>(j, "complete", path);
  const Json shards = json::require<Json>(j, "shards", path);
  if (!shards.is_array()) throw bad_input("shards must be an array").file(path).key("shards");
  int64_t next = 0;
  for (const Json& s : shards) {
    GalleryShard sh{json::require<std::string>(s, "file", path), json::require<int64_t>(s, "first_input", path),
                    json::require<int64_t>(s, "inputs", path), json::require<int64_t>(s, "rows", path)};
    if (sh.first_input != next || sh.rows < 0 || sh.rows > sh.inputs) {
      throw bad_input("shards are not contiguous").file(path).key("shards").found(s.dump());
    }
    next += sh.inputs;
    g.shards.push_back(sh);
  }
  return g;
}

GalleryInfo build_gallery_store(const model::Bundle& bundle, const std::vector<GalleryItem>& items,
                                const GalleryBuildOptions& o) {
  if (o.dir.empty()) throw bad_input("gallery store folder not given").key("dir");
  if (o.shard_size < 1) throw bad_input("shard size must be positive").key("shard_size").found(std::to_string(o.shard_size));
  fs::create_directories(o.dir);
  const BuildLock lock(o.dir);
  GalleryInfo g;
  g.dir = o.dir;
  g.bundle_name = bundle.name();
  g.image_encoder_sha256 = image_encoder_sha256(bundle);
  g.preprocessing = preprocessing_record(bundle);
  g.dim = bundle.image_feature_dim();
  g.planned_inputs = static_cast<int64_t>(items.size());
  g.items_sha256 = gallery_items_digest(items);
  g.source = o.source;
  if (file_exists((fs::path(o.dir) / kInfoFile).string())) {
    GalleryInfo old = read_gallery_info(o.dir);
    if (old.image_encoder_sha256 != g.image_encoder_sha256) {
      throw bad_input("the folder holds a gallery store of another bundle").file(o.dir)
          .expected(g.bundle_name + " image encoder " + g.image_encoder_sha256)
          .found(old.bundle_name + " image encoder " + old.image_encoder_sha256);
    }
    if (old.preprocessing != g.preprocessing) {
      throw bad_input("the folder holds a gallery store with other preprocessing").file(o.dir)
          .expected(g.preprocessing.dump()).found(old.preprocessing.dump());
    }
    if (old.items_sha256 != g.items_sha256) {
      throw bad_input("the folder holds a gallery store of another item list (remove it to rebuild)").file(o.dir)
          .expected(g.items_sha256).found(old.items_sha256);
    }
    if (old.complete) return old;
    g.shards = old.shards;
    g.skipped = old.skipped;
    if (!g.shards.empty()) spdlog::info("{}: resuming at shard {}", o.dir, g.shards.size());
  }
  write_gallery_info(g);

  model::ClipModel clip(bundle);
  const image::Preprocess pre = model::image_preprocess(bundle);
  const int64_t n = g.planned_inputs;
  const int64_t n_shards = (n + o.shard_size - 1) / o.shard_size;
  int64_t done_inputs = 0;
  for (const auto& s : g.shards) done_inputs += s.inputs;
  ProgressOptions po;
  po.label = "embed";
  po.unit = "img";
  po.enabled = o.show_progress;
  Progress progress(n, po);
  progress.advance(done_inputs);

  // Decode + preprocess of batch b+1 (parallel, order kept) overlaps the encoding of b.
  const int64_t bs = std::max<int64_t>(1, o.batch_size);
  const auto t_start = std::chrono::steady_clock::now();
  double t_encode = 0;
  int64_t n_encoded = 0;
  for (int64_t s = static_cast<int64_t>(g.shards.size()); s < n_shards; ++s) {
    const int64_t first = s * o.shard_size, count = std::min(o.shard_size, n - first);
    std::vector<float> rows;
    std::string item_lines;
    int64_t n_rows = 0;
    auto launch = [&](int64_t b0) {
      return std::async(std::launch::async, [&, b0] {
        std::vector<image::LoadFailure> fails;
        auto imgs = load_range(items, first + b0, std::min(bs, count - b0), o, pre, &fails);
        return std::make_pair(std::move(imgs), std::move(fails));
      });
    };
    auto next = launch(0);
    for (int64_t b0 = 0; b0 < count; b0 += bs) {
      auto [imgs, fails] = next.get();
      if (b0 + bs < count) next = launch(b0 + bs);
      for (const auto& f : fails) {
        spdlog::warn("skipped {}: {}", f.path, f.message);
        g.skipped.push_back(items[first + b0 + f.index].path + ": " + f.message);
      }
      std::vector<image::FloatImage> good;
      for (std::size_t i = 0; i < imgs.size(); ++i) {
        if (imgs[i].data.empty()) continue;
        good.push_back(std::move(imgs[i]));
        item_lines += item_json(items[first + b0 + i]).dump() + "\n";
      }
      if (!good.empty()) {
        const auto te = std::chrono::steady_clock::now();
        torch::Tensor f = model::l2_normalize(clip.encode_images(good, bs)).to(torch::kCPU).to(torch::kFloat32).contiguous();
        t_encode += std::chrono::duration<double>(std::chrono::steady_clock::now() - te).count();
        n_encoded += f.size(0);
        rows.insert(rows.end(), f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
        n_rows += f.size(0);
      }
      progress.advance(static_cast<int64_t>(imgs.size()));
    }
    SafetensorsFile sf;
    sf.metadata["items"] = item_lines;
    sf.tensors["features"] = make_f32({n_rows, g.dim}, rows.data());
    write_safetensors((fs::path(o.dir) / shard_name(s)).string(), sf);
    g.shards.push_back({shard_name(s), first, count, n_rows});
    write_gallery_info(g);  // the shard counts from here on
  }
  progress.finish();
  if (n_encoded > 0) {
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    spdlog::info("embedded {} images in {:.2f} s ({:.0f} img/s); the image encoder alone {:.2f} s ({:.0f} img/s)",
                 n_encoded, wall, n_encoded / wall, t_encode, n_encoded / std::max(t_encode, 1e-9));
  }
  std::string all_items;
  g.count = 0;
  for (const auto& s : g.shards) {
    const SafetensorsFile sf = read_safetensors((fs::path(o.dir) / s.file).string());
    all_items += sf.metadata.at("items");
    g.count += s.rows;
  }
  write_file_atomic((fs::path(o.dir) / kItemsFile).string(), all_items);
  g.complete = true;
  write_gallery_info(g);
  return g;
}

GalleryInfo write_feature_store(const std::string& dir, const GalleryInfo& like, const std::vector<GalleryItem>& items,
                                const torch::Tensor& features, int64_t shard_size) {
  if (features.dim() != 2 || features.size(0) != static_cast<int64_t>(items.size())) {
    throw bad_input("features must be [items, dim]").key("features");
  }
  if (shard_size < 1) throw bad_input("shard size must be positive").key("shard_size");
  fs::create_directories(dir);
  GalleryInfo g = like;
  g.dir = dir;
  g.dim = features.size(1);
  g.planned_inputs = g.count = features.size(0);
  g.items_sha256 = gallery_items_digest(items);
  g.shards.clear();
  g.skipped.clear();
  g.complete = false;
  const torch::Tensor f = model::l2_normalize(features.to(torch::kCPU, torch::kFloat32)).contiguous();
  std::string all;
  for (int64_t s = 0, first = 0; first < g.count; ++s, first += shard_size) {
    const int64_t rows = std::min(shard_size, g.count - first);
    std::string lines;
    for (int64_t i = first; i < first + rows; ++i) lines += item_json(items[i]).dump() + "\n";
    SafetensorsFile sf;
    sf.metadata["items"] = lines;
    sf.tensors["features"] = make_f32({rows, g.dim}, f.data_ptr<float>() + first * g.dim);
    write_safetensors((fs::path(dir) / shard_name(s)).string(), sf);
    g.shards.push_back({shard_name(s), first, rows, rows});
    all += lines;
  }
  write_file_atomic((fs::path(dir) / kItemsFile).string(), all);
  g.complete = true;
  write_gallery_info(g);
  return g;
}

void check_complete(const GalleryInfo& g) {
  const std::string& dir = g.dir;
  int64_t covered = 0;
  for (const auto& s : g.shards) covered += s.inputs;
  std::vector<std::string> missing;
  for (const auto& s : g.shards) {
    if (!file_exists((fs::path(dir) / s.file).string())) missing.push_back(s.file);
  }
  if (!g.complete || covered != g.planned_inputs || !missing.empty() ||
      !file_exists((fs::path(dir) / kItemsFile).string())) {
    std::ostringstream what;
    what << g.shards.size() << " shard(s) covering " << covered << " of " << g.planned_inputs << " items";
    if (!missing.empty()) what << "; shard files missing: " << missing.front() << (missing.size() > 1 ? " ..." : "");
    if (!file_exists((fs::path(dir) / kItemsFile).string())) what << "; items.jsonl missing";
    throw bad_input("half-built gallery store (resume the build)").file(dir).expected("a complete store").found(what.str());
  }
}

std::vector<uint8_t> read_shard_features(const GalleryInfo& g, const GalleryShard& s) {
  const std::string p = (fs::path(g.dir) / s.file).string();
  SafetensorsFile sf = read_safetensors(p);
  auto t = sf.tensors.find("features");
  if (t == sf.tensors.end() || t->second.dtype != DType::kF32 || t->second.shape != std::vector<int64_t>{s.rows, g.dim}) {
    throw bad_input("shard has the wrong shape").file(p).key("features")
        .expected("F32 [" + std::to_string(s.rows) + ", " + std::to_string(g.dim) + "]");
  }
  return std::move(t->second.bytes);
}

GalleryStore GalleryStore::open_unchecked(const std::string& dir, bool with_features) {
  GalleryStore st;
  st.info_ = read_gallery_info(dir);
  GalleryInfo& g = st.info_;
  check_complete(g);
  if (with_features) {
    st.features_ = torch::empty({g.count, g.dim}, torch::kFloat32);
    int64_t row = 0;
    for (const auto& s : g.shards) {
      if (row + s.rows > g.count) throw bad_input("shards hold more rows than gallery.json's count").file(dir);
      const std::vector<uint8_t> bytes = read_shard_features(g, s);
      std::memcpy(st.features_.data_ptr<float>() + row * g.dim, bytes.data(), bytes.size());
      row += s.rows;
    }
    if (row != g.count) {
      throw bad_input("shards and gallery.json disagree on the row count").file(dir)
          .expected(std::to_string(g.count)).found(std::to_string(row));
    }
  }
  const std::string ipath = (fs::path(dir) / kItemsFile).string();
  std::istringstream lines(read_text_file(ipath));
  std::string line;
  int64_t row = 0;
  while (std::getline(lines, line)) {
    st.items_.push_back(item_from_json(json::parse_string(line, ipath + ":" + std::to_string(row + 1)),
                                       ipath + ":" + std::to_string(row + 1)));
    ++row;
  }
  if (row != g.count) {
    throw bad_input("items.jsonl and gallery.json disagree on the row count").file(ipath)
        .expected(std::to_string(g.count)).found(std::to_string(row) + " lines");
  }
  return st;
}

GalleryStore GalleryStore::open(const std::string& dir, const model::Bundle& bundle, bool with_features) {
  const GalleryInfo g = read_gallery_info(dir);
  const std::string mine = image_encoder_sha256(bundle);
  if (g.image_encoder_sha256 != mine) {
    throw bad_input("gallery store of another bundle").file(dir)
        .expected(bundle.name() + " image encoder " + mine)
        .found(g.bundle_name + " image encoder " + g.image_encoder_sha256);
  }
  if (g.preprocessing != preprocessing_record(bundle)) {
    throw bad_input("gallery store with other preprocessing").file(dir)
        .expected(preprocessing_record(bundle).dump()).found(g.preprocessing.dump());
  }
  return open_unchecked(dir, with_features);
}

SearchResult search_exact(const torch::Tensor& gallery, const torch::Tensor& queries, int64_t k, int64_t chunk) {
  if (gallery.dim() != 2 || queries.dim() != 2 || gallery.size(1) != queries.size(1)) {
    throw bad_input("gallery and queries must be [N, F] and [Q, F]")
        .found("[" + std::to_string(gallery.size(0)) + ", " + std::to_string(gallery.dim() > 1 ? gallery.size(1) : 0) +
               "] and [" + std::to_string(queries.size(0)) + ", " +
               std::to_string(queries.dim() > 1 ? queries.size(1) : 0) + "]");
  }
  if (k < 1) throw bad_input("k must be positive").found(std::to_string(k));
  torch::NoGradGuard ng;
  const int64_t n = gallery.size(0), q = queries.size(0);
  k = std::min(k, n);
  chunk = std::max<int64_t>(chunk, 1);
  torch::Tensor best_s = torch::empty({q, 0}, torch::kFloat32), best_i = torch::empty({q, 0}, torch::kInt64);
  const torch::Tensor qf = queries.to(torch::kFloat32);
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t c1 = std::min(n, c0 + chunk);
    torch::Tensor s = torch::matmul(qf, gallery.slice(0, c0, c1).to(torch::kFloat32).t());
    auto [ts, ti] = s.topk(std::min(k, c1 - c0), 1, true, true);
    torch::Tensor cs = torch::cat({best_s, ts}, 1), ci = torch::cat({best_i, ti + c0}, 1);
    auto [ms, mi] = cs.topk(std::min<int64_t>(k, cs.size(1)), 1, true, true);
    best_s = ms;
    best_i = ci.gather(1, mi);
  }
  return {best_s, best_i};
}

}  // namespace ctok::retrieval
