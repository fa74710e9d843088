// ctok-eval --task classify: the hidden-category classification of docs/method.md §5 on
// FashionWorld (eval.hpp). Replaces the removed scripts/validate_learn.sh and its Python helper.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/random.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/deepfashion2.hpp"
#include "ctok/eval/eval.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/retrieval/gallery_store.hpp"
#include "ctok/token/cohort.hpp"
#include "identity_range.hpp"
#include "ctok/token/token_file.hpp"

namespace fs = std::filesystem;

namespace ctok::eval {
using Json = nlohmann::json;
namespace {

using Clock = std::chrono::steady_clock;

uint64_t fnv1a(const std::string& s) {  // the same on every platform (std::hash is not)
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string slug(const std::string& s) {
  std::string o;
  for (char c : s) o.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return o;
}

struct Category {
  std::string name, parent;
  bool hidden = false;
};

std::vector<Category> world_categories(const std::string& root) {
  const std::string path = (fs::path(root) / "world.json").string();
  if (!file_exists(path)) {
    throw bad_input("the classification task needs FashionWorld's world.json (its hidden categories and parents)")
        .file(path).key("task");
  }
  const Json w = json::parse_file(path);
  std::vector<Category> out;
  for (const Json& c : json::require<Json>(w, "categories", path)) {
    out.push_back({json::require<std::string>(c, "name", path), json::require<std::string>(c, "parent", path),
                   c.value("hidden", false)});
  }
  return out;
}

// k distinct indices of [0, n) with the generator (partial Fisher-Yates).
std::vector<std::size_t> draw(std::size_t n, std::size_t k, SplitMix64& g) {
  std::vector<std::size_t> idx(n);
  for (std::size_t i = 0; i < n; ++i) idx[i] = i;
  k = std::min(k, n);
  for (std::size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + g.below(n - i)]);
  idx.resize(k);
  return idx;
}

struct Stats {
  double accuracy = 0, recall = 0, precision = 0, family = 0;
  int64_t items = 0;
};

Json stats_json(const Stats& s) {
  return {{"accuracy", s.accuracy}, {"hidden_recall", s.recall}, {"hidden_precision", s.precision},
          {"family_accuracy", s.family}, {"items", s.items}};
}

std::string pm(const std::vector<double>& v) {
  double m = 0, sd = 0;
  for (double x : v) m += x;
  m /= std::max<std::size_t>(v.size(), 1);
  for (double x : v) sd += (x - m) * (x - m);
  sd = v.size() > 1 ? std::sqrt(sd / double(v.size() - 1)) : 0.0;
  char buf[64];
  std::snprintf(buf, sizeof buf, v.size() > 1 ? "%.3f ± %.3f" : "%.3f", m, sd);
  return buf;
}

}  // namespace

const std::vector<std::string>& classify_methods() {
  static const std::vector<std::string> m = {"parent", "word", "inv", "cls", "inv+cls", "inv+cls+sub"};
  return m;
}

EvalSummary run_classification(const model::Bundle& bundle, const ClassifyOptions& o) {
  const auto t0 = Clock::now();
  if (o.out.empty()) throw bad_input("no output folder given").key("out");
  for (const auto& m : o.methods) {
    if (std::find(classify_methods().begin(), classify_methods().end(), m) == classify_methods().end()) {
      std::string known;
      for (const auto& k : classify_methods()) known += (known.empty() ? "" : ", ") + k;
      throw bad_input("unknown method for --task classify: \"" + m + "\"").key("methods").expected(known);
    }
  }
  token::validate(o.learn);
  // The identity range. min_identity > 0 is the tuning set: support, negatives and the
  // evaluated items all come from the train split's identities >= min_identity.
  check_min_identity(o.min_identity);
  if (o.max_identity < 0) {
    throw bad_input("--max-identity must be 0 (all) or a pair_id").key("max_identity")
        .found(std::to_string(o.max_identity));
  }
  if (o.min_identity > 0 && o.max_identity > 0 && o.max_identity < o.min_identity) {
    throw bad_input("--max-identity is below --min-identity: no identity is left").key("max_identity")
        .expected("0 or at least " + std::to_string(o.min_identity)).found(std::to_string(o.max_identity));
  }
  if (o.min_identity > 0 && o.split != o.train_split) {
    throw bad_input("--min-identity evaluates on the tuning identities of the train split, not on \"" + o.split +
                    "\"").key("min_identity").expected("--split " + o.train_split);
  }
  if (o.min_identity == 0 && o.split == o.train_split) {
    throw bad_input("evaluating on the split the support comes from needs --min-identity (the tuning identities, "
                    "FashionWorld: 5001)").key("split").expected("another split, or --min-identity N")
        .found(o.split);
  }
  auto in_range = [&](int64_t pair) {
    return (o.min_identity <= 0 || pair >= o.min_identity) && (o.max_identity <= 0 || pair <= o.max_identity);
  };
  const std::vector<Category> cats = world_categories(o.df2);
  std::vector<std::string> hidden = o.hidden;
  if (hidden.empty()) {
    for (const auto& c : cats)
      if (c.hidden) hidden.push_back(c.name);
  }
  if (hidden.empty()) throw bad_input("world.json names no hidden category").file(o.df2).key("hidden");
  std::map<std::string, Category> by_name;
  for (const auto& c : cats) by_name[c.name] = c;
  for (const auto& h : hidden) {
    if (!by_name.count(h)) throw bad_input("not a category of this world: \"" + h + "\"").file(o.df2).key("hidden");
  }

  // The run's settings: a resume must agree.
  const Json run = {{"task", "classify"}, {"df2", fs::absolute(o.df2).lexically_normal().string()},
                    {"train_split", o.train_split}, {"split", o.split}, {"shots", o.shots}, {"negatives", o.negatives},
                    {"max_identity", o.max_identity}, {"min_identity", o.min_identity},
                    {"learn", token::to_json(o.learn)},
                    {"bundle", bundle.name()}, {"image_encoder_sha256", retrieval::image_encoder_sha256(bundle)}};
  const std::string run_path = (fs::path(o.out) / "run.json").string();
  if (file_exists(run_path)) {
    const Json old = json::parse_file(run_path);
    for (auto it = run.begin(); it != run.end(); ++it) {
      if (it.key() == "min_identity" && !old.contains(it.key()) && it.value() == 0) continue;  // runs from before it
      if (!old.contains(it.key()) || old.at(it.key()) != it.value()) {
        throw bad_input("the output folder holds a run with other settings; use another --out (or remove it)")
            .file(run_path).key(it.key()).expected(it.value().dump())
            .found(old.contains(it.key()) ? old.at(it.key()).dump() : "absent");
      }
    }
  }

  // Support and negatives from the train split (identities up to max_identity; the rest is
  // the tuning set), evaluation on the whole validation split. With min_identity: support,
  // negatives and evaluation all from the train identities >= min_identity, each unit's
  // evaluated items leaving out every identity it drew support or negatives from.
  data::SplitOptions so;
  so.threads = o.threads;
  const data::Split train = data::read_split(o.df2, o.train_split, so);
  const std::vector<data::Crop> train_crops = data::list_items(train);
  const data::Split val = data::read_split(o.df2, o.split, so);
  std::vector<data::Crop> val_crops = data::list_items(val);
  if (o.min_identity > 0) {
    val_crops.erase(std::remove_if(val_crops.begin(), val_crops.end(),
                                   [&](const data::Crop& c) { return !in_range(c.pair_id); }),
                    val_crops.end());
    if (val_crops.empty()) {
      throw bad_input("no item of the " + o.split + " split has a pair_id >= " + std::to_string(o.min_identity))
          .key("min_identity");
    }
  }

  const std::vector<std::string> learned = [&] {
    std::vector<std::string> v;
    for (const auto& m : o.methods)
      if (is_learned(m)) v.push_back(m);
    return v;
  }();
  struct Unit {
    std::string category;
    uint64_t seed;
    std::vector<data::Crop> support, negatives;
    std::set<int64_t> excluded;  // identities left out of the evaluated items (min_identity > 0)
  };
  std::vector<Unit> units;
  for (const auto& h : hidden) {
    const std::string parent = by_name[h].parent;
    std::set<std::string> siblings;
    for (const auto& c : cats)
      if (c.parent == parent && !c.hidden) siblings.insert(c.name);
    std::map<int64_t, std::vector<const data::Crop*>> by_pair;
    std::vector<const data::Crop*> sib;
    for (const auto& c : train_crops) {
      if (c.source != "user" || !in_range(c.pair_id)) continue;
      if (c.category_name == h) by_pair[c.pair_id].push_back(&c);
      if (siblings.count(c.category_name)) sib.push_back(&c);
    }
    if (static_cast<int>(by_pair.size()) < o.shots) {
      throw bad_input("too few identities of \"" + h + "\" in the train split for --shots").key("shots")
          .expected("at most " + std::to_string(by_pair.size())).found(std::to_string(o.shots));
    }
    if (sib.empty() && o.negatives > 0) {
      throw bad_input("\"" + h + "\" has no sibling category under \"" + parent + "\" for negatives").key("negatives");
    }
    std::vector<int64_t> pairs;
    for (const auto& [p, v] : by_pair) pairs.push_back(p);
    for (uint64_t seed : o.seeds) {
      SplitMix64 g(mix_seed(seed, fnv1a(h), 0xc1a55u));
      Unit u{h, seed, {}, {}, {}};
      for (std::size_t i : draw(pairs.size(), static_cast<std::size_t>(o.shots), g)) {
        const auto& v = by_pair[pairs[i]];
        u.support.push_back(*v[g.below(v.size())]);
      }
      for (std::size_t i : draw(sib.size(), static_cast<std::size_t>(o.negatives), g)) u.negatives.push_back(*sib[i]);
      if (o.min_identity > 0) {
        for (const auto& c : u.support) u.excluded.insert(c.pair_id);
        for (const auto& c : u.negatives) u.excluded.insert(c.pair_id);
      }
      units.push_back(std::move(u));
    }
  }
  if (!file_exists(run_path)) {  // the selection is valid: the run starts here
    fs::create_directories(o.out);
    write_file_atomic(run_path, run.dump(2) + "\n");
  }
  auto token_path = [&](const Unit& u, const std::string& m) {
    return (fs::path(o.out) / "tokens" / (slug(u.category) + "-seed" + std::to_string(u.seed) + "-" + slug(m) + ".safetensors"))
        .string();
  };
  auto unit_path = [&](const Unit& u) {
    return (fs::path(o.out) / "units" / (slug(u.category) + "-seed" + std::to_string(u.seed) + ".json")).string();
  };

  fs::create_directories(fs::path(o.out) / "units");
  fs::create_directories(fs::path(o.out) / "tokens");
  EvalSummary s;
  s.units_total = units.size();
  // Every token of every unit that is not on disk yet, learned as one cohort (batched steps).
  std::vector<token::LearnRequest> requests;
  std::vector<std::string> req_paths;
  token::CohortOptions co;
  co.stop = o.stop;
  co.progress = o.progress;
  co.cores = o.threads;  // ctok-batch --jobs N gives each cell its share of the cores
  for (const auto& u : units) {
    if (file_exists(unit_path(u))) continue;
    for (const auto& m : learned) {
      const std::string path = token_path(u, m);
      if (file_exists(path)) continue;
      token::LearnRequest r;
      r.token = "<" + slug(u.category) + ">";
      r.parent = by_name[u.category].parent;
      r.config = method_config(m, o.learn);
      r.config.seed = u.seed;
      Json ids = Json::array();
      for (const auto& c : u.support) {
        r.images.push_back({c.image_path, c.box, ""});
        ids.push_back(c.id());
      }
      if (r.config.lambda_cls > 0) {
        for (const auto& c : u.negatives) r.negatives.push_back({c.image_path, c.box, c.category_name});
        r.negatives_source = {{"kind", "df2"}, {"split", o.train_split}, {"n", u.negatives.size()}};
      } else {
        r.negatives_source = {{"kind", "none"}};
      }
      r.source = {{"kind", "classify"}, {"category", u.category}, {"seed", u.seed}, {"method", m}, {"support", ids}};
      requests.push_back(std::move(r));
      req_paths.push_back(path);
      co.checkpoint_paths.push_back(path + ".ckpt");
    }
  }
  if (!requests.empty()) {
    spdlog::info("learning {} tokens ({} hidden categories x {} seeds x {} methods, cohorts of {})", requests.size(),
                 hidden.size(), o.seeds.size(), learned.size(), co.cohort);
    co.on_done = [&](std::size_t i, const token::LearnResult& r) {
      token::write_token_file(req_paths[i], r.token);
      std::error_code ec;
      fs::remove(co.checkpoint_paths[i], ec);
    };
    const auto tl = Clock::now();
    const auto results = token::learn_cohort(bundle, requests, co);
    const double wall = std::chrono::duration<double>(Clock::now() - tl).count();
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (!results[i].error.empty()) throw bad_input("learning " + req_paths[i] + ": " + results[i].error);
      if (results[i].result.status != token::LearnStatus::kDone) s.interrupted = true;
    }
    if (s.interrupted) {
      s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      return s;
    }
    // The cohort's wall time per token (the per-token clocks of a cohort all run together).
    Json log = Json::array();
    const std::string lp = (fs::path(o.out) / "learning.json").string();
    if (file_exists(lp)) log = json::parse_file(lp);
    log.push_back({{"tokens", requests.size()}, {"seconds", wall}, {"cohort", co.cohort}});
    write_file_atomic(lp, log.dump(1) + "\n");
  }

  // Validation features, embedded once per bundle (a gallery store of every style > 0 item).
  std::vector<retrieval::GalleryItem> items;
  std::map<std::string, int64_t> pair_of;  // item id -> pair_id
  for (const auto& c : val_crops) {
    pair_of[c.id()] = c.pair_id;
    items.push_back({(fs::path(o.split) / "image" / (c.stem + ".jpg")).string(), c.box,
                     {{"id", c.id()}, {"category_name", c.category_name}, {"parent", c.parent}}});
  }
  retrieval::GalleryBuildOptions bo;
  const std::string sha = retrieval::image_encoder_sha256(bundle);
  const std::string range = o.min_identity > 0 ? "-ids" + std::to_string(o.min_identity) +
                                                      (o.max_identity > 0 ? "-" + std::to_string(o.max_identity) : "")
                                                : "";
  bo.dir = o.cache_dir.empty() ? (fs::path(o.out) / "features").string()
                               : (fs::path(o.cache_dir) / ("classify-" + o.split + range + "-" + sha.substr(0, 12))).string();
  bo.source_root = o.df2;
  bo.source = {{"kind", "df2-items"}, {"root", fs::absolute(o.df2).lexically_normal().string()}, {"split", o.split}};
  if (o.min_identity > 0) bo.source["min_identity"] = o.min_identity, bo.source["max_identity"] = o.max_identity;
  bo.threads = o.threads;
  bo.show_progress = o.progress;
  retrieval::build_gallery_store(bundle, items, bo);
  const retrieval::GalleryStore store = retrieval::GalleryStore::open(bo.dir, bundle);
  const torch::Tensor feats = store.features();
  std::vector<std::string> item_cat;
  std::vector<int64_t> item_pair;
  for (const auto& it : store.items()) {
    item_cat.push_back(it.keys.at("category_name").get<std::string>());
    const auto p = pair_of.find(it.keys.at("id").get<std::string>());
    item_pair.push_back(p == pair_of.end() ? 0 : p->second);
  }

  model::ClipModel clip(bundle);
  torch::NoGradGuard ng;
  std::vector<Json> records;
  for (const auto& u : units) {
    const std::string up = unit_path(u);
    if (file_exists(up)) {
      records.push_back(json::parse_file(up));
      ++s.units_resumed;
      continue;
    }
    const std::string parent = by_name[u.category].parent;
    // Classes: every category but the other hidden ones (their words are unknown too).
    std::vector<std::string> names;
    for (const auto& c : cats)
      if (!c.hidden || c.name == u.category) names.push_back(c.name);
    const int64_t h = std::find(names.begin(), names.end(), u.category) - names.begin();
    std::vector<int64_t> rows, label;
    std::set<int64_t> evaluated_pairs;
    for (std::size_t r = 0; r < item_cat.size(); ++r) {
      auto it = std::find(names.begin(), names.end(), item_cat[r]);
      if (it == names.end() || u.excluded.count(item_pair[r])) continue;
      evaluated_pairs.insert(item_pair[r]);
      rows.push_back(static_cast<int64_t>(r));
      label.push_back(it - names.begin());
    }
    const torch::Tensor f = feats.index_select(0, torch::tensor(rows, torch::kInt64));
    const torch::Tensor y = torch::tensor(label, torch::kInt64);
    std::vector<int64_t> fam;  // the hidden category and its siblings
    for (std::size_t i = 0; i < names.size(); ++i)
      if (by_name[names[i]].parent == parent) fam.push_back(static_cast<int64_t>(i));
    Json rec = {{"category", u.category}, {"parent", parent}, {"seed", u.seed}, {"classes", names.size()}};
    Json ids = Json::array();
    for (const auto& c : u.support) ids.push_back(c.id());
    rec["support"] = ids;
    if (o.min_identity > 0) {  // the tuning set: what was evaluated, what was left out
      Json neg = Json::array();
      for (const auto& c : u.negatives) neg.push_back(c.id());
      rec["negatives"] = neg;
      rec["excluded_pair_ids"] = u.excluded;
      rec["evaluated_pair_ids"] = evaluated_pairs;
    }
    Json methods = Json::object();
    for (const auto& m : o.methods) {
      std::vector<std::string> prompts;
      model::TokenVectors tv;
      std::string hidden_prompt;
      if (m == "parent") {
        hidden_prompt = "a photo of " + data::article(parent) + " " + parent;
      } else if (m == "word") {
        hidden_prompt = "a photo of " + data::article(u.category) + " " + u.category;
      } else {
        const token::TokenFile tf = token::read_token_file(token_path(u, m));
        tv[tf.token] = torch::from_blob(const_cast<float*>(tf.vectors.data()), {tf.n_vectors, tf.width}, torch::kFloat32).clone();
        hidden_prompt = "a photo of a " + tf.token + " " + parent;
      }
      for (std::size_t i = 0; i < names.size(); ++i) {
        prompts.push_back(static_cast<int64_t>(i) == h ? hidden_prompt : "a photo of " + data::article(names[i]) + " " + names[i]);
      }
      const torch::Tensor t = model::l2_normalize(clip.encode_text(prompts, tv).features).to(torch::kCPU, torch::kFloat32);
      const torch::Tensor logits = f.matmul(t.t());
      const torch::Tensor pred = logits.argmax(1);
      Stats st;
      st.items = y.size(0);
      st.accuracy = pred.eq(y).to(torch::kFloat64).mean().item<double>();
      const torch::Tensor is_h = y.eq(h), said_h = pred.eq(h);
      st.recall = is_h.any().item<bool>() ? pred.masked_select(is_h).eq(h).to(torch::kFloat64).mean().item<double>() : 0.0;
      st.precision = said_h.any().item<bool>() ? y.masked_select(said_h).eq(h).to(torch::kFloat64).mean().item<double>() : 0.0;
      const torch::Tensor famt = torch::tensor(fam, torch::kInt64);
      const torch::Tensor in_fam = torch::isin(y, famt);
      const torch::Tensor fl = logits.index({in_fam}).index_select(1, famt);
      st.family = famt.index_select(0, fl.argmax(1)).eq(y.index({in_fam})).to(torch::kFloat64).mean().item<double>();
      Json mj = stats_json(st);
      mj["prompt"] = hidden_prompt;
      methods[m] = mj;
    }
    rec["methods"] = methods;
    write_file_atomic(up, rec.dump(1) + "\n");
    records.push_back(rec);
  }
  s.units_done = records.size();

  // Tables: per hidden category, each method's mean ± sd over the seeds.
  Json metrics = {{"task", "classify"}, {"split", o.split}, {"min_identity", o.min_identity}, {"seeds", o.seeds},
                  {"shots", o.shots}, {"categories", Json::object()}};
  std::ostringstream md;
  md << "# Hidden-category classification (" << o.split
     << (o.min_identity > 0 ? " identities >= " + std::to_string(o.min_identity) + ", the tuning set" : std::string())
     << ", " << o.shots << " shots, " << o.seeds.size()
     << " seed(s); mean ± sd over seeds)\n";
  for (const auto& hcat : hidden) {
    std::map<std::string, std::map<std::string, std::vector<double>>> v;  // method -> stat -> values
    int64_t n_items = 0, n_classes = 0;
    for (const auto& r : records) {
      if (r["category"] != hcat) continue;
      n_classes = r["classes"].get<int64_t>();
      for (const auto& m : o.methods) {
        const Json& mj = r["methods"][m];
        for (const char* k : {"accuracy", "hidden_recall", "hidden_precision", "family_accuracy"})
          v[m][k].push_back(mj[k].get<double>());
        n_items = mj["items"].get<int64_t>();
      }
    }
    Json cj = Json::object();
    md << "\n## " << hcat << " (parent \"" << by_name[hcat].parent << "\"; " << n_items << " " << o.split << " items, "
       << n_classes << " classes)\n\n| method | accuracy | " << hcat << " recall | " << hcat << " precision | "
       << by_name[hcat].parent << "-family accuracy |\n| --- | --- | --- | --- | --- |\n";
    for (const auto& m : o.methods) {
      auto& mv = v[m];
      Json mj = Json::object();
      for (auto& [k, vals] : mv) mj[k] = vals;
      cj[m] = mj;
      md << "| " << m << " | " << pm(mv["accuracy"]) << " | " << pm(mv["hidden_recall"]) << " | "
         << pm(mv["hidden_precision"]) << " | " << pm(mv["family_accuracy"]) << " |\n";
    }
    metrics["categories"][hcat] = cj;
  }
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  metrics["seconds"] = s.seconds;
  const std::string lp = (fs::path(o.out) / "learning.json").string();
  if (file_exists(lp)) {
    double secs = 0;
    int64_t n = 0;
    for (const Json& e : json::parse_file(lp)) secs += e["seconds"].get<double>(), n += e["tokens"].get<int64_t>();
    metrics["learning"] = {{"tokens", n}, {"seconds", secs}, {"seconds_per_token", n ? secs / n : 0.0}};
    char buf[160];
    std::snprintf(buf, sizeof buf, "\nLearning: %lld tokens in %.1f s (%.2f s per token, batched in cohorts).\n",
                  static_cast<long long>(n), secs, n ? secs / n : 0.0);
    md << buf;
  }
  md << "\nparent: the parent word in the hidden category's prompt; word: the hidden category's own word (a "
        "ceiling: the default models never saw it used); the rest: a learned token in \"a photo of a <t> "
        "{parent}\". Family accuracy: among the items of the parent's categories only.\n";
  write_file_atomic((fs::path(o.out) / "metrics.json").string(), metrics.dump(2) + "\n");
  write_file_atomic((fs::path(o.out) / "table.md").string(), md.str());
  s.metrics = metrics;
  return s;
}

}  // namespace ctok::eval
