#include "ctok/model/diffusion.hpp"

#include "ctok/core/error.hpp"
#include "torch_util.hpp"

namespace ctok::model {

DiffusionModel::DiffusionModel(const Bundle& bundle) : bundle_(bundle) {
  if (!bundle.has_diffusion()) {
    throw bad_input("bundle " + bundle.name() + " has no diffusion models (no \"diffusion\" section in bundle.json); "
                    "rendering and the inversion loss need a UNet")
        .file(bundle.path_of("bundle.json"))
        .key("diffusion");
  }
  if (!bundle.diffusion_loaded()) {
    throw runtime_failure("DiffusionModel: the bundle was loaded without load_diffusion");
  }
}

std::vector<int64_t> DiffusionModel::latent_shape() const {
  const auto& d = bundle_.manifest().diffusion.value();
  return {d.latent_channels, d.latent_size, d.latent_size};
}

int64_t DiffusionModel::image_size() const { return bundle_.manifest().diffusion.value().image_size; }

torch::Tensor DiffusionModel::unet(const torch::Tensor& sample, const torch::Tensor& timestep,
                                   const torch::Tensor& context) {
  const auto shape = latent_shape();
  if (sample.dim() != 4 || sample.size(1) != shape[0] || sample.size(2) != shape[1] || sample.size(3) != shape[2]) {
    throw bad_input("UNet sample has the wrong shape")
        .expected("[B, " + std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + ", " +
                  std::to_string(shape[2]) + "]")
        .found(detail::shape_string(sample.sizes()));
  }
  if (context.dim() != 3 || context.size(0) != sample.size(0) || context.size(2) != bundle_.width()) {
    throw bad_input("UNet context has the wrong shape")
        .expected("[" + std::to_string(sample.size(0)) + ", L, " + std::to_string(bundle_.width()) + "]")
        .found(detail::shape_string(context.sizes()));
  }
  torch::Tensor t = timestep.to(bundle_.device(), torch::kLong).reshape({-1});
  if (t.size(0) == 1 && sample.size(0) > 1) t = t.expand({sample.size(0)});
  auto out = detail::forward(bundle_.unet(),
                             {sample.to(bundle_.device(), bundle_.dtype()), t,
                              context.to(bundle_.device(), bundle_.dtype())},
                             "UNet");
  return out.toTensor().to(torch::kFloat32);
}

torch::Tensor DiffusionModel::guided(const torch::Tensor& x, int64_t t, const torch::Tensor& cond,
                                     const torch::Tensor& uncond, double guidance) {
  const int64_t B = x.size(0);
  if (guidance == 1.0) {
    return unet(x, torch::full({B}, t, torch::kLong), cond);
  }
  torch::Tensor u = uncond.size(0) == B ? uncond : uncond.expand({B, uncond.size(1), uncond.size(2)});
  torch::Tensor out = unet(torch::cat({x, x}), torch::full({2 * B}, t, torch::kLong),
                           torch::cat({u.to(cond.device(), cond.scalar_type()), cond}));
  auto parts = out.chunk(2);
  return parts[0] + guidance * (parts[1] - parts[0]);
}

torch::Tensor DiffusionModel::sample(const torch::Tensor& cond, const torch::Tensor& uncond, double guidance,
                                     const SampleOptions& options, const std::vector<uint64_t>& seeds,
                                     const StepCallback& on_step) {
  if (static_cast<int64_t>(seeds.size()) != cond.size(0)) {
    throw bad_input("one seed per conditioning row is needed")
        .expected(std::to_string(cond.size(0))).found(std::to_string(seeds.size()));
  }
  if (uncond.size(0) != 1 && uncond.size(0) != cond.size(0)) {
    throw bad_input("unconditional context must have batch 1 or the batch of cond")
        .found(detail::shape_string(uncond.sizes()));
  }
  if (!std::isfinite(guidance)) throw bad_input("guidance must be finite").key("guidance");
  c10::InferenceMode guard;
  auto generators = make_generators(seeds);
  torch::Tensor noise = seeded_noise(generators, latent_shape(), bundle_.device());
  torch::Tensor c = cond.to(bundle_.device(), bundle_.dtype());
  torch::Tensor u = uncond.to(bundle_.device(), bundle_.dtype());
  const int64_t B = c.size(0);
  // The context of the batched guidance call is the same at every step: build it once.
  torch::Tensor context = guidance == 1.0 ? c : torch::cat({u.expand({B, u.size(1), u.size(2)}), c});
  Denoiser denoiser = [&](const torch::Tensor& x, int64_t t) {
    if (guidance == 1.0) return unet(x, torch::full({B}, t, torch::kLong), context);
    auto parts = unet(torch::cat({x, x}), torch::full({2 * B}, t, torch::kLong), context).chunk(2);
    return parts[0] + guidance * (parts[1] - parts[0]);
  };
  return model::sample(schedule(), denoiser, noise, options, generators, on_step);
}

torch::Tensor DiffusionModel::encode_with_grad(const torch::Tensor& images) {
  const int64_t S = image_size();
  if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != S || images.size(3) != S) {
    throw bad_input("images have the wrong shape for the VAE encoder")
        .expected("[B, 3, " + std::to_string(S) + ", " + std::to_string(S) + "]")
        .found(detail::shape_string(images.sizes()));
  }
  if (!bundle_.has_vae()) return images.to(bundle_.device(), torch::kFloat32);
  return detail::forward(bundle_.vae_encoder(), {images.to(bundle_.device(), bundle_.dtype())}, "VAE encoder")
      .toTensor()
      .to(torch::kFloat32);
}

torch::Tensor DiffusionModel::encode(const torch::Tensor& images) {
  torch::Tensor out;
  {
    c10::InferenceMode guard;
    out = encode_with_grad(images);
  }
  return out.clone();
}

torch::Tensor DiffusionModel::decode(const torch::Tensor& latents) {
  const auto shape = latent_shape();
  if (latents.dim() != 4 || latents.size(1) != shape[0] || latents.size(2) != shape[1] || latents.size(3) != shape[2]) {
    throw bad_input("latents have the wrong shape for the VAE decoder")
        .expected("[B, " + std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + ", " +
                  std::to_string(shape[2]) + "]")
        .found(detail::shape_string(latents.sizes()));
  }
  torch::Tensor out;
  {
    c10::InferenceMode guard;
    if (!bundle_.has_vae()) {
      out = latents.to(bundle_.device(), torch::kFloat32);
    } else {
      out = detail::forward(bundle_.vae_decoder(), {latents.to(bundle_.device(), bundle_.dtype())}, "VAE decoder")
                .toTensor()
                .to(torch::kFloat32);
    }
  }
  return out.clone();
}

}  // namespace ctok::model
