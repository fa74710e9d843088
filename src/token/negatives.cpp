#include "ctok/token/negatives.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/random.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/generate.hpp"
#include "ctok/token/attributes.hpp"

namespace ctok::token {
namespace fs = std::filesystem;

namespace {

std::string spaces(std::string s) {
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

template <class T>
void shuffle(std::vector<T>& v, SplitMix64& g) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(i)]);
}

// Siblings from the parent's attribute file, empty when it has none.
std::vector<std::string> siblings_of(const std::string& parent, const std::string& attributes_dir) {
  std::string path;
  try {
    path = find_attribute_file(parent, attributes_dir);
  } catch (const Error&) {
    return {};
  }
  return read_attribute_file(path).siblings;
}

}  // namespace

std::vector<ImageSource> negatives_from_folder(const std::string& dir) {
  if (!directory_exists(dir)) throw bad_input("the negatives folder does not exist").file(dir);
  std::vector<ImageSource> out;
  std::vector<std::string> subdirs;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (e.is_directory()) subdirs.push_back(name);
  }
  std::sort(subdirs.begin(), subdirs.end());
  bool own = false;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && data::has_image_extension(e.path().string()) &&
        e.path().filename().string()[0] != '.') {
      own = true;
      break;
    }
  }
  if (own) {
    for (const auto& f : data::list_images(dir)) out.push_back({f, std::nullopt, ""});
  }
  for (const auto& sub : subdirs) {
    const std::string d = (fs::path(dir) / sub).string();
    bool any = false;
    for (const auto& e : fs::directory_iterator(d)) {
      if (e.is_regular_file() && data::has_image_extension(e.path().string())) any = true;
    }
    if (!any) continue;
    for (const auto& f : data::list_images(d)) out.push_back({f, std::nullopt, spaces(sub)});
  }
  if (out.empty()) {
    throw bad_input("the negatives folder holds no image (nor do its sub-folders)").file(dir)
        .expected("image files (jpg, jpeg, png, webp, bmp), or one sub-folder of them per class word");
  }
  return out;
}

std::vector<ImageSource> negatives_from_split(const data::Split& split, const SplitNegativeOptions& o) {
  const std::string category = o.category.empty() ? o.parent : o.category;
  std::set<std::string> siblings(o.siblings.begin(), o.siblings.end());
  siblings.erase(category);
  // Pool 0: other identities of the category; pool 1: the sibling categories. Per pool, one
  // list of crops per identity (map order: deterministic).
  std::map<int64_t, std::vector<data::Crop>> pools[2];
  for (const data::Crop& x : data::list_items(split, "user")) {
    if (o.exclude_pair_id >= 0 && x.pair_id == o.exclude_pair_id) continue;
    if (x.category_name == category) {
      pools[0][x.pair_id].push_back(x);
    } else if (siblings.count(x.category_name)) {
      pools[1][x.pair_id].push_back(x);
    }
  }
  if (pools[0].empty() && pools[1].empty()) {
    if (o.allow_none) return {};
    std::string looked = "\"" + category + "\"";
    for (const auto& s : siblings) looked += ", \"" + s + "\"";
    throw bad_input("the split has no user item of the parent's categories to use as negatives").file(split.dir)
        .expected("user items of " + looked);
  }
  SplitMix64 g(mix_seed(o.seed, static_cast<uint64_t>(o.exclude_pair_id + 1), 0x4e45470au));
  std::vector<data::Crop> picked[2];
  for (int p = 0; p < 2; ++p) {
    // Round-robin over shuffled identities: one crop each while identities last.
    std::vector<std::vector<data::Crop>> ids;
    for (auto& [pid, crops] : pools[p]) {
      shuffle(crops, g);
      ids.push_back(crops);
    }
    shuffle(ids, g);
    for (std::size_t round = 0;; ++round) {
      bool any = false;
      for (const auto& c : ids) {
        if (round < c.size()) {
          picked[p].push_back(c[round]);
          any = true;
        }
      }
      if (!any || static_cast<int>(picked[p].size()) >= o.n) break;
    }
  }
  // Half from each pool when both have items; the other pool fills what one lacks.
  int want0 = pools[1].empty() ? o.n : pools[0].empty() ? 0 : o.n / 2;
  want0 = std::min<int>(want0, static_cast<int>(picked[0].size()));
  const int want1 = std::min<int>(o.n - want0, static_cast<int>(picked[1].size()));
  if (want0 + want1 < o.n) want0 = std::min<int>(o.n - want1, static_cast<int>(picked[0].size()));
  picked[0].resize(static_cast<std::size_t>(want0));
  picked[1].resize(static_cast<std::size_t>(want1));
  std::vector<ImageSource> out;
  for (const auto& c : picked[0]) out.push_back({c.image_path, c.box, o.parent});
  for (const auto& c : picked[1]) out.push_back({c.image_path, c.box, c.category_name});
  return out;
}

std::string default_negatives_cache_dir() {
  if (const char* d = std::getenv("CTOK_CACHE_DIR"); d && *d) return (fs::path(d) / "negatives").string();
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return (fs::path(d) / "ctok" / "negatives").string();
  if (const char* d = std::getenv("HOME"); d && *d) return (fs::path(d) / ".cache" / "ctok" / "negatives").string();
  return (fs::temp_directory_path() / "ctok-cache" / "negatives").string();
}

std::vector<std::string> generated_negative_words(const std::string& parent, const std::string& attributes_dir) {
  std::vector<std::string> words;
  for (const auto& w : siblings_of(parent, attributes_dir))
    if (w != parent) words.push_back(w);
  if (!words.empty()) return words;
  for (const auto& p : list_attribute_parents(attributes_dir))
    if (p != parent) words.push_back(p);
  return words;
}

std::vector<ImageSource> generate_negatives(const model::Bundle& bundle, const GeneratedNegativeOptions& o) {
  if (o.words.empty()) throw bad_input("no class word to generate negatives for").key("negative words");
  if (o.n < 1) throw bad_input("generated negatives per word must be at least 1").key("n").found(std::to_string(o.n));
  if (!bundle.diffusion_loaded()) {
    throw bad_input("generated negatives need the bundle's diffusion models (bundle " + bundle.name() +
                    (bundle.has_diffusion() ? " was loaded without them)" : " has none)"))
        .file(bundle.path_of("bundle.json")).key("diffusion");
  }
  const std::string root = o.cache_dir.empty() ? default_negatives_cache_dir() : o.cache_dir;
  nlohmann::json bundle_hashes = nlohmann::json::object();
  for (const auto& [file, sha] : bundle.manifest().sha256) bundle_hashes[file] = sha;
  model::GenerateOptions g;
  g.steps = o.steps;
  g.guidance = o.guidance;
  const nlohmann::json sampler = {{"sampler", model::enum_name(g.sampler)}, {"steps", g.steps}, {"guidance", g.guidance},
                                  {"eta", g.eta}, {"spacing", model::enum_name(g.spacing)}, {"negative", g.negative}};
  std::vector<ImageSource> out;
  struct Todo {
    std::string word, prompt, dir;
    int first_missing;
  };
  std::vector<Todo> todo;
  for (const auto& word : o.words) {
    const std::string prompt = fill_template(o.templ, "", word);
    const nlohmann::json meta = {{"format", "ctok-generated-negatives/1"}, {"bundle", bundle.name()},
                                 {"bundle_sha256", bundle_hashes},        {"prompt", prompt},
                                 {"word", word},                          {"sampler", sampler}};
    const std::string key = sha256_hex(nlohmann::json{{"bundle_sha256", bundle_hashes}, {"prompt", prompt},
                                                      {"sampler", sampler}}.dump());
    const std::string dir = (fs::path(root) / key.substr(0, 24)).string();
    const std::string meta_path = (fs::path(dir) / "meta.json").string();
    if (file_exists(meta_path)) {
      nlohmann::json have;
      try {
        have = nlohmann::json::parse(read_text_file(meta_path));
      } catch (const nlohmann::json::exception& e) {
        throw bad_input(std::string("a generated-negatives cache entry is unreadable: ") + e.what()).file(meta_path);
      }
      if (have.value("bundle_sha256", nlohmann::json()) != bundle_hashes) {
        throw bad_input("this generated-negatives cache entry belongs to another bundle (" +
                        have.value("bundle", std::string("?")) + "), not " + bundle.name() +
                        "; remove the folder or give another --negatives-cache")
            .file(meta_path).key("bundle_sha256");
      }
      if (have.value("prompt", std::string()) != prompt || have.value("sampler", nlohmann::json()) != sampler) {
        throw bad_input("this generated-negatives cache entry holds another prompt or sampler than its name says; "
                        "remove the folder").file(meta_path).key("prompt").expected(prompt)
            .found(have.value("prompt", std::string()));
      }
    } else {
      fs::create_directories(dir);
      write_file_atomic(meta_path, meta.dump(2) + "\n");
    }
    int first_missing = o.n;
    for (int j = 0; j < o.n; ++j) {
      const std::string f = (fs::path(dir) / ("seed-" + std::to_string(o.seed + static_cast<uint64_t>(j)) + ".png")).string();
      if (!file_exists(f) && first_missing == o.n) first_missing = j;
      out.push_back({f, std::nullopt, word});
    }
    if (first_missing < o.n) todo.push_back({word, prompt, dir, first_missing});
  }
  int total = 0;
  for (const auto& t : todo) total += o.n - t.first_missing;
  if (total > 0) {
    spdlog::info("generating {} negative image(s) with {}'s diffusion model, cached in {}", total, bundle.name(), root);
    ProgressOptions po;
    po.label = "generate negatives";
    po.unit = "image";
    po.enabled = o.progress;
    Progress progress(total, po);
    for (const auto& t : todo) {
      g.n = o.n - t.first_missing;
      g.seed = o.seed + static_cast<uint64_t>(t.first_missing);
      const std::vector<torch::Tensor> images = model::generate(bundle, {t.prompt}, {}, g);
      for (size_t j = 0; j < images.size(); ++j) {
        const uint64_t seed = g.seed + j;
        image::write_png((fs::path(t.dir) / ("seed-" + std::to_string(seed) + ".png")).string(), model::to_image(images[j]));
        progress.advance();
      }
    }
    progress.finish();
  } else {
    spdlog::info("generated negatives: {} image(s) reused from {}", out.size(), root);
  }
  return out;
}

void check_negative_sources(const NegativeSourceOptions& o) {
  if (!o.folder.empty() + !o.split.empty() + o.none > 1) {
    throw bad_input("give at most one of --negatives, --negatives-from and --no-negatives");
  }
}

bool attach_given_negatives(LearnRequest& r, const NegativeSourceOptions& o) {
  check_negative_sources(o);
  if (!o.folder.empty()) {
    r.negatives = negatives_from_folder(o.folder);
    r.negatives_source = {{"kind", "folder"}, {"dir", o.folder}, {"n", r.negatives.size()}};
  } else if (!o.split.empty()) {
    if (r.parent.empty()) throw bad_input("--negatives-from needs the parent word (the parent's categories are the negatives)");
    // ROOT[:SPLIT]; a colon followed by a path separator belongs to the path.
    std::string root = o.split, split_name = "train";
    const auto colon = root.rfind(':');
    if (colon != std::string::npos && root.find('/', colon) == std::string::npos) {
      split_name = root.substr(colon + 1);
      root = root.substr(0, colon);
    }
    const data::Split split = data::read_split(root, split_name);
    SplitNegativeOptions no;
    no.parent = r.parent;
    no.siblings = siblings_of(r.parent, o.attributes_dir);
    no.n = o.split_n;
    no.seed = r.config.seed;
    r.negatives = negatives_from_split(split, no);
    r.negatives_source = {{"kind", "df2"}, {"root", root}, {"split", split_name}, {"n", r.negatives.size()},
                          {"seed", r.config.seed}};
  } else if (o.none) {
    r.negatives.clear();
    r.negatives_source = {{"kind", "none"}, {"why", "--no-negatives"}};
  }
  return r.negatives.empty() && r.negatives_source.empty();
}

void attach_generated_negatives(const model::Bundle& bundle, LearnRequest& r, const NegativeSourceOptions& o) {
  if (!bundle.diffusion_loaded()) {
    spdlog::warn("bundle {} has no diffusion models loaded to generate negatives with; give --negatives DIR or "
                 "--negatives-from ROOT", bundle.name());
    r.negatives_source = {{"kind", "none"}, {"why", "the bundle cannot generate them"}};
    return;
  }
  GeneratedNegativeOptions g;
  g.words = generated_negative_words(r.parent, o.attributes_dir);
  g.templ = r.config.templates.front();
  g.n = o.generated_n;
  g.seed = r.config.seed;
  g.cache_dir = o.cache_dir;
  g.progress = o.progress;
  r.negatives = generate_negatives(bundle, g);
  r.negatives_source = {{"kind", "generated"}, {"words", g.words}, {"per_word", g.n},
                        {"seed", g.seed},     {"steps", g.steps}, {"guidance", g.guidance}};
}

LearnRequest request_for_concept(const data::Split& split, const data::Concept& c, const ConceptRequestOptions& o) {
  LearnRequest r;
  r.config = o.config;
  r.attributes_dir = o.attributes_dir;
  const std::vector<data::Crop> support = data::select_support(c, o.shots, o.seed);
  nlohmann::json ids = nlohmann::json::array();
  for (const auto& s : support) {
    r.images.push_back({s.image_path, s.box, ""});
    ids.push_back(s.id());
  }
  r.parent = o.parent.empty() ? data::query_word(c, o.hidden) : o.parent;
  r.token = o.token.empty() ? "<p" + std::to_string(c.pair_id) + "-s" + std::to_string(c.style) + ">" : o.token;
  if (o.negatives > 0) {
    SplitNegativeOptions no;
    no.parent = r.parent;
    no.siblings = siblings_of(r.parent, o.attributes_dir);
    no.category = c.category_name;
    no.exclude_pair_id = c.pair_id;
    no.n = o.negatives;
    no.seed = o.seed;
    no.allow_none = true;
    r.negatives = negatives_from_split(split, no);
    std::set<std::string> cats{c.category_name};
    for (const auto& s : no.siblings) cats.insert(s);
    if (r.negatives.empty()) {
      // A small split (or a category without siblings there): the caller falls back to the
      // next source (generated negatives), as for a folder of concept images.
      spdlog::warn("split {} has no other user item of {} to use as negatives for concept ({}, {}); "
                   "negatives fall back to the next source (generated by the bundle)",
                   split.dir, nlohmann::json(cats).dump(), c.pair_id, c.style);
    } else {
      r.negatives_source = {{"kind", "df2"}, {"root", o.root}, {"split", o.split}, {"n", r.negatives.size()},
                            {"seed", o.seed}, {"categories", nlohmann::json(cats)}};
    }
  } else {
    r.negatives_source = {{"kind", "none"}};
  }
  r.source = {{"df2", o.root},         {"split", o.split},   {"pair_id", c.pair_id},
              {"style", c.style},      {"shots", o.shots},   {"support", ids},
              {"category_name", c.category_name}, {"negatives", r.negatives.size()}};
  return r;
}

}  // namespace ctok::token
