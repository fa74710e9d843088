// The retrieval evaluation (docs/method.md §5): gallery store, every method's queries,
// exact ranks, one record per (concept, seed), tables. Everything that does not depend on
// the token is computed once: the gallery features (the store, per bundle), the text and
// caption queries (per prompt), the support features (per concept and seed).
#include "ctok/eval/eval.hpp"

#include "ctok/token/attributes.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/format.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/random.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/gair/gair.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/gallery_store.hpp"
#include "ctok/token/token_file.hpp"
#include "ctok/token/cohort.hpp"
#include "ctok/token/negatives.hpp"
#include "identity_range.hpp"

namespace ctok::eval {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::vector<std::string>& known_methods() {
  static const std::vector<std::string> m = {"text",    "caption",     "image-mean", "inv",       "cls",
                                             "inv+cls", "inv+cls+sub", "gair",       "gair-fixed"};
  return m;
}

const std::vector<std::string>& default_methods() {
  static const std::vector<std::string> m = {"text", "caption", "image-mean", "inv", "cls", "inv+cls", "inv+cls+sub"};
  return m;
}

namespace {

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    out.push_back(item);
  }
  return out;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

std::vector<std::string> parse_names(const std::string& list, const std::vector<std::string>& known,
                                     const std::string& key) {
  std::vector<std::string> out;
  const std::string what = key == "methods" ? "method" : "name";
  for (const auto& m : split_list(list)) {
    if (m.empty()) throw bad_input("empty " + what + " in the list").key(key).found(list);
    if (!known.empty() && std::find(known.begin(), known.end(), m) == known.end()) {
      throw bad_input("unknown " + what + " \"" + m + "\"").key(key).expected("a comma-separated list of " + join(known))
          .found(list);
    }
    if (std::find(out.begin(), out.end(), m) != out.end())
      throw bad_input(what + " \"" + m + "\" given twice").key(key).found(list);
    out.push_back(m);
  }
  if (out.empty()) {
    throw bad_input("no " + what + " given").key(key).expected(known.empty() ? "a comma-separated list" : "a comma-separated list of " + join(known));
  }
  return out;
}

std::vector<std::string> parse_methods(const std::string& list) { return parse_names(list, known_methods(), "methods"); }

std::vector<uint64_t> parse_seeds(const std::string& list) {
  std::vector<uint64_t> out;
  for (const auto& s : split_list(list)) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
      throw bad_input("a seed must be a non-negative integer").key("seeds").expected("e.g. 0,1,2").found(list);
    const uint64_t v = std::stoull(s);
    if (std::find(out.begin(), out.end(), v) != out.end()) throw bad_input("seed " + s + " given twice").key("seeds").found(list);
    out.push_back(v);
  }
  if (out.empty()) throw bad_input("no seed given").key("seeds").expected("e.g. 0,1,2");
  return out;
}

bool is_learned(const std::string& m) { return m == "inv" || m == "cls" || m == "inv+cls" || m == "inv+cls+sub"; }
bool is_gair(const std::string& m) { return m == "gair" || m == "gair-fixed"; }

Json GairEvalOptions::to_json() const {
  return {{"base", base},   {"alphas", alphas},         {"n", n},
          {"steps", steps}, {"beta", beta},             {"tune_split", tune_split},
          {"tune_min_identity", tune_min_identity},     {"tune_concepts", tune_concepts}};
}

GairEvalOptions GairEvalOptions::from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) throw bad_input("the GAIR settings must be a JSON object").file(origin).key("gair");
  GairEvalOptions g;
  const Json defaults = g.to_json();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!defaults.contains(it.key())) {
      std::string known;
      for (auto d = defaults.begin(); d != defaults.end(); ++d) known += (known.empty() ? "" : ", ") + d.key();
      throw bad_input("unknown GAIR setting").file(origin).key("gair." + it.key()).expected(known);
    }
    const bool ok = it.key() == "alphas" ? it.value().is_array()
                    : it.value().is_string() == defaults.at(it.key()).is_string() && !it.value().is_null() &&
                          (it.value().is_string() || it.value().is_number());
    if (!ok) {
      throw bad_input("wrong type").file(origin).key("gair." + it.key())
          .expected(it.key() == "alphas" ? "a list of numbers in [0, 1]" : defaults.at(it.key()).type_name())
          .found(json::describe(it.value()));
    }
  }
  try {
    g.base = j.value("base", g.base);
    if (j.contains("alphas")) g.alphas = j.at("alphas").get<std::vector<double>>();
    g.n = j.value("n", g.n);
    g.steps = j.value("steps", g.steps);
    g.beta = j.value("beta", g.beta);
    g.tune_split = j.value("tune_split", g.tune_split);
    g.tune_min_identity = j.value("tune_min_identity", g.tune_min_identity);
    g.tune_concepts = j.value("tune_concepts", g.tune_concepts);
  } catch (const Json::exception& e) {
    throw bad_input(std::string("wrong type: ") + e.what()).file(origin).key("gair");
  }
  return g;
}

token::LearnConfig method_base_config() { return token::whole_method_config(); }

token::LearnConfig method_config(const std::string& m, const token::LearnConfig& base) {
  token::LearnConfig c = base;
  if (m == "inv") {
    c.lambda_cls = 0;
    c.subspace = "none";
  } else if (m == "cls") {
    c.lambda_inv = 0;
    c.lambda_cls = 1;
    c.subspace = "none";
  } else if (m == "inv+cls") {
    c.subspace = "none";
  } else if (m != "inv+cls+sub") {
    throw bad_input("not a learned method: " + m).key("methods");
  }
  return c;
}

namespace {

using ConceptKey = std::pair<int64_t, int>;

struct Target {  // what a gallery (pair_id, style) looks like
  std::vector<int64_t> rows;
  std::string colour, pattern;
};

// "0.25" for 0.25: the alphas' keys in records and metrics.
std::string alpha_key(double a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", a);
  return buf;
}

class Evaluation {
 public:
  Evaluation(const model::Bundle& bundle, const EvalOptions& o) : bundle_(bundle), o_(o), clip_(bundle) {}

  EvalSummary run();

 private:
  bool has_method(const std::string& m) const {
    return std::find(o_.methods.begin(), o_.methods.end(), m) != o_.methods.end();
  }
  bool uses_gair() const { return has_method("gair") || has_method("gair-fixed") || tuning_; }
  void check_gair();
  bool tune_gair_alpha();  // false when interrupted
  gair::GairOptions gair_options() const;
  torch::Tensor support_features(const std::vector<data::Crop>& support);
  void read_data();
  void check_run_file();
  void open_gallery();
  torch::Tensor text_feature(const std::string& prompt);  // [F], cached
  UnitRecord evaluate_unit(const data::Concept& c, uint64_t seed, bool& interrupted);
  void write_tables(const std::vector<UnitRecord>& records, EvalSummary& summary) const;
  Json gair_section(const std::vector<UnitRecord>& records) const;
  std::string gair_markdown(const Json& g) const;
  std::string unit_path(const data::Concept& c, uint64_t seed) const;
  std::string token_path(const data::Concept& c, uint64_t seed, const std::string& method) const;
  bool has_extras() const;

  const model::Bundle& bundle_;
  const EvalOptions& o_;
  model::ClipModel clip_;
  data::Split split_;
  std::vector<data::Concept> concepts_;
  std::set<std::string> hidden_;
  torch::Tensor gallery_;  // [N, F]
  std::map<ConceptKey, Target> targets_;
  std::map<std::string, torch::Tensor> text_cache_;
  image::Preprocess pre_;
  Json gallery_info_;
  std::vector<UnitRecord> records_;
  // GAIR: the token it corrects, whether this run is the tuning run, the tuned alpha.
  std::string gair_base_;
  bool tuning_ = false;
  std::optional<double> fixed_alpha_;
  Json gair_tuning_ = nullptr;
  std::optional<token::AttributeSet> attributes_for(const std::string& word, const std::string& parent);
  std::map<std::string, std::optional<token::AttributeSet>> attribute_cache_;
};

bool Evaluation::has_extras() const {
  for (const auto& c : concepts_)
    if (c.color.empty()) return false;
  return true;
}

void Evaluation::read_data() {
  check_min_identity(o_.min_identity);  // before the split is read (a train split is large)
  std::error_code ec;
  if (!fs::is_directory(o_.df2, ec)) throw bad_input("DeepFashion2 root not found or not a folder").file(o_.df2).key("df2");
  if (!fs::is_directory(fs::path(o_.df2) / o_.split, ec)) {
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(o_.df2, ec))
      if (fs::is_directory(e.path() / "annos")) found.push_back(e.path().filename().string());
    std::sort(found.begin(), found.end());
    throw bad_input("no split \"" + o_.split + "\" in the DeepFashion2 root").file(o_.df2).key("split")
        .expected(found.empty() ? "a folder <root>/<split>/annos (none found)" : "one of " + join(found));
  }
  data::SplitOptions so;
  so.threads = o_.threads;
  split_ = data::read_split(o_.df2, o_.split, so);
  const auto& n = split_.counts;
  spdlog::info("{}: {} annotations, {} items ({} boxes clamped to the image, {} zero-area items skipped, {} style-0 items, "
               "{} of them in the gallery)",
               split_.dir, n.files, n.items, n.clamped, n.zero_area, n.style0, n.style0_shop);
  data::ConceptOptions co;
  co.min_user = o_.shots;
  auto eligible = data::find_concepts(split_, co);
  if (o_.shots < 1) throw bad_input("--shots must be at least 1").key("shots").found(std::to_string(o_.shots));
  if (eligible.empty()) {
    const auto per_k = data::concepts_per_shots(split_);
    std::string counts;
    for (std::size_t k = 0; k < per_k.size(); ++k)
      counts += (counts.empty() ? "" : ", ") + std::string("k=") + std::to_string(k + 1) + ": " + std::to_string(per_k[k]);
    throw bad_input("no concept of " + split_.dir + " has " + std::to_string(o_.shots) +
                    " user items and a shop item")
        .key("shots").expected("a k that concepts allow; concepts qualifying at each k: " + (counts.empty() ? "none" : counts))
        .found(std::to_string(o_.shots));
  }
  if (o_.min_identity > 0) {
    eligible.erase(std::remove_if(eligible.begin(), eligible.end(),
                                  [&](const data::Concept& c) { return c.pair_id < o_.min_identity; }),
                   eligible.end());
    if (eligible.empty()) {
      throw bad_input("no eligible concept of " + split_.dir + " has a pair_id >= " + std::to_string(o_.min_identity))
          .key(tuning_ ? "gair.tune_min_identity" : "min_identity");
    }
  }
  concepts_ = data::subset_concepts(std::move(eligible), o_.max_concepts, o_.subset_seed);
  hidden_ = data::hidden_categories(o_.df2);
  if (!has_extras()) {
    for (const char* m : {"caption"}) {
      if (std::find(o_.methods.begin(), o_.methods.end(), m) != o_.methods.end())
        throw bad_input("the caption method needs the colour and pattern keys of FashionWorld's annotations, which "
                        "this split lacks").file(split_.dir).key("methods");
    }
    if (o_.composition)
      throw bad_input("composition queries need the colour keys of FashionWorld's annotations, which this split lacks")
          .file(split_.dir).key("composition");
  }
}

void Evaluation::check_run_file() {
  Json run = {{"format", "ctok-eval-run/1"},
              {"df2", fs::absolute(o_.df2).lexically_normal().string()},
              {"split", o_.split},
              {"shots", o_.shots},
              {"max_concepts", o_.max_concepts},
              {"subset_seed", o_.subset_seed},
              {"negatives", o_.negatives},
              {"learn", token::fingerprint_json(o_.learn)},
              {"bundle", bundle_.name()},
              {"image_encoder_sha256", retrieval::image_encoder_sha256(bundle_)}};
  // Keys a run gains when a later command adds rows (a resume without them ignores them).
  Json optional_keys = Json::object();
  if (o_.min_identity > 0) run["min_identity"] = o_.min_identity;
  if (uses_gair()) {
    Json g = o_.gair.to_json();
    g["base"] = gair_base_;
    if (!has_method("gair") && !tuning_) g.erase("n"), g.erase("steps"), g.erase("beta");  // renders unused
    if (!has_method("gair-fixed") || tuning_) g.erase("tune_split"), g.erase("tune_min_identity"), g.erase("tune_concepts");
    optional_keys["gair"] = g;
  }
  const std::string path = (fs::path(o_.out) / "run.json").string();
  if (file_exists(path)) {
    Json old = json::parse_file(path);
    bool grew = false;
    for (auto it = optional_keys.begin(); it != optional_keys.end(); ++it) {
      if (!old.contains(it.key())) {
        old[it.key()] = it.value();
        grew = true;
      } else if (old.at(it.key()).is_object() && it.value().is_object()) {
        for (auto k = it.value().begin(); k != it.value().end(); ++k) {
          if (!old[it.key()].contains(k.key())) old[it.key()][k.key()] = k.value(), grew = true;
        }
      }
      run[it.key()] = old.at(it.key());
      for (auto k = it.value().begin(); k != it.value().end(); ++k) {
        if (old.at(it.key()).at(k.key()) != k.value()) {
          throw bad_input("the output folder holds a run with other settings; use another --out (or remove it)")
              .file(path).key(it.key() + "." + k.key()).expected(k.value().dump()).found(old.at(it.key()).at(k.key()).dump());
        }
      }
    }
    for (auto it = run.begin(); it != run.end(); ++it) {
      if (!old.contains(it.key()) || old.at(it.key()) != it.value()) {
        throw bad_input("the output folder holds a run with other settings; use another --out (or remove it)")
            .file(path).key(it.key()).expected(it.value().dump()).found(old.contains(it.key()) ? old.at(it.key()).dump() : "absent");
      }
    }
    if (grew) write_file_atomic(path, old.dump(2) + "\n");
    return;
  }
  run.update(optional_keys);
  fs::create_directories(o_.out);
  write_file_atomic(path, run.dump(2) + "\n");
}

void Evaluation::open_gallery() {
  std::vector<data::Crop> crops = data::gallery(split_);
  if (o_.min_identity > 0) {
    crops.erase(std::remove_if(crops.begin(), crops.end(), [&](const data::Crop& c) { return c.pair_id < o_.min_identity; }),
                crops.end());
  }
  if (crops.empty()) throw bad_input("the split has no shop item: the gallery is empty").file(split_.dir);
  std::vector<retrieval::GalleryItem> items;
  items.reserve(crops.size());
  for (const auto& c : crops) {
    retrieval::GalleryItem it;
    it.path = (fs::path(o_.split) / "image" / (c.stem + ".jpg")).string();
    it.box = c.box;
    it.keys = {{"id", c.id()}, {"pair_id", c.pair_id}, {"style", c.style}, {"category_name", c.category_name}};
    if (!c.color.empty()) it.keys["color"] = c.color;
    if (!c.pattern.empty()) it.keys["pattern"] = c.pattern;
    items.push_back(std::move(it));
  }
  const std::string sha = retrieval::image_encoder_sha256(bundle_);
  const std::string dir = o_.cache_dir.empty()
                              ? (fs::path(o_.out) / "gallery").string()
                              : (fs::path(o_.cache_dir) / (o_.split +
                                                           (o_.min_identity > 0 ? "-ids" + std::to_string(o_.min_identity) : "") +
                                                           "-" + sha.substr(0, 12))).string();
  retrieval::GalleryBuildOptions bo;
  bo.dir = dir;
  bo.source_root = o_.df2;
  bo.source = {{"kind", "df2-split"}, {"root", fs::absolute(o_.df2).lexically_normal().string()}, {"split", o_.split},
               {"items", items.size()}};
  if (o_.min_identity > 0) bo.source["min_identity"] = o_.min_identity;
  bo.threads = o_.threads;
  bo.show_progress = o_.progress;
  retrieval::build_gallery_store(bundle_, items, bo);  // resumes; refuses another bundle's store, both hashes named
  const auto store = retrieval::GalleryStore::open(dir, bundle_);
  gallery_ = store.features();
  for (std::size_t r = 0; r < store.items().size(); ++r) {
    const Json& k = store.items()[r].keys;
    const int style = k.value("style", 0);
    if (style <= 0) continue;  // style 0: in the gallery, never correct
    Target& t = targets_[{k.value("pair_id", int64_t{0}), style}];
    t.rows.push_back(static_cast<int64_t>(r));
    t.colour = k.value("color", std::string());
    t.pattern = k.value("pattern", std::string());
  }
  gallery_info_ = {{"dir", dir}, {"items", store.items().size()}, {"skipped", store.info().skipped.size()},
                   {"dim", store.info().dim}};
  spdlog::info("gallery: {} shop crops ({} skipped as unreadable) in {}", store.items().size(),
               store.info().skipped.size(), dir);
}

torch::Tensor Evaluation::text_feature(const std::string& prompt) {
  auto it = text_cache_.find(prompt);
  if (it != text_cache_.end()) return it->second;
  torch::NoGradGuard ng;
  torch::Tensor f = model::l2_normalize(clip_.encode_text({prompt}).features).to(torch::kCPU, torch::kFloat32)[0];
  text_cache_[prompt] = f;
  return f;
}

std::string Evaluation::unit_path(const data::Concept& c, uint64_t seed) const {
  return (fs::path(o_.out) / "concepts" /
          ("p" + std::to_string(c.pair_id) + "-s" + std::to_string(c.style) + "-seed" + std::to_string(seed) + ".json"))
      .string();
}

std::string Evaluation::token_path(const data::Concept& c, uint64_t seed, const std::string& m) const {
  return (fs::path(o_.out) / "tokens" /
          ("p" + std::to_string(c.pair_id) + "-s" + std::to_string(c.style) + "-seed" + std::to_string(seed) + "-" + m +
           ".safetensors"))
      .string();
}

torch::Tensor Evaluation::support_features(const std::vector<data::Crop>& support) {
  std::vector<image::LoadRequest> req;
  for (const auto& s : support) req.push_back({s.image_path, s.box});
  image::LoadOptions lopt;
  lopt.preprocess = pre_;
  lopt.threads = o_.threads;
  torch::NoGradGuard ng;
  return model::l2_normalize(clip_.encode_images(image::load_batch(req, lopt))).to(torch::kCPU, torch::kFloat32);
}

// The attribute file of the query word, else of the concept's parent (FashionWorld's
// pullover and coat use top's); none: GAIR scores concept fidelity only.
std::optional<token::AttributeSet> Evaluation::attributes_for(const std::string& word, const std::string& parent) {
  const std::string key = word + "\n" + parent;
  if (auto it = attribute_cache_.find(key); it != attribute_cache_.end()) return it->second;
  const auto v = token::list_attribute_parents();
  const std::set<std::string> have(v.begin(), v.end());
  std::optional<token::AttributeSet> a;
  if (have.count(word)) a = token::read_attribute_file(token::find_attribute_file(word));
  else if (!parent.empty() && have.count(parent)) a = token::read_attribute_file(token::find_attribute_file(parent));
  attribute_cache_[key] = a;
  return a;
}

gair::GairOptions Evaluation::gair_options() const {
  gair::GairOptions g;
  g.alphas = o_.gair.alphas;
  g.emphasis = gair::Emphasis::kAttribute;
  g.beta = o_.gair.beta;
  g.generate.n = o_.gair.n;
  g.generate.steps = o_.gair.steps;
  g.generate.seed = 0;
  return g;
}

// bad_input (key methods / gair.*) before anything runs.
void Evaluation::check_gair() {
  if (!uses_gair()) return;
  if (!o_.composition) {
    throw bad_input("the GAIR rows correct composition queries: add --composition").key("methods");
  }
  std::vector<std::string> learned;
  for (const auto& m : o_.methods)
    if (is_learned(m)) learned.push_back(m);
  gair_base_ = o_.gair.base.empty() ? (learned.empty() ? "" : learned.back()) : o_.gair.base;
  if (gair_base_.empty() || std::find(learned.begin(), learned.end(), gair_base_) == learned.end()) {
    throw bad_input(gair_base_.empty() ? "GAIR corrects a learned token, and no learned method is listed"
                                       : "GAIR's base method \"" + gair_base_ + "\" is not a learned method of the run")
        .key(o_.gair.base.empty() ? "methods" : "gair.base")
        .expected("one of inv, cls, inv+cls, inv+cls+sub, also listed in --methods");
  }
  gair::validate(gair_options());
  if (has_method("gair-fixed") && o_.gair.tune_concepts < 1) {
    throw bad_input("gair-fixed tunes its alpha on at least one concept").key("gair.tune_concepts")
        .found(std::to_string(o_.gair.tune_concepts));
  }
  if (has_method("gair-fixed") && o_.gair.tune_split == o_.split && o_.min_identity == 0) {
    throw bad_input("gair-fixed must not tune its alpha on the evaluated split").key("gair.tune_split")
        .expected("another split (FashionWorld: train, identities >= 5001)").found(o_.gair.tune_split);
  }
}

// gair-fixed's alpha: the grid's best MRR on the tuning concepts (the smallest alpha on ties),
// from a run of the same evaluation there (resumable, <out>/gair-tuning).
bool Evaluation::tune_gair_alpha() {
  EvalOptions t = o_;
  t.split = o_.gair.tune_split;
  t.min_identity = o_.gair.tune_min_identity;
  t.methods = {gair_base_};
  t.composition = true;
  t.max_concepts = o_.gair.tune_concepts;
  t.seeds = {o_.seeds.front()};
  t.out = (fs::path(o_.out) / "gair-tuning").string();
  t.progress_label = "gair tuning";
  t.gair.base = gair_base_;
  Evaluation tuner(bundle_, t);
  tuner.tuning_ = true;
  spdlog::info("gair-fixed: tuning alpha on {} concepts of {} (pair_id >= {}) with the {} token, in {}",
               o_.gair.tune_concepts, t.split, t.min_identity, gair_base_, t.out);
  const EvalSummary ts = tuner.run();
  if (ts.interrupted) return false;
  std::map<std::string, std::pair<double, int>> sum;
  for (const auto& r : tuner.records_) {
    if (!r.extra.contains("gair")) continue;
    for (auto it = r.extra["gair"]["alpha_ranks"].begin(); it != r.extra["gair"]["alpha_ranks"].end(); ++it) {
      sum[it.key()].first += 1.0 / it.value().get<double>();
      sum[it.key()].second += 1;
    }
  }
  Json mrr = Json::object();
  double best = -1;
  for (double a : o_.gair.alphas) {
    const auto it = sum.find(alpha_key(a));
    if (it == sum.end() || it->second.second == 0) continue;
    const double v = it->second.first / it->second.second;
    mrr[alpha_key(a)] = v;
    if (v > best + 1e-12) best = v, fixed_alpha_ = a;
  }
  if (!fixed_alpha_) {
    throw bad_input("no tuning concept of " + t.split + " has a composition query (a style of another colour)")
        .key("gair.tune_split");
  }
  gair_tuning_ = {{"split", t.split}, {"min_identity", t.min_identity}, {"concepts", tuner.records_.size()},
                  {"seed", t.seeds.front()}, {"alpha_mrr", mrr}, {"alpha", *fixed_alpha_}, {"dir", t.out}};
  spdlog::info("gair-fixed: alpha {} (tuning MRR {:.3f}, alpha 0: {:.3f})", alpha_key(*fixed_alpha_), best,
               mrr.value("0", 0.0));
  return true;
}

UnitRecord Evaluation::evaluate_unit(const data::Concept& c, uint64_t seed, bool& interrupted) {
  UnitRecord rec;
  rec.pair_id = c.pair_id;
  rec.style = c.style;
  rec.seed = seed;
  rec.category = c.category_name;
  rec.word = data::query_word(c, hidden_);
  const std::string& w = rec.word;
  const auto support = data::select_support(c, o_.shots, seed);
  Json ids = Json::array();
  for (const auto& s : support) ids.push_back(s.id());
  rec.extra["support"] = ids;

  // Composition target: another style of the pair in the gallery, of another colour (seeded).
  std::optional<ConceptKey> comp;
  if (o_.composition) {
    std::vector<ConceptKey> options;
    const std::string own = targets_.count({c.pair_id, c.style}) ? targets_.at({c.pair_id, c.style}).colour : c.color;
    for (auto it = targets_.lower_bound({c.pair_id, 1}); it != targets_.end() && it->first.first == c.pair_id; ++it)
      if (it->first.second != c.style && !it->second.colour.empty() && it->second.colour != own) options.push_back(it->first);
    if (!options.empty()) {
      SplitMix64 g(mix_seed(seed, static_cast<uint64_t>(c.pair_id), static_cast<uint64_t>(c.style), 0x8u));
      comp = options[g.below(options.size())];
      rec.composition_style = comp->second;
      rec.composition_colour = targets_.at(*comp).colour;
    }
  }
  const std::string in_colour = comp ? " in " + rec.composition_colour : "";

  // Learned tokens: reuse finished token files, learn the rest (the adapter's one call).
  std::map<std::string, token::TokenFile> tokens;
  std::vector<std::string> pending;
  std::vector<token::LearnRequest> requests;
  token::CohortOptions lo;  // the methods of one concept learn as one cohort
  lo.stop = o_.stop;
  lo.progress = false;
  lo.cores = o_.threads;  // ctok-batch --jobs N gives each cell its share of the cores
  for (const auto& m : o_.methods) {
    if (!is_learned(m)) continue;
    const std::string path = token_path(c, seed, m);
    if (file_exists(path)) {
      tokens[m] = token::read_token_file(path);
      rec.seconds[m] = tokens[m].metrics.value("seconds", 0.0);
      continue;
    }
    token::ConceptRequestOptions ro;
    ro.config = method_config(m, o_.learn);
    // The attribute subspace of a category without its own attribute file (FashionWorld's
    // pullover, coat, ...) comes from its parent's (top): the same attribute words.
    if (ro.config.subspace == "auto" && !c.parent.empty() && c.parent != w) {
      const std::set<std::string> have = [] {
        const auto v = token::list_attribute_parents();
        return std::set<std::string>(v.begin(), v.end());
      }();
      if (!have.count(w) && have.count(c.parent)) ro.config.subspace = token::find_attribute_file(c.parent);
    }
    ro.config.seed = seed;
    ro.seed = seed;
    ro.shots = o_.shots;
    ro.negatives = ro.config.lambda_cls > 0 ? o_.negatives : 0;
    ro.hidden = hidden_;
    ro.root = o_.df2;
    ro.split = o_.split;
    requests.push_back(token::request_for_concept(split_, c, ro));
    pending.push_back(m);
    lo.checkpoint_paths.push_back(path + ".ckpt");
  }
  if (!requests.empty()) {
    fs::create_directories(fs::path(o_.out) / "tokens");
    const auto results = token::learn_cohort(bundle_, requests, lo);
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (!results[i].error.empty()) {
        throw bad_input("learning " + pending[i] + " for concept (" + std::to_string(c.pair_id) + ", " +
                        std::to_string(c.style) + "): " + results[i].error);
      }
      const token::LearnResult& r = results[i].result;
      if (r.status != token::LearnStatus::kDone) {
        interrupted = true;
        continue;
      }
      const std::string path = token_path(c, seed, pending[i]);
      token::write_token_file(path, r.token);
      std::error_code ec;
      fs::remove(lo.checkpoint_paths[i], ec);
      tokens[pending[i]] = r.token;
      rec.seconds[pending[i]] = r.seconds;
    }
    if (interrupted) return rec;
  }

  // Queries: one row per (method, query kind), ranked together.
  torch::NoGradGuard ng;
  std::tuple<std::string, torch::Tensor, model::TokenVectors> composition_query;  // of the GAIR base
  std::vector<torch::Tensor> rows;
  std::vector<std::vector<int64_t>> correct;
  std::vector<std::pair<std::string, bool>> what;  // (method, composition)
  const auto& plain_rows = targets_.at({c.pair_id, c.style}).rows;
  auto add = [&](const std::string& m, bool composition, const torch::Tensor& f) {
    rows.push_back(f);
    correct.push_back(composition ? targets_.at(*comp).rows : plain_rows);
    what.emplace_back(m, composition);
  };
  Json prompts = Json::object();
  for (const auto& m : o_.methods) {
    const auto t0 = Clock::now();
    if (m == "text") {
      const std::string p = "a photo of " + data::article(w) + " " + w;
      add(m, false, text_feature(p));
      prompts[m] = p;
      if (comp) add(m, true, text_feature(p + in_colour));
    } else if (m == "caption") {
      const std::string p = "a photo of " + data::article(c.color) + " " + c.color + " " + c.pattern + " " + w;
      add(m, false, text_feature(p));
      prompts[m] = p;
      if (comp) {
        const std::string& col = rec.composition_colour;
        add(m, true, text_feature("a photo of " + data::article(col) + " " + col + " " + c.pattern + " " + w));
      }
    } else if (m == "image-mean") {
      add(m, false, model::l2_normalize(support_features(support).mean(0, true))[0]);
    } else if (is_gair(m)) {
      continue;  // below, once every token's query is known
    } else {
      const token::TokenFile& tf = tokens.at(m);
      model::TokenVectors tv{{tf.token, torch::from_blob(const_cast<float*>(tf.vectors.data()), {tf.n_vectors, tf.width},
                                                         torch::kFloat32).clone()}};
      std::vector<std::string> ps = {"a photo of a " + tf.token + " " + w};
      if (comp) ps.push_back(ps[0] + in_colour);
      torch::Tensor f = model::l2_normalize(clip_.encode_text(ps, tv).features).to(torch::kCPU, torch::kFloat32);
      add(m, false, f[0]);
      if (comp) add(m, true, f[1]);
      prompts[m] = ps[0];
      if (comp && m == gair_base_) composition_query = {ps[1], f[1], tv};
    }
    rec.seconds[m] += seconds_since(t0);
  }
  rec.extra["prompts"] = prompts;

  // GAIR on the base token's composition query: every alpha of the grid ranked (the tuning
  // run's record, and a hindsight reference), gair-fixed at the tuned alpha, gair at the
  // alpha its renders' intent scores pick.
  Json gj = nullptr;
  std::vector<double> grid;
  std::size_t alpha_rows = 0;
  if (comp && uses_gair()) {
    const auto t0 = Clock::now();
    const auto& [q_text, q_feature, q_tokens] = composition_query;
    const token::TokenFile& tf = tokens.at(gair_base_);
    const auto attrs = attributes_for(w, c.parent);
    const gair::Query q = gair::parse_query(q_text, tf.token, w, attrs ? &*attrs : nullptr);
    const torch::Tensor ta = text_feature(q.attribute_prompt);
    const gair::GairOptions go = gair_options();
    grid = go.alphas;
    if (fixed_alpha_ && std::find(grid.begin(), grid.end(), *fixed_alpha_) == grid.end()) grid.push_back(*fixed_alpha_);
    alpha_rows = rows.size();
    for (double a : grid) add("@" + std::to_string(a), true, model::l2_normalize((1.0 - a) * q_feature + a * ta));
    gj = {{"base", gair_base_}, {"query", q_text}, {"attribute_prompt", q.attribute_prompt}, {"alphas", grid}};
    if (has_method("gair-fixed")) {
      add("gair-fixed", true, model::l2_normalize((1.0 - *fixed_alpha_) * q_feature + *fixed_alpha_ * ta));
      rec.seconds["gair-fixed"] = seconds_since(t0);
      gj["fixed_alpha"] = *fixed_alpha_;
    }
    if (has_method("gair")) {
      const gair::Correction corr = gair::correct_and_score(bundle_, q_tokens, q, support_features(support), go);
      const gair::AlphaResult& chosen = corr.alphas[static_cast<std::size_t>(corr.chosen)];
      add("gair", true, chosen.query_feature);
      Json scores = Json::array();
      for (const auto& ar : corr.alphas) {
        scores.push_back({{"alpha", ar.alpha}, {"concept", ar.scores.concept_},
                          {"attribute", ar.scores.attribute ? Json(*ar.scores.attribute) : Json(nullptr)},
                          {"harmonic", ar.scores.harmonic ? Json(*ar.scores.harmonic) : Json(nullptr)}});
      }
      gj["auto_alpha"] = chosen.alpha;
      gj["chosen_by"] = corr.chosen_by;
      gj["intent"] = scores;
      gj["render_seconds"] = corr.render_seconds;
      gj["score_seconds"] = corr.score_seconds;
      rec.seconds["gair"] = seconds_since(t0);
    }
  }

  const std::vector<int64_t> r = retrieval::ranks(gallery_, torch::stack(rows), correct);
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (alpha_rows && i >= alpha_rows && i < alpha_rows + grid.size()) continue;
    (what[i].second ? rec.composition_ranks : rec.ranks)[what[i].first] = r[i];
  }
  if (!gj.is_null()) {
    Json ar = Json::object();
    for (std::size_t k = 0; k < grid.size(); ++k) ar[alpha_key(grid[k])] = r[alpha_rows + k];
    gj["alpha_ranks"] = ar;
    rec.extra["gair"] = gj;
  }
  return rec;
}

// metrics.json "gair": the settings, the tuned alpha, how often each alpha was picked
// automatically, and each grid alpha's MRR in hindsight (a reference, not a method: it
// is chosen on the evaluated concepts themselves).
Json Evaluation::gair_section(const std::vector<UnitRecord>& records) const {
  Json settings = o_.gair.to_json();
  settings["base"] = gair_base_;
  Json g = {{"base", gair_base_}, {"settings", settings}, {"tuning", gair_tuning_}};
  std::map<std::string, std::pair<double, int>> hindsight;
  std::map<std::string, int> picked, chosen_by;
  double render = 0, score = 0;
  int units = 0, rendered = 0;
  for (const auto& r : records) {
    if (!r.extra.contains("gair")) continue;
    const Json& x = r.extra.at("gair");
    ++units;
    for (auto it = x.at("alpha_ranks").begin(); it != x.at("alpha_ranks").end(); ++it) {
      hindsight[it.key()].first += 1.0 / it.value().get<double>();
      hindsight[it.key()].second += 1;
    }
    if (x.contains("auto_alpha")) {
      ++picked[alpha_key(x.at("auto_alpha").get<double>())];
      ++chosen_by[x.value("chosen_by", std::string("?"))];
      render += x.value("render_seconds", 0.0);
      score += x.value("score_seconds", 0.0);
      ++rendered;
    }
  }
  Json h = Json::object();
  for (const auto& [a, v] : hindsight) h[a] = v.first / v.second;
  g["units"] = units;
  g["alpha_mrr_hindsight"] = h;
  g["alpha_mrr_hindsight_note"] = "each alpha's MRR on the evaluated units themselves: a reference, not a method";
  if (rendered) {
    g["auto_alpha_counts"] = picked;
    g["chosen_by_counts"] = chosen_by;
    g["render_seconds_per_unit"] = render / rendered;
    g["score_seconds_per_unit"] = score / rendered;
  }
  return g;
}

std::string Evaluation::gair_markdown(const Json& g) const {
  std::string md = "\n## GAIR (docs/method.md §4)\n\n";
  md += "Rows `gair` and `gair-fixed` correct the composition query of the `" + gair_base_ +
        "` token with attribute emphasis, q_alpha = normalise((1 - alpha) t(q) + alpha t(a)); \"ΔMRR vs own token\" " +
        "is paired against that token's own composition query. ";
  if (has_method("gair")) {
    md += "`gair` renders " + std::to_string(o_.gair.n) + " image(s) per alpha (" + std::to_string(o_.gair.steps) +
          " DDIM steps) and takes the alpha whose renders score best (harmonic mean of concept and attribute "
          "fidelity)" + (o_.gair.beta > 0 ? ", fusing the renders' mean feature with beta " + fixed(o_.gair.beta, 2) : "") +
          ". ";
  }
  if (!gair_tuning_.is_null()) {
    md += "`gair-fixed` uses alpha " + alpha_key(gair_tuning_.at("alpha").get<double>()) + " for every concept, the grid's best MRR on " +
          std::to_string(gair_tuning_.at("concepts").get<int64_t>()) + " tuning concepts of " +
          gair_tuning_.at("split").get<std::string>() + " (pair_id >= " +
          std::to_string(gair_tuning_.at("min_identity").get<int64_t>()) + ").";
  }
  md += "\n\n| alpha |";
  std::string sep = "|---|", tune = "| tuning MRR |", hind = "| MRR here (hindsight, not a method) |", pick = "| picked by gair |";
  const Json& h = g.at("alpha_mrr_hindsight");
  for (auto it = h.begin(); it != h.end(); ++it) {
    md += " " + it.key() + " |";
    sep += "---|";
    hind += " " + fixed(it.value().get<double>(), 3) + " |";
    const bool tuned = !gair_tuning_.is_null() && gair_tuning_.at("alpha_mrr").contains(it.key());
    tune += " " + (tuned ? fixed(gair_tuning_.at("alpha_mrr").at(it.key()).get<double>(), 3) : std::string("-")) + " |";
    const int n = g.contains("auto_alpha_counts") ? g["auto_alpha_counts"].value(it.key(), 0) : 0;
    pick += " " + std::to_string(n) + " |";
  }
  md += "\n" + sep + "\n" + (gair_tuning_.is_null() ? "" : tune + "\n") + hind + "\n" +
        (g.contains("auto_alpha_counts") ? pick + "\n" : "");
  if (g.contains("render_seconds_per_unit")) {
    md += "\nRendering " + fixed(g["render_seconds_per_unit"].get<double>(), 2) + " s and scoring " +
          fixed(g["score_seconds_per_unit"].get<double>(), 2) + " s per unit.\n";
  }
  return md;
}

void Evaluation::write_tables(const std::vector<UnitRecord>& records, EvalSummary& s) const {
  TableOptions to;
  to.methods = o_.methods;
  to.bootstrap.resamples = o_.bootstrap_resamples;
  to.bootstrap.seed = o_.bootstrap_seed;
  Json m = {{"format", "ctok-eval-metrics/1"},
            {"task", "retrieve"},
            {"protocol",
             "docs/method.md §5: ground-truth crops ranked for text queries (not DeepFashion2's detected-box top-k)"},
            {"df2", o_.df2},
            {"split", o_.split},
            {"shots", o_.shots},
            {"bundle", bundle_.name()},
            {"gallery", gallery_info_},
            {"reader",
             {{"annotations", split_.counts.files},
              {"items", split_.counts.items},
              {"clamped_boxes", split_.counts.clamped},
              {"zero_area_skipped", split_.counts.zero_area},
              {"style0_items", split_.counts.style0},
              {"style0_in_gallery", split_.counts.style0_shop},
              {"skipped_files", split_.counts.skipped_files}}},
            {"concepts_evaluated", concepts_.size()},
            {"seeds", o_.seeds},
            {"units_done", records.size()},
            {"complete", records.size() == concepts_.size() * o_.seeds.size()}};
  m["plain"] = summarize(records, to);
  std::string md = "# ctok-eval: retrieval on " + o_.df2 + " / " + o_.split + "\n\n";
  md += std::to_string(m["plain"]["concepts"].get<int64_t>()) + " concepts x " + std::to_string(o_.seeds.size()) +
        " seed(s), " + std::to_string(o_.shots) + " shots, gallery " + std::to_string(gallery_.size(0)) +
        " shop crops, bundle " + bundle_.name() + ". MRR and R@K over concepts (seed-averaged) with 95% bootstrap " +
        "intervals; ΔMRR paired by concept. Reader: " + std::to_string(split_.counts.clamped) + " boxes clamped, " +
        std::to_string(split_.counts.zero_area) + " zero-area items skipped, " + std::to_string(split_.counts.style0) +
        " style-0 items (" + std::to_string(split_.counts.style0_shop) + " in the gallery, never correct).\n\n";
  if (!m["complete"].get<bool>()) md += "**Partial**: " + std::to_string(records.size()) + " of " +
                                       std::to_string(concepts_.size() * o_.seeds.size()) + " (concept, seed) units done.\n\n";
  md += "## Plain queries\n\n" + markdown_table(m["plain"], to.recall_at);
  if (o_.composition) {
    to.composition = true;
    if (uses_gair()) to.reference = {{"gair", gair_base_}, {"gair-fixed", gair_base_}};
    m["composition"] = summarize(records, to);
    md += "\n## Composition queries (learn style s, ask for the colour of style s')\n\n" +
          markdown_table(m["composition"], to.recall_at);
  }
  if (uses_gair() && o_.composition) {
    m["gair"] = gair_section(records);
    md += gair_markdown(m["gair"]);
  }
  write_file_atomic((fs::path(o_.out) / "metrics.json").string(), m.dump(2) + "\n");
  write_file_atomic((fs::path(o_.out) / "ranks.csv").string(), ranks_csv(records));
  write_file_atomic((fs::path(o_.out) / "table.md").string(), md);
  s.metrics = std::move(m);
}

EvalSummary Evaluation::run() {
  const auto t0 = Clock::now();
  if (o_.out.empty()) throw bad_input("no output folder given").key("out");
  for (const auto& m : o_.methods) parse_methods(m);  // each a known method
  token::validate(o_.learn);
  pre_ = model::image_preprocess(bundle_);
  check_gair();
  read_data();
  check_run_file();
  open_gallery();

  EvalSummary s;
  if (has_method("gair-fixed") && !tuning_ && !tune_gair_alpha()) {
    s.interrupted = true;
    s.seconds = seconds_since(t0);
    return s;
  }
  s.units_total = concepts_.size() * o_.seeds.size();
  std::vector<UnitRecord> records;
  ProgressOptions po;
  po.label = o_.progress_label;
  po.unit = "unit";
  po.enabled = o_.progress;
  Progress progress(static_cast<int64_t>(s.units_total), po);
  std::map<std::string, std::pair<double, int>> running;
  auto note = [&](const UnitRecord& r) {
    for (const auto& [m, rank] : r.ranks) running[m].first += 1.0 / rank, running[m].second += 1;
    std::string suffix = "MRR";
    for (const auto& m : o_.methods)
      if (running.count(m)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %s %.3f", m.c_str(), running[m].first / running[m].second);
        suffix += buf;
      }
    progress.set_suffix(suffix);
  };
  fs::create_directories(fs::path(o_.out) / "concepts");
  for (const auto& c : concepts_) {
    for (uint64_t seed : o_.seeds) {
      if (o_.stop && o_.stop->load()) s.interrupted = true;
      if (s.interrupted) break;
      const std::string path = unit_path(c, seed);
      if (file_exists(path)) {
        UnitRecord r = UnitRecord::from_json(json::parse_file(path), path);
        bool complete = true;
        for (const auto& m : o_.methods) {
          if (!is_gair(m)) complete = complete && r.ranks.count(m);
          else if (r.composition_style != 0) complete = complete && r.composition_ranks.count(m);
        }
        // GAIR's record (every alpha's rank) exists when the unit ran with GAIR: a unit of an
        // earlier run without the GAIR rows is redone (its tokens are reused).
        if (uses_gair() && r.composition_style != 0) complete = complete && r.extra.contains("gair");
        if (o_.composition && r.composition_style == 0 && r.composition_ranks.empty()) {
          // no target of another colour exists, or the record predates --composition: redo to know
          complete = complete && r.extra.value("composition_checked", false);
        }
        if (complete) {
          note(r);
          records.push_back(std::move(r));
          ++s.units_resumed;
          progress.advance();
          continue;
        }
      }
      bool interrupted = false;
      UnitRecord r = evaluate_unit(c, seed, interrupted);
      if (interrupted) {
        s.interrupted = true;
        break;
      }
      if (o_.composition) r.extra["composition_checked"] = true;
      write_file_atomic(path, r.to_json().dump(1) + "\n");
      note(r);
      records.push_back(std::move(r));
      progress.advance();
    }
    if (s.interrupted) break;
  }
  progress.finish();
  s.units_done = records.size();
  records_ = records;
  write_tables(records, s);
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace

EvalSummary run_retrieval(const model::Bundle& bundle, const EvalOptions& options) {
  Evaluation e(bundle, options);
  return e.run();
}

}  // namespace ctok::eval
