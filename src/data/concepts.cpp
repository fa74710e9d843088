#include "ctok/data/concepts.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <tuple>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/random.hpp"

namespace ctok::data {
namespace fs = std::filesystem;

namespace {

Crop make_crop(const Annotation& a, const Item& it) {
  Crop c;
  c.image_path = a.image_path;
  c.box = it.box;
  c.stem = a.stem;
  c.item = it.name;
  c.source = a.source;
  c.pair_id = a.pair_id;
  c.style = it.style;
  c.category_id = it.category_id;
  c.category_name = it.category_name;
  c.parent = it.parent;
  c.color = it.color;
  c.pattern = it.pattern;
  return c;
}

bool crop_less(const Crop& a, const Crop& b) { return std::tie(a.stem, a.item) < std::tie(b.stem, b.item); }

template <typename T>
void shuffle(std::vector<T>& v, SplitMix64& g) {  // Fisher-Yates
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(i)]);
}

}  // namespace

std::vector<Crop> list_items(const Split& split, const std::string& source) {
  std::vector<Crop> out;
  for (const auto& a : split.annotations) {
    if (!source.empty() && a.source != source) continue;
    for (const auto& it : a.items)
      if (it.style > 0) out.push_back(make_crop(a, it));
  }
  std::sort(out.begin(), out.end(), crop_less);
  return out;
}

namespace {
std::map<std::pair<int64_t, int>, Concept> group_concepts(const Split& split) {
  std::map<std::pair<int64_t, int>, Concept> groups;
  for (const Crop& c : list_items(split)) {
    Concept& g = groups[{c.pair_id, c.style}];
    g.pair_id = c.pair_id;
    g.style = c.style;
    (c.source == "user" ? g.user : g.shop).push_back(c);
  }
  for (auto& [key, g] : groups) {
    const Crop& first = !g.user.empty() ? g.user.front() : g.shop.front();
    g.category_id = first.category_id;
    g.category_name = first.category_name;
    g.parent = first.parent;
    g.color = first.color;
    g.pattern = first.pattern;
  }
  return groups;
}
}  // namespace

std::vector<Concept> find_concepts(const Split& split, const ConceptOptions& options) {
  std::vector<Concept> out;
  for (auto& [key, g] : group_concepts(split)) {
    if (static_cast<int>(g.user.size()) >= options.min_user && static_cast<int>(g.shop.size()) >= options.min_shop)
      out.push_back(std::move(g));
  }
  return out;
}

const Concept& get_concept(const std::vector<Concept>& concepts, int64_t pair_id, int style) {
  for (const auto& c : concepts)
    if (c.pair_id == pair_id && c.style == style) return c;
  bool pair_known = false;
  std::string styles;
  for (const auto& c : concepts) {
    if (c.pair_id != pair_id) continue;
    pair_known = true;
    styles += (styles.empty() ? "" : ", ") + std::to_string(c.style);
  }
  auto e = bad_input("no eligible concept with pair_id " + std::to_string(pair_id) + " and style " +
                     std::to_string(style) + " (a concept needs enough user items and a shop item)");
  if (pair_known) e.found("eligible styles of this pair_id: " + styles);
  else e.found("pair_id " + std::to_string(pair_id) + " has no eligible concept");
  throw e;
}

std::vector<Crop> select_support(const Concept& c, int k, uint64_t seed) {
  if (k < 1) throw bad_input("the support set needs at least one image").key("shots").found(std::to_string(k));
  if (static_cast<std::size_t>(k) > c.user.size()) {
    throw bad_input("concept (" + std::to_string(c.pair_id) + ", " + std::to_string(c.style) + ") has " +
                    std::to_string(c.user.size()) + " user items, fewer than the " + std::to_string(k) +
                    " shots asked for")
        .key("shots").expected("<= " + std::to_string(c.user.size())).found(std::to_string(k));
  }
  std::vector<Crop> pool = c.user;  // sorted already
  SplitMix64 g(mix_seed(seed, static_cast<uint64_t>(c.pair_id), static_cast<uint64_t>(c.style), 0x5u));
  shuffle(pool, g);
  pool.resize(static_cast<std::size_t>(k));
  std::sort(pool.begin(), pool.end(), crop_less);
  return pool;
}

std::vector<Crop> gallery(const Split& split) {
  std::vector<Crop> out;
  for (const auto& a : split.annotations) {
    if (a.source != "shop") continue;
    for (const auto& it : a.items) out.push_back(make_crop(a, it));
  }
  std::sort(out.begin(), out.end(), crop_less);
  return out;
}

std::vector<Concept> subset_concepts(std::vector<Concept> concepts, int n, uint64_t seed) {
  if (n <= 0 || static_cast<std::size_t>(n) >= concepts.size()) return concepts;
  std::vector<std::size_t> order(concepts.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  SplitMix64 g(mix_seed(seed, 0x7u));
  shuffle(order, g);
  order.resize(static_cast<std::size_t>(n));
  std::sort(order.begin(), order.end());
  std::vector<Concept> out;
  out.reserve(order.size());
  for (std::size_t i : order) out.push_back(std::move(concepts[i]));
  return out;
}

std::vector<std::size_t> concepts_per_shots(const Split& split, int min_shop) {
  std::vector<std::size_t> out;
  for (const auto& [key, g] : group_concepts(split)) {
    if (static_cast<int>(g.shop.size()) < min_shop) continue;
    if (out.size() < g.user.size()) out.resize(g.user.size(), 0);
    for (std::size_t k = 0; k < g.user.size(); ++k) ++out[k];
  }
  return out;
}

std::vector<Crop> select_negatives(const Split& split, const Concept& c, int n, uint64_t seed, int per_identity) {
  std::map<int64_t, std::vector<Crop>> by_pair;
  for (const Crop& x : list_items(split, "user")) {
    if (x.pair_id == c.pair_id || x.category_name != c.category_name) continue;
    by_pair[x.pair_id].push_back(x);
  }
  SplitMix64 g(mix_seed(seed, static_cast<uint64_t>(c.pair_id), static_cast<uint64_t>(c.style), 0x6u));
  std::vector<Crop> pool;
  for (auto& [pid, crops] : by_pair) {  // map order: by pair_id, deterministic
    shuffle(crops, g);
    for (int i = 0; i < per_identity && i < static_cast<int>(crops.size()); ++i) pool.push_back(crops[i]);
  }
  shuffle(pool, g);
  if (n > 0 && static_cast<std::size_t>(n) < pool.size()) pool.resize(static_cast<std::size_t>(n));
  std::sort(pool.begin(), pool.end(), crop_less);
  return pool;
}

std::set<std::string> hidden_categories(const std::string& root) {
  std::set<std::string> out;
  const std::string path = (fs::path(root) / "world.json").string();
  if (!file_exists(path)) return out;
  const auto j = json::parse_file(path);
  json::require_object(j, path);
  auto cats = j.find("categories");
  if (cats == j.end() || !cats->is_array()) return out;
  for (const auto& c : *cats) {
    if (!c.is_object()) continue;
    if (json::optional<bool>(c, "hidden", path, false)) out.insert(json::require<std::string>(c, "name", path));
  }
  return out;
}

std::string article(const std::string& w) {
  return !w.empty() && std::string("aeiou").find(w[0]) != std::string::npos ? "an" : "a";
}

std::string query_word(const Concept& c, const std::set<std::string>& hidden) {
  if (!c.parent.empty() && hidden.count(c.category_name)) return c.parent;
  return c.category_name;
}

}  // namespace ctok::data
