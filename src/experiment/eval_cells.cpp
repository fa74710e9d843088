// Evaluation cells of an experiment (include/ctok/experiment/eval_cells.hpp): a cell config
// -> ctok::eval options -> run in process -> the cell's metrics (table, per-seed rows,
// per-concept values for paired deltas) and a PNG of its learned tokens rendered.
#include "ctok/experiment/eval_cells.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "ctok/core/error.hpp"
#include "ctok/core/format.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/eval/eval.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/device.hpp"
#include "ctok/render/render.hpp"
#include "ctok/token/learn_config.hpp"
#include "ctok/token/token_file.hpp"

#ifndef CTOK_SOURCE_DIR
#define CTOK_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace ctok::experiment {
namespace {

// --- the cell's log: a sink that writes the messages of the thread running a cell -------

thread_local std::FILE* t_cell_log = nullptr;
thread_local int t_cell_warnings = 0;  // warnings and errors logged by the running cell

class CellLogSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!t_cell_log) return;
    if (msg.level >= spdlog::level::warn) ++t_cell_warnings;
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::fwrite(buf.data(), 1, buf.size(), t_cell_log);
    std::fflush(t_cell_log);
  }
  void flush_() override {
    if (t_cell_log) std::fflush(t_cell_log);
  }
};

void install_cell_sink() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto sink = std::make_shared<CellLogSink>();
    sink->set_pattern("[%Y-%m-%d %H:%M:%S] %l: %v");
    sink->set_level(spdlog::level::info);
    spdlog::default_logger()->sinks().push_back(sink);
    if (spdlog::default_logger()->level() > spdlog::level::info) spdlog::default_logger()->set_level(spdlog::level::info);
  });
}

class CellLog {  // the calling thread's messages go to <dir>/log while it lives
 public:
  explicit CellLog(const std::string& path) {
    t_cell_log = std::fopen(path.c_str(), "a");
    t_cell_warnings = 0;
  }
  ~CellLog() {
    if (t_cell_log) std::fclose(t_cell_log);
    t_cell_log = nullptr;
  }
  CellLog(const CellLog&) = delete;
  CellLog& operator=(const CellLog&) = delete;
};

// --- config ----------------------------------------------------------------------------

const std::set<std::string>& common_keys() {
  static const std::set<std::string> k = {"task", "bundle", "df2", "split", "methods", "shots", "seeds",
                                          "negatives", "learn", "renders", "render_steps"};
  return k;
}
const std::set<std::string>& retrieve_keys() {
  static const std::set<std::string> k = {"max_concepts", "subset_seed", "composition", "bootstrap", "gair"};
  return k;
}
const std::set<std::string>& classify_keys() {
  static const std::set<std::string> k = {"hidden", "max_identity", "train_split"};
  return k;
}

template <class T>
T get(const Json& c, const char* key, const std::string& where) {
  try {
    return c.at(key).get<T>();
  } catch (const Json::exception&) {
    throw bad_input("wrong type").file(where).key(key).found(ctok::json::describe(c.at(key)));
  }
}

// The config with the task's defaults filled in (unknown keys are bad input).
Json resolved(const Json& config, const std::string& where) {
  if (!config.is_object()) throw bad_input("a cell config is a JSON object").file(where);
  const std::string task = config.value("task", "retrieve");
  if (task != "retrieve" && task != "classify")
    throw bad_input("unknown task").file(where).key("task").expected("retrieve or classify").found(task);
  Json c = eval_cell_defaults(task);
  const auto& own = task == "retrieve" ? retrieve_keys() : classify_keys();
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (!common_keys().count(it.key()) && !own.count(it.key())) {
      std::vector<std::string> known(common_keys().begin(), common_keys().end());
      known.insert(known.end(), own.begin(), own.end());
      throw bad_input("unknown key of a " + task + " cell").file(where).key(it.key()).expected(join(known));
    }
    c[it.key()] = it.value();
  }
  return c;
}

std::string list_text(const Json& v, const char* key, const std::string& where) {  // ["a","b"] or "a,b"
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw bad_input("expected a list").file(where).key(key).found(ctok::json::describe(v));
  std::string s;
  for (const auto& x : v) {
    if (x.is_string()) s += (s.empty() ? "" : ",") + x.get<std::string>();
    else if (x.is_number_unsigned()) s += (s.empty() ? "" : ",") + std::to_string(x.get<uint64_t>());
    else throw bad_input("expected strings or seeds").file(where).key(key).found(ctok::json::describe(x));
  }
  return s;
}

token::LearnConfig learn_of(const Json& c, const std::string& where) {
  const Json& l = c.at("learn");
  if (!l.is_object()) throw bad_input("\"learn\" must be an object of LearnConfig keys").file(where).key("learn");
  token::LearnConfig cfg = token::merge_learn_config(eval::method_base_config(), l, where + " (learn)");
  token::validate(cfg);
  return cfg;
}

struct Resolved {
  std::string task, bundle;
  eval::EvalOptions retrieve;
  eval::ClassifyOptions classify;
  int renders = 0, render_steps = 0;
};

Resolved resolve(const Json& config, const std::string& where) {
  const Json c = resolved(config, where);
  Resolved r;
  r.task = c.at("task").get<std::string>();
  r.bundle = get<std::string>(c, "bundle", where);
  if (r.bundle.empty()) r.bundle = model::default_bundle_dir();
  r.renders = get<int>(c, "renders", where);
  r.render_steps = get<int>(c, "render_steps", where);
  if (r.renders < 0) throw bad_input("renders must be >= 0").file(where).key("renders");
  if (r.render_steps < 1) throw bad_input("render_steps must be >= 1").file(where).key("render_steps");
  const std::string methods = list_text(c.at("methods"), "methods", where);
  const std::string seeds = list_text(c.at("seeds"), "seeds", where);
  const int shots = get<int>(c, "shots", where);
  if (shots < 1) throw bad_input("shots must be at least 1").file(where).key("shots").found(std::to_string(shots));
  const int negatives = get<int>(c, "negatives", where);
  if (negatives < 0) throw bad_input("negatives must be >= 0").file(where).key("negatives");
  try {
    if (r.task == "retrieve") {
      eval::EvalOptions& e = r.retrieve;
      e.df2 = get<std::string>(c, "df2", where);
      e.split = get<std::string>(c, "split", where);
      e.methods = eval::parse_methods(methods);
      e.seeds = eval::parse_seeds(seeds);
      e.shots = shots;
      e.negatives = negatives;
      e.max_concepts = get<int>(c, "max_concepts", where);
      e.subset_seed = get<uint64_t>(c, "subset_seed", where);
      e.composition = get<bool>(c, "composition", where);
      e.bootstrap_resamples = get<int>(c, "bootstrap", where);
      e.gair = eval::GairEvalOptions::from_json(c.at("gair"), where);
      e.learn = learn_of(c, where);
    } else {
      eval::ClassifyOptions& k = r.classify;
      k.df2 = get<std::string>(c, "df2", where);
      k.split = get<std::string>(c, "split", where);
      k.train_split = get<std::string>(c, "train_split", where);
      k.methods = eval::parse_names(methods, eval::classify_methods(), "methods");
      k.seeds = eval::parse_seeds(seeds);
      k.shots = shots;
      k.negatives = negatives;
      k.max_identity = get<int64_t>(c, "max_identity", where);
      const std::string hidden = list_text(c.at("hidden"), "hidden", where);
      if (!hidden.empty()) k.hidden = eval::parse_names(hidden, {}, "hidden");
      k.learn = learn_of(c, where);
    }
  } catch (Error& e) {
    if (e.file_context().empty()) e.file(where);
    throw;
  }
  return r;
}

// --- metrics ---------------------------------------------------------------------------

std::vector<eval::UnitRecord> read_records(const std::string& dir) {
  std::vector<eval::UnitRecord> out;
  if (!directory_exists(dir)) return out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) out.push_back(eval::UnitRecord::from_json(ctok::json::parse_file(f.string()), f.string()));
  return out;
}


Json retrieval_metrics(const eval::EvalOptions& o, const Json& m, const std::vector<eval::UnitRecord>& records) {
  Json out = {{"task", "retrieve"}, {"main", "mrr"}, {"table", Json::array()}, {"seeds", Json::array()},
              {"per_concept", Json::object()}};
  std::vector<std::string> queries = {"plain"};
  if (o.composition) queries.push_back("composition");
  for (const auto& q : queries) {
    const Json& s = m.at(q);
    out["concepts"] = m.at("plain").value("concepts", 0);
    for (const auto& method : o.methods) {
      if (!s.at("methods").contains(method)) continue;
      const Json& x = s["methods"][method];
      Json row = {{"query", q}, {"method", method}, {"mrr", x["mrr"]["mean"]}, {"mrr_lo", x["mrr"]["lo"]},
                  {"mrr_hi", x["mrr"]["hi"]}, {"concepts", x.value("concepts", 0)}};
      for (const char* k : {"1", "5", "10", "20"})
        if (x.contains("recall") && x["recall"].contains(k)) row[std::string("r") + k] = x["recall"][k]["mean"];
      for (const char* d : {"delta_text", "delta_inv"})
        if (x.contains(d) && x[d].is_object()) {
          row[d] = x[d]["mean"];
          row[std::string(d) + "_lo"] = x[d]["lo"];
          row[std::string(d) + "_hi"] = x[d]["hi"];
        }
      if (x.contains("seconds_per_unit")) row["seconds_per_unit"] = x["seconds_per_unit"];
      out["table"].push_back(row);
    }
  }
  // Per seed (one results row each) and per concept (seed-averaged reciprocal rank).
  for (const auto& q : queries) {
    std::map<std::string, std::map<uint64_t, std::vector<int64_t>>> by_seed;
    std::map<std::string, std::map<std::string, std::pair<double, int>>> by_concept;
    for (const auto& r : records) {
      const auto& ranks = q == "plain" ? r.ranks : r.composition_ranks;
      for (const auto& [method, rank] : ranks) {
        by_seed[method][r.seed].push_back(rank);
        auto& a = by_concept[method][std::to_string(r.pair_id) + "-" + std::to_string(r.style)];
        a.first += 1.0 / static_cast<double>(rank);
        a.second += 1;
      }
    }
    for (const auto& method : o.methods) {
      for (const auto& [seed, ranks] : by_seed[method]) {
        double rr = 0, r1 = 0, r10 = 0;
        for (int64_t k : ranks) {
          rr += 1.0 / static_cast<double>(k);
          r1 += k <= 1;
          r10 += k <= 10;
        }
        const double n = static_cast<double>(ranks.size());
        out["seeds"].push_back({{"seed", seed}, {"query", q}, {"method", method}, {"mrr", rr / n}, {"r1", r1 / n},
                                {"r10", r10 / n}, {"concepts", ranks.size()}});
      }
      Json pc = Json::object();
      for (const auto& [key, a] : by_concept[method]) pc[key] = a.first / a.second;
      if (!pc.empty()) out["per_concept"][q + "/" + method] = pc;
    }
  }
  return out;
}

// Mean over seeds with a t interval (95%): the classification's spread is over seeds.
void seed_interval(const std::vector<double>& v, Json& row, const std::string& key) {
  static const double t975[] = {0, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262};
  double mean = 0;
  for (double x : v) mean += x / static_cast<double>(v.size());
  row[key] = mean;
  if (v.size() < 2) return;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  const double sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
  const double t = v.size() - 1 < 10 ? t975[v.size() - 1] : 1.96;
  row[key + "_lo"] = mean - t * sd / std::sqrt(static_cast<double>(v.size()));
  row[key + "_hi"] = mean + t * sd / std::sqrt(static_cast<double>(v.size()));
}

Json classification_metrics(const eval::ClassifyOptions& o, const Json& m) {
  Json out = {{"task", "classify"}, {"main", "accuracy"}, {"table", Json::array()}, {"seeds", Json::array()},
              {"per_concept", Json::object()}};
  const Json& seeds = m.at("seeds");
  for (auto c = m.at("categories").begin(); c != m.at("categories").end(); ++c) {
    for (const auto& method : o.methods) {
      if (!c.value().contains(method)) continue;
      const Json& x = c.value()[method];
      Json row = {{"category", c.key()}, {"method", method}};
      for (const char* k : {"accuracy", "hidden_recall", "hidden_precision"})
        if (x.contains(k)) seed_interval(x[k].get<std::vector<double>>(), row, k);
      out["table"].push_back(row);
      Json pc = Json::object();
      for (size_t i = 0; i < seeds.size() && i < x["accuracy"].size(); ++i) {
        out["seeds"].push_back({{"seed", seeds[i]}, {"category", c.key()}, {"method", method},
                                {"accuracy", x["accuracy"][i]},
                                {"hidden_recall", x.contains("hidden_recall") ? x["hidden_recall"][i] : Json()},
                                {"hidden_precision", x.contains("hidden_precision") ? x["hidden_precision"][i] : Json()}});
        pc["seed" + seeds[i].dump()] = x["accuracy"][i];
      }
      out["per_concept"][c.key() + "/" + method] = pc;
    }
  }
  return out;
}

// --- renders: every learned method's token of the first `n` concepts, seed 0 -----------

void render_tokens(const model::Bundle& bundle, const std::string& eval_dir, const std::vector<eval::UnitRecord>& records,
                   const std::vector<std::string>& methods, int n, int steps, const std::string& png) {
  model::TokenVectors vectors;
  std::vector<std::string> prompts, labels;
  std::set<std::string> concepts;
  const uint64_t seed0 = records.empty() ? 0 : records.front().seed;
  for (const auto& r : records) {
    if (r.seed != seed0) continue;
    const std::string concept = "p" + std::to_string(r.pair_id) + "-s" + std::to_string(r.style);
    if (!concepts.count(concept) && static_cast<int>(concepts.size()) >= n) continue;
    concepts.insert(concept);
    for (const auto& m : methods) {
      if (!eval::is_learned(m) || !r.extra.contains("prompts") || !r.extra["prompts"].contains(m)) continue;
      const std::string file =
          (fs::path(eval_dir) / "tokens" / (concept + "-seed" + std::to_string(r.seed) + "-" + m + ".safetensors")).string();
      if (!file_exists(file)) continue;
      const token::TokenFile t = token::read_token_file(file);
      const std::string name = "<r" + std::to_string(prompts.size()) + ">";  // one string per tile row
      vectors[name] = torch::from_blob(const_cast<float*>(t.vector(0)), {t.n_vectors, t.width}, torch::kFloat32).clone();
      std::string p = r.extra["prompts"][m].get<std::string>();
      const auto at = p.find(t.token);
      if (at == std::string::npos) continue;
      p.replace(at, t.token.size(), name);
      prompts.push_back(p);
      labels.push_back(concept + " " + r.category + " - " + m);
    }
  }
  if (prompts.empty()) return;
  render::RenderOptions ro;
  ro.prompts = prompts;
  ro.n = 2;
  ro.steps = steps;
  const render::RenderResult res = render::render(bundle, vectors, ro);
  std::vector<image::Image> tiles;
  std::vector<std::string> captions;
  for (const auto& im : res.images) {
    tiles.push_back(im.image);
    captions.push_back(labels[im.prompt] + " #" + std::to_string(im.index));
  }
  const int side = std::max(128, tiles.front().width);
  for (auto& t : tiles) t = image::square_tile(t, side);
  const int learned = static_cast<int>(std::count_if(methods.begin(), methods.end(), eval::is_learned));
  image::write_png(png, image::make_grid(tiles, 2 * std::max(1, std::min(4, learned)), captions));
}

// The per-run fields both evaluations' options share, set for one cell.
template <class Options>
Options for_cell(Options o, const std::string& out, const EvalCellOptions& cell, const std::atomic<bool>& stop) {
  o.out = out;
  o.cache_dir = cell.cache_dir;
  o.threads = cell.decode_threads;
  o.progress = cell.progress;
  o.stop = &stop;
  return o;
}

// --- bundles: one per worker thread and folder -------------------------------------------

const model::Bundle& bundle_for(const std::string& dir, const EvalCellOptions& o) {
  thread_local std::map<std::string, std::unique_ptr<model::Bundle>> cache;
  auto& b = cache[dir];
  if (!b) {
    model::BundleOptions bo;
    bo.dir = dir;
    bo.device = model::parse_device(o.device);
    bo.verify_sha256 = o.verify_sha256;
    bo.load_image = true;
    bo.load_diffusion = true;
    b = std::make_unique<model::Bundle>(model::Bundle::load(bo));
  }
  return *b;
}

}  // namespace

Json eval_cell_defaults(const std::string& task) {
  Json c = {{"task", task}, {"bundle", ""}, {"df2", "data/fashionworld"}, {"split", "validation"},
            {"learn", Json::object()}, {"renders", 4}, {"render_steps", 50}};
  if (task == "classify") {
    const eval::ClassifyOptions k;
    c["methods"] = k.methods;
    c["seeds"] = k.seeds;
    c["shots"] = k.shots;
    c["negatives"] = k.negatives;
    c["hidden"] = Json::array();
    c["max_identity"] = k.max_identity;
    c["train_split"] = k.train_split;
  } else {
    const eval::EvalOptions e;
    c["methods"] = e.methods;
    c["seeds"] = e.seeds;
    c["shots"] = e.shots;
    c["negatives"] = e.negatives;
    c["max_concepts"] = 20;
    c["subset_seed"] = e.subset_seed;
    c["composition"] = false;
    c["bootstrap"] = e.bootstrap_resamples;
    c["gair"] = Json::object();  // GairEvalOptions keys (the gair / gair-fixed rows)
  }
  return c;
}

void check_eval_cell(const Json& config, const std::string& where) { resolve(config, where); }

void check_eval_cells(const Experiment& exp) {
  for (const auto& c : expand(exp)) check_eval_cell(c.config, exp.file + " (cell " + c.id + " " + c.point.dump() + ")");
}

CellRunner eval_runner(const EvalCellOptions& options) {
  install_cell_sink();
  return [options](const Json& config, const std::string& dir, const std::atomic<bool>& stop) -> Json {
    const Resolved r = resolve(config, dir + "/config.json");
    const CellLog log(dir + "/log");
    const model::Bundle& bundle = bundle_for(r.bundle, options);
    const std::string out = dir + "/eval";
    Json metrics;
    std::vector<eval::UnitRecord> records;
    eval::EvalSummary s;
    if (r.task == "retrieve") {
      const eval::EvalOptions e = for_cell(r.retrieve, out, options, stop);
      s = eval::run_retrieval(bundle, e);
      if (s.interrupted) return Json::object();
      records = read_records(out + "/concepts");
      metrics = retrieval_metrics(e, s.metrics, records);
    } else {
      const eval::ClassifyOptions k = for_cell(r.classify, out, options, stop);
      s = eval::run_classification(bundle, k);
      if (s.interrupted) return Json::object();
      metrics = classification_metrics(k, s.metrics);
    }
    metrics["seconds"] = s.seconds;
    metrics["units"] = s.units_done;
    metrics["units_resumed"] = s.units_resumed;
    int64_t tokens = 0;
    if (directory_exists(out + "/tokens"))
      for (const auto& e : fs::directory_iterator(out + "/tokens")) tokens += e.path().extension() == ".safetensors";
    metrics["tokens"] = tokens;
    metrics["warnings"] = t_cell_warnings;
    if (r.renders > 0 && r.task == "retrieve" && !stop.load()) {
      try {
        render_tokens(bundle, out, records, r.retrieve.methods, r.renders, r.render_steps, dir + "/renders.png");
      } catch (const std::exception& e) {
        spdlog::warn("renders of the cell's tokens failed: {}", e.what());
      }
    }
    spdlog::info("cell done: {} unit(s) in {:.1f} s, {} token(s)", s.units_done, s.seconds, tokens);
    return metrics;
  };
}

bool make_plots(const std::string& out_dir) {
  const char* env = std::getenv("CTOK_PLOTS_SCRIPT");
  std::string script = env && *env ? env : "";
  if (script.empty()) {
    for (const fs::path& p : {fs::path(CTOK_SOURCE_DIR) / "scripts/python/ctok_py/plots.py",
                              fs::path("scripts/python/ctok_py/plots.py")})
      if (file_exists(p.string())) {
        script = p.string();
        break;
      }
  }
  if (script.empty() || !file_exists(script)) {
    spdlog::warn("no plots: scripts/python/ctok_py/plots.py not found (set CTOK_PLOTS_SCRIPT)");
    return false;
  }
  auto q = [](const std::string& s) {
    std::string r = "'";
    for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return r + "'";
  };
  const char* py = std::getenv("CTOK_PYTHON");  // Debian's python3 is where python3-matplotlib is
  const std::string python = py && *py ? py : (file_exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
  const std::string cmd = q(python) + " " + q(script) + " " + q(out_dir);
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    spdlog::warn("no plots: {} failed (exit {}; is python3-matplotlib installed? scripts/deps.sh installs it)", cmd,
                 WIFEXITED(rc) ? WEXITSTATUS(rc) : rc);
    return false;
  }
  return true;
}

}  // namespace ctok::experiment
