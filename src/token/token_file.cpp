#include "ctok/token/token_file.hpp"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <utility>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/safetensors.hpp"

namespace ctok::token {
namespace {

const char* const kReservedKeys[] = {"format", "token",          "parent",       "bundle", "bundle_sha256",
                                     "subspace_words", "coefficients", "config", "metrics"};

bool is_reserved(const std::string& key) {
  for (const char* k : kReservedKeys) {
    if (key == k) return true;
  }
  return false;
}

bool has_whitespace(const std::string& s) {
  for (unsigned char c : s) {
    if (std::isspace(c)) return true;
  }
  return false;
}

// A JSON-valued metadata entry; errors name the file and the key.
json::Json metadata_json(const std::map<std::string, std::string>& meta, const std::string& key,
                         const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) return json::Json();
  try {
    return json::parse_string(it->second, "");
  } catch (const Error& e) {
    throw bad_input("metadata value is not valid JSON: " + e.message()).file(path).key("__metadata__." + key);
  }
}

std::vector<double> flatten_numbers(const json::Json& j, const std::string& path, const std::string& key) {
  std::vector<double> out;
  if (j.is_null()) return out;
  if (!j.is_array()) throw bad_input("expected a JSON list of numbers").file(path).key(key).found(json::describe(j));
  for (const auto& v : j) {
    if (v.is_array()) {  // one row per vector is accepted and flattened
      for (const auto& w : v) {
        if (!w.is_number()) throw bad_input("expected numbers").file(path).key(key).found(json::describe(w));
        out.push_back(w.get<double>());
      }
    } else if (v.is_number()) {
      out.push_back(v.get<double>());
    } else {
      throw bad_input("expected numbers").file(path).key(key).found(json::describe(v));
    }
  }
  return out;
}

void check_values(const TokenFile& t, const std::string& where) {
  for (std::size_t i = 0; i < t.vectors.size(); ++i) {
    if (!std::isfinite(t.vectors[i])) {
      throw bad_input("token vectors contain a non-finite value")
          .file(where)
          .key(t.token)
          .found("vector " + std::to_string(i / static_cast<std::size_t>(t.width)) + ", element " +
                 std::to_string(i % static_cast<std::size_t>(t.width)));
    }
  }
}

}  // namespace

TokenFile read_token_file(const std::string& path) {
  SafetensorsFile file = read_safetensors(path);
  if (file.tensors.empty()) {
    throw bad_input("no tensor in the token file").file(path).expected("exactly one tensor named by the token");
  }
  if (file.tensors.size() > 1) {
    std::string names;
    for (const auto& [name, t] : file.tensors) names += (names.empty() ? "" : ", ") + name;
    throw bad_input("the token file holds " + std::to_string(file.tensors.size()) +
                    " tensors; a token file holds exactly one (found: " + names + ")")
        .file(path);
  }
  const auto& [key, tensor] = *file.tensors.begin();

  TokenFile t;
  t.source_path = path;
  const auto format_it = file.metadata.find("format");
  const bool ours = format_it != file.metadata.end() && format_it->second.rfind("ctok-token/", 0) == 0;
  if (ours && format_it->second != kTokenFormat) {
    throw bad_input("unsupported token file version")
        .file(path)
        .expected(std::string(kTokenFormat) + " (the version this build reads)")
        .found(format_it->second);
  }
  t.source_format = ours ? kTokenFormat : "diffusers";

  if (tensor.dtype != DType::kF32 && tensor.dtype != DType::kF16 && tensor.dtype != DType::kBF16 &&
      tensor.dtype != DType::kF64) {
    throw bad_input("token vectors must be floating point").file(path).key(key).expected("F32, F16, BF16 or F64").found(
        dtype_name(tensor.dtype));
  }
  if (tensor.shape.size() == 1) {
    t.n_vectors = 1;
    t.width = tensor.shape[0];
  } else if (tensor.shape.size() == 2) {
    t.n_vectors = tensor.shape[0];
    t.width = tensor.shape[1];
  } else {
    throw bad_input("token tensor must be [n_vectors, width] or [width]")
        .file(path)
        .key(key)
        .found(std::to_string(tensor.shape.size()) + " dimensions");
  }
  if (t.n_vectors == 0) throw bad_input("token has no vectors (n_vectors is 0)").file(path).key(key);
  if (t.width == 0) throw bad_input("token vectors have width 0").file(path).key(key);
  t.vectors = to_float32(tensor);

  if (!ours) {
    t.token = key;
    if (key == "emb_params" || key == "string_to_param") {  // AUTOMATIC1111: the token is the file name
      t.token = std::filesystem::path(path).stem().string();
    }
    t.extra = file.metadata;
    check_values(t, path);
    return t;
  }

  const auto& meta = file.metadata;
  auto token_it = meta.find("token");
  if (token_it == meta.end()) throw bad_input("missing metadata key").file(path).key("__metadata__.token");
  t.token = token_it->second;
  if (t.token != key) {
    throw bad_input("metadata token does not match the tensor name")
        .file(path)
        .expected("\"" + key + "\"")
        .found("\"" + t.token + "\"");
  }
  auto text = [&](const char* k) {
    auto it = meta.find(k);
    return it == meta.end() ? std::string() : it->second;
  };
  t.parent = text("parent");
  t.bundle = text("bundle");
  t.bundle_sha256 = text("bundle_sha256");
  json::Json words = metadata_json(meta, "subspace_words", path);
  if (!words.is_null()) t.subspace_words = json::convert<std::vector<std::string>>(words, "subspace_words", path);
  t.coefficients = flatten_numbers(metadata_json(meta, "coefficients", path), path, "coefficients");
  json::Json config = metadata_json(meta, "config", path);
  if (!config.is_null()) t.config = config;
  json::Json metrics = metadata_json(meta, "metrics", path);
  if (!metrics.is_null()) t.metrics = metrics;
  for (const auto& [k, v] : meta) {
    if (!is_reserved(k)) t.extra[k] = v;
  }
  check_values(t, path);
  return t;
}

std::vector<uint8_t> serialize_token_file(const TokenFile& t) {
  if (t.token.empty()) throw bad_input("empty token string");
  if (has_whitespace(t.token)) {
    throw bad_input("token string contains whitespace; it must be one word in prompts").key("\"" + t.token + "\"");
  }
  if (t.token == "__metadata__") throw bad_input("\"__metadata__\" cannot be a token string");
  if (t.n_vectors <= 0 || t.width <= 0) {
    throw bad_input("token must have at least one vector of positive width")
        .key(t.token)
        .found(std::to_string(t.n_vectors) + " x " + std::to_string(t.width));
  }
  if (static_cast<int64_t>(t.vectors.size()) != t.n_vectors * t.width) {
    throw bad_input("vectors size does not match n_vectors x width")
        .key(t.token)
        .expected(std::to_string(t.n_vectors * t.width))
        .found(std::to_string(t.vectors.size()));
  }
  check_values(t, "");

  SafetensorsFile file;
  for (const auto& [k, v] : t.extra) {
    if (is_reserved(k)) throw bad_input("extra metadata key is reserved").key(k);
    file.metadata[k] = v;
  }
  const auto dump = [](const json::Json& j) { return j.dump(-1, ' ', false, json::Json::error_handler_t::replace); };
  file.metadata["format"] = kTokenFormat;
  file.metadata["token"] = t.token;
  file.metadata["parent"] = t.parent;
  file.metadata["bundle"] = t.bundle;
  file.metadata["bundle_sha256"] = t.bundle_sha256;
  file.metadata["subspace_words"] = dump(json::Json(t.subspace_words));
  file.metadata["coefficients"] = dump(json::Json(t.coefficients));
  file.metadata["config"] = dump(t.config);
  file.metadata["metrics"] = dump(t.metrics);
  file.tensors[t.token] = make_f32({t.n_vectors, t.width}, t.vectors.data());
  return serialize_safetensors(file);
}

void write_token_file(const std::string& path, const TokenFile& t) {
  std::vector<uint8_t> bytes;
  try {
    bytes = serialize_token_file(t);
  } catch (Error& e) {
    if (e.file_context().empty()) e.file(path);
    throw;
  }
  write_file_atomic(path, bytes);
}

void check_width(const TokenFile& t, int64_t width) {
  if (t.width == width) return;
  throw bad_input("token width " + std::to_string(t.width) + " does not match bundle text.width " +
                  std::to_string(width))
      .file(t.source_path)
      .key(t.token);
}

std::vector<double> vector_norms(const TokenFile& t) {
  std::vector<double> norms;
  for (int64_t i = 0; i < t.n_vectors; ++i) {
    double s = 0;
    for (int64_t j = 0; j < t.width; ++j) s += double(t.vectors[i * t.width + j]) * t.vectors[i * t.width + j];
    norms.push_back(std::sqrt(s));
  }
  return norms;
}

}  // namespace ctok::token
