#include "ctok/core/json.hpp"
#include "ctok/core/json_section.hpp"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "ctok/core/fs.hpp"

namespace ctok::json {
namespace {

// Line and column (1-based) of the last character the parser read; nlohmann reports
// `byte` as the 1-based position of that character.
void line_column(const std::string& text, std::size_t byte, std::size_t* line, std::size_t* column) {
  *line = 1;
  *column = 1;
  const std::size_t last = std::min(byte > 0 ? byte - 1 : 0, text.size());
  for (std::size_t i = 0; i < last; ++i) {
    if (text[i] == '\n') {
      ++*line;
      *column = 1;
    } else {
      ++*column;
    }
  }
}

// nlohmann's message minus its "[json.exception.parse_error.101] parse error at ...: " prefix.
std::string parse_detail(const std::string& what) {
  std::string s = what;
  auto bracket = s.find("] ");
  if (bracket != std::string::npos && s.rfind("[json.exception", 0) == 0) s = s.substr(bracket + 2);
  auto colon = s.find(": ");
  if (s.rfind("parse error", 0) == 0 && colon != std::string::npos) s = s.substr(colon + 2);
  return s;
}

// Deepest nesting accepted. Files this library reads (configs, manifests, annotations,
// safetensors headers, token metadata) nest a few levels; nlohmann's dump() and the error
// messages that describe a value recurse once per level, so a deeply nested untrusted file
// (a token file's header, say) would otherwise overflow the stack.
constexpr int kMaxDepth = 256;

}  // namespace

Json parse_string(const std::string& text, const std::string& origin) {
  // Duplicate keys: nlohmann keeps the last one silently; a config with two "steps" is a
  // mistake worth reporting. Track the keys of each open object.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        // depth: the containers already open around this one.
        if (depth >= kMaxDepth) {
          throw bad_input("JSON nested too deeply")
              .file(origin)
              .expected("at most " + std::to_string(kMaxDepth) + " levels of arrays and objects")
              .found("more");
        }
        if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string()) {
          const std::string& k = parsed.get_ref<const std::string&>();
          if (!open_objects.back().insert(k).second && duplicate.empty()) duplicate = k;
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json value;
  try {
    value = Json::parse(text, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const Json::parse_error& e) {
    std::size_t line = 0, column = 0;
    line_column(text, e.byte, &line, &column);
    throw bad_input("invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
                    parse_detail(e.what()))
        .file(origin);
  } catch (const Json::exception& e) {
    // Not a syntax error, so no position: a number out of the double range ("1e400",
    // out_of_range.406) is the one the parser raises.
    throw bad_input("invalid JSON: " + parse_detail(e.what())).file(origin);
  }
  if (!duplicate.empty()) throw bad_input("duplicate key in a JSON object").file(origin).key(duplicate);
  return value;
}

Json parse_file(const std::string& path) { return parse_string(read_text_file(path), path); }

std::string type_name(const Json& value) {
  switch (value.type()) {
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::null:
      return "null";
    default:
      return "value";
  }
}

std::string describe(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  if (value.is_null()) return "null";
  return type_name(value) + " " + text;
}

void require_object(const Json& value, const std::string& where) {
  if (!value.is_object()) throw bad_input("wrong type").file(where).expected("object").found(describe(value));
}

void check_keys(const Json& object, const std::vector<std::string>& allowed, const std::string& where) {
  require_object(object, where);
  Section(object, where, "").check_keys(allowed);
}

namespace detail {

void throw_type_error(const Json& value, const std::string& expected, const std::string& key,
                      const std::string& where) {
  throw bad_input("wrong type").file(where).key(key).expected(expected).found(describe(value));
}

void throw_range_error(const Json& value, const std::string& expected, const std::string& key,
                       const std::string& where) {
  throw bad_input("value out of range").file(where).key(key).expected(expected).found(describe(value));
}

}  // namespace detail

Section::Section(const Json& object, std::string origin, std::string prefix, const std::string& top_key,
                 std::string unknown_key)
    : object_(object), origin_(std::move(origin)), prefix_(std::move(prefix)), unknown_key_(std::move(unknown_key)) {
  if (!object_.is_object()) {
    const std::string key = prefix_.empty() ? top_key : prefix_;
    if (key.empty()) require_object(object_, origin_);
    throw bad_input("wrong type").file(origin_).key(key).expected("object").found(describe(object_));
  }
}

void Section::check_keys(const std::vector<std::string>& allowed) const {
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) != allowed.end()) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw bad_input(unknown_key_).file(origin_).key(full(it.key())).expected("one of: " + list);
  }
}

void Section::invalid(const std::string& key, const std::string& expected, const std::string& found) const {
  throw bad_input("invalid value").file(origin_).key(full(key)).expected(expected).found(found);
}

int64_t Section::positive(const std::string& key) const {
  int64_t v = require<int64_t>(key);
  if (v <= 0) invalid(key, "a positive integer", std::to_string(v));
  return v;
}

std::string Section::one_of(const std::string& key, const std::vector<std::string>& allowed,
                            const std::string* fallback) const {
  std::string v = fallback && !has(key) ? *fallback : require<std::string>(key);
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : " | ") + a;
    invalid(key, list, "\"" + v + "\"");
  }
  return v;
}

std::string Section::file(const std::string& key) const {
  std::string v = require<std::string>(key);
  if (v.empty()) invalid(key, "a file name", "an empty string");
  return v;
}

}  // namespace ctok::json
