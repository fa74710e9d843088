// ctok-eval's library: the retrieval evaluation of docs/method.md §5 on a DeepFashion2-layout
// split (FashionWorld or a user's DeepFashion2 copy), every method in one run, resumable.
//
//   ctok::eval::EvalOptions o;
//   o.df2 = "data/fashionworld"; o.out = "runs/eval";
//   o.methods = ctok::eval::parse_methods("text,caption,image-mean,inv");
//   o.max_concepts = 10;
//   ctok::eval::EvalSummary s = ctok::eval::run_retrieval(bundle, o);   // writes o.out/*
//
// Output folder: run.json (the settings; a resume must agree), concepts/*.json (one record
// per (concept, seed), written atomically when all its methods are done: the unit of
// resumption), tokens/*.safetensors (every learned token), gallery/ (the gallery store,
// embedded once per bundle), and, from the records, metrics.json, ranks.csv, table.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/model/bundle.hpp"
#include "ctok/retrieval/metrics.hpp"
#include "ctok/token/learn_config.hpp"

namespace ctok::eval {

// Every method, in table order: text (the category prompt, no token), caption (FashionWorld's
// colour + pattern words: a ceiling for words), image-mean (the support features' mean: an
// image query, a reference), then the learned tokens, then GAIR on a learned token's
// composition query (docs/method.md §4): gair (the alpha picked by the automatic intent
// scores of its renders) and gair-fixed (the alpha with the best MRR on tuning identities).
const std::vector<std::string>& known_methods();
// The methods run when none are named: every one but the GAIR rows (which need --composition).
const std::vector<std::string>& default_methods();
// "a,b,c" -> the methods; bad_input listing the known ones for an unknown or repeated name.
std::vector<std::string> parse_methods(const std::string& list);
// "a,b" -> the names, each one of `known` (any, when empty); bad_input (key `key`) for an
// unknown, empty or repeated name, listing the known ones.
std::vector<std::string> parse_names(const std::string& list, const std::vector<std::string>& known,
                                     const std::string& key);
// "0,1,2" -> seeds; bad_input on anything else.
std::vector<uint64_t> parse_seeds(const std::string& list);
bool is_learned(const std::string& method);  // inv, cls, inv+cls, inv+cls+sub
bool is_gair(const std::string& method);     // gair, gair-fixed (composition queries only)
// The learning config of a learned method from the base (docs/method.md §5):
// inv: lambda_cls 0, subspace none; cls: lambda_inv 0, lambda_cls 1, subspace none;
// inv+cls: the base lambdas, subspace none; inv+cls+sub: the base (subspace as configured).
token::LearnConfig method_config(const std::string& method, const token::LearnConfig& base);
// The base the method table starts from: the shipped learning defaults (inversion only, free
// vector), with the classification weight (0.1) and the attribute subspace ("auto") that the
// cls / inv+cls / inv+cls+sub methods use. ctok-eval's --config and ctok-batch's "learn" keys
// replace fields of this base (an explicit lambda_cls 0 stays 0).
token::LearnConfig method_base_config();

// The GAIR rows' settings. Both correct the composition query q of the `base` token with
// attribute emphasis, q_alpha = normalise((1 - alpha) t(q) + alpha t(a)), a = q without the
// token. gair renders `n` images per alpha (seeds 0 .. n-1, `steps` DDIM steps) and picks the
// alpha whose renders score the best harmonic mean of concept fidelity (against the support
// images) and attribute fidelity (the query's colour against the other colours); beta > 0
// fuses the renders' mean feature. gair-fixed uses one alpha for every concept: the grid's
// best by MRR on `tune_concepts` concepts of `tune_split` whose pair_id >= tune_min_identity
// (FashionWorld: train identities 5001-6000, the tuning set; never the evaluated split),
// learned and ranked the same way (first seed), in <out>/gair-tuning/.
struct GairEvalOptions {
  std::string base;                                  // "" : the last learned method of `methods`
  std::vector<double> alphas{0.0, 0.25, 0.5, 0.75, 1.0};
  int n = 4;
  int steps = 50;
  double beta = 0.0;
  std::string tune_split = "train";
  int64_t tune_min_identity = 5001;
  int tune_concepts = 20;

  nlohmann::json to_json() const;
  // The keys above (all optional); bad_input naming `origin` and the key for an unknown key,
  // a wrong type or a value out of range.
  static GairEvalOptions from_json(const nlohmann::json& j, const std::string& origin);
};

struct EvalOptions {
  std::string df2;                         // DeepFashion2-layout root
  std::string split = "validation";
  std::vector<std::string> methods = default_methods();
  int shots = 3;                           // support-set size k
  int max_concepts = 0;                    // seeded subset of the eligible concepts (0: all)
  uint64_t subset_seed = 0;                // seed of that subset (independent of the run seeds)
  std::vector<uint64_t> seeds = {0};       // support set and learning seeds, one record each
  bool composition = false;                // also the colour-swap queries (FashionWorld)
  GairEvalOptions gair;                    // the gair / gair-fixed rows (when in methods)
  int64_t min_identity = 0;                // only concepts and gallery items with pair_id >= this (--min-identity;
                                           // GAIR tuning; FashionWorld train 5001: the tuning identities)
  int negatives = 32;                      // negative crops per concept for the cls losses
  token::LearnConfig learn = method_base_config();  // base learning config (--config, --steps)
  std::string out;                         // output folder
  std::string cache_dir;                   // gallery store parent ("" : <out>)
  int threads = 0;                         // cores for image decoding and learning workers (0: all)
  bool progress = true;                    // bar / periodic lines over the concepts
  std::string progress_label = "concepts";
  int bootstrap_resamples = 1000;          // intervals of the tables
  uint64_t bootstrap_seed = 0;
  const std::atomic<bool>* stop = nullptr; // Ctrl-C: finish nothing half, return interrupted
};

struct EvalSummary {
  bool interrupted = false;
  std::size_t units_done = 0, units_total = 0;  // (concept, seed) records
  std::size_t units_resumed = 0;                // found finished on disk
  double seconds = 0;
  nlohmann::json metrics;                       // what metrics.json holds
};

// Runs (or resumes) the evaluation and writes the tables. bad_input (exit 2) for: a root
// without annos/ or image/, an unknown split (the existing ones named), --shots that no
// concept allows (how many concepts qualify at each k), an empty gallery, caption or
// composition queries on data without colour keys, a gallery store of another bundle, an
// output folder holding a run with other settings.
EvalSummary run_retrieval(const model::Bundle& bundle, const EvalOptions& options);

// --- the hidden-category classification (docs/method.md §5, FashionWorld) -------------
//
// For each hidden category h of world.json (parent p) and seed: `shots` user crops of h
// from distinct train identities (pair_id <= max_identity; the identities above are the
// tuning set) and `negatives` user crops of p's other categories (labelled with their
// words); one token per learned method (all of them, every unit, learned as one cohort);
// then zero-shot classification of every style > 0 validation item of every category but
// the other hidden ones, prompts "a photo of a {category}", h's prompt replaced by
// "a photo of a <t> {p}" (methods parent and word: the parent word, h's own word).
// Output folder: run.json, tokens/, units/<h>-seed<s>.json (resumable), features/ (the
// validation features, a gallery store), metrics.json, table.md.
//
// Tuning (min_identity > 0, split = train_split): support and negatives are drawn from the
// train identities >= min_identity (and <= max_identity when that is > 0; FashionWorld:
// 5001-6000), and the classified items are the train split's style > 0 items of those
// identities, less, per unit, every item of an identity the unit drew a support crop or a
// negative from (the unit's record lists the excluded and the evaluated pair_ids). The
// validation split is not read for classification then. Evaluating on the train split
// without min_identity is refused (its items include the support).

// parent, word, inv, cls, inv+cls, inv+cls+sub.
const std::vector<std::string>& classify_methods();

struct ClassifyOptions {
  std::string df2;                         // FashionWorld root (world.json, train and validation)
  std::string train_split = "train";       // support and negatives
  std::string split = "validation";        // classified
  std::vector<std::string> methods = classify_methods();
  std::vector<std::string> hidden;         // "" : world.json's hidden categories
  int shots = 5;
  int negatives = 16;
  int64_t max_identity = 5000;             // train identities the selection may draw (0: all)
  int64_t min_identity = 0;                // > 0: the tuning set (above); set max_identity 0 with it
  std::vector<uint64_t> seeds = {0, 1, 2};
  token::LearnConfig learn = method_base_config();
  std::string out, cache_dir;
  int threads = 0;  // cores for image decoding and learning workers (0: all)
  bool progress = true;
  const std::atomic<bool>* stop = nullptr;
};

// bad_input: no world.json, an unknown method (the known ones listed), too few identities
// for --shots, an output folder holding a run with other settings, a negative
// min_identity / max_identity, max_identity below min_identity, min_identity with a split
// other than train_split, the train split without min_identity.
EvalSummary run_classification(const model::Bundle& bundle, const ClassifyOptions& options);

// --- tables from the records (no model needed; unit-tested) -----------------------------

// One finished (concept, seed): the rank of every method, plain and composition queries.
struct UnitRecord {
  int64_t pair_id = 0;
  int style = 0;
  uint64_t seed = 0;
  std::string category, word;                // category_name, the query word
  std::map<std::string, int64_t> ranks;      // method -> rank (plain queries)
  std::map<std::string, int64_t> composition_ranks;  // method -> rank (colour-swap query), may be empty
  int composition_style = 0;                 // s' of the composition query (0: none)
  std::string composition_colour;
  std::map<std::string, double> seconds;     // method -> seconds spent on it (learning, encoding)
  nlohmann::json extra = nlohmann::json::object();  // support ids, prompts

  nlohmann::json to_json() const;
  static UnitRecord from_json(const nlohmann::json& j, const std::string& origin);
};

struct TableOptions {
  std::vector<std::string> methods;           // rows, in order
  std::vector<int64_t> recall_at = {1, 5, 10, 20};
  retrieval::BootstrapOptions bootstrap;
  // A row's own reference (gair -> the token it corrects): a paired delta "delta_ref" beside
  // the deltas against text and inv, and a table column when any row has one.
  std::map<std::string, std::string> reference;
  bool composition = false;                   // tables of the composition ranks
};

// Per concept (pair_id, style), a method's value averaged over the seeds it has records
// for; the statistics (MRR, R@K, paired deltas against text and inv) are over concepts,
// with bootstrap intervals. Returns the metrics.json object for one query kind.
nlohmann::json summarize(const std::vector<UnitRecord>& records, const TableOptions& options);
// The markdown table of a summarize() result.
std::string markdown_table(const nlohmann::json& summary, const std::vector<int64_t>& recall_at);
// ranks.csv: pair_id,style,seed,query,method,rank (query: plain | composition).
std::string ranks_csv(const std::vector<UnitRecord>& records);

}  // namespace ctok::eval
