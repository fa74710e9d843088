// The bundle manifest, bundle.json (docs/bundle.md): parsed strictly into plain structs,
// without libtorch.
//
//   ctok::model::Manifest m = ctok::model::load_manifest(ctok::model::default_bundle_dir());
//   m.text.width;                          // 128
//   m.path_of(m.text.file);                // "<dir>/text_encoder.pt"
//   for (const auto& c : ctok::model::verify_sha256(m.dir, m))
//     if (c.status == ctok::model::FileCheck::kMismatch) ...
//
// Validation: format "ctok-bundle", version 1 (a newer one is refused naming both
// versions), required keys with their types, no unknown keys, value ranges, and every
// file named by a key must exist (the error names the path and the key).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/model/sampling_types.hpp"
#include "ctok/text/tokenizer.hpp"

namespace ctok::model {

// The manifest version this build reads.
inline constexpr int kBundleVersion = 1;

enum class TokenizerType { kSentencePiece, kClipBpe };
std::string tokenizer_type_name(TokenizerType type);               // "sentencepiece" | "clip-bpe"
TokenizerType tokenizer_type_from_name(const std::string& name);  // bad_input on others

struct TokenizerSpec {
  TokenizerType type = TokenizerType::kSentencePiece;
  std::string file;  // relative to the bundle directory
};

struct TextSpec {
  std::string file;            // TorchScript text encoder
  int64_t context_length = 0;  // token positions, bos and eos included
  int64_t width = 0;           // word-embedding width (the custom token's width)
  int64_t feature_dim = 0;     // pooled, projected feature size
  int64_t vocab_size = 0;      // rows of token_embedding
  int64_t bos_id = 0, eos_id = 0, pad_id = 0;
};

struct ImageSpec {
  std::string file;                          // TorchScript image encoder
  int64_t size = 0;                          // input side in pixels
  std::string resize = "bicubic";            // "bicubic" (PIL-style, antialiased)
  std::string crop = "center";               // "center"
  std::array<double, 3> mean{0.5, 0.5, 0.5};  // per-channel normalisation
  std::array<double, 3> std{0.5, 0.5, 0.5};
  int64_t feature_dim = 0;
};

struct DiffusionSpec {
  std::string unet;                // TorchScript UNet
  std::string vae_encoder;         // empty for pixel-space diffusion (both or neither)
  std::string vae_decoder;
  int64_t image_size = 0;          // generated image side in pixels
  int64_t latent_channels = 0;     // UNet sample channels (3 for pixel space)
  int64_t latent_size = 0;         // UNet sample side (image_size for pixel space)
  double latent_scale = 1.0;       // applied inside the VAE modules (informational)
  int64_t num_train_timesteps = 1000;
  BetaSchedule beta_schedule = BetaSchedule::kScaledLinear;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  Prediction prediction = Prediction::kEpsilon;

  bool has_vae() const { return !vae_encoder.empty(); }
};

struct Manifest {
  std::string dir;   // bundle directory as given (files resolve against it)
  std::string path;  // dir/bundle.json
  std::string format = "ctok-bundle";
  int version = kBundleVersion;
  std::string name;
  TokenizerSpec tokenizer;
  TextSpec text;
  ImageSpec image;
  double logit_scale = 1.0;
  std::optional<DiffusionSpec> diffusion;
  std::string reference;                      // optional reference.safetensors (empty if none)
  std::map<std::string, std::string> sha256;  // file -> lowercase hex digest
  nlohmann::json card = nlohmann::json::object();  // free-form: source, metrics, ...

  std::string path_of(const std::string& file) const;  // dir/file (absolute file unchanged)
  // "clip-bpe:<dir>/<file>" or "sentencepiece:<dir>/<file>", for display and text::load_tokenizer
  // (which knows no special ids: to load the bundle's tokenizer use model::load_tokenizer).
  std::string tokenizer_spec() const;
  // Every file named by a manifest key, with the key: {"text.file", "text_encoder.pt"}, ...
  std::vector<std::pair<std::string, std::string>> files() const;
};

// Parse and validate `json`; `origin` names it in errors. Does not touch the filesystem.
Manifest parse_manifest(const nlohmann::json& json, const std::string& dir, const std::string& origin);
// Read <dir>/bundle.json (or `dir` itself if it names a .json file), validate it, and
// check that every file named by a key exists.
Manifest load_manifest(const std::string& dir);

// The manifest's tokenizer (tokenizer.type, tokenizer.file) with its special ids
// (text.bos_id, eos_id, pad_id). Throws bad_input naming tokenizer.file when the file is
// missing or not a valid model. The one way Bundle and the tools load it.
std::unique_ptr<text::Tokenizer> load_tokenizer(const Manifest& manifest);

struct FileCheck {
  enum Status { kOk, kMismatch, kUnlisted, kMissing };
  std::string file;      // as named in the manifest
  std::string key;       // manifest key that names it ("sha256" for files only listed there)
  std::string expected;  // from "sha256", empty when unlisted
  std::string actual;    // computed, empty when missing
  Status status = kOk;
};
std::string file_check_status_name(FileCheck::Status status);  // "OK", "MISMATCH", "UNLISTED", "MISSING"

// sha256 of every file the manifest names (keys and the "sha256" table), compared with
// the table. `dir` overrides manifest.dir when non-empty.
std::vector<FileCheck> verify_sha256(const std::string& dir, const Manifest& manifest);
// Throws bad_input listing every mismatching or missing file listed in "sha256".
void require_sha256_match(const Manifest& manifest);

// Where the tools look for a bundle when --bundle is not given: $CTOK_BUNDLE; else, next
// to the executable, <exe>/../share/ctok/models/default or <exe>/../../models/default
// (install tree / build tree); else the source tree's models/default. The first that
// holds a bundle.json wins; the last candidate is returned even if it does not exist.
std::string default_bundle_dir();

// The thread set-up that is fastest for a bundle's models (measured in bench/bench_threads.sh
// and bench/bench_cohort.sh on 2 cores). libtorch's intra-op pool (OpenMP) and Debian's
// OpenBLAS (the pthread build, with its own spinning pool) must not both run several threads:
// together they were 2-3x slower than one thread. A small bundle (model files under
// `small_bytes`, the default bundle) has GEMMs too small for OpenBLAS to split: it gets one
// BLAS thread always, and one intra-op thread unless told otherwise (2 intra-op threads were
// 1.0-1.3x faster on an idle machine, cohorts of 16 the most, but 2-20x slower as soon as
// another process used a core, so the default stays 1). A big bundle (or one that cannot be
// read) gets every core in both, as its GEMMs dominate. `requested` > 0 fixes the intra-op
// count. Torch-free, like the rest of the manifest: 0 in the result means "every core"
// (configure_threads reads it).
struct ThreadPlan {
  int threads = 0;       // libtorch intra-op (and inter-op) threads; 0: every core
  int blas_threads = 0;  // OpenBLAS threads; 0: as many as `threads`
  bool small_bundle = false;
};
int64_t bundle_model_bytes(const Manifest& manifest);
ThreadPlan thread_plan(const std::string& bundle_dir, int requested = 0,
                       int64_t small_bytes = int64_t{256} << 20);

}  // namespace ctok::model
