// Strict JSON helpers over nlohmann::json, for configs and manifests: parse errors name the
// file, line and column; duplicate keys, unknown keys and wrong types are errors that say
// what was expected and what was found.
//
//   nlohmann::json j = ctok::json::parse_file("learn.json");
//   ctok::json::check_keys(j, {"steps", "lr", "words"}, "learn.json");
//   int64_t steps = ctok::json::require<int64_t>(j, "steps", "learn.json");
//   double lr = ctok::json::optional<double>(j, "lr", "learn.json", 1e-3);
//   // "learn.json: steps: wrong type (expected integer, found string "100")"
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/core/error.hpp"

namespace ctok::json {

using Json = nlohmann::json;

// Parse a file / a string. Throws bad_input "<origin>: invalid JSON at line L, column C: ...",
// also for duplicate keys in one object.
Json parse_file(const std::string& path);
Json parse_string(const std::string& text, const std::string& origin);

// "object", "array", "string", "integer", "number", "boolean", "null".
std::string type_name(const Json& value);
// A short rendering of a value for messages: type plus (truncated) JSON text.
std::string describe(const Json& value);

// Throws bad_input unless `value` is an object.
void require_object(const Json& value, const std::string& where);
// Throws bad_input naming the first key of `object` not in `allowed` (object required).
void check_keys(const Json& object, const std::vector<std::string>& allowed, const std::string& where);

namespace detail {

template <typename T>
struct is_vector : std::false_type {};
template <typename U>
struct is_vector<std::vector<U>> : std::true_type {};
template <typename T>
struct is_string_map : std::false_type {};
template <typename U>
struct is_string_map<std::map<std::string, U>> : std::true_type {};

template <typename T>
std::string expected_name() {
  if constexpr (std::is_same_v<T, bool>) {
    return "boolean";
  } else if constexpr (std::is_integral_v<T>) {
    return std::is_unsigned_v<T> ? "non-negative integer" : "integer";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "number";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return "string";
  } else if constexpr (is_vector<T>::value) {
    return "array of " + expected_name<typename T::value_type>();
  } else if constexpr (is_string_map<T>::value) {
    return "object of " + expected_name<typename T::mapped_type>();
  } else {
    return "JSON value";
  }
}

[[noreturn]] void throw_type_error(const Json& value, const std::string& expected, const std::string& key,
                                   const std::string& where);
[[noreturn]] void throw_range_error(const Json& value, const std::string& expected, const std::string& key,
                                    const std::string& where);

}  // namespace detail

// Convert `value` to T strictly. `key` and `where` only serve the error message.
// Supported T: bool, integer types (integers only, range-checked), float/double (any
// number), std::string, nlohmann::json, std::vector<U>, std::map<std::string, U>.
template <typename T>
T convert(const Json& value, const std::string& key, const std::string& where) {
  if constexpr (std::is_same_v<T, Json>) {
    return value;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean()) detail::throw_type_error(value, "boolean", key, where);
    return value.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!value.is_number_integer()) detail::throw_type_error(value, detail::expected_name<T>(), key, where);
    if (value.is_number_unsigned()) {
      const uint64_t v = value.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        detail::throw_range_error(value, "at most " + std::to_string(std::numeric_limits<T>::max()), key, where);
      }
      return static_cast<T>(v);
    }
    const int64_t v = value.get<int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (v < 0) detail::throw_range_error(value, "a non-negative integer", key, where);
      if (static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        detail::throw_range_error(value, "at most " + std::to_string(std::numeric_limits<T>::max()), key, where);
      }
    } else {
      if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
        detail::throw_range_error(value, "an integer in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                                             std::to_string(std::numeric_limits<T>::max()) + "]",
                                  key, where);
      }
    }
    return static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!value.is_number()) detail::throw_type_error(value, "number", key, where);
    return value.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string()) detail::throw_type_error(value, "string", key, where);
    return value.get<std::string>();
  } else if constexpr (detail::is_vector<T>::value) {
    if (!value.is_array()) detail::throw_type_error(value, detail::expected_name<T>(), key, where);
    T out;
    out.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
      out.push_back(convert<typename T::value_type>(value[i], key + "[" + std::to_string(i) + "]", where));
    }
    return out;
  } else if constexpr (detail::is_string_map<T>::value) {
    if (!value.is_object()) detail::throw_type_error(value, detail::expected_name<T>(), key, where);
    T out;
    for (auto it = value.begin(); it != value.end(); ++it) {
      out.emplace(it.key(), convert<typename T::mapped_type>(it.value(), key + "." + it.key(), where));
    }
    return out;
  } else {
    static_assert(sizeof(T) == 0, "ctok::json::convert: unsupported type");
  }
}

// The value at `key`; bad_input "missing required key" if absent (object required).
template <typename T>
T require(const Json& object, const std::string& key, const std::string& where) {
  require_object(object, where);
  auto it = object.find(key);
  if (it == object.end()) {
    throw bad_input("missing required key").file(where).key(key).expected(detail::expected_name<T>());
  }
  return convert<T>(*it, key, where);
}

// The value at `key`, or `fallback` if the key is absent. A present key of the wrong
// type is an error, also when it holds null.
template <typename T>
T optional(const Json& object, const std::string& key, const std::string& where, T fallback) {
  require_object(object, where);
  auto it = object.find(key);
  if (it == object.end()) return fallback;
  return convert<T>(*it, key, where);
}

// The value at `key`, or std::nullopt if absent.
template <typename T>
std::optional<T> find(const Json& object, const std::string& key, const std::string& where) {
  require_object(object, where);
  auto it = object.find(key);
  if (it == object.end()) return std::nullopt;
  return convert<T>(*it, key, where);
}

}  // namespace ctok::json
