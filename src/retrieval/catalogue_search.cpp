// ctok-search's library side: open a catalogue (FAISS or exact), encode queries, write the
// report (catalogue_search.hpp).
#include "ctok/retrieval/catalogue_search.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/format.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/html.hpp"
#include "ctok/core/version.hpp"
#include "ctok/image/image.hpp"

namespace fs = std::filesystem;

namespace ctok::retrieval {
using Json = nlohmann::json;
namespace {

// A crop for the sheet: big images shrunk (bicubic) to fit, small ones enlarged by a whole
// factor (nearest), on a white square.
image::Image sheet_tile(image::Image im, int side) {
  if (std::max(im.width, im.height) > side) {
    const double s = double(side) / std::max(im.width, im.height);
    im = image::resize_bicubic(im, std::max(1, int(std::lround(im.width * s))), std::max(1, int(std::lround(im.height * s))));
  }
  return image::square_tile(im, side);
}

const char* kStyle = R"(
body { font: 16px/1.4 sans-serif; margin: 24px; color: #111; background: #fff; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 19px; margin: 0 0 8px; }
table.meta td { padding: 2px 12px 2px 0; vertical-align: top; }
table.meta td:first-child { color: #555; white-space: nowrap; }
code { font-size: 15px; background: #f2f2f2; padding: 1px 4px; }
section.query { border: 2px solid #ddd; border-radius: 8px; padding: 10px 14px; margin: 16px 0; }
.strip { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; text-align: center; width: 140px; }
figure img { width: 128px; height: 128px; border: 1px solid #ccc; display: block; margin: 0 auto;
             image-rendering: pixelated; image-rendering: crisp-edges; }
figure.query img { border: 3px solid #d97b00; }
figure .missing { width: 128px; height: 128px; border: 1px dashed #c00; color: #c00; font-size: 13px;
                  display: flex; align-items: center; justify-content: center; margin: 0 auto; }
figcaption { font-size: 14px; margin-top: 2px; }
figcaption .path { display: block; font-size: 12px; color: #555; overflow-wrap: anywhere; }
.label { font-size: 14px; color: #555; margin: 4px 0; }
pre { font-size: 13px; background: #f7f7f7; padding: 8px; overflow-x: auto; }
)";

}  // namespace

Catalogue Catalogue::open(const std::string& dir, const model::Bundle& bundle, bool exact) {
  Catalogue c;
  c.dir_ = dir;
  const bool use_index = !exact && read_index_info(dir).has_value();
  c.store_ = GalleryStore::open(dir, bundle, /*with_features=*/!use_index);
  if (use_index) c.index_ = FaissIndex::open(dir);
  return c;
}

std::string Catalogue::root() const { return store_.info().source.value("root", std::string()); }

SearchResult Catalogue::search(const torch::Tensor& queries, int64_t k, int64_t nprobe) const {
  if (store_.info().count == 0) throw bad_input("the store holds no item").file(dir_);
  if (index_) return index_->search(queries, k, nprobe);
  return search_exact(store_.features(), queries, k);
}

Json Catalogue::describe(int64_t nprobe) const {
  const GalleryInfo& g = store_.info();
  Json j = {{"dir", dir_},
            {"count", g.count},
            {"bundle", {{"name", g.bundle_name}, {"image_encoder_sha256", g.image_encoder_sha256}}},
            {"source", g.source}};
  if (index_) {
    const IndexInfo& i = index_->info();
    const int64_t np = i.spec.kind == IndexKind::kFlat ? 0 : std::clamp<int64_t>(nprobe > 0 ? nprobe : i.default_nprobe, 1, i.spec.nlist);
    j["search"] = {{"method", "faiss"}, {"index", index_spec_name(i.spec)}, {"nprobe", np},
                   {"exact", i.spec.kind == IndexKind::kFlat}, {"faiss_version", i.faiss_version}};
  } else {
    j["search"] = {{"method", "exact scan"}, {"index", nullptr}, {"exact", true}};
  }
  return j;
}

std::vector<CatalogueQuery> read_query_file(const std::string& path) {
  if (!file_exists(path)) throw bad_input("query file not found").file(path).key("queries");
  std::istringstream in(read_text_file(path));
  std::vector<CatalogueQuery> q;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto a = line.find_first_not_of(" \t");
    if (a == std::string::npos || line[a] == '#') continue;
    const auto b = line.find_last_not_of(" \t");
    q.push_back({CatalogueQuery::Kind::kText, line.substr(a, b - a + 1)});
  }
  if (q.empty()) throw bad_input("the query file holds no query").file(path).key("queries");
  return q;
}

torch::Tensor encode_queries(const model::Bundle& bundle, const std::vector<CatalogueQuery>& queries,
                             const model::TokenVectors& tokens, int threads) {
  if (queries.empty()) throw bad_input("no query given").key("query");
  torch::NoGradGuard ng;
  model::ClipModel clip(bundle);
  std::vector<std::string> prompts;
  std::vector<image::LoadRequest> images;
  for (const auto& q : queries) {
    if (q.kind == CatalogueQuery::Kind::kText) {
      prompts.push_back(q.text);
    } else {
      images.push_back({q.text, std::nullopt, false});
    }
  }
  torch::Tensor text, img;
  if (!prompts.empty()) {
    if (!tokens.empty()) clip.check_tokens(tokens);
    text = model::l2_normalize(clip.encode_text(prompts, tokens).features).to(torch::kCPU, torch::kFloat32);
  }
  if (!images.empty()) {
    image::LoadOptions lo;
    lo.preprocess = model::image_preprocess(bundle);
    lo.threads = threads;
    img = model::l2_normalize(clip.encode_images(image::load_batch(images, lo))).to(torch::kCPU, torch::kFloat32);
  }
  std::vector<torch::Tensor> rows;
  int64_t t = 0, i = 0;
  for (const auto& q : queries) {
    rows.push_back(q.kind == CatalogueQuery::Kind::kText ? text[t++] : img[i++]);
  }
  return torch::stack(rows).contiguous();
}

Json write_search_report(const Catalogue& cat, const std::vector<CatalogueQuery>& queries, const SearchResult& hits,
                         const SearchReportOptions& o) {
  if (o.out.empty()) throw bad_input("report folder not given").key("out");
  const fs::path final_dir = fs::absolute(o.out).lexically_normal();
  if (fs::exists(final_dir) && !o.force && !(fs::is_directory(final_dir) && fs::is_empty(final_dir))) {
    throw bad_input("output exists (use --force to overwrite)").file(o.out).key("out");
  }
  const std::string root = o.root.empty() ? cat.root() : o.root;
  const fs::path tmp = final_dir.parent_path() / (final_dir.filename().string() + ".partial-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp / "crops");
  try {
    const auto& items = cat.store().items();
    const torch::Tensor scores = hits.scores.to(torch::kCPU, torch::kFloat32).contiguous();
    const torch::Tensor idx = hits.indices.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t k = idx.size(1);
    Json qs = Json::array();
    std::ostringstream h;
    const Json where = cat.describe(0);
    h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ctok-search: "
      << html_escape(queries.size() == 1 ? queries[0].text : std::to_string(queries.size()) + " queries")
      << "</title><style>" << kStyle << "</style></head><body>\n<h1>Catalogue search</h1>\n<table class=\"meta\">"
      << "<tr><td>store</td><td><code>" << html_escape(fs::absolute(where["dir"].get<std::string>()).string())
      << "</code>, " << cat.store().info().count << " items, bundle " << html_escape(cat.store().info().bundle_name)
      << "</td></tr><tr><td>images from</td><td><code>" << html_escape(root) << "</code></td></tr></table>\n";
    int missing = 0;
    for (size_t qi = 0; qi < queries.size(); ++qi) {
      const CatalogueQuery& q = queries[qi];
      Json jq = {{"query", q.text}, {"kind", q.kind == CatalogueQuery::Kind::kText ? "text" : "image"}};
      h << "<section class=\"query\"><h2>" << (qi + 1) << ". " << (q.kind == CatalogueQuery::Kind::kText ? "" : "image ")
        << "<code>" << html_escape(q.text) << "</code></h2>\n<div class=\"strip\">";
      if (q.kind == CatalogueQuery::Kind::kImage) {
        const std::string png = "crops/q" + std::to_string(qi + 1) + "-query.png";
        image::write_png((tmp / png).string(), sheet_tile(image::decode_file(q.text), o.tile));
        h << "<figure class=\"query\"><img src=\"" << png << "\" alt=\"query image\"><figcaption>query</figcaption></figure>";
        jq["png"] = png;
      }
      Json jh = Json::array();
      for (int64_t r = 0; r < k; ++r) {
        const int64_t row = idx[qi][r].item<int64_t>();
        if (row < 0) break;  // the probed IVF lists held fewer items
        const float score = scores[qi][r].item<float>();
        const GalleryItem& it = items.at(static_cast<size_t>(row));
        const fs::path p(it.path);
        const std::string file = p.is_absolute() || root.empty() ? p.string() : (fs::path(root) / p).string();
        const std::string png = "crops/q" + std::to_string(qi + 1) + "-" + std::to_string(r + 1) + ".png";
        Json box = it.box ? Json{it.box->x1, it.box->y1, it.box->x2, it.box->y2} : Json(nullptr);
        bool ok = true;
        try {
          image::Image im = image::decode_file(file);
          if (it.box) im = image::crop(im, *it.box);
          image::write_png((tmp / png).string(), sheet_tile(im, o.tile));
        } catch (const Error& e) {
          ok = false;
          ++missing;
          spdlog::warn("no crop for rank {} of query {}: {}", r + 1, qi + 1, e.what());
        }
        jh.push_back({{"rank", r + 1}, {"score", score}, {"row", row}, {"path", it.path}, {"box", box},
                      {"keys", it.keys}, {"png", ok ? Json(png) : Json(nullptr)}});
        const std::string title = it.path + (it.keys.empty() ? "" : " " + it.keys.dump());
        h << "<figure>";
        if (ok) {
          h << "<img src=\"" << png << "\" alt=\"" << html_escape(it.path) << "\" title=\"" << html_escape(title) << "\">";
        } else {
          h << "<div class=\"missing\" title=\"" << html_escape(file) << "\">image not readable</div>";
        }
        h << "<figcaption>#" << (r + 1) << " &middot; " << fixed(score, 3) << "<span class=\"path\">"
          << html_escape(p.filename().string()) << (it.keys.contains("id") ? " " + html_escape(it.keys["id"].dump()) : "")
          << "</span></figcaption></figure>";
      }
      h << "</div></section>\n";
      jq["hits"] = jh;
      qs.push_back(jq);
    }
    Json results = {{"gallery", where}, {"top", k}, {"queries", qs}, {"root", root},
                    {"ctok_version", version_string()}, {"created", utc_timestamp()}};
    for (auto it = o.extra.begin(); it != o.extra.end(); ++it) results[it.key()] = it.value();
    h << "<h2>Provenance</h2>\n<pre>"
      << html_escape(Json({{"gallery", results["gallery"]}, {"tokens", results.value("tokens", Json::array())},
                           {"seconds", results.value("seconds", Json::object())}, {"ctok_version", version_string()}})
                         .dump(2))
      << "</pre>\n<p class=\"label\">All data in <a href=\"results.json\">results.json</a>.</p>\n</body></html>\n";
    if (missing) spdlog::warn("{} crop(s) could not be read from {} (use --root if the images moved)", missing, root);
    write_file_atomic((tmp / "results.json").string(), results.dump(2) + "\n");
    write_file_atomic((tmp / "index.html").string(), h.str());
    const fs::path old = final_dir.parent_path() / (final_dir.filename().string() + ".old-" + std::to_string(::getpid()));
    if (fs::exists(final_dir)) fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old, ec);
    return results;
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace ctok::retrieval
