#include "ctok/token/attributes.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <system_error>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/text/templates.hpp"

#ifndef CTOK_SOURCE_DIR
#define CTOK_SOURCE_DIR "."
#endif

namespace ctok::token {
namespace fs = std::filesystem;

std::vector<std::string> AttributeSet::subspace_words() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& w) {
    if (std::find(out.begin(), out.end(), w) == out.end()) out.push_back(w);
  };
  add(parent);
  for (const auto* list : {&colours, &patterns, &materials, &shapes, &siblings})
    for (const auto& w : *list) add(w);
  return out;
}

std::vector<std::string> AttributeSet::subspace_words(int max_words) const {
  std::vector<std::string> all = subspace_words();
  if (max_words <= 0 || static_cast<int>(all.size()) <= max_words) return all;
  std::vector<std::string> out = {parent};
  const std::vector<const std::vector<std::string>*> lists = {&colours, &patterns, &materials, &shapes, &siblings};
  std::vector<size_t> at(lists.size(), 0);
  bool more = true;
  while (static_cast<int>(out.size()) < max_words && more) {
    more = false;
    for (size_t l = 0; l < lists.size() && static_cast<int>(out.size()) < max_words; ++l) {
      while (at[l] < lists[l]->size()) {
        const std::string& w = (*lists[l])[at[l]++];
        if (std::find(out.begin(), out.end(), w) == out.end()) {
          out.push_back(w);
          break;
        }
      }
      more = more || at[l] < lists[l]->size();
    }
  }
  return out;
}

AttributeSet read_attribute_file(const std::string& path) {
  const auto j = json::parse_file(path);
  json::check_keys(j, {"parent", "description", "colours", "patterns", "materials", "shapes", "siblings"}, path);
  AttributeSet a;
  a.path = path;
  a.parent = json::require<std::string>(j, "parent", path);
  a.description = json::optional<std::string>(j, "description", path, "");
  a.colours = json::require<std::vector<std::string>>(j, "colours", path);
  a.patterns = json::require<std::vector<std::string>>(j, "patterns", path);
  a.materials = json::require<std::vector<std::string>>(j, "materials", path);
  a.shapes = json::require<std::vector<std::string>>(j, "shapes", path);
  a.siblings = json::require<std::vector<std::string>>(j, "siblings", path);
  auto check_word = [&](const std::string& w, const std::string& key) {
    const bool blank = w.find_first_not_of(" \t\r\n") == std::string::npos;
    if (blank || w.size() > 100) {
      throw bad_input("attribute words must be non-empty").file(path).key(key).found("\"" + w + "\"");
    }
  };
  check_word(a.parent, "parent");
  for (const auto& [key, list] : {std::pair{"colours", &a.colours}, {"patterns", &a.patterns},
                                  {"materials", &a.materials}, {"shapes", &a.shapes}, {"siblings", &a.siblings}})
    for (const auto& w : *list) check_word(w, key);
  return a;
}

std::string default_attributes_dir() {
  if (const char* env = std::getenv("CTOK_ATTRIBUTES"); env && *env) return env;
  std::vector<fs::path> candidates;
  for (const std::string& c : executable_data_candidates("configs/attributes")) candidates.push_back(c);
  candidates.push_back(fs::path(CTOK_SOURCE_DIR) / "configs" / "attributes");
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_directory(c, ec)) return fs::weakly_canonical(c, ec).string();
  }
  return candidates.back().string();
}

std::vector<std::string> list_attribute_parents(const std::string& dir_in) {
  const std::string dir = dir_in.empty() ? default_attributes_dir() : dir_in;
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".json") continue;
    std::string stem = it->path().stem().string();
    std::replace(stem.begin(), stem.end(), '_', ' ');
    out.push_back(stem);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string find_attribute_file(const std::string& parent, const std::string& dir_in) {
  const std::string dir = dir_in.empty() ? default_attributes_dir() : dir_in;
  std::string stem = parent;
  std::replace(stem.begin(), stem.end(), ' ', '_');
  const std::string path = (fs::path(dir) / (stem + ".json")).string();
  if (file_exists(path)) return path;
  std::string have;
  for (const auto& p : list_attribute_parents(dir)) {
    std::string f = p;
    std::replace(f.begin(), f.end(), ' ', '_');
    have += (have.empty() ? "" : ", ") + f + ".json";
  }
  throw bad_input("no attribute file for the parent \"" + parent +
                  "\", which --subspace auto needs (give --subspace FILE, or --subspace none)")
      .file(path)
      .found(have.empty() ? "no attribute file in " + dir : "files in " + dir + ": " + have);
}

std::string fill_template(const std::string& templ, const std::string& token, const std::string& parent) {
  const std::string s = text::format_template(templ, {{"token", token}, {"parent", parent}});
  // Collapse whitespace runs, trim.
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(words[i + 1][0])));
    const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
    if (words[i] == "a" && vowel) words[i] = "an";
    else if (words[i] == "an" && !vowel) words[i] = "a";
  }
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace ctok::token
