#include "ctok/model/manifest.hpp"

#include <filesystem>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/json_section.hpp"
#include "ctok/core/sha256.hpp"

#ifndef CTOK_SOURCE_DIR
#define CTOK_SOURCE_DIR "."
#endif

namespace ctok::model {
namespace {

using json::Json;

// The checked reads of json::Section, with bundle.json's messages.
class Section : public json::Section {
 public:
  Section(const Json& object, std::string origin, std::string prefix)
      : json::Section(object, std::move(origin), std::move(prefix), "bundle.json", "unknown key in bundle manifest") {}
};

std::string number_text(double v) {
  std::string s = Json(v).dump();
  return s;
}

std::array<double, 3> triple(const Section& s, const std::string& key, bool positive) {
  std::vector<double> v = s.require<std::vector<double>>(key);
  if (v.size() != 3) s.invalid(key, "3 numbers (one per RGB channel)", std::to_string(v.size()) + " numbers");
  for (double x : v) {
    if (positive && !(x > 0)) s.invalid(key, "positive numbers", number_text(x));
  }
  return {v[0], v[1], v[2]};
}

bool is_hex_digest(const std::string& s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
}

DiffusionSpec parse_diffusion(const Section& d) {
  d.check_keys({"unet", "vae_encoder", "vae_decoder", "image_size", "latent_channels", "latent_size", "latent_scale",
                "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction"});
  DiffusionSpec s;
  s.unet = d.file("unet");
  if (d.has("vae_encoder") != d.has("vae_decoder")) {
    d.invalid(d.has("vae_encoder") ? "vae_decoder" : "vae_encoder", "both vae_encoder and vae_decoder, or neither",
              "only one of them");
  }
  if (d.has("vae_encoder")) {
    s.vae_encoder = d.file("vae_encoder");
    s.vae_decoder = d.file("vae_decoder");
  }
  s.image_size = d.positive("image_size");
  if (s.has_vae()) {
    s.latent_channels = d.positive("latent_channels");
    s.latent_size = d.positive("latent_size");
  } else {  // pixel space: the UNet works on the image itself
    s.latent_channels = d.has("latent_channels") ? d.positive("latent_channels") : 3;
    s.latent_size = d.has("latent_size") ? d.positive("latent_size") : s.image_size;
  }
  s.latent_scale = d.optional<double>("latent_scale", 1.0);
  if (!(s.latent_scale > 0)) d.invalid("latent_scale", "a positive number", number_text(s.latent_scale));
  s.num_train_timesteps = d.positive("num_train_timesteps");
  s.beta_schedule = parse_enum<BetaSchedule>(d.one_of("beta_schedule", enum_names<BetaSchedule>(), nullptr));
  const bool betas_used = s.beta_schedule != BetaSchedule::kSquaredCosCapV2;
  s.beta_start = betas_used ? d.require<double>("beta_start") : d.optional<double>("beta_start", s.beta_start);
  s.beta_end = betas_used ? d.require<double>("beta_end") : d.optional<double>("beta_end", s.beta_end);
  if (betas_used && !(s.beta_start > 0 && s.beta_start < s.beta_end && s.beta_end < 1)) {
    d.invalid("beta_start", "0 < beta_start < beta_end < 1",
              number_text(s.beta_start) + " and beta_end " + number_text(s.beta_end));
  }
  s.prediction = parse_enum<Prediction>(d.one_of("prediction", enum_names<Prediction>(), nullptr));
  return s;
}

}  // namespace

std::string tokenizer_type_name(TokenizerType type) {
  return type == TokenizerType::kClipBpe ? "clip-bpe" : "sentencepiece";
}

TokenizerType tokenizer_type_from_name(const std::string& name) {
  if (name == "sentencepiece") return TokenizerType::kSentencePiece;
  if (name == "clip-bpe") return TokenizerType::kClipBpe;
  throw bad_input("unknown tokenizer type").expected("sentencepiece | clip-bpe").found("\"" + name + "\"");
}

std::string Manifest::path_of(const std::string& file) const {
  if (!file.empty() && file[0] == '/') return file;
  return (std::filesystem::path(dir) / file).string();
}

std::string Manifest::tokenizer_spec() const {
  return tokenizer_type_name(tokenizer.type) + ":" + path_of(tokenizer.file);
}

std::vector<std::pair<std::string, std::string>> Manifest::files() const {
  std::vector<std::pair<std::string, std::string>> out = {
      {"tokenizer.file", tokenizer.file}, {"text.file", text.file}, {"image.file", image.file}};
  if (diffusion) {
    out.emplace_back("diffusion.unet", diffusion->unet);
    if (diffusion->has_vae()) {
      out.emplace_back("diffusion.vae_encoder", diffusion->vae_encoder);
      out.emplace_back("diffusion.vae_decoder", diffusion->vae_decoder);
    }
  }
  if (!reference.empty()) out.emplace_back("reference", reference);
  return out;
}

Manifest parse_manifest(const Json& j, const std::string& dir, const std::string& origin) {
  Section top(j, origin, "");
  Manifest m;
  m.dir = dir;
  m.path = (std::filesystem::path(dir) / "bundle.json").string();

  // Format and version first: a newer manifest may have keys this build does not know.
  m.format = top.require<std::string>("format");
  if (m.format != "ctok-bundle") {
    throw bad_input("not a ctok bundle manifest").file(origin).key("format").expected("\"ctok-bundle\"").found(
        "\"" + m.format + "\"");
  }
  const int64_t version = top.require<int64_t>("version");
  if (version > kBundleVersion) {
    throw bad_input("bundle manifest version " + std::to_string(version) + " is newer than this build reads")
        .file(origin)
        .key("version")
        .expected("version " + std::to_string(kBundleVersion))
        .found(std::to_string(version));
  }
  if (version < 1) top.invalid("version", "version " + std::to_string(kBundleVersion), std::to_string(version));
  m.version = static_cast<int>(version);
  top.check_keys({"format", "version", "name", "tokenizer", "text", "image", "logit_scale", "diffusion", "reference",
                  "sha256", "card"});

  m.name = top.require<std::string>("name");
  if (m.name.empty()) top.invalid("name", "a non-empty name", "\"\"");

  {
    if (!top.has("tokenizer")) top.require<Json>("tokenizer");
    Section t(top.raw("tokenizer"), origin, "tokenizer");
    t.check_keys({"type", "file"});
    try {
      m.tokenizer.type = tokenizer_type_from_name(t.require<std::string>("type"));
    } catch (Error& e) {
      if (e.file_context().empty()) e.file(origin).key("tokenizer.type");
      throw;
    }
    m.tokenizer.file = t.file("file");
  }
  {
    if (!top.has("text")) top.require<Json>("text");
    Section t(top.raw("text"), origin, "text");
    t.check_keys({"file", "context_length", "width", "feature_dim", "vocab_size", "bos_id", "eos_id", "pad_id"});
    m.text.file = t.file("file");
    m.text.context_length = t.positive("context_length");
    if (m.text.context_length < 2) t.invalid("context_length", ">= 2 (bos and eos)", std::to_string(m.text.context_length));
    m.text.width = t.positive("width");
    m.text.feature_dim = t.positive("feature_dim");
    m.text.vocab_size = t.positive("vocab_size");
    for (auto [key, field] : {std::pair<const char*, int64_t*>{"bos_id", &m.text.bos_id},
                              {"eos_id", &m.text.eos_id},
                              {"pad_id", &m.text.pad_id}}) {
      *field = t.require<int64_t>(key);
      if (*field < 0 || *field >= m.text.vocab_size) {
        t.invalid(key, "an id in [0, vocab_size " + std::to_string(m.text.vocab_size) + ")", std::to_string(*field));
      }
    }
  }
  {
    if (!top.has("image")) top.require<Json>("image");
    Section s(top.raw("image"), origin, "image");
    s.check_keys({"file", "size", "resize", "crop", "mean", "std", "feature_dim"});
    m.image.file = s.file("file");
    m.image.size = s.positive("size");
    const std::string bicubic = "bicubic", center = "center";
    // Only what the image pipeline implements (PIL-exact bicubic); anything else would be
    // silently preprocessed differently from how the exporter trained or measured.
    m.image.resize = s.one_of("resize", {"bicubic"}, &bicubic);
    m.image.crop = s.one_of("crop", {"center"}, &center);
    m.image.mean = triple(s, "mean", false);
    m.image.std = triple(s, "std", true);
    m.image.feature_dim = s.positive("feature_dim");
  }
  m.logit_scale = top.require<double>("logit_scale");
  if (!(m.logit_scale > 0)) top.invalid("logit_scale", "a positive number", number_text(m.logit_scale));
  if (top.has("diffusion")) m.diffusion = parse_diffusion(Section(top.raw("diffusion"), origin, "diffusion"));
  if (top.has("reference")) {
    m.reference = top.file("reference");
  }
  if (top.has("sha256")) {
    m.sha256 = top.require<std::map<std::string, std::string>>("sha256");
    for (auto& [file, digest] : m.sha256) {
      if (!is_hex_digest(digest)) {
        throw bad_input("invalid sha256 digest").file(origin).key("sha256." + file).expected("64 hex digits").found(
            "\"" + digest + "\"");
      }
      std::transform(digest.begin(), digest.end(), digest.begin(), [](unsigned char c) { return std::tolower(c); });
    }
  }
  if (top.has("card")) {
    m.card = top.raw("card");
    if (!m.card.is_object()) top.invalid("card", "object", json::describe(m.card));
  }
  return m;
}

Manifest load_manifest(const std::string& dir_or_file) {
  if (dir_or_file.empty()) throw bad_input("empty bundle path").key("--bundle");
  std::string dir = dir_or_file;
  std::string path;
  if (file_exists(dir_or_file) && std::filesystem::path(dir_or_file).extension() == ".json") {
    path = dir_or_file;
    dir = std::filesystem::path(dir_or_file).parent_path().string();
    if (dir.empty()) dir = ".";
  } else {
    if (!directory_exists(dir)) throw bad_input("bundle directory not found").file(dir);
    path = (std::filesystem::path(dir) / "bundle.json").string();
    if (!file_exists(path)) throw bad_input("not a bundle: bundle.json is missing").file(path);
  }
  Manifest m = parse_manifest(json::parse_file(path), dir, path);
  m.path = path;
  for (const auto& [key, file] : m.files()) {
    const std::string p = m.path_of(file);
    if (!file_exists(p)) throw bad_input("file named in bundle.json is missing").file(p).key(key);
  }
  return m;
}

std::string file_check_status_name(FileCheck::Status status) {
  switch (status) {
    case FileCheck::kOk:
      return "OK";
    case FileCheck::kMismatch:
      return "MISMATCH";
    case FileCheck::kUnlisted:
      return "UNLISTED";
    case FileCheck::kMissing:
      return "MISSING";
  }
  return "?";
}

std::vector<FileCheck> verify_sha256(const std::string& dir, const Manifest& manifest) {
  Manifest located = manifest;
  if (!dir.empty()) located.dir = dir;
  std::vector<std::pair<std::string, std::string>> named = manifest.files();
  for (const auto& [file, digest] : manifest.sha256) named.emplace_back("sha256", file);
  std::vector<FileCheck> out;
  std::set<std::string> seen;
  for (const auto& [key, file] : named) {
    if (!seen.insert(file).second) continue;
    FileCheck c;
    c.file = file;
    c.key = key;
    auto it = manifest.sha256.find(file);
    if (it != manifest.sha256.end()) c.expected = it->second;
    const std::string path = located.path_of(file);
    if (!file_exists(path)) {
      c.status = FileCheck::kMissing;
    } else {
      c.actual = sha256_file(path);
      c.status = c.expected.empty() ? FileCheck::kUnlisted : c.actual == c.expected ? FileCheck::kOk : FileCheck::kMismatch;
    }
    out.push_back(std::move(c));
  }
  return out;
}

void require_sha256_match(const Manifest& manifest) {
  std::string bad;
  for (const FileCheck& c : verify_sha256("", manifest)) {
    if (c.status == FileCheck::kMismatch) {
      bad += (bad.empty() ? "" : "; ") + c.file + " (expected " + c.expected.substr(0, 12) + "…, found " +
             c.actual.substr(0, 12) + "…)";
    } else if (c.status == FileCheck::kMissing && !c.expected.empty()) {
      bad += (bad.empty() ? "" : "; ") + c.file + " (missing)";
    }
  }
  if (!bad.empty()) {
    throw bad_input("sha256 check failed: " + bad + " (skip with --no-verify if the files were changed on purpose)")
        .file(manifest.path);
  }
}

std::unique_ptr<text::Tokenizer> load_tokenizer(const Manifest& manifest) {
  const std::string path = manifest.path_of(manifest.tokenizer.file);
  if (!file_exists(path)) throw bad_input("file named in bundle.json is missing").file(path).key("tokenizer.file");
  const text::SpecialIds special{manifest.text.bos_id, manifest.text.eos_id, manifest.text.pad_id};
  std::unique_ptr<text::Tokenizer> tok = manifest.tokenizer.type == TokenizerType::kSentencePiece
                                             ? text::load_sentencepiece(path, special)
                                             : text::load_clip_bpe(path);
  tok->set_special(special);
  return tok;
}

std::string default_bundle_dir() {
  if (const char* env = std::getenv("CTOK_BUNDLE"); env && *env) return env;
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  std::error_code ec;
  for (const std::string& c : executable_data_candidates("models/default")) candidates.push_back(c);
#ifdef CTOK_INSTALL_DATADIR
  candidates.push_back(fs::path(CTOK_INSTALL_DATADIR) / "models" / "default");
#endif
  const fs::path source = fs::path(CTOK_SOURCE_DIR) / "models" / "default";
  for (const auto& c : candidates) {
    if (file_exists((c / "bundle.json").string())) return fs::weakly_canonical(c, ec).string();
  }
  return source.string();
}

int64_t bundle_model_bytes(const Manifest& manifest) {
  int64_t total = 0;
  for (const auto& [key, file] : manifest.files()) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(manifest.path_of(file), ec);
    if (!ec) total += static_cast<int64_t>(n);
  }
  return total;
}

ThreadPlan thread_plan(const std::string& bundle_dir, int requested, int64_t small_bytes) {
  ThreadPlan plan;
  plan.threads = requested;  // configure_threads checks it
  try {
    plan.small_bundle = bundle_model_bytes(load_manifest(bundle_dir)) < small_bytes;
  } catch (const Error&) {
  }
  if (plan.small_bundle) {
    plan.blas_threads = 1;
    if (plan.threads == 0) plan.threads = 1;
  }
  return plan;
}

}  // namespace ctok::model
