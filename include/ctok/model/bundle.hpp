// A loaded model bundle (docs/bundle.md): the manifest, the TorchScript modules on the
// chosen device and precision, the tokenizer, and the noise schedule.
//
//   ctok::model::BundleOptions o;            // o.dir empty: CTOK_BUNDLE or models/default
//   o.load_diffusion = true;                 // UNet + VAE, for rendering / the inversion loss
//   ctok::model::Bundle b = ctok::model::Bundle::load(o);
//   ctok::model::ClipModel clip(b);          // clip.hpp
//
// Loading validates everything bundle.md asks for and reports it as bad_input naming the
// file and manifest key: missing files, format/version, sha256 (unless verify_sha256 is
// false), and shapes, found by one dry forward of each module with tiny inputs.
// Loading TorchScript runs code stored in the archive: bundles are trusted input.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>

#include "ctok/model/device.hpp"
#include "ctok/model/manifest.hpp"
#include "ctok/model/schedule.hpp"
#include "ctok/text/tokenizer.hpp"

namespace ctok::model {

struct BundleOptions {
  std::string dir;                        // bundle directory; empty: default_bundle_dir()
  DeviceSpec device;                      // cpu | cuda[:N]
  Precision precision = Precision::kFp32; // weights and activations of the networks
  bool verify_sha256 = true;              // check files against bundle.json "sha256" (--no-verify: off)
  bool load_image = true;                 // the image encoder
  bool load_diffusion = false;            // UNet and VAE; bad_input if the bundle has none
  bool check_shapes = true;               // one dry forward per module at load time
  bool optimize_image = true;             // freeze + optimize_for_inference the image encoder, which
                                          // never needs gradients (measured 1.7-2.4x faster on CPU)
  bool optimize = false;                  // inference only: the same for every module (no gradients
                                          // through them; measured no faster on CPU); docs/bundle.md
};

class Bundle {
 public:
  static Bundle load(const BundleOptions& options);

  Bundle(Bundle&&) noexcept;
  Bundle& operator=(Bundle&&) noexcept;
  ~Bundle();

  const Manifest& manifest() const;
  const std::string& dir() const;            // as resolved (absolute)
  const BundleOptions& options() const;
  std::string name() const;
  std::string path_of(const std::string& file) const;  // dir / file

  torch::Device device() const;
  torch::ScalarType dtype() const;           // of the networks: float32, float16 or bfloat16
  Precision precision() const;
  // sha256 of the text encoder file (from the manifest when listed, else computed): token
  // files and render sidecars record it to say which bundle they belong to.
  const std::string& text_encoder_sha256() const;

  // Immutable once loaded; custom tokens travel with each request (text::CustomTokens).
  const text::Tokenizer& tokenizer() const;

  // Text geometry from the manifest.
  int64_t context_length() const;
  int64_t width() const;
  int64_t text_feature_dim() const;
  int64_t vocab_size() const;
  int64_t image_size() const;
  int64_t image_feature_dim() const;
  double logit_scale() const;

  // The networks. Running one does not change the bundle (hence const): a loaded bundle is
  // shared by concurrent requests (TorchScript modules may be called from several threads).
  torch::jit::Module& text_encoder() const;
  // The input word-embedding table [vocab_size, width] on the device, in dtype().
  const torch::Tensor& token_embedding() const;
  torch::jit::Module& image_encoder() const; // runtime_failure if load_image was false
  bool image_loaded() const;                 // loaded with load_image

  bool has_diffusion() const;                // the manifest has a diffusion section
  bool diffusion_loaded() const;
  bool has_vae() const;                      // latent diffusion (false: pixel space)
  torch::jit::Module& unet() const;          // runtime_failure unless diffusion_loaded()
  torch::jit::Module& vae_encoder() const;   // runtime_failure unless has_vae()
  torch::jit::Module& vae_decoder() const;
  const NoiseSchedule& schedule() const;     // runtime_failure without a diffusion section

  struct Impl;  // opaque

 private:
  explicit Bundle(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctok::model
