// A checked reader over one JSON object of a larger document, whose messages give the
// dotted key path: "bundle.json: text.width: invalid value (expected a positive integer,
// found 0)". The object form of the json:: helpers (json.hpp), for nested configs.
//
//   json::Section top(j, "bundle.json", "");
//   json::Section text(top.raw("text"), top.origin(), "text");
//   text.check_keys({"file", "width"});
//   const int64_t width = text.positive("width");           // "text.width" in messages
//   const std::string mode = text.one_of("mode", {"a", "b"}, nullptr);
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/core/json.hpp"

namespace ctok::json {

class Section {
 public:
  // bad_input "wrong type" unless `object` is an object. `prefix` is the dotted path of
  // the object ("" at the top); `top_key` names the top in that message ("bundle.json");
  // `unknown_key` is the message of check_keys. An object with neither gets the message of
  // require_object.
  Section(const Json& object, std::string origin, std::string prefix, const std::string& top_key = "",
          std::string unknown_key = "unknown key");

  std::string full(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  bool has(const std::string& key) const { return object_.contains(key); }
  const Json& raw(const std::string& key) const { return object_.at(key); }
  const std::string& origin() const { return origin_; }

  // The value at `key`; bad_input "missing required key" if absent.
  template <typename T>
  T require(const std::string& key) const {
    auto it = object_.find(key);
    if (it == object_.end()) {
      throw bad_input("missing required key").file(origin_).key(full(key)).expected(detail::expected_name<T>());
    }
    return convert<T>(*it, full(key), origin_);
  }

  // The value at `key`, or `fallback` if absent.
  template <typename T>
  T optional(const std::string& key, T fallback) const {
    auto it = object_.find(key);
    return it == object_.end() ? fallback : convert<T>(*it, full(key), origin_);
  }

  // bad_input naming the first key not in `allowed`.
  void check_keys(const std::vector<std::string>& allowed) const;
  // bad_input "invalid value" at `key`.
  [[noreturn]] void invalid(const std::string& key, const std::string& expected, const std::string& found) const;
  // A required integer > 0.
  int64_t positive(const std::string& key) const;
  // A required string from `allowed` (or *fallback when absent and fallback is given).
  std::string one_of(const std::string& key, const std::vector<std::string>& allowed, const std::string* fallback) const;
  // A required, non-empty string (a file name).
  std::string file(const std::string& key) const;

 private:
  const Json& object_;
  std::string origin_;
  std::string prefix_;
  std::string unknown_key_;
};

}  // namespace ctok::json
