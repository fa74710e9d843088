#include "ctok/token/load_tokens.hpp"

#include <spdlog/spdlog.h>

#include "ctok/core/error.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/token/token_file.hpp"

namespace ctok::token {

LoadedTokens load_tokens(const std::vector<std::string>& paths, const model::Bundle& bundle) {
  LoadedTokens out;
  for (const auto& path : paths) {
    TokenFile t = read_token_file(path);
    check_width(t, bundle.width());
    if (out.vectors.count(t.token)) {
      std::string first;
      for (const auto& s : out.sources) if (s.token == t.token) first = s.path;
      throw bad_input("token " + t.token + " is defined by two files (" + first + " and " + path + ")").file(path);
    }
    out.vectors[t.token] = torch::from_blob(t.vectors.data(), {t.n_vectors, t.width}, torch::kFloat32).clone();
    TokenSource s;
    s.token = t.token;
    s.path = path;
    s.sha256 = sha256_file(path);
    s.n_vectors = t.n_vectors;
    s.bundle = t.bundle;
    if (!t.bundle_sha256.empty() && t.bundle_sha256 != bundle.text_encoder_sha256()) {
      spdlog::warn("token {} ({}) was learned on bundle {} with another text encoder; using it with {} anyway",
                   t.token, path, t.bundle.empty() ? "?" : t.bundle, bundle.name());
    }
    out.sources.push_back(std::move(s));
  }
  return out;
}

}  // namespace ctok::token
