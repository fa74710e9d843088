// The retrieval protocol's selections on a DeepFashion2-layout split (docs/method.md §5):
// items, concepts (pair_id, style), the seeded support set a token is learned from, the
// shop gallery, and negatives from other identities of the same category.
//
//   ctok::data::Split split = ctok::data::read_split(root, "validation");
//   auto concepts = ctok::data::find_concepts(split, {.min_user = 3});
//   const auto& c = ctok::data::get_concept(concepts, 100001, 1);      // bad_input if absent
//   std::vector<ctok::data::Crop> support = ctok::data::select_support(c, 3, /*seed=*/0);
//   std::vector<ctok::data::Crop> gallery = ctok::data::gallery(split);
//
// Every selection is deterministic for a seed on every platform (own generator, no
// std::shuffle), and independent of the thread count used to read the split.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ctok/data/deepfashion2.hpp"
#include "ctok/image/image.hpp"

namespace ctok::data {

// One annotated item as an image crop.
struct Crop {
  std::string image_path;
  image::Box box;
  std::string stem, item;  // "000001", "item1"
  std::string source;      // "shop" | "user"
  int64_t pair_id = 0;
  int style = 0;
  int category_id = 0;
  std::string category_name;
  std::string parent, color, pattern;  // FashionWorld extras, empty for DeepFashion2

  std::string id() const { return stem + "/" + item; }  // unique within a split
};

struct Concept {
  int64_t pair_id = 0;
  int style = 0;
  int category_id = 0;
  std::string category_name;
  std::string parent, color, pattern;  // FashionWorld extras of its first user item
  std::vector<Crop> user, shop;        // sorted by (stem, item)
};

struct ConceptOptions {
  int min_user = 3;  // eligible with at least this many user items (the protocol's k)
  int min_shop = 1;  // ... and at least this many shop items
};

// Every item with style > 0 (the protocol's items), optionally of one source ("" = both).
std::vector<Crop> list_items(const Split& split, const std::string& source = "");
// Eligible concepts, sorted by (pair_id, style).
std::vector<Concept> find_concepts(const Split& split, const ConceptOptions& options = {});
// The concept (pair_id, style); bad_input saying why when it is absent or not eligible.
const Concept& get_concept(const std::vector<Concept>& concepts, int64_t pair_id, int style);
// k user crops of the concept, chosen with the seed (and the concept's key, so concepts
// get independent draws); bad_input when the concept has fewer than k user items.
std::vector<Crop> select_support(const Concept& concept_, int k, uint64_t seed);
// Every shop crop, all categories, style-0 items included (they can never be correct, but
// they compete like in the real catalogue): the retrieval gallery, sorted by (stem, item).
std::vector<Crop> gallery(const Split& split);
// n of the concepts chosen with the seed (n <= 0 or n >= size: all), in the input order
// (sorted by (pair_id, style) from find_concepts). The same seed and n give the same subset,
// and a larger n a superset of a smaller one's (one seeded permutation, cut at n).
std::vector<Concept> subset_concepts(std::vector<Concept> concepts, int n, uint64_t seed);
// For each k = 1, 2, ...: how many concepts have at least k user items (and min_shop shop
// items); entry k-1 is k's count, the list ends at the largest k any concept allows.
std::vector<std::size_t> concepts_per_shots(const Split& split, int min_shop = 1);
// Up to n user crops (n <= 0: all) of other identities (pair_id differs) of the same
// category_name, chosen with the seed, at most `per_identity` from one identity.
std::vector<Crop> select_negatives(const Split& split, const Concept& concept_, int n, uint64_t seed,
                                   int per_identity = 1);

// Hidden categories listed by <root>/world.json (FashionWorld), empty when there is none.
std::set<std::string> hidden_categories(const std::string& root);
// The word queries use for the concept: its parent for a hidden FashionWorld category, else
// its category_name.
std::string query_word(const Concept& concept_, const std::set<std::string>& hidden);
// "an" before a vowel, else "a": the article prompts put before a query word.
std::string article(const std::string& word);

}  // namespace ctok::data
