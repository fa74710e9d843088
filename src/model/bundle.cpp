#include "ctok/model/bundle.hpp"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "ctok/core/error.hpp"
#include "ctok/core/sha256.hpp"
#include "torch_util.hpp"

namespace ctok::model {

namespace fs = std::filesystem;

struct Bundle::Impl {
  BundleOptions options;
  Manifest manifest;
  std::string dir;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  std::string text_sha256;
  std::unique_ptr<text::Tokenizer> tokenizer;
  torch::jit::Module text_encoder, image_encoder, unet, vae_encoder, vae_decoder;
  bool image_loaded = false, diffusion_loaded = false, vae = false;
  torch::Tensor token_embedding;
  std::unique_ptr<NoiseSchedule> schedule;
};

namespace {

torch::ScalarType to_dtype(Precision p) {
  switch (p) {
    case Precision::kFp16: return torch::kFloat16;
    case Precision::kBf16: return torch::kBFloat16;
    default: return torch::kFloat32;
  }
}

std::string require_file(const std::string& dir, const std::string& file, const std::string& key) {
  const std::string path = (fs::path(dir) / file).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw bad_input("file named in bundle.json is missing").file(path).key(key);
  }
  return path;
}

torch::jit::Module load_module(const std::string& path, const std::string& key, const Bundle::Impl& b) {
  torch::jit::Module m;
  try {
    m = torch::jit::load(path, b.device);
  } catch (const c10::Error& e) {
    throw bad_input("not a loadable TorchScript archive: " + detail::first_line(e.what_without_backtrace()))
        .file(path).key(key);
  } catch (const std::exception& e) {
    throw bad_input(std::string("not a loadable TorchScript archive: ") + detail::first_line(e.what()))
        .file(path).key(key);
  }
  m.eval();
  if (b.dtype != torch::kFloat32) m.to(b.dtype);
  // Exported weights are frozen: no gradient ever flows into them.
  for (auto p : m.parameters()) p.requires_grad_(false);
  return m;
}

std::string precision_hint(const Bundle::Impl& b) {
  if (b.dtype == torch::kFloat32) return "";
  return " (precision " + precision_name(b.options.precision) + " on " + device_name(b.options.device) +
         ": this libtorch build may not implement it; try --precision fp32)";
}

// One forward with tiny inputs; shape problems become bad_input naming the file.
c10::IValue dry_forward(torch::jit::Module& m, std::vector<c10::IValue> inputs, const std::string& path,
                        const std::string& key, const std::string& what, const Bundle::Impl& b) {
  try {
    c10::InferenceMode guard;  // only here: modules and tables must not become inference tensors
    return detail::forward(m, std::move(inputs), what);
  } catch (const Error& e) {
    throw bad_input("dry forward at load time: " + e.message() + precision_hint(b)).file(path).key(key);
  }
}

void expect_shape(const torch::Tensor& t, std::vector<int64_t> expected, const std::string& path,
                  const std::string& key, const std::string& what) {
  if (t.sizes().vec() != expected) {
    throw bad_input(what + " has the wrong shape (dry forward at load time)")
        .file(path).key(key)
        .expected(detail::shape_string(expected))
        .found(detail::shape_string(t.sizes()));
  }
}

}  // namespace

Bundle::Bundle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Bundle::Bundle(Bundle&&) noexcept = default;
Bundle& Bundle::operator=(Bundle&&) noexcept = default;
Bundle::~Bundle() = default;

Bundle Bundle::load(const BundleOptions& options) {
  auto b = std::make_unique<Impl>();
  b->options = options;
  std::string dir = options.dir.empty() ? default_bundle_dir() : options.dir;
  std::error_code ec;
  fs::path abs = fs::absolute(dir, ec);
  b->dir = ec ? dir : abs.lexically_normal().string();
  if (!b->dir.empty() && b->dir.back() == '/' && b->dir.size() > 1) b->dir.pop_back();
  b->manifest = load_manifest(b->dir);
  const Manifest& m = b->manifest;
  if (options.verify_sha256) require_sha256_match(m);

  check_device(options.device);
  b->device = options.device.kind == DeviceKind::kCpu ? torch::Device(torch::kCPU)
                                                      : torch::Device(torch::kCUDA, options.device.index);
  b->dtype = to_dtype(options.precision);

  // Tokenizer, with the manifest's special ids.
  b->tokenizer = load_tokenizer(m);
  const std::string tok_path = m.path_of(m.tokenizer.file);
  if (b->tokenizer->vocab_size() > m.text.vocab_size) {
    throw bad_input("tokenizer vocabulary is larger than the text encoder's embedding table")
        .file(tok_path).key("text.vocab_size")
        .expected("<= " + std::to_string(m.text.vocab_size))
        .found(std::to_string(b->tokenizer->vocab_size()));
  }

  const int64_t L = m.text.context_length, W = m.text.width;
  auto fopts = torch::TensorOptions().device(b->device).dtype(b->dtype);

  // Text encoder and its embedding table.
  {
    const std::string path = require_file(b->dir, m.text.file, "text.file");
    b->text_encoder = load_module(path, "text.file", *b);
    if (!b->text_encoder.hasattr("token_embedding") || !b->text_encoder.attr("token_embedding").isTensor()) {
      throw bad_input("text encoder has no tensor attribute token_embedding (bundle.md)").file(path).key("text.file");
    }
    torch::Tensor table = b->text_encoder.attr("token_embedding").toTensor();
    if (table.dim() != 2 || table.size(1) != W) {
      throw bad_input("token_embedding width " + std::to_string(table.dim() == 2 ? table.size(1) : -1) +
                      " does not match text.width " + std::to_string(W))
          .file(path).key("text.width").found(detail::shape_string(table.sizes()));
    }
    if (table.size(0) != m.text.vocab_size) {
      throw bad_input("token_embedding rows do not match text.vocab_size").file(path).key("text.vocab_size")
          .expected(std::to_string(m.text.vocab_size)).found(std::to_string(table.size(0)));
    }
    b->token_embedding = table.detach().to(b->device, b->dtype).clone();
    b->text_sha256 = m.sha256.count(m.text.file) ? m.sha256.at(m.text.file) : sha256_file(path);
    if (options.check_shapes) {
      auto out = dry_forward(b->text_encoder,
                             {torch::zeros({1, L, W}, fopts), torch::full({1}, L - 1, torch::TensorOptions()
                                                                                       .dtype(torch::kLong)
                                                                                       .device(b->device))},
                             path, "text.file", "text encoder", *b);
      if (!out.isTuple() || out.toTuple()->elements().size() != 2) {
        throw bad_input("text encoder must return (hidden, features)").file(path).key("text.file");
      }
      expect_shape(out.toTuple()->elements()[0].toTensor(), {1, L, W}, path, "text.width", "text encoder hidden");
      expect_shape(out.toTuple()->elements()[1].toTensor(), {1, m.text.feature_dim}, path, "text.feature_dim",
                   "text encoder features");
    }
  }

  if (options.load_image) {
    const std::string path = require_file(b->dir, m.image.file, "image.file");
    b->image_encoder = load_module(path, "image.file", *b);
    if (options.check_shapes) {
      auto out = dry_forward(b->image_encoder, {torch::zeros({1, 3, m.image.size, m.image.size}, fopts)}, path,
                             "image.file", "image encoder", *b);
      if (!out.isTensor()) throw bad_input("image encoder must return a tensor").file(path).key("image.file");
      expect_shape(out.toTensor(), {1, m.image.feature_dim}, path, "image.feature_dim", "image encoder features");
    }
    b->image_loaded = true;
  }

  if (m.diffusion) {
    const auto& d = *m.diffusion;
    ScheduleConfig sc;
    sc.num_train_timesteps = static_cast<int>(d.num_train_timesteps);
    sc.beta_schedule = d.beta_schedule;
    sc.beta_start = d.beta_start;
    sc.beta_end = d.beta_end;
    sc.prediction = d.prediction;
    b->schedule = std::make_unique<NoiseSchedule>(sc);
  }
  if (options.load_diffusion) {
    if (!m.diffusion) {
      throw bad_input("bundle " + m.name + " has no diffusion models (no \"diffusion\" section); rendering and "
                      "the inversion loss need a UNet")
          .file(b->dir + "/bundle.json").key("diffusion");
    }
    const auto& d = *m.diffusion;
    const int64_t C = d.latent_channels, h = d.latent_size, S = d.image_size;
    const std::string unet_path = require_file(b->dir, d.unet, "diffusion.unet");
    b->unet = load_module(unet_path, "diffusion.unet", *b);
    if (d.vae_encoder.empty() != d.vae_decoder.empty()) {
      throw bad_input("diffusion.vae_encoder and diffusion.vae_decoder come together (both or neither)")
          .file(b->dir + "/bundle.json").key(d.vae_encoder.empty() ? "diffusion.vae_encoder" : "diffusion.vae_decoder");
    }
    b->vae = !d.vae_decoder.empty();
    if (!b->vae && (C != 3 || h != S)) {
      throw bad_input("a bundle without a VAE diffuses in pixel space: latent_channels must be 3 and latent_size "
                      "equal image_size")
          .file(b->dir + "/bundle.json").key("diffusion.latent_size")
          .found("latent " + std::to_string(C) + "x" + std::to_string(h) + ", image " + std::to_string(S));
    }
    if (options.check_shapes) {
      auto out = dry_forward(b->unet,
                             {torch::zeros({1, C, h, h}, fopts),
                              torch::zeros({1}, torch::TensorOptions().dtype(torch::kLong).device(b->device)),
                              torch::zeros({1, L, W}, fopts)},
                             unet_path, "diffusion.unet", "UNet (context width text.width = " + std::to_string(W) + ")",
                             *b);
      if (!out.isTensor()) throw bad_input("UNet must return a tensor").file(unet_path).key("diffusion.unet");
      expect_shape(out.toTensor(), {1, C, h, h}, unet_path, "diffusion.latent_size", "UNet output");
    }
    if (b->vae) {
      const std::string enc_path = require_file(b->dir, d.vae_encoder, "diffusion.vae_encoder");
      const std::string dec_path = require_file(b->dir, d.vae_decoder, "diffusion.vae_decoder");
      b->vae_encoder = load_module(enc_path, "diffusion.vae_encoder", *b);
      b->vae_decoder = load_module(dec_path, "diffusion.vae_decoder", *b);
      if (options.check_shapes) {
        auto z = dry_forward(b->vae_encoder, {torch::zeros({1, 3, S, S}, fopts)}, enc_path, "diffusion.vae_encoder",
                             "VAE encoder", *b);
        if (!z.isTensor()) throw bad_input("VAE encoder must return a tensor").file(enc_path);
        expect_shape(z.toTensor(), {1, C, h, h}, enc_path, "diffusion.latent_size", "VAE encoder output");
        auto x = dry_forward(b->vae_decoder, {torch::zeros({1, C, h, h}, fopts)}, dec_path, "diffusion.vae_decoder",
                             "VAE decoder", *b);
        if (!x.isTensor()) throw bad_input("VAE decoder must return a tensor").file(dec_path);
        expect_shape(x.toTensor(), {1, 3, S, S}, dec_path, "diffusion.image_size", "VAE decoder output");
      }
    }
    b->diffusion_loaded = true;
  }
  // Frozen graphs (weights as constants, conv + batch norm folded, ops prepacked): for
  // inference only. The embedding table was read above, so the text encoder may lose its
  // attributes. Measurements in docs/bundle.md.
  auto optimize = [&](torch::jit::Module& m, const std::string& what) {
    try {
      m = torch::jit::optimize_for_inference(m);
    } catch (const std::exception& e) {
      spdlog::warn("optimize_for_inference failed for the {}; keeping it as loaded: {}", what,
                   detail::first_line(e.what()));
    }
  };
  if (b->image_loaded && (options.optimize || options.optimize_image)) optimize(b->image_encoder, "image encoder");
  if (options.optimize) {
    optimize(b->text_encoder, "text encoder");
    if (b->diffusion_loaded) {
      optimize(b->unet, "UNet");
      if (b->vae) {
        optimize(b->vae_encoder, "VAE encoder");
        optimize(b->vae_decoder, "VAE decoder");
      }
    }
  }
  spdlog::debug("loaded bundle {} from {} on {} ({})", m.name, b->dir, device_name(options.device),
                precision_name(options.precision));
  return Bundle(std::move(b));
}

const Manifest& Bundle::manifest() const { return impl_->manifest; }
const std::string& Bundle::dir() const { return impl_->dir; }
const BundleOptions& Bundle::options() const { return impl_->options; }
std::string Bundle::name() const { return impl_->manifest.name; }
std::string Bundle::path_of(const std::string& file) const { return (fs::path(impl_->dir) / file).string(); }
torch::Device Bundle::device() const { return impl_->device; }
torch::ScalarType Bundle::dtype() const { return impl_->dtype; }
Precision Bundle::precision() const { return impl_->options.precision; }
const std::string& Bundle::text_encoder_sha256() const { return impl_->text_sha256; }
const text::Tokenizer& Bundle::tokenizer() const { return *impl_->tokenizer; }
int64_t Bundle::context_length() const { return impl_->manifest.text.context_length; }
int64_t Bundle::width() const { return impl_->manifest.text.width; }
int64_t Bundle::text_feature_dim() const { return impl_->manifest.text.feature_dim; }
int64_t Bundle::vocab_size() const { return impl_->manifest.text.vocab_size; }
int64_t Bundle::image_size() const { return impl_->manifest.image.size; }
int64_t Bundle::image_feature_dim() const { return impl_->manifest.image.feature_dim; }
double Bundle::logit_scale() const { return impl_->manifest.logit_scale; }
torch::jit::Module& Bundle::text_encoder() const { return impl_->text_encoder; }
const torch::Tensor& Bundle::token_embedding() const { return impl_->token_embedding; }

torch::jit::Module& Bundle::image_encoder() const {
  if (!impl_->image_loaded) throw runtime_failure("bundle loaded without its image encoder (load_image = false)");
  return impl_->image_encoder;
}

bool Bundle::has_diffusion() const { return impl_->manifest.diffusion.has_value(); }
bool Bundle::diffusion_loaded() const { return impl_->diffusion_loaded; }
bool Bundle::image_loaded() const { return impl_->image_loaded; }
bool Bundle::has_vae() const { return impl_->vae; }

torch::jit::Module& Bundle::unet() const {
  if (!impl_->diffusion_loaded) throw runtime_failure("bundle loaded without diffusion models (load_diffusion = false)");
  return impl_->unet;
}

torch::jit::Module& Bundle::vae_encoder() const {
  if (!impl_->vae) throw runtime_failure("bundle has no VAE loaded");
  return impl_->vae_encoder;
}

torch::jit::Module& Bundle::vae_decoder() const {
  if (!impl_->vae) throw runtime_failure("bundle has no VAE loaded");
  return impl_->vae_decoder;
}

const NoiseSchedule& Bundle::schedule() const {
  if (!impl_->schedule) throw bad_input("bundle " + impl_->manifest.name + " has no diffusion section").key("diffusion");
  return *impl_->schedule;
}

}  // namespace ctok::model
