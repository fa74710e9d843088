#include "gallery_adapter.hpp"

#include <filesystem>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/gallery_store.hpp"

namespace ctok::gair::detail {

namespace fs = std::filesystem;

Gallery embed_split(const model::Bundle& bundle, const data::Split& split, const std::string& root, int threads, bool quiet) {
  Gallery g;
  const std::vector<data::Crop> crops = data::gallery(split);
  if (crops.empty()) throw bad_input("the split has no shop item with style > 0 to search").file(split.dir);
  image::LoadOptions lo;
  lo.preprocess = model::image_preprocess(bundle);
  lo.threads = threads;
  model::ClipModel clip(bundle);
  ProgressOptions po;
  po.label = "gallery";
  po.unit = "img";
  po.enabled = !quiet;
  Progress progress(static_cast<int64_t>(crops.size()), po);
  const size_t chunk = 512;
  std::vector<torch::Tensor> parts;
  for (size_t b = 0; b < crops.size(); b += chunk) {
    std::vector<image::LoadRequest> req;
    for (size_t i = b; i < std::min(crops.size(), b + chunk); ++i) req.push_back({crops[i].image_path, crops[i].box});
    parts.push_back(model::l2_normalize(clip.encode_images(image::load_batch(req, lo), 256)));
    progress.advance(static_cast<int64_t>(req.size()));
  }
  progress.finish();
  g.features = torch::cat(parts).to(torch::kCPU, torch::kFloat32);
  for (const auto& c : crops) {
    GalleryItem it;
    it.image_path = c.image_path;
    it.box = c.box;
    it.id = c.id();
    it.keys = {{"pair_id", c.pair_id}, {"style", c.style}, {"category_name", c.category_name}, {"source", c.source}};
    if (!c.color.empty()) it.keys["color"] = c.color;
    if (!c.pattern.empty()) it.keys["pattern"] = c.pattern;
    g.items.push_back(std::move(it));
  }
  g.provenance = {{"kind", "df2-split"}, {"root", root}, {"split", split.name},
                  {"items", g.items.size()}, {"embedded_by", bundle.name()}};
  return g;
}

Gallery open_store(const std::string& dir, const model::Bundle& bundle) {
  if (!directory_exists(dir)) throw bad_input("gallery store not found or not a folder").file(dir).key("gallery");
  // Refuses a store of another bundle (both hashes named) or a half-built one.
  const retrieval::GalleryStore st = retrieval::GalleryStore::open(dir, bundle);
  const std::string root = st.info().source.value("root", std::string());
  Gallery g;
  g.features = st.features();
  for (const auto& it : st.items()) {
    GalleryItem gi;
    const fs::path p(it.path);
    gi.image_path = p.is_absolute() || root.empty() ? p.string() : (fs::path(root) / p).string();
    gi.box = it.box;
    gi.id = it.keys.contains("id") && it.keys["id"].is_string() ? it.keys["id"].get<std::string>() : it.path;
    gi.keys = it.keys;
    g.items.push_back(std::move(gi));
  }
  g.provenance = {{"kind", "store"},           {"dir", fs::absolute(dir).lexically_normal().string()},
                  {"items", g.items.size()},   {"source", st.info().source},
                  {"embedded_by", st.info().bundle_name}, {"image_encoder_sha256", st.info().image_encoder_sha256}};
  return g;
}

}  // namespace ctok::gair::detail
