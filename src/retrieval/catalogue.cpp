// Catalogue lists (folder, file list, DeepFashion2 split), deterministic shards, merge,
// and the description/verification of a store (ctok-index).
#include "ctok/retrieval/catalogue.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/deepfashion2.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/retrieval/faiss_index.hpp"

namespace fs = std::filesystem;

namespace ctok::retrieval {
using Json = nlohmann::json;
namespace {

bool hidden(const fs::path& rel) {
  for (const auto& part : rel) {
    const std::string s = part.string();
    if (!s.empty() && s[0] == '.' && s != "." && s != "..") return true;
  }
  return false;
}

std::string absolute_dir(const std::string& dir) { return fs::absolute(fs::path(dir)).lexically_normal().string(); }

// source.shard of a store, or null.
const Json* shard_record(const GalleryInfo& g) {
  auto it = g.source.find("shard");
  return it != g.source.end() && it->is_object() ? &*it : nullptr;
}

}  // namespace

CatalogueList catalogue_from_folder(const std::string& dir) {
  if (!directory_exists(dir)) throw bad_input("image folder not found or not a folder").file(dir).key("images");
  CatalogueList list;
  list.root = absolute_dir(dir);
  std::vector<std::string> rel;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw bad_input("cannot read the image folder: " + ec.message()).file(dir).key("images");
    const fs::path r = fs::relative(it->path(), dir);
    if (hidden(r)) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && data::has_image_extension(it->path().string())) rel.push_back(r.generic_string());
  }
  if (ec) throw bad_input("cannot read the image folder: " + ec.message()).file(dir).key("images");
  if (rel.empty()) throw bad_input("the folder holds no image (jpg, jpeg, png, webp, bmp), nor do its sub-folders").file(dir).key("images");
  std::sort(rel.begin(), rel.end());
  for (auto& r : rel) list.items.push_back({std::move(r), std::nullopt, Json::object()});
  list.source = {{"kind", "folder"}, {"root", list.root}, {"items", list.items.size()}};
  return list;
}

CatalogueList catalogue_from_list(const std::string& file) {
  if (!file_exists(file)) throw bad_input("image list not found").file(file).key("list");
  CatalogueList list;
  list.root = fs::absolute(fs::path(file)).parent_path().lexically_normal().string();
  std::istringstream in(read_text_file(file));
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    GalleryItem it;
    const auto tab = line.find('\t');
    it.path = line.substr(0, tab);
    if (tab != std::string::npos) {
      const std::string box = line.substr(tab + 1);
      int v[4];
      char extra = 0;
      if (std::sscanf(box.c_str(), "%d,%d,%d,%d%c", &v[0], &v[1], &v[2], &v[3], &extra) != 4 || v[2] <= v[0] ||
          v[3] <= v[1] || v[0] < 0 || v[1] < 0) {
        throw bad_input("malformed box (PATH<TAB>x1,y1,x2,y2 with x1 < x2, y1 < y2, all >= 0)")
            .file(file + ":" + std::to_string(lineno)).found("\"" + box + "\"");
      }
      it.box = image::Box{v[0], v[1], v[2], v[3]};
    }
    it.keys = {{"line", lineno}};
    list.items.push_back(std::move(it));
  }
  if (list.items.empty()) throw bad_input("the image list names no image").file(file).key("list");
  list.source = {{"kind", "list"}, {"file", fs::absolute(file).lexically_normal().string()}, {"root", list.root},
                 {"items", list.items.size()}};
  return list;
}

CatalogueList catalogue_from_df2(const std::string& root, const std::string& split_name) {
  const data::Split split = data::read_split(root, split_name);
  const std::vector<data::Crop> crops = data::gallery(split);
  if (crops.empty()) throw bad_input("the split has no shop item: nothing to index").file(split.dir);
  CatalogueList list;
  list.root = absolute_dir(root);
  for (const auto& c : crops) {
    GalleryItem it;
    it.path = (fs::path(split_name) / "image" / (c.stem + ".jpg")).string();
    it.box = c.box;
    it.keys = {{"id", c.id()}, {"pair_id", c.pair_id}, {"style", c.style}, {"category_name", c.category_name}};
    if (!c.color.empty()) it.keys["color"] = c.color;
    if (!c.pattern.empty()) it.keys["pattern"] = c.pattern;
    list.items.push_back(std::move(it));
  }
  list.source = {{"kind", "df2-split"}, {"root", list.root}, {"split", split_name}, {"items", list.items.size()}};
  return list;
}

ShardSpec parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  auto num = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stoll(s);
  };
  const int64_t i = slash == std::string::npos ? -1 : num(text.substr(0, slash));
  const int64_t n = slash == std::string::npos ? -1 : num(text.substr(slash + 1));
  if (i < 0 || n < 1 || i >= n) {
    throw bad_input("malformed shard spec").key("shard").expected("i/n with 0 <= i < n (0-based: 0/4 .. 3/4)")
        .found("\"" + text + "\"");
  }
  return {i, n};
}

std::pair<int64_t, int64_t> shard_range(int64_t n, const ShardSpec& s) {
  return {n * s.index / s.count, n * (s.index + 1) / s.count};
}

GalleryInfo build_catalogue(const model::Bundle& bundle, const CatalogueList& list, const CatalogueBuildOptions& o) {
  const auto [first, end] = shard_range(static_cast<int64_t>(list.items.size()), o.shard);
  if (first == end) {
    throw bad_input("the shard holds no item (more shards than items)").key("shard")
        .expected("at most " + std::to_string(list.items.size()) + " shards")
        .found(std::to_string(o.shard.index) + "/" + std::to_string(o.shard.count));
  }
  const std::vector<GalleryItem> slice(list.items.begin() + first, list.items.begin() + end);
  GalleryBuildOptions bo;
  bo.dir = o.dir;
  bo.source_root = list.root;
  bo.source = list.source;
  bo.source["shard"] = {{"index", o.shard.index}, {"count", o.shard.count}, {"first", first}, {"end", end},
                        {"total", list.items.size()}, {"list_sha256", gallery_items_digest(list.items)}};
  bo.shard_size = o.shard_size;
  bo.batch_size = o.batch_size;
  bo.threads = o.threads;
  bo.skip_bad = o.skip_bad;
  bo.show_progress = o.show_progress;
  return build_gallery_store(bundle, slice, bo);
}

MergeReport merge_catalogues(const std::vector<std::string>& inputs, const std::string& out) {
  const auto t0 = std::chrono::steady_clock::now();
  if (inputs.empty()) throw bad_input("nothing to merge: give the shard stores").key("stores");
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out))) {
    throw bad_input("the merge output exists and is not empty (merge into a new folder)").file(out).key("out");
  }
  struct In {
    GalleryInfo g;
    int64_t index, count, first, end, total;
    std::string list;
  };
  std::vector<In> ins;
  for (const auto& dir : inputs) {
    GalleryInfo g = read_gallery_info(dir);
    check_complete(g);
    const Json* s = shard_record(g);
    if (!s) throw bad_input("not a catalogue store (its gallery.json records no shard; built by ctok-index?)").file(dir);
    const std::string where = (fs::path(dir) / "gallery.json").string();
    In in{g,
          json::require<int64_t>(*s, "index", where),
          json::require<int64_t>(*s, "count", where),
          json::require<int64_t>(*s, "first", where),
          json::require<int64_t>(*s, "end", where),
          json::require<int64_t>(*s, "total", where),
          json::require<std::string>(*s, "list_sha256", where)};
    if (!ins.empty()) {
      const In& a = ins.front();
      if (g.image_encoder_sha256 != a.g.image_encoder_sha256) {
        throw bad_input("shard of another bundle").file(dir)
            .expected(a.g.bundle_name + " image encoder " + a.g.image_encoder_sha256 + " (" + a.g.dir + ")")
            .found(g.bundle_name + " image encoder " + g.image_encoder_sha256);
      }
      if (g.preprocessing != a.g.preprocessing || g.dim != a.g.dim) {
        throw bad_input("shard with other preprocessing").file(dir).expected(a.g.preprocessing.dump())
            .found(g.preprocessing.dump());
      }
      if (in.list != a.list || in.total != a.total || in.count != a.count) {
        throw bad_input("shard of another catalogue list (foreign shard)").file(dir)
            .expected("shard of " + std::to_string(a.count) + " over " + std::to_string(a.total) + " items, list " +
                      a.list.substr(0, 12))
            .found("shard of " + std::to_string(in.count) + " over " + std::to_string(in.total) + " items, list " +
                   in.list.substr(0, 12));
      }
    }
    ins.push_back(std::move(in));
  }
  std::sort(ins.begin(), ins.end(), [](const In& a, const In& b) { return a.first < b.first; });
  for (std::size_t i = 1; i < ins.size(); ++i) {
    if (ins[i].first < ins[i - 1].end) {
      throw bad_input("shards overlap").file(ins[i].g.dir)
          .found("items [" + std::to_string(ins[i].first) + ", " + std::to_string(ins[i].end) + ") and [" +
                 std::to_string(ins[i - 1].first) + ", " + std::to_string(ins[i - 1].end) + ") of " + ins[i - 1].g.dir);
    }
  }
  std::vector<std::string> missing;
  std::map<int64_t, bool> have;
  for (const auto& in : ins) have[in.index] = true;
  for (int64_t i = 0; i < ins.front().count; ++i) {
    if (!have.count(i)) missing.push_back(std::to_string(i) + "/" + std::to_string(ins.front().count));
  }
  int64_t covered = 0;
  for (const auto& in : ins) covered += in.end - in.first;
  if (!missing.empty() || covered != ins.front().total) {
    std::string m;
    for (const auto& s : missing) m += (m.empty() ? "" : ", ") + s;
    throw bad_input("shards missing: the stores cover " + std::to_string(covered) + " of " +
                    std::to_string(ins.front().total) + " items")
        .key("stores").expected("every shard of " + std::to_string(ins.front().count)).found("missing " + m);
  }

  // Built in a sibling folder and renamed into place: a killed merge leaves no store at `out`.
  const fs::path outp = fs::absolute(out).lexically_normal();
  const fs::path tmp = outp.parent_path() / (outp.filename().string() + ".merging-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  GalleryInfo g;
  g.dir = tmp.string();
  g.bundle_name = ins.front().g.bundle_name;
  g.image_encoder_sha256 = ins.front().g.image_encoder_sha256;
  g.preprocessing = ins.front().g.preprocessing;
  g.dim = ins.front().g.dim;
  g.planned_inputs = ins.front().total;
  g.items_sha256 = ins.front().list;
  g.source = ins.front().g.source;
  g.source["shard"] = {{"index", 0}, {"count", 1}, {"first", 0}, {"end", g.planned_inputs}, {"total", g.planned_inputs},
                       {"list_sha256", g.items_sha256}};
  Json from = Json::array();
  {
    std::ofstream items((tmp / "items.jsonl").string(), std::ios::binary);
    int64_t next = 0;
    for (const auto& in : ins) {
      from.push_back(absolute_dir(in.g.dir));
      for (const auto& s : in.g.shards) {
        char name[64];
        std::snprintf(name, sizeof name, "features-%05zu.safetensors", g.shards.size());
        const fs::path src = fs::path(in.g.dir) / s.file, dst = tmp / name;
        std::error_code ec;
        fs::create_hard_link(src, dst, ec);  // shard files are immutable once listed
        if (ec) fs::copy_file(src, dst);
        g.shards.push_back({name, next, s.inputs, s.rows});
        next += s.inputs;
        g.count += s.rows;
      }
      const std::string text = read_text_file((fs::path(in.g.dir) / "items.jsonl").string());
      items.write(text.data(), static_cast<std::streamsize>(text.size()));
      g.skipped.insert(g.skipped.end(), in.g.skipped.begin(), in.g.skipped.end());
    }
    items.flush();
    if (!items) throw runtime_failure("cannot write items.jsonl").file((tmp / "items.jsonl").string());
  }
  g.source["merged_from"] = from;
  g.complete = true;
  write_gallery_info(g);
  if (fs::exists(outp)) fs::remove(outp);  // an empty folder (checked above)
  fs::rename(tmp, outp);
  g.dir = outp.string();
  MergeReport r;
  r.info = g;
  r.inputs = static_cast<int64_t>(ins.size());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

Json describe_store(const std::string& dir, bool verify) {
  const GalleryInfo g = read_gallery_info(dir);
  Json j = {{"dir", dir},
            {"bundle", {{"name", g.bundle_name}, {"image_encoder_sha256", g.image_encoder_sha256}}},
            {"dim", g.dim},
            {"count", g.count},
            {"planned_inputs", g.planned_inputs},
            {"skipped", g.skipped.size()},
            {"shards", g.shards.size()},
            {"source", g.source},
            {"complete", g.complete},
            {"feature_bytes", g.count * g.dim * 4}};
  std::string problem;
  try {
    check_complete(g);
  } catch (const Error& e) {
    problem = e.what();
  }
  if (!problem.empty()) j["problem"] = problem;
  if (auto idx = read_index_info(dir)) {
    j["index"] = {{"spec", index_spec_name(idx->spec)}, {"count", idx->count}, {"bytes", idx->bytes},
                  {"trained_on", idx->trained_on}, {"default_nprobe", idx->default_nprobe},
                  {"faiss_version", idx->faiss_version},
                  {"stale", idx->count != g.count || idx->items_sha256 != g.items_sha256}};
  } else {
    j["index"] = nullptr;
  }
  if (!verify) return j;
  if (!problem.empty()) throw bad_input("verify: " + problem).file(dir);
  int64_t rows = 0;
  double worst = 0;
  for (const auto& s : g.shards) {
    const std::vector<uint8_t> bytes = read_shard_features(g, s);
    const float* f = reinterpret_cast<const float*>(bytes.data());
    for (int64_t r = 0; r < s.rows; ++r) {
      double n2 = 0;
      for (int64_t c = 0; c < g.dim; ++c) {
        const float v = f[r * g.dim + c];
        if (!std::isfinite(v)) {
          throw bad_input("verify: a feature is not finite").file((fs::path(dir) / s.file).string())
              .found("row " + std::to_string(r));
        }
        n2 += double(v) * v;
      }
      worst = std::max(worst, std::abs(std::sqrt(n2) - 1.0));
    }
    rows += s.rows;
    if (worst > 1e-3) {
      throw bad_input("verify: features are not L2-normalised").file((fs::path(dir) / s.file).string())
          .found("|norm - 1| = " + std::to_string(worst));
    }
  }
  if (rows != g.count) {
    throw bad_input("verify: the shards hold another row count than gallery.json").file(dir)
        .expected(std::to_string(g.count)).found(std::to_string(rows));
  }
  GalleryStore::open_unchecked(dir, /*with_features=*/false);  // items.jsonl parses, one line per row
  if (j["index"].is_object()) {
    const auto idx = read_index_info(dir);
    const std::string path = (fs::path(dir) / kIndexFile).string();
    if (!file_exists(path) || sha256_file(path) != idx->file_sha256) {
      throw bad_input("verify: index.faiss does not match the sha256 in index.json").file(path);
    }
    FaissIndex::open(dir);  // stale or unreadable: bad_input
  }
  j["verified"] = {{"rows", rows}, {"max_norm_error", worst}};
  return j;
}

}  // namespace ctok::retrieval
