// Token files -> the vectors a prompt uses, with where each came from (for records).
//
//   ctok::token::LoadedTokens t = ctok::token::load_tokens({"tokens/x.safetensors"}, bundle);
//   ctok::model::ClipModel(bundle).encode_text({"a photo of a <x> dress"}, t.vectors);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"

namespace ctok::token {

struct TokenSource {
  std::string token;       // as written in prompts
  std::string path;        // the file it was read from
  std::string sha256;      // of that file
  int64_t n_vectors = 0;
  std::string bundle;      // bundle name recorded in the token file (may be empty)
};

struct LoadedTokens {
  model::TokenVectors vectors;        // token -> [n, width] float32 CPU
  std::vector<TokenSource> sources;   // in the order given
};

// Reads token files (ctok-token/1 or diffusers layout). bad_input: width != text.width,
// the same token string in two files, unreadable files. A token learned on another bundle
// (different text encoder sha256) is a warning.
LoadedTokens load_tokens(const std::vector<std::string>& paths, const model::Bundle& bundle);

}  // namespace ctok::token
