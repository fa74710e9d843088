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
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/gallery_store.hpp"
#include "ctok/token/token_file.hpp"
#include "ctok/token/cohort.hpp"
#include "ctok/token/negatives.hpp"

namespace ctok::eval {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::vector<std::string>& known_methods() {
  static const std::vector<std::string> m = {"text", "caption", "image-mean", "inv", "cls", "inv+cls", "inv+cls+sub"};
  return m;
}

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

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

std::string article(const std::string& w) {
  return !w.empty() && std::string("aeiou").find(w[0]) != std::string::npos ? "an" : "a";
}

class Evaluation {
 public:
  Evaluation(model::Bundle& bundle, const EvalOptions& o) : bundle_(bundle), o_(o), clip_(bundle) {}

  EvalSummary run();

 private:
  void read_data();
  void check_run_file();
  void open_gallery();
  torch::Tensor text_feature(const std::string& prompt);  // [F], cached
  UnitRecord evaluate_unit(const data::Concept& c, uint64_t seed, bool& interrupted);
  void write_tables(const std::vector<UnitRecord>& records, EvalSummary& summary) const;
  std::string unit_path(const data::Concept& c, uint64_t seed) const;
  std::string token_path(const data::Concept& c, uint64_t seed, const std::string& method) const;
  bool has_extras() const;

  model::Bundle& bundle_;
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
};

bool Evaluation::has_extras() const {
  for (const auto& c : concepts_)
    if (c.color.empty()) return false;
  return true;
}

void Evaluation::read_data() {
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
  const std::string path = (fs::path(o_.out) / "run.json").string();
  if (file_exists(path)) {
    const Json old = json::parse_file(path);
    for (auto it = run.begin(); it != run.end(); ++it) {
      if (!old.contains(it.key()) || old.at(it.key()) != it.value()) {
        throw bad_input("the output folder holds a run with other settings; use another --out (or remove it)")
            .file(path).key(it.key()).expected(it.value().dump()).found(old.contains(it.key()) ? old.at(it.key()).dump() : "absent");
      }
    }
    return;
  }
  fs::create_directories(o_.out);
  write_file_atomic(path, run.dump(2) + "\n");
}

void Evaluation::open_gallery() {
  const std::vector<data::Crop> crops = data::gallery(split_);
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
                              : (fs::path(o_.cache_dir) / (o_.split + "-" + sha.substr(0, 12))).string();
  retrieval::GalleryBuildOptions bo;
  bo.dir = dir;
  bo.source_root = o_.df2;
  bo.source = {{"kind", "df2-split"}, {"root", fs::absolute(o_.df2).lexically_normal().string()}, {"split", o_.split},
               {"items", items.size()}};
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
      data::SplitMix64 g(data::mix_seed(seed, static_cast<uint64_t>(c.pair_id), static_cast<uint64_t>(c.style), 0x8u));
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
      const std::string p = "a photo of " + article(w) + " " + w;
      add(m, false, text_feature(p));
      prompts[m] = p;
      if (comp) add(m, true, text_feature(p + in_colour));
    } else if (m == "caption") {
      const std::string p = "a photo of " + article(c.color) + " " + c.color + " " + c.pattern + " " + w;
      add(m, false, text_feature(p));
      prompts[m] = p;
      if (comp) {
        const std::string& col = rec.composition_colour;
        add(m, true, text_feature("a photo of " + article(col) + " " + col + " " + c.pattern + " " + w));
      }
    } else if (m == "image-mean") {
      std::vector<image::LoadRequest> req;
      for (const auto& s : support) req.push_back({s.image_path, s.box});
      image::LoadOptions lopt;
      lopt.preprocess = pre_;
      lopt.threads = o_.threads;
      torch::Tensor f = model::l2_normalize(clip_.encode_images(image::load_batch(req, lopt))).to(torch::kCPU, torch::kFloat32);
      add(m, false, model::l2_normalize(f.mean(0, true))[0]);
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
    }
    rec.seconds[m] += seconds_since(t0);
  }
  rec.extra["prompts"] = prompts;
  const std::vector<int64_t> r = retrieval::ranks(gallery_, torch::stack(rows), correct);
  for (std::size_t i = 0; i < r.size(); ++i) (what[i].second ? rec.composition_ranks : rec.ranks)[what[i].first] = r[i];
  return rec;
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
    m["composition"] = summarize(records, to);
    md += "\n## Composition queries (learn style s, ask for the colour of style s')\n\n" +
          markdown_table(m["composition"], to.recall_at);
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
  pre_.size = static_cast<int>(bundle_.image_size());
  for (int i = 0; i < 3; ++i) {
    pre_.mean[i] = static_cast<float>(bundle_.manifest().image.mean[i]);
    pre_.std[i] = static_cast<float>(bundle_.manifest().image.std[i]);
  }
  read_data();
  check_run_file();
  open_gallery();

  EvalSummary s;
  s.units_total = concepts_.size() * o_.seeds.size();
  std::vector<UnitRecord> records;
  ProgressOptions po;
  po.label = "concepts";
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
        for (const auto& m : o_.methods) complete = complete && r.ranks.count(m);
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
  write_tables(records, s);
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace

EvalSummary run_retrieval(model::Bundle& bundle, const EvalOptions& options) {
  Evaluation e(bundle, options);
  return e.run();
}

}  // namespace ctok::eval
