// The custom-token file (docs/formats.md, "Custom token file"): one safetensors file per
// learned concept, loadable unchanged by diffusers / AUTOMATIC1111 / stable-diffusion.cpp.
//
//   ctok::token::TokenFile t = ctok::token::read_token_file("my-dress.safetensors");
//   ctok::token::check_width(t, manifest.text.width);   // "token width 768 does not match ..."
//   const float* v0 = t.vector(0);                      // t.width floats
//   ctok::token::write_token_file("out.safetensors", t);  // atomic
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctok::token {

// "ctok-token/1": the only version this build writes and reads.
inline constexpr const char* kTokenFormat = "ctok-token/1";

struct TokenFile {
  std::string token;           // the token string as written in prompts, e.g. "<my-dress>"
  int64_t n_vectors = 0;       // rows of `vectors`
  int64_t width = 0;           // text.width of the bundle the token was learned for
  std::vector<float> vectors;  // n_vectors x width, row major: the final vectors themselves
  std::string parent;          // parent concept text, e.g. "dress"
  std::string bundle;          // bundle name
  std::string bundle_sha256;   // sha256 of the bundle's text encoder
  std::vector<std::string> subspace_words;  // attribute words spanning the subspace, or empty
  std::vector<double> coefficients;         // learned coefficients in that basis (flat), or empty
  nlohmann::json config = nlohmann::json::object();   // the full learning config
  nlohmann::json metrics = nlohmann::json::object();  // final losses, steps, seconds
  std::map<std::string, std::string> extra;           // other __metadata__ entries, kept as is

  // Filled by read_token_file, not written: where it came from and in which layout
  // ("ctok-token/1", or "diffusers" for a foreign one-tensor file).
  std::string source_path;
  std::string source_format;

  const float* vector(int64_t i) const { return vectors.data() + i * width; }
};

// Reads a ctok-token/1 file or a diffusers learned_embeds.safetensors (exactly one tensor
// under any key; the key is the token; "emb_params" (AUTOMATIC1111) takes the file stem).
// Float dtypes (F32/F16/BF16/F64) are converted to float32; a 1-D [width] tensor is one
// vector. Throws bad_input naming the file for anything else: no tensor or several,
// integer dtype, rank > 2, zero vectors or width, non-finite values, malformed metadata,
// a newer ctok-token version.
TokenFile read_token_file(const std::string& path);

// Validates (non-empty token without whitespace, vectors.size() == n_vectors * width > 0,
// finite values) and writes atomically: one F32 [n_vectors, width] tensor named by the
// token, metadata as in the spec plus `extra`.
void write_token_file(const std::string& path, const TokenFile& token);

// The same file as bytes (no I/O).
std::vector<uint8_t> serialize_token_file(const TokenFile& token);

// bad_input "token width 768 does not match bundle text.width 128" (with the token and
// its file as context) unless token.width == width.
void check_width(const TokenFile& token, int64_t width);

// L2 norm of each vector.
std::vector<double> vector_norms(const TokenFile& token);

}  // namespace ctok::token
