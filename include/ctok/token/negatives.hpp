// Where a token's negative images come from (docs/learning.md "Negatives"), and the
// DeepFashion2 concept protocol as a learn request (docs/method.md §5):
//
//   r.negatives = ctok::token::negatives_from_folder("negatives/");       // 1. a folder
//   r.negatives = ctok::token::negatives_from_split(split, o);            // 2. a DF2-layout split
//   r.negatives = ctok::token::generate_negatives(bundle, g);             // 3. rendered, cached
//   ctok::token::LearnRequest r = ctok::token::request_for_concept(split, concept_, c);
//
// A negative's label is its class word: the text side of the classification loss targets
// that word's class prompt (a sibling category, or the parent for another item of the
// parent) and treats an unlabelled negative as "not the token".
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/data/concepts.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/learn_config.hpp"
#include "ctok/token/learner.hpp"

namespace ctok::token {

// The image files of `dir` (label "") and of its sub-folders, each sub-folder's name being
// the class word of its images ("negatives/sandal/1.png" is a "sandal"; underscores read as
// spaces: "ankle_boot" is "ankle boot"). Hidden entries are ignored. bad_input when `dir` is
// missing or holds no image at all (naming it).
std::vector<ImageSource> negatives_from_folder(const std::string& dir);

struct SplitNegativeOptions {
  std::string parent;                 // the token's parent word
  std::vector<std::string> siblings;  // sibling categories of the parent (the attribute file's)
  std::string category;               // the concept's own category ("" : the parent word)
  int64_t exclude_pair_id = -1;       // the concept's identity, never a negative (-1: none known)
  int n = 32;                         // how many (a seeded draw; fewer when the split has fewer)
  uint64_t seed = 0;
  bool allow_none = false;            // an empty list instead of bad_input when neither pool has an item
};

// User crops of the split: other identities of the concept's category (label: the parent
// word) and items of the sibling categories (label: their category name), half of `n` from
// each pool when both have items, at most one crop per identity and pool while identities
// last. Items of style 0 are skipped. bad_input when neither pool has an item (naming the
// categories looked for).
std::vector<ImageSource> negatives_from_split(const data::Split& split, const SplitNegativeOptions& options);

struct GeneratedNegativeOptions {
  std::vector<std::string> words;           // class words; one prompt each (the first template)
  std::string templ = "a photo of a {token} {parent}";
  int n = 32;                               // images per word, seeds seed .. seed + n - 1
  uint64_t seed = 0;
  int steps = 50;                           // sampler settings (part of the cache key)
  double guidance = 5.0;
  std::string cache_dir;                    // "" : default_negatives_cache_dir()
  bool progress = true;
};

// $CTOK_CACHE_DIR/negatives, else $XDG_CACHE_HOME/ctok/negatives, else ~/.cache/ctok/negatives.
std::string default_negatives_cache_dir();
// The words generated negatives are drawn for: the parent's siblings (its attribute file),
// or, where it has none, the other parents that have an attribute file.
std::vector<std::string> generated_negative_words(const std::string& parent, const std::string& attributes_dir = {});
// Renders (or reuses) n images per word with the bundle's diffusion model (loaded with
// load_diffusion), cached as PNG files under cache_dir in one folder per (bundle sha256s,
// prompt, sampler settings), one file per seed; a later run reuses them and renders only
// the seeds missing. bad_input when a cache folder's meta.json names another bundle or
// prompt. Returns the images labelled with their word.
std::vector<ImageSource> generate_negatives(const model::Bundle& bundle, const GeneratedNegativeOptions& options);

// How a tool picks a request's negatives (docs/learning.md "Negatives"), first match wins:
// a folder, a DeepFashion2-layout split, negatives the request already has (a --df2
// concept), generated ones; or none.
struct NegativeSourceOptions {
  std::string folder;            // --negatives DIR
  std::string split;             // --negatives-from ROOT[:SPLIT] (SPLIT default train)
  bool none = false;             // --no-negatives
  int split_n = 32;              // crops drawn from a split
  int generated_n = GeneratedNegativeOptions{}.n;  // images per class word
  std::string cache_dir;         // generated negatives ("" : default_negatives_cache_dir())
  std::string attributes_dir;    // siblings of the parent ("" : the default)
  bool progress = true;
};

// bad_input when more than one of folder / split / none is given.
void check_negative_sources(const NegativeSourceOptions& options);
// Fills r.negatives and r.negatives_source from a folder or a split; leaves a request that
// has negatives (or a source record) as it is. Returns true when the request still needs
// generated negatives (nothing given, not `none`).
bool attach_given_negatives(LearnRequest& r, const NegativeSourceOptions& options);
// Generates them (the bundle loaded with its diffusion models) when attach_given_negatives
// said so; a bundle without diffusion models gets a warning and no negatives.
void attach_generated_negatives(const model::Bundle& bundle, LearnRequest& r, const NegativeSourceOptions& options);

struct ConceptRequestOptions {
  std::string root, split;       // recorded in the source record
  int shots = 3;                 // support-set size k
  uint64_t seed = 0;             // the support set and the negatives (also config.seed unless set)
  int negatives = 32;            // negative crops from the split (0: none)
  std::string token;             // "" : "<p{pair_id}-s{style}>"
  std::string parent;            // "" : the query word (the parent of a hidden category, else the category)
  std::set<std::string> hidden;  // hidden categories of the world (data::hidden_categories)
  std::string attributes_dir;    // where the parent's siblings are looked up ("" : the default)
  LearnConfig config;
};

// The learn request of a DeepFashion2-layout concept: k user crops chosen with the seed,
// negatives from the same split (negatives_from_split), the parent word, the token name and
// a source record (root, split, pair_id, style, shots, support ids, category, negatives).
// Where the split has no other item of the parent's categories, the negatives and their
// source stay empty (a warning says so) and the caller takes the next source
// (attach_given_negatives returns true; attach_generated_negatives).
LearnRequest request_for_concept(const data::Split& split, const data::Concept& concept_,
                                 const ConceptRequestOptions& options);

}  // namespace ctok::token
