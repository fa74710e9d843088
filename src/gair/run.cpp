// The GAIR application pipeline (report.hpp): inputs -> correct_and_score -> search.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/deepfashion2.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/gair/report.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/token/attributes.hpp"
#include "ctok/token/token_file.hpp"
#include "gallery_adapter.hpp"

namespace ctok::gair {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

nlohmann::json sha_of(const model::Manifest& m, const std::string& file) {
  auto it = m.sha256.find(file);
  return it == m.sha256.end() ? nlohmann::json(nullptr) : nlohmann::json(it->second);
}

std::vector<image::Image> decode_all(const std::vector<image::LoadRequest>& requests) {
  std::vector<image::Image> out;
  out.reserve(requests.size());
  for (const auto& r : requests) {
    image::Image im = image::decode_file(r.path);
    out.push_back(r.box ? image::crop(im, *r.box) : std::move(im));
  }
  return out;
}

// The attribute file for the token's parent, else for a parent the token's concept names
// (FashionWorld's "parent" key), else none.
std::string find_attributes(const GairRequest& r, const std::string& parent, const std::string& concept_parent) {
  if (!r.attributes.empty()) {
    if (!file_exists(r.attributes)) throw bad_input("attribute file not found").file(r.attributes).key("attributes");
    return r.attributes;
  }
  for (const std::string& p : {parent, concept_parent}) {
    if (p.empty()) continue;
    const std::string dir = token::default_attributes_dir();
    std::string name = p;
    std::replace(name.begin(), name.end(), ' ', '_');
    const std::string path = (fs::path(dir) / (name + ".json")).string();
    if (file_exists(path)) return path;
  }
  return {};
}

}  // namespace

ItemKey parse_item_key(const std::string& text, const std::string& key) {
  const size_t colon = text.find(':');
  ItemKey k;
  try {
    size_t a = 0, b = 0;
    if (colon == std::string::npos) throw std::invalid_argument("no colon");
    k.pair_id = std::stoll(text.substr(0, colon), &a);
    k.style = std::stoi(text.substr(colon + 1), &b);
    if (a != colon || b != text.size() - colon - 1 || k.pair_id < 0 || k.style < 1) throw std::invalid_argument("range");
  } catch (const std::exception&) {
    throw bad_input("expected PAIR_ID:STYLE").key(key).found("\"" + text + "\"");
  }
  return k;
}

void check_output_dir(const std::string& dir, bool force) {
  if (dir.empty()) throw bad_input("no output folder given").key("out");
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) throw bad_input("output exists and is not a folder").file(dir);
    if (!force && !fs::is_empty(dir, ec)) throw bad_input("output folder is not empty (use --force to replace it)").file(dir);
  }
  const fs::path parent = fs::absolute(dir).parent_path();
  if (!fs::is_directory(parent, ec)) throw bad_input("the output folder's parent does not exist").file(parent.string());
  if (access(parent.c_str(), W_OK) != 0) throw bad_input("cannot write into the output folder's parent").file(parent.string());
}

GairRun run(const model::Bundle& bundle, const GairRequest& r, const GairOptions& options, bool quiet) {
  const auto t_start = Clock::now();
  validate(options);
  if (r.df2_root.empty() == r.store.empty()) {
    throw bad_input("give the gallery as a DeepFashion2 split (--df2 ROOT --split NAME) or a store (--gallery DIR), one of them");
  }
  GairRun out;
  out.request = r;
  out.options = options;
  const model::Manifest& m = bundle.manifest();
  out.bundle_info = {{"name", bundle.name()},
                     {"dir", bundle.dir()},
                     {"text_encoder_sha256", bundle.text_encoder_sha256()},
                     {"image_encoder_sha256", sha_of(m, m.image.file)},
                     {"unet_sha256", m.diffusion ? sha_of(m, m.diffusion->unet) : nlohmann::json(nullptr)},
                     {"logit_scale", bundle.logit_scale()}};

  // The token: this bundle's, one file.
  auto t0 = Clock::now();
  const token::TokenFile tf = token::read_token_file(r.token_file);
  if (!tf.bundle_sha256.empty() && tf.bundle_sha256 != bundle.text_encoder_sha256()) {
    throw bad_input("token " + tf.token + " was learned on another bundle (" + (tf.bundle.empty() ? "?" : tf.bundle) +
                    ", text encoder sha256 " + tf.bundle_sha256 + "); this bundle (" + bundle.name() +
                    ") has text encoder sha256 " + bundle.text_encoder_sha256())
        .file(r.token_file);
  }
  out.tokens = token::load_tokens({r.token_file}, bundle);
  const nlohmann::json source = tf.config.is_object() && tf.config.contains("source") ? tf.config["source"] : nlohmann::json();
  out.token_info = {{"token", tf.token}, {"parent", tf.parent}, {"bundle", tf.bundle},
                    {"bundle_sha256", tf.bundle_sha256}, {"source", source}};
  const std::string parent = tf.parent.empty() ? std::string("item") : tf.parent;

  // The gallery (and the split, when it is one).
  std::optional<data::Split> split;
  t0 = Clock::now();
  if (!r.store.empty()) {
    out.gallery = detail::open_store(r.store, bundle);
  } else {
    split = data::read_split(r.df2_root, r.split);
    out.gallery = detail::embed_split(bundle, *split, r.df2_root, r.threads, quiet);
  }
  out.seconds.gallery = since(t0);

  // The concept's own images.
  t0 = Clock::now();
  std::vector<image::LoadRequest> concept_requests;
  std::string concept_parent;
  std::optional<ItemKey> concept_key;
  if (source.is_object() && source.contains("pair_id") && source.contains("style") &&
      source["pair_id"].is_number_integer() && source["style"].is_number_integer()) {
    concept_key = ItemKey{source["pair_id"].get<int64_t>(), source["style"].get<int>()};
  }
  if (!r.concept_images.empty()) {
    for (const auto& f : data::list_images(r.concept_images)) {
      concept_requests.push_back({f, std::nullopt, false});
      out.concept_ids.push_back(fs::path(f).filename().string());
    }
  } else if (concept_key && source.contains("df2") && source["df2"].is_string()) {
    // The token's support set, read from the split it was learned on.
    const std::string root = source["df2"].get<std::string>();
    const std::string name = source.value("split", std::string("validation"));
    std::optional<data::Split> other;
    const data::Split* s = split && r.df2_root == root && r.split == name ? &*split : nullptr;
    if (!s) {
      if (!directory_exists(root)) {
        throw bad_input("the token's concept images are in " + root + " (" + name +
                        "), which is not readable here; give --concept-images DIR")
            .file(r.token_file).key("concept_images");
      }
      other = data::read_split(root, name);
      s = &*other;
    }
    std::set<std::string> support;
    if (source.contains("support") && source["support"].is_array()) {
      for (const auto& id : source["support"]) if (id.is_string()) support.insert(id.get<std::string>());
    }
    for (const auto& c : data::list_items(*s, "user")) {
      if (c.pair_id != concept_key->pair_id || c.style != concept_key->style) continue;
      if (!support.empty() && !support.count(c.id())) continue;
      concept_requests.push_back({c.image_path, c.box});
      out.concept_ids.push_back(c.id());
      if (concept_parent.empty()) concept_parent = c.parent;
    }
  } else if (source.is_object() && source.contains("images") && source["images"].is_string() &&
             directory_exists(source["images"].get<std::string>())) {
    for (const auto& f : data::list_images(source["images"].get<std::string>())) {
      concept_requests.push_back({f, std::nullopt, false});
      out.concept_ids.push_back(fs::path(f).filename().string());
    }
  }
  if (concept_requests.empty()) {
    throw bad_input("GAIR scores renders against the concept's own images, and the token file names none "
                    "that can be read here: give --concept-images DIR")
        .file(r.token_file).key("concept_images");
  }
  out.concept_images = decode_all(concept_requests);
  const torch::Tensor concept_features = image_features(bundle, out.concept_images);
  out.seconds.concept_ = since(t0);

  // The query and its attribute words.
  out.attribute_file = find_attributes(r, parent, concept_parent);
  std::optional<token::AttributeSet> attrs;
  if (!out.attribute_file.empty()) {
    attrs = token::read_attribute_file(out.attribute_file);
  } else {
    spdlog::warn("no attribute file for \"{}\" (give --attributes FILE): intent has no attribute score", parent);
  }
  const Query query = parse_query(r.query, tf.token, parent, attrs ? &*attrs : nullptr);
  if (query.mentions.empty() && !options.alpha) {
    spdlog::warn("the query names no attribute word of {}: no automatic alpha, alpha {} is used",
                 out.attribute_file.empty() ? parent : out.attribute_file, options.alphas.front());
  }
  out.seconds.load = since(t_start) - out.seconds.gallery - out.seconds.concept_;

  // Ground truth: the given target; else the token's concept, or the style of its pair whose
  // colour the query names (a composition query).
  out.target = r.target;
  if (out.target) {
    out.target_reason = "given";
  } else if (concept_key) {
    out.target = concept_key;
    out.target_reason = "the token's concept";
    std::string colour;
    for (const auto& mm : query.mentions) if (mm.list == "colours") colour = mm.word;
    if (!colour.empty()) {
      std::map<int, int> styles;  // style -> items of the query's colour
      bool own = false;
      for (const auto& it : out.gallery.items) {
        if (it.keys.value("pair_id", int64_t{-1}) != concept_key->pair_id) continue;
        if (it.keys.value("color", std::string()) != colour) continue;
        const int s = it.keys.value("style", 0);
        styles[s]++;
        if (s == concept_key->style) own = true;
      }
      if (!styles.empty() && !own) {
        out.target = ItemKey{concept_key->pair_id, styles.begin()->first};
        out.target_reason = "the style of the token's pair in the query's colour (" + colour + ")";
      }
    }
  }
  if (out.target) {
    for (size_t i = 0; i < out.gallery.items.size(); ++i) {
      const auto& k = out.gallery.items[i].keys;
      if (k.value("pair_id", int64_t{-1}) == out.target->pair_id && k.value("style", -1) == out.target->style) {
        out.correct.push_back(static_cast<int64_t>(i));
      }
    }
    if (out.correct.empty()) spdlog::warn("the gallery holds no item of the target ({}, {})", out.target->pair_id, out.target->style);
  }

  // Visualise + correct + score, then retrieve.
  {
    const bool extra = options.alpha &&
                       std::find(options.alphas.begin(), options.alphas.end(), *options.alpha) == options.alphas.end();
    const int64_t grid = static_cast<int64_t>(options.alphas.size()) + (extra ? 1 : 0);
    const int64_t chunks = (grid * options.generate.n + options.generate.batch - 1) / options.generate.batch;
    ProgressOptions po;
    po.label = "render";
    po.unit = "step";
    po.enabled = !quiet;
    Progress progress(chunks * options.generate.steps, po);
    out.correction = correct_and_score(bundle, out.tokens.vectors, query, concept_features, options,
                                       [&](int, int) { progress.advance(); });
    progress.finish();
  }
  out.seconds.render = out.correction.render_seconds;
  out.seconds.score = out.correction.score_seconds;
  out.search = search(out.gallery.features, out.correction, out.correct, options);
  out.seconds.retrieval = out.search.seconds;
  out.seconds.total = since(t_start);
  return out;
}

}  // namespace ctok::gair
