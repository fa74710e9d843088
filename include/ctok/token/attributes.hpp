// Attribute files (configs/attributes/<parent>.json): the words "appropriate for the
// super-class" that span a token's subspace, and the parent's sibling categories (the
// default negative class prompts).
//
//   std::string path = ctok::token::find_attribute_file("shoe");   // bad_input lists what exists
//   ctok::token::AttributeSet a = ctok::token::read_attribute_file(path);
//   a.subspace_words();   // parent, colours, patterns, materials, shapes, siblings (no repeats)
//
// File: {"parent": "shoe", "description": "...", "colours": [...], "patterns": [...],
//        "materials": [...], "shapes": [...], "siblings": [...]} (all keys but description
// required, words non-empty, no other keys).
#pragma once

#include <string>
#include <vector>

namespace ctok::token {

struct AttributeSet {
  std::string path;  // where it was read from
  std::string parent;
  std::string description;
  std::vector<std::string> colours, patterns, materials, shapes, siblings;

  // The parent first, then each list in the order above, without repeats.
  std::vector<std::string> subspace_words() const;
  // At most `max_words` of them (0: all): the parent, then one word from each list in turn
  // (colours, patterns, materials, shapes, siblings), so a small subspace spans every kind.
  std::vector<std::string> subspace_words(int max_words) const;
};

AttributeSet read_attribute_file(const std::string& path);

// The folder of attribute files: $CTOK_ATTRIBUTES; else next to the executable
// (<exe>/../share/ctok/configs/attributes, <exe>/../../configs/attributes); else the source
// tree's configs/attributes.
std::string default_attributes_dir();
// "<dir>/<parent with spaces as underscores>.json". bad_input when it does not exist, listing
// the parents that have a file there. `dir` empty: default_attributes_dir().
std::string find_attribute_file(const std::string& parent, const std::string& dir = {});
// The parents with a file in `dir` (file stems with underscores as spaces), sorted.
std::vector<std::string> list_attribute_parents(const std::string& dir = {});

// A template with {token} and {parent} filled in. Missing pieces leave no double spaces, and
// "a" before a word starting with a vowel becomes "an" ("a {token} {parent}" with no token
// and parent "ankle boot" gives "an ankle boot").
std::string fill_template(const std::string& templ, const std::string& token, const std::string& parent);

}  // namespace ctok::token
