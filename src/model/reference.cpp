#include "ctok/model/reference.hpp"

#include <cmath>
#include <filesystem>
#include <limits>

#include "ctok/core/error.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "torch_util.hpp"

namespace ctok::model {

Tolerance default_tolerance(Precision precision) {
  switch (precision) {
    case Precision::kFp16: return {3e-2, 3e-2};
    case Precision::kBf16: return {1e-1, 1e-1};
    default: return {1e-4, 1e-4};
  }
}

std::string reference_path(const Bundle& bundle) {
  const std::string named = bundle.manifest().reference;
  const std::string path = bundle.path_of(named.empty() ? "reference.safetensors" : named);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    if (!named.empty()) throw bad_input("reference file named in bundle.json is missing").file(path).key("reference");
    return "";
  }
  return path;
}

namespace {

ReferenceCheck compare(const std::string& key, const torch::Tensor& ours, const torch::Tensor& ref,
                       const Tolerance& tol, const std::string& note) {
  ReferenceCheck c;
  c.key = key;
  c.note = note;
  auto a = ours.detach().to(torch::kCPU, torch::kFloat64);
  auto b = ref.to(torch::kFloat64);
  if (a.sizes() != b.sizes()) {
    c.passed = false;
    c.max_abs_error = std::numeric_limits<double>::infinity();
    c.worst_ratio = std::numeric_limits<double>::infinity();
    c.note += "; shape " + detail::shape_string(a.sizes()) + " != reference " + detail::shape_string(b.sizes());
    return c;
  }
  if (a.numel() == 0) {
    c.passed = true;
    return c;
  }
  auto diff = (a - b).abs();
  c.max_abs_error = diff.max().item<double>();
  auto bound = tol.atol + tol.rtol * b.abs();
  // Exact comparisons (zero tolerance): any difference is an infinite ratio.
  auto ratio = torch::where(bound > 0, diff / bound.clamp_min(1e-300),
                            torch::where(diff > 0, torch::full_like(diff, INFINITY), torch::zeros_like(diff)));
  c.worst_ratio = ratio.max().item<double>();
  c.passed = std::isfinite(c.worst_ratio) && c.worst_ratio <= 1.0;
  return c;
}

}  // namespace

std::vector<ReferenceCheck> check_reference(const Bundle& bundle) {
  return check_reference(bundle, default_tolerance(bundle.precision()));
}

std::vector<ReferenceCheck> check_reference(const Bundle& bundle, const Tolerance& tol, const std::string& path_in) {
  const std::string path = path_in.empty() ? reference_path(bundle) : path_in;
  if (path.empty()) throw bad_input("bundle " + bundle.name() + " has no reference.safetensors").file(bundle.dir());
  const SafetensorsFile file = read_safetensors(path);
  auto get = [&](const std::string& key) -> std::optional<torch::Tensor> {
    const TensorData* t = file.find(key);
    if (!t) return std::nullopt;
    return detail::to_torch(*t);
  };
  std::vector<ReferenceCheck> out;
  ClipModel clip(bundle);

  // Tokenizer and embedding lookup, from the prompts.
  auto ids = get("text.input_ids");
  auto it = file.metadata.find("text.prompts");
  if (ids && it != file.metadata.end()) {
    auto prompts = json::convert<std::vector<std::string>>(json::parse_string(it->second, path + " text.prompts"),
                                                           "text.prompts", path);
    PromptBatch batch = clip.tokenize(prompts, std::map<std::string, int64_t>{});
    ReferenceCheck c = compare("text.input_ids", batch.ids, *ids, {0.0, 0.0}, "tokenizer on __metadata__ text.prompts");
    out.push_back(c);
    if (auto eos = get("text.eos_index")) {
      out.push_back(compare("text.eos_index", batch.eos_index, *eos, {0.0, 0.0}, "eos position of the tokenizer"));
    }
    if (auto embeds = get("text.embeds")) {
      torch::Tensor ours;
      {
        c10::InferenceMode guard;
        ours = clip.embed(batch, {});
      }
      out.push_back(compare("text.embeds", ours, *embeds, tol, "token_embedding[ids] of the prompts"));
    }
  }
  // Text encoder, from the reference embeddings.
  auto embeds = get("text.embeds");
  auto eos = get("text.eos_index");
  if (embeds && eos) {
    TextEncoding enc;
    {
      c10::InferenceMode guard;
      enc = clip.encode_embeds(*embeds, *eos);
    }
    if (auto h = get("text.hidden")) out.push_back(compare("text.hidden", enc.hidden, *h, tol, "text encoder on text.embeds"));
    if (auto f = get("text.features")) {
      out.push_back(compare("text.features", enc.features, *f, tol, "text encoder on text.embeds, pooled at eos"));
    }
  }
  if (bundle.options().load_image) {
    auto px = get("image.pixels");
    auto f = get("image.features");
    if (px && f) out.push_back(compare("image.features", clip.encode_images(*px), *f, tol, "image encoder on image.pixels"));
  }
  if (bundle.diffusion_loaded()) {
    DiffusionModel diff(bundle);
    auto s = get("unet.sample"), t = get("unet.timestep"), ctx = get("unet.context"), o = get("unet.out");
    if (s && t && ctx && o) {
      torch::Tensor ours;
      {
        c10::InferenceMode guard;
        ours = diff.unet(*s, *t, *ctx);
      }
      out.push_back(compare("unet.out", ours, *o, tol, "UNet on unet.sample, unet.timestep, unet.context"));
    }
    if (bundle.has_vae()) {
      auto im = get("vae.images"), z = get("vae.latents"), dec = get("vae.decoded");
      if (im && z) out.push_back(compare("vae.latents", diff.encode(*im), *z, tol, "VAE encoder on vae.images"));
      if (z && dec) out.push_back(compare("vae.decoded", diff.decode(*z), *dec, tol, "VAE decoder on vae.latents"));
    }
  }
  return out;
}

}  // namespace ctok::model
